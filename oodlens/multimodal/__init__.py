"""Multimodal OOD detection (MultiOOD, Dong et al., NeurIPS 2024): model blocks, A2D / NP-Mix / Feature Mixing
training, detectors on fused or per-modality outputs, modality-score fusion and attribution, the MultiOOD protocol
and split readers (the demo, ``oodlens demo multimodal``, lives in ``oodlens.bench.demos``).

>>> from oodlens.multimodal import MultimodalClassifier, TrainConfig, train, Benchmark, evaluate
>>> model = MultimodalClassifier({"video": None, "flow": None}, {"video": 2304, "flow": 2048}, num_classes=25)
>>> train(model, train_inputs, y_train, val_inputs, y_val, TrainConfig.preset("a2d_npmix"), device="cuda")
>>> bench = Benchmark(model.extract(train_inputs), y_train, model.extract(val_inputs), y_val,
...                   model.extract(test_inputs), y_test, {"HMDB near": model.extract(ood_inputs)}, {"HMDB near": "near"})
>>> table, id_acc = evaluate(bench, ["msp", "energy", "mahalanobis"], heads=model.all_heads())

See ``oodlens/multimodal/README.md`` for the MultiOOD reproduction recipe.
"""

from .feature_mixing import feature_mixing
from .losses import a2d_loss, hellinger, normalized_entropy, outlier_discrepancy_loss, outlier_entropy_loss, pairwise_discrepancy
from .modality_fusion import FUSION_RULES, Attribution, ModalityCalibration, ModalityWiseDetector
from .model import MultimodalClassifier, MultimodalOutput, mlp_encoder
from .npmix import NPMix, NPMixDraw
from .protocol import (Benchmark, evaluate, flow_stem, load_modal_features, multiood_split_files, read_hac_split,
                       read_split_list)
from .trainer import TrainConfig, Trainer, TrainResult, train

__all__ = [
    "Attribution", "Benchmark", "FUSION_RULES", "ModalityCalibration", "ModalityWiseDetector", "MultimodalClassifier",
    "MultimodalOutput", "NPMix", "NPMixDraw", "TrainConfig", "TrainResult", "Trainer", "a2d_loss", "evaluate",
    "feature_mixing", "flow_stem", "hellinger", "load_modal_features", "mlp_encoder", "multiood_split_files",
    "normalized_entropy", "outlier_discrepancy_loss", "outlier_entropy_loss", "pairwise_discrepancy",
    "read_hac_split", "read_split_list", "train",
]

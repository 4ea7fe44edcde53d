"""Semantic segmentation: OOD scores per pixel, pooled pixel metrics streamed over any number of pixels, and
SegmentMeIfYouCan's component metrics.

* :class:`PixelScorer` — any registered detector per pixel of a (B, D, h, w) map (logits: MSP, MaxLogit,
  Entropy, Energy, GEN, :class:`SML`; feature maps: Mahalanobis, KNN, ...), upsampled to the label size;
* :class:`StreamingPixelMetrics` — pooled AUROC / AP / FPR95 from per-threshold counts (bounded memory);
* :func:`component_metrics` — sIoU, PPV, F1 over τ ∈ [0.25, 0.75] as in ``road-anomaly-benchmark``;
* :func:`evaluate` — all of them for maps in memory; readers for folder data sets; :func:`capture` for any
  torch segmentation model.
Labels for the metrics: 0 normal, 1 anomaly, 255 ignore (:func:`anomaly_labels` maps a semantic map).
"""

from ._validate import anomaly_labels
from .capture import SegmentationOutputs, capture
from .components import TAUS, ComponentMetrics, FrameComponents, component_metrics, frame_components
from .evaluate import evaluate, exact_pixel_metrics, per_image_metrics
from .pixels import LOGIT_SCORES, PixelScorer, logit_scores, to_rows, upsample_scores
from .readers import LAYOUTS, Frame, Layout, read_pairs, read_streethazards, stack_frames
from ..detectors.sml import SML
from .streaming import DEFAULT_BITS, PixelCounts, StreamingPixelMetrics

__all__ = [
    "anomaly_labels", "SegmentationOutputs", "capture", "TAUS", "ComponentMetrics", "FrameComponents",
    "component_metrics", "frame_components", "evaluate", "exact_pixel_metrics", "per_image_metrics",
    "LOGIT_SCORES", "PixelScorer", "logit_scores", "to_rows", "upsample_scores", "LAYOUTS", "Frame", "Layout",
    "read_pairs", "read_streethazards", "stack_frames", "SML", "DEFAULT_BITS", "PixelCounts",
    "StreamingPixelMetrics",
]

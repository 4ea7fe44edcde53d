"""Object detection as a first-class OOD task: boxes are rows of features, scored by the registered detectors.

* :mod:`.boxes` — :class:`Detections` (many images' kept boxes, ragged by image index) and :class:`GroundTruth`;
* :mod:`.coco` — COCO results/annotations readers; :mod:`.capture` — boxes out of torch detectors;
* :mod:`.ap` — COCO AP@[.5:.95] / AP50 (equal to pycocotools); :mod:`.vos` — the VOS protocol exactly;
* :mod:`.openset` — unknown recall, AP of the unknown class, A-OSE, Wilderness Impact;
* :mod:`.bootstrap` — confidence intervals over images; :mod:`.enhance` — box-score enhancements;
* :mod:`.tracking`, :mod:`.temporal` — IoU tracker, per-track aggregation, time to detection.
"""

from .ap import APResult, average_precision, coco_ap
from .boxes import UNKNOWN, Detections, GroundTruth, check_boxes

__all__ = ["APResult", "Detections", "GroundTruth", "UNKNOWN", "average_precision", "check_boxes", "coco_ap"]

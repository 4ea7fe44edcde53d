"""The detection demo's data, detector cache, box scores and evaluations (tables are in ``_detection_report``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...calibrate import conformal_threshold
from ...detection import Detections, GroundTruth, coco_ap
from ...detection.bootstrap import Interval, auroc_fast, bootstrap
from ...detection.enhance import ClassConditionalConformal, SizeNormalised, fused_scores
from ...detection.matching import assign
from ...detection.openset import open_set_metrics
from ...detection.temporal import aggregate, false_alarm_threshold, time_to_detection, track_max
from ...detection.tracking import track_detections
from ...detection.vos import vos_evaluate, vos_fpr, vos_threshold
from ...detectors import Head, create
from ...safetensors_io import load_tensors, save_tensors
from ..datasets.scene_video import make_videos
from ..datasets.scenes import make_scenes
from ._detection_model import TinyDetector, detect, train_detector

CACHE_VERSION = "detection-v1"
#: registered detectors scored on boxes by default, and their settings for this detector's features
DEFAULT_DETECTORS = ("msp", "energy", "maxlogit", "gen", "mahalanobis", "knn", "vim", "particul")
DETECTOR_PARAMS: dict[str, dict[str, Any]] = {"particul": {"maps": "roi_map", "n_patterns": 4},
                                              "vim": {"dim": 24}, "knn": {"k": 10}}
SIZES = {"train": 1500, "val": 300, "test": 300, "near": 300, "far": 300, "mixed": 300, "videos": 40, "frames": 16}
#: detector training steps (the tests shrink these and SIZES)
TRAIN_STEPS = 300


def gt_of(scenes) -> GroundTruth:
    o = scenes.objects
    return GroundTruth(o.image, o.boxes, o.label, len(scenes), kind=o.kind,
                       track=o.track if bool((o.track >= 0).any()) else None,
                       frame=scenes.frame[o.image] if scenes.frame is not None else None)


def make_data(seed: int) -> dict[str, Any]:
    """Every split: ID train/val/test scenes, near-/far-OOD test scenes (every object unknown, as VOS's OOD
    images), a mixed open-set test set (35 % unknown objects), and 40 videos of 16 frames."""
    s = SIZES
    return {
        "train": make_scenes(s["train"], seed=seed, split="train"),
        "val": make_scenes(s["val"], seed=seed, split="val"),
        "test": make_scenes(s["test"], seed=seed, split="test"),
        "near": make_scenes(s["near"], seed=seed + 1, split="test", unknown_rate=1.0, unknown_kinds=("near",)),
        "far": make_scenes(s["far"], seed=seed + 2, split="test", unknown_rate=1.0, unknown_kinds=("far",)),
        "mixed": make_scenes(s["mixed"], seed=seed + 3, split="test", unknown_rate=0.35),
        "video": make_videos(s["videos"], s["frames"], seed=seed, split="test", unknown_rate=0.5),
    }


def load_or_train(cache: str | Path, seed: int, data: dict[str, Any], progress: bool) -> tuple[TinyDetector, bool]:
    """The trained detector from ``cache`` (safetensors) or trained now and saved there."""
    path = Path(cache) / f"{CACHE_VERSION}-seed{seed}.safetensors"
    model = TinyDetector()
    if path.exists():
        tensors, _ = load_tensors(path, mmap=False)
        model.load_state_dict(tensors)
        return model.eval(), True
    tr = data["train"]
    o = tr.objects
    model = train_detector(tr.images, o.boxes, o.label, o.image, steps=TRAIN_STEPS, seed=seed, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors({k: v.contiguous() for k, v in model.state_dict().items()}, path, {"oodlens": CACHE_VERSION})
    return model, False


@dataclass
class Boxes:
    """Every split's detections and ground truth, and the fitted detectors' box scores."""

    dets: dict[str, Detections]
    gts: dict[str, GroundTruth]
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> split -> (N,)
    threshold: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def run_detector(model: TinyDetector, data: dict[str, Any]) -> Boxes:
    dets, gts = {}, {}
    for name, sc in data.items():
        dets[name] = detect(model, sc.images, frame=sc.frame)
        gts[name] = gt_of(sc)
    return Boxes(dets, gts, info={"video_of_image": data["video"].video.numpy()})


def score_boxes(b: Boxes, model: TinyDetector, names: list[str]) -> None:
    """Fit each registered detector on the ID-train boxes matched to a known object (label = its class) and
    score every split's boxes through ``Detections.to_features()``."""
    tr, gt = b.dets["train"], b.gts["train"]
    m = assign(tr, gt)
    keep = (m >= 0) & (gt.labels[np.maximum(m, 0)].numpy() >= 0)
    if np.unique(gt.labels.numpy()[m[keep]]).size < 2:  # an untrained detector (tests): predicted classes instead
        keep = np.ones(tr.n, bool)
        labels = tr.classes
    else:
        labels = gt.labels[torch.from_numpy(m[keep])]
    train = tr.subset(torch.from_numpy(np.flatnonzero(keep)))
    w, bias = model.cls.weight.detach()[:, :, 0, 0], model.cls.bias.detach()
    head = Head(w[:-1], bias[:-1])  # the known-class rows (background dropped, as from the logits)
    feats = train.to_features()
    for name in names:
        t0 = time.perf_counter()
        det = create(name, **DETECTOR_PARAMS.get(name, {}))
        det.fit(feats, labels, head=head)
        b.scores[name] = {k: det.score(d.to_features()).double().numpy() for k, d in b.dets.items() if k != "train"}
        b.info[f"seconds/{name}"] = time.perf_counter() - t0


def add_enhancements(b: Boxes, bases: tuple[str, ...] = ("energy", "mahalanobis")) -> list[str]:
    """Class-conditional conformal and size-normalised versions of each base score; their Fisher fusion."""
    val = b.dets["val"]
    added = []
    for base in bases:
        if base not in b.scores:
            continue
        s = b.scores[base]
        cc = ClassConditionalConformal().fit(s["val"], val.classes, val.num_classes)
        sz = SizeNormalised().fit(s["val"], val.boxes)
        b.scores[f"{base}+classconf"] = {k: cc.score(v, b.dets[k].classes).numpy() for k, v in s.items()}
        b.scores[f"{base}+size"] = {k: sz.score(v, b.dets[k].boxes).numpy() for k, v in s.items()}
        added += [f"{base}+classconf", f"{base}+size"]
    if all(x in b.scores for x in bases) and len(bases) >= 2:
        name = "fisher(" + "+".join(bases) + ")"
        b.scores[name] = {k: fused_scores({x: b.scores[x]["val"] for x in bases},
                                          {x: b.scores[x][k] for x in bases}).numpy() for k in b.scores[bases[0]]}
        added.append(name)
    return added


def vos_table(b: Boxes, methods: list[str], reps: int, seed: int, baseline: str = "msp") -> list[dict[str, Any]]:
    """VOS protocol per method and OOD set, with bootstrap intervals over images and paired differences."""
    b.threshold = vos_threshold(b.dets["val"], b.gts["val"])
    rows = []
    idd = b.dets["test"]
    for ood in ("near", "far"):
        od = b.dets[ood]
        mi, mo = idd.confidence.numpy() >= b.threshold, od.confidence.numpy() >= b.threshold
        sc = {m: (b.scores[m]["test"][mi], b.scores[m][ood][mo]) for m in methods}
        ii, oi = idd.image.numpy()[mi], od.image.numpy()[mo]
        base = baseline if baseline in sc else None
        a = bootstrap(auroc_fast, sc, ii, oi, reps, seed=seed, baseline=base)
        f = bootstrap(vos_fpr, sc, ii, oi, reps, seed=seed, baseline=base)
        for m in methods:
            r = vos_evaluate(idd, od, b.scores[m]["test"], b.scores[m][ood], b.threshold)
            own = m == base  # the baseline's difference with itself is 0 by construction: shown as "–"
            rows.append({"ood": ood, "method": m, "auroc": a[m]["value"], "auroc_diff": None if own else a[m].get("diff"),
                         "fpr95": f[m]["value"], "fpr95_diff": None if own else f[m].get("diff"), "aupr_in": r.aupr_in,
                         "n_id": r.n_id, "n_ood": r.n_ood})
    return rows


def open_set_table(b: Boxes, methods: list[str], acceptance: float = 0.95) -> list[dict[str, Any]]:
    """Open-set metrics on the mixed test set (every box): a box is flagged unknown when its score exceeds the
    conformal threshold keeping ``acceptance`` of all ID-validation boxes."""
    d, gt = b.dets["mixed"], b.gts["mixed"]
    rows = [{"method": "(closed set: nothing flagged)",
             **open_set_metrics(d, gt, np.zeros(d.n, bool), np.zeros(d.n))}]
    for m in methods:
        tau = conformal_threshold(torch.from_numpy(b.scores[m]["val"]), acceptance=acceptance).value
        s = b.scores[m]["mixed"]
        rows.append({"method": m, **open_set_metrics(d, gt, s > tau, s)})
    return rows


def video_table(b: Boxes, methods: list[str], reps: int, seed: int, false_alarm: float = 0.05,
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Frame-level vs track-level results on the videos: tracks from the IoU tracker; each box labelled by the
    ground-truth object it matches (IoU ≥ 0.5); ID tracks = tracks whose boxes match known objects. Only boxes
    with confidence ≥ the VOS threshold are tracked (what a deployed detector reports)."""
    d, gt = b.dets["video"], b.gts["video"]
    keep = torch.from_numpy(np.flatnonzero(d.confidence.numpy() >= b.threshold))
    d = d.subset(keep)
    scores = {m: b.scores[m]["video"][keep.numpy()] for m in methods}
    video = torch.as_tensor(np.asarray(b.info["video_of_image"]))[d.image]
    d = track_detections(d, video=video)
    m = assign(d, gt)
    lab = np.where(m >= 0, gt.labels.numpy()[np.maximum(m, 0)], -2)  # -2: matches nothing (background)
    obj = np.where(m >= 0, gt.track.numpy()[np.maximum(m, 0)], -1)
    tr, fr, vid = d.track.numpy(), d.frame.numpy(), video.numpy()
    # a track is unknown when most of its matched boxes are on unknown objects
    tids, unk_votes = np.unique(tr, return_inverse=True)
    votes = np.bincount(unk_votes, weights=(lab == -1).astype(float), minlength=tids.size)
    known_votes = np.bincount(unk_votes, weights=(lab >= 0).astype(float), minlength=tids.size)
    track_unknown = votes > known_votes
    track_known = known_votes > votes
    box_id, box_ood = lab >= 0, lab == -1
    first = np.full(int(gt.track.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, gt.track.numpy(), gt.frame.numpy())
    unk_objects = np.unique(gt.track.numpy()[gt.labels.numpy() == -1])
    track_video = np.zeros(tids.size, np.int64)
    track_video[unk_votes] = vid
    rows = []
    mu_sigma = {}
    for meth in methods:
        x = scores[meth]
        v = b.scores[meth]["val"]
        mu_sigma[meth] = (float(v.mean()), float(v.std() + 1e-12))
        for agg in ("none", "ema", "max", "window", "cusum"):
            a = aggregate(x, tr, fr, agg, mu=mu_sigma[meth][0], sigma=mu_sigma[meth][1])
            ids, tmax = track_max(a, tr)
            tau = false_alarm_threshold(tmax[track_known], false_alarm)
            ttd = time_to_detection(a, fr, obj, first, tau)[unk_objects]
            box = _boot_auroc(a[box_id], a[box_ood], vid[box_id], vid[box_ood], reps, seed)
            trk = _boot_auroc(tmax[track_known], tmax[track_unknown], track_video[track_known],
                              track_video[track_unknown], reps, seed)
            found = ttd >= 0
            rows.append({"method": meth, "aggregation": agg, "box_auroc": box, "track_auroc": trk,
                         "unknown_flagged": float(found.mean()) if found.size else float("nan"),
                         "median_ttd": float(np.median(ttd[found])) if found.any() else float("nan"),
                         "mean_ttd": float(ttd[found].mean()) if found.any() else float("nan")})
    info = {"tracks": int(tids.size), "id_tracks": int(track_known.sum()), "unknown_tracks": int(track_unknown.sum()),
            "unknown_objects": int(unk_objects.size), "boxes": int(d.n), "false_alarm": false_alarm}
    return rows, info


def _boot_auroc(a: np.ndarray, b: np.ndarray, ga: np.ndarray, gb: np.ndarray, reps: int, seed: int) -> Interval:
    """AUROC with a bootstrap interval over videos (NaN when one side is empty)."""
    if a.size == 0 or b.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    return bootstrap(auroc_fast, {"x": (a, b)}, ga, gb, reps, seed=seed)["x"]["value"]


def known_map(b: Boxes) -> dict[str, float]:
    r = coco_ap(b.dets["test"], b.gts["test"])
    return {"map": r.ap(), "ap50": r.ap(0.5)}

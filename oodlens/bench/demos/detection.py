"""``oodlens demo detection``: OOD scores on the boxes of a small anchor-free detector trained on the CPU.

Synthetic scenes (scikit-learn digits 0–5 as the known classes on textured backgrounds; digits 6–9 near-OOD,
photo blobs far-OOD) and videos of moving objects. Prints the detector's known-class mAP, the box-level table of
the VOS protocol (bootstrap intervals over images, paired differences against MSP), enhancements of the box
scores, the open-set metrics, and frame-level vs track-level results on video (time to detection at a 5 %
false-alarm rate on ID tracks). The trained weights are cached as safetensors in ``--cache``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from . import _detection_report as rep
from . import _detection_run as run

SUMMARY = "OOD scores on the boxes of a small CPU-trained detector: VOS protocol, open-set metrics, video"


def run_demo(args: Any) -> int:
    t0 = time.perf_counter()
    seed = int(getattr(args, "seed", 0) or 0)
    threads = getattr(args, "threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    progress = not getattr(args, "no_progress", False)
    reps = int(getattr(args, "bootstrap", 200) or 200)
    names = getattr(args, "detectors", None) or list(run.DEFAULT_DETECTORS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    torch.manual_seed(seed)
    data = run.make_data(seed)
    t_data = time.perf_counter() - t0
    model, cached = run.load_or_train(getattr(args, "cache", ".oodlens_cache"), seed, data, progress)
    t_model = time.perf_counter() - t0 - t_data
    with torch.no_grad():
        boxes = run.run_detector(model, data)
        run.score_boxes(boxes, model, names)
    quality = run.known_map(boxes)
    enh = run.add_enhancements(boxes)
    methods = [n for n in names] + enh
    vos = run.vos_table(boxes, methods, reps, seed)
    open_rows = run.open_set_table(boxes, names + enh)
    video_methods = [m for m in ("msp", "energy", "mahalanobis", "particul") if m in boxes.scores]
    video_rows, vinfo = run.video_table(boxes, video_methods, reps, seed)
    total = time.perf_counter() - t0

    lines = [
        "# Detection demo (oodlens)",
        "",
        f"Detector: {'loaded from cache' if cached else 'trained now'} ({t_model:.1f} s); known-class quality on "
        f"{boxes.gts['test'].n} ID test objects: **mAP50 = {quality['ap50']:.3f}**, mAP@[.5:.95] = "
        f"{quality['map']:.3f} (COCO rules).",
        f"Seed {seed}; {reps} bootstrap replicates over images; total {total:.1f} s (data {t_data:.1f} s).",
        "",
        "## Box-level OOD detection — VOS protocol",
        f"Confidence threshold {boxes.threshold:.3f} (F1-optimal on ID validation, averaged over classes, as VOS). "
        "ID samples: boxes on ID test images with confidence ≥ threshold; OOD samples: boxes on OOD images "
        "(every object unknown) with confidence ≥ threshold. FPR95 = fraction of OOD boxes kept at the threshold "
        "whose ID recall is closest to 95 % (ID positive, VOS's convention). Δ: paired bootstrap difference "
        "against MSP (* = interval excludes 0).",
        "",
        rep.markdown(vos, rep.VOS_COLUMNS, diffs=("auroc_diff", "fpr95_diff")),
        "",
        "## Open-set metrics (mixed test images: 35 % of objects unknown)",
        "A box is flagged unknown when its score exceeds the conformal threshold that keeps 95 % of ID-validation "
        "boxes. U-recall: unknown objects found by a flagged box (IoU ≥ 0.5); AP_U: AP50 of flagged boxes as class "
        "'unknown'; A-OSE: known-labelled boxes on unknown objects; WI at 80 % recall (Dhamija et al.).",
        "",
        rep.markdown(open_rows, rep.OPEN_COLUMNS),
        "",
        "## Video: frame-level vs track-level",
        f"{vinfo['boxes']} boxes (confidence ≥ threshold) in {run.SIZES['videos']} videos × {run.SIZES['frames']} frames, {vinfo['tracks']} tracks from the Hungarian IoU tracker "
        f"({vinfo['id_tracks']} on known objects, {vinfo['unknown_tracks']} on unknown objects; "
        f"{vinfo['unknown_objects']} unknown objects enter mid-video). Track AUROC uses each track's maximum "
        f"aggregate; time to detection (TTD) counts frames from an unknown object's first appearance to its first "
        f"box above the threshold that flags {vinfo['false_alarm']:.0%} of ID tracks. AUROC intervals: bootstrap over videos; the flagged share and time to detection count the few unknown objects that enter the videos (no interval).",
        "",
        rep.markdown(video_rows, rep.VIDEO_COLUMNS),
    ]
    text = "\n".join(lines)
    print(text)
    out = getattr(args, "out", None)
    if out:
        fig, caption = _example(boxes, data, names)
        paths = rep.write(out, text, {"vos": vos, "open_set": open_rows, "video": video_rows}, fig, caption)
        print(f"\nWrote {', '.join(str(p) for p in paths)}")
    return 0


def _example(boxes: Any, data: dict[str, Any], names: list[str]) -> tuple[Any, str]:
    """The mixed test image with the most unknown objects, scored by the first feature-based method run."""
    from dataclasses import replace

    from ...calibrate import conformal_threshold

    method = next((m for m in ("mahalanobis", "knn", "vim") if m in boxes.scores), names[0])
    d, gt = boxes.dets["mixed"], boxes.gts["mixed"]
    i = int(torch.bincount(gt.image[gt.labels < 0], minlength=gt.n_images).argmax())
    sel, gsel = (d.image == i) & (d.confidence >= boxes.threshold), gt.image == i
    one = replace(d.subset(sel), image=torch.zeros(int(sel.sum()), dtype=torch.long), n_images=1)
    g = replace(gt.subset(gsel), image=torch.zeros(int(gsel.sum()), dtype=torch.long), n_images=1)
    tau = conformal_threshold(torch.from_numpy(boxes.scores[method]["val"]), acceptance=0.95).value
    fig = rep.example_figure(data["mixed"].images[i], one, g, boxes.scores[method]["mixed"][sel.numpy()], tau, method)
    return fig, (f"Mixed test image {i}: its detections with confidence ≥ the VOS threshold {boxes.threshold:.3f}, "
                 f"coloured by their {method} OOD score; solid boxes score above the threshold keeping 95 % of "
                 f"ID-validation boxes (flagged unknown), dashed ones below. Label: predicted class / matched "
                 f"object known (K), unknown (U) or none (-) at IoU ≥ 0.5.")

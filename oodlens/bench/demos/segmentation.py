"""``oodlens demo segmentation``: a small fully convolutional net trained on the CPU on synthetic scenes (digits
0–5 on textured backgrounds), anomalies pasted in as Fishyscapes does (digits 6–9 = near, photo blobs = far);
pixel OOD scores of the baseline net (MSP, MaxLogit, Entropy, Energy, GEN, SML, Mahalanobis and KNN on a
feature map) and of an AbeT-trained net, with pooled pixel AUROC / AP / FPR95 and SegmentMeIfYouCan component
metrics (sIoU, PPV, mean F1). Weights are cached as safetensors; a second run only scores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...errors import OODLensError
from ...segmentation import PixelScorer, anomaly_labels, evaluate
from ..datasets.scenes import ANOMALY, IGNORE, make_scenes
from . import _segmentation_report as report
from ...training.abet import AbeTHead
from ._segmentation_model import NUM_CLASSES, SceneFCN, fit_head, forward_maps, load_fcn, save_fcn, train_fcn

SUMMARY = "pixel OOD scores of a small FCN on synthetic scenes: pooled pixel and component metrics, baseline vs AbeT"
CACHE_VERSION = "segmentation-v1"
SIZE = 32                 # scene side in pixels
OBJECT_SIZE = (10, 16)    # object side in pixels (digit glyphs upscaled 1.25–2×)
OBJECTS_PER_IMAGE = (1, 2)
N_TRAIN, N_TEST = 1000, 200
EPOCHS, ABET_EPOCHS = 14, 1
HEAD_STEPS = 300          # AbeT head trained alone on the baseline's features before fine-tuning
BATCH, LR = 64, 1e-2
UNKNOWN_RATE = 0.4        # share of test objects that are anomalies (half near, half far)
MIN_SEGMENT = MIN_INSTANCE = 8    # component size limits for 32×32 frames (SegmentMeIfYouCan: 500 / 100 at 2048×1024)
FIT_PIXELS = 20_000       # training pixels for SML / Mahalanobis; KNN keeps a 5 000-pixel bank
CLASS_NAMES = ("background",) + tuple(f"digit {k}" for k in range(6))


def _miou(logits: torch.Tensor, semantic: torch.Tensor) -> tuple[float, list[float]]:
    """Mean IoU over the 7 known classes on pixels whose ground truth is a known class."""
    pred, y = logits.argmax(1), semantic.long()
    valid = y < NUM_CLASSES
    ious = []
    for c in range(NUM_CLASSES):  # 7 classes: a loop over classes of whole-tensor operations
        p, t = (pred == c) & valid, y == c
        ious.append(float((p & t).sum()) / max(1, int((p | t).sum())))
    return sum(ious) / len(ious), ious


def _networks(cache: Path, train, seed: int, progress: bool) -> tuple[SceneFCN, SceneFCN, bool]:
    base_path, abet_path = cache / "fcn.safetensors", cache / "fcn_abet.safetensors"
    if base_path.is_file() and abet_path.is_file():
        return load_fcn(base_path, abet=False), load_fcn(abet_path, abet=True), True
    targets = train.semantic.long()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = SceneFCN()  # seeded initial weights
    base = train_fcn(net, train.images, targets, epochs=EPOCHS, seed=seed, progress=progress,
                     batch_size=BATCH, lr=LR, desc="train FCN (cross-entropy)")
    save_fcn(base, base_path, {"demo": CACHE_VERSION, "head": "conv1x1"})
    # AbeT: the same network with the AbeT head (cosine numerator, learned temperature): the baseline's backbone,
    # the head first trained alone on its features, then everything fine-tuned with cross-entropy on h/T
    abet = SceneFCN(abet=True)
    abet.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("head.")}, strict=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        abet.head = AbeTHead(abet.head.in_features, NUM_CLASSES)
    fit_head(abet.head, forward_maps(base, train.images)[1], targets, steps=HEAD_STEPS, seed=seed + 1)
    abet = train_fcn(abet, train.images, targets, epochs=ABET_EPOCHS, seed=seed + 1, progress=progress,
                     batch_size=BATCH, lr=LR / 5, desc="train FCN (AbeT head)")
    save_fcn(abet, abet_path, {"demo": CACHE_VERSION, "head": "abet"})
    return base, abet, False


def _kind_map(scenes) -> torch.Tensor:
    table = torch.cat([torch.tensor([-1]), scenes.objects.kind])
    return table[scenes.instances.long()]


def _temperature_line(temp: torch.Tensor, semantic: torch.Tensor) -> str:
    parts = []
    for name, mask in (("background", semantic == 0), ("known digits", (semantic > 0) & (semantic < ANOMALY)),
                       ("anomalies", semantic == ANOMALY)):
        if bool(mask.any()):
            parts.append(f"{name} {float(temp[mask].median()):.3f}")
    return ("AbeT's learned temperature T(x), median per pixel group: " + ", ".join(parts) + " (a small T makes "
            "the AbeT energy −log Σ exp(h/T) low, i.e. in-distribution).")


def run_demo(args: Any) -> int:
    seed = int(getattr(args, "seed", 0) or 0)
    progress = not getattr(args, "no_progress", False)
    threads = getattr(args, "threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    cache = Path(getattr(args, "cache", None) or ".oodlens_cache") / f"{CACHE_VERSION}-seed{seed}"
    out = getattr(args, "out", None)
    start = time.perf_counter()

    layout = dict(size=SIZE, object_size=OBJECT_SIZE, objects_per_image=OBJECTS_PER_IMAGE)
    train = make_scenes(N_TRAIN, seed=seed, split="train", **layout)
    test = make_scenes(N_TEST, seed=seed, split="test", unknown_rate=UNKNOWN_RATE, **layout)
    base, abet, cached = _networks(cache, train, seed, progress)
    t_train = time.perf_counter() - start

    fit_imgs = train.images[:160]
    fit_sem = train.semantic[:160].long()
    b_tr_logits, b_tr_feat, b_tr_enc = forward_maps(base, fit_imgs)
    b_logits, b_feat, b_enc = forward_maps(base, test.images)
    a_tr_logits, _, _ = forward_maps(abet, fit_imgs)
    a_logits, a_feat, _ = forward_maps(abet, test.images)
    with torch.inference_mode():
        temp = abet.head.parts(a_feat)[1][:, 0]  # AbeT's learned temperature T(x) per pixel
    mious = {"baseline": _miou(b_logits, test.semantic), "AbeT": _miou(a_logits, test.semantic)}

    size = (SIZE, SIZE)
    maps: dict[str, tuple[str, torch.Tensor]] = {}
    for m in ("msp", "maxlogit", "entropy", "energy", "gen"):
        maps[m] = ("baseline", PixelScorer(m).fit(b_tr_logits[:4]).score(b_logits))
    maps["sml"] = ("baseline", PixelScorer("sml", max_fit_pixels=FIT_PIXELS, seed=seed)
                   .fit(b_tr_logits, labels=fit_sem).score(b_logits))
    maps["mahalanobis (features)"] = ("baseline", PixelScorer("mahalanobis", max_fit_pixels=FIT_PIXELS, seed=seed)
                                      .fit(b_tr_feat, labels=fit_sem).score(b_feat))
    maps["knn (encoder, 1/4)"] = ("baseline", PixelScorer("knn", k=10, max_fit_pixels=5000, seed=seed)
                                  .fit(b_tr_enc).score(b_enc, size=size))
    # AbeT's score is the registered Energy detector (T = 1) on the AbeT head's logits h/T (oodlens.training.abet)
    maps["abet"] = ("AbeT", PixelScorer("energy").fit(a_tr_logits[:4]).score(a_logits))
    maps["msp (AbeT net)"] = ("AbeT", PixelScorer("msp").fit(a_tr_logits[:4]).score(a_logits))

    wanted = getattr(args, "detectors", None)
    if wanted:
        keep = {w.strip() for w in str(wanted).split(",") if w.strip()}
        unknown = keep - {k.split(" ")[0] for k in maps}
        if unknown:
            raise OODLensError(f"unknown score(s) {sorted(unknown)} for this demo; choose from "
                               f"{sorted({k.split(' ')[0] for k in maps})}")
        maps = {k: v for k, v in maps.items() if k.split(" ")[0] in keep}
    labels = anomaly_labels(test.semantic)
    kinds = _kind_map(test)
    near_only, far_only = labels.clone(), labels.clone()
    near_only[(kinds == 2)] = IGNORE
    far_only[(kinds == 1)] = IGNORE
    results: dict[str, dict[str, Any]] = {}
    for name, (net, s) in maps.items():
        r = evaluate(s, labels, min_segment=MIN_SEGMENT, min_instance=MIN_INSTANCE)
        r["network"] = net
        r["auroc_near"] = evaluate(s, near_only, per_image=False, components=False)["pooled"]["auroc"]
        r["auroc_far"] = evaluate(s, far_only, per_image=False, components=False)["pooled"]["auroc"]
        results[name] = r
    rows = report.rows_of(results)
    elapsed = time.perf_counter() - start

    n_anom = int((labels == 1).sum())
    n_valid = int((labels != IGNORE).sum())
    title = (f"segmentation demo: FCN on {N_TRAIN} synthetic {SIZE}×{SIZE} scenes (digits 0–5 + background), "
             f"{N_TEST} test scenes with {n_anom} anomaly pixels of {n_valid} (near: digits 6–9, far: photo blobs)")
    md = "\n\n".join([
        f"# {title}",
        "## Segmentation quality (test pixels of known classes)",
        report.miou_table(mious, CLASS_NAMES),
        "## Pixel OOD scores (values ×100)",
        report.CONVENTION + f" Size limits: predicted components ≥ {MIN_SEGMENT} px, ground-truth instances ≥ "
        f"{MIN_INSTANCE} px. AUROC near / far: pooled, the other kind's anomaly pixels ignored.",
        report.markdown_table(rows),
        _temperature_line(temp, test.semantic),
        f"Networks {'loaded from' if cached else 'trained and cached in'} {cache} ({t_train:.1f} s); "
        f"total {elapsed:.1f} s, seed {seed}.",
    ])
    print(md)
    ranked = sorted(rows, key=lambda r: r["AP"])  # best and worst by pooled AP
    worst, best = ranked[0]["method"], ranked[-1]["method"]
    i = report.pick_frame(test.semantic, kinds)
    fig_dir = Path(out) if out else cache
    fig = report.figure(test.images[i], test.semantic[i],
                        {f"best (AP): {best}": maps[best][1][i], f"worst (AP): {worst}": maps[worst][1][i]},
                        fig_dir / "segmentation.png")
    print(f"\nfigure: {fig}")
    if out:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        (o / "segmentation.md").write_text(md + f"\n\n![scores](segmentation.png)\n", encoding="utf-8")
        report.write_csv(rows, o / "segmentation.csv")
        try:
            from ..html import HtmlReport

            HtmlReport.from_markdown(md).write(o / "segmentation.html")
        except Exception as e:  # the HTML report is optional
            print(f"(no HTML report: {e})")
        print(f"wrote {o / 'segmentation.md'}, {o / 'segmentation.csv'}")
    return 0

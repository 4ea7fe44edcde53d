"""Tables, files and the figure of ``oodlens demo segmentation``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

CONVENTION = ("Pixel metrics are **pooled** over every valid test pixel (anomaly pixels positive; AP = step sum "
              "Σ ΔR·P; FPR95 = share of normal pixels flagged when 95 % of anomaly pixels are); AUROC/img is the "
              "**per-image** mean over frames holding anomaly pixels. Components as SegmentMeIfYouCan at the "
              "pooled pixel-F1-optimal threshold: sIoU over ground-truth instances, PPV over predicted components, "
              "mean F1 over τ ∈ {0.25, 0.30, …, 0.75}.")
COLUMNS = ("method", "network", "AUROC", "AP", "FPR95", "AUROC near", "AUROC far", "AUROC/img", "sIoU", "PPV",
           "mean F1")


def rows_of(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One table row per score: {column: value}."""
    out = []
    for name, r in results.items():
        p, c, im = r["pooled"], r["components"], r["per_image"]
        out.append({"method": name, "network": r["network"], "AUROC": p["auroc"], "AP": p["ap"],
                    "FPR95": p["fpr95"], "AUROC near": r["auroc_near"], "AUROC far": r["auroc_far"],
                    "AUROC/img": im["auroc"], "sIoU": c["siou"], "PPV": c["ppv"], "mean F1": c["f1_mean"]})
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if v != v else f"{100 * v:.1f}"
    return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Values ×100, one decimal; ↑ higher is better except FPR95 ↓."""
    head = [c + (" ↓" if c == "FPR95" else (" ↑" if c not in ("method", "network") else "")) for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def miou_table(mious: Mapping[str, tuple[float, list[float]]], class_names: Sequence[str]) -> str:
    head = ["network", "mIoU (7 known classes)"] + list(class_names)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for net, (m, per) in mious.items():
        lines.append("| " + " | ".join([net, f"{100 * m:.1f}"] + [f"{100 * v:.1f}" for v in per]) + " |")
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})


def pick_frame(semantic: torch.Tensor, kind_map: torch.Tensor) -> int:
    """A test frame with both a near (digit 6–9) and a far (photo) anomaly if any, else the one with most
    anomaly pixels."""
    near = ((kind_map == 1).flatten(1).sum(1) > 0)
    far = ((kind_map == 2).flatten(1).sum(1) > 0)
    both = (near & far).nonzero().flatten()
    if both.numel():
        return int(both[0])
    return int((semantic == 254).flatten(1).sum(1).argmax())


def figure(image: torch.Tensor, semantic: torch.Tensor, maps: Mapping[str, torch.Tensor], path: Path) -> Path:
    """Image, ground truth (known classes coloured, anomalies white) and the given score maps, in one row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 2 + len(maps)
    fig, axes = plt.subplots(1, n, figsize=(3.1 * n, 3.4))
    axes[0].imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[0].set_title("image")
    gt = semantic.float().clone()
    gt[semantic == 254] = 8.0
    gt[semantic == 255] = float("nan")
    axes[1].imshow(gt.numpy(), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    axes[1].set_title("ground truth (anomaly: 8)")
    for ax, (title, m) in zip(axes[2:], maps.items()):
        im = ax.imshow(m.numpy(), cmap="magma")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

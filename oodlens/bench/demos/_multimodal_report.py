"""The multimodal demo's report: the fused-detector table (FPR95 / AUROC per training variant), the per-modality
table, a verdict on what Agree-to-Disagree and NP-Mix changed, and the Markdown around them."""

from __future__ import annotations

from typing import Any, Sequence

#: the FPR the tables show: OOD accepted while 95 % of ID is kept (the MultiOOD papers' FPR95)
FPR = "ood_accepted_at_95_id"


def to_markdown(df: "Any", index: bool = True) -> str:
    """A pipe table of a DataFrame (pandas' own needs the optional ``tabulate``)."""
    cols = list(df.columns)
    names = [n or "" for n in (df.index.names if index else [])]
    header = names + [str(c) for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for key, row in df.iterrows():
        keys = (list(key) if isinstance(key, tuple) else [key]) if index else []
        cells = [str(k) for k in keys] + [_fmt(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.1f}"
    return str(v)



def _wide(df: "Any", res: dict[str, Any], metrics: Sequence[tuple[str, str]]) -> "Any":
    """Rows (test set, detector), columns (training × metric) in percent."""
    import pandas as pd

    wide = df.pivot_table(index=["test_set", "detector"], columns="training", values=[m for m, _ in metrics],
                          sort=False, dropna=False)
    cols = [(m, v) for v in res["variants"] for m, _ in metrics if (m, v) in wide.columns]
    labels = dict(metrics)
    wide = (wide[cols] * 100).round(1)
    wide.columns = [f"{v} {labels[m]}" for m, v in cols]
    order = list(dict.fromkeys(df["test_set"]))
    dets = [d for d in res["detectors"] if d in set(df["detector"])]
    return wide.reindex(pd.MultiIndex.from_product([order, dets], names=["test_set", "detector"]))


def main_table(res: dict[str, Any]) -> "Any":
    """Fused detectors: FPR95 and AUROC per training variant."""
    df = res["results"]
    return _wide(df[df["scope"] == "fused"], res, [(FPR, "FPR95"), ("auroc", "AUROC")])


def modality_table(res: dict[str, Any]) -> "Any":
    """Modality-wise detectors fused by max z: AUROC and attribution share per training variant."""
    df = res["modality_wise"]
    if df.empty:
        return df
    return _wide(df, res, [("auroc", "AUROC"), ("attributed", "attrib%")])


def _mean_delta(df: "Any", kind: str, variant: str, base: str, metric: str) -> float | None:
    a = df[(df["kind"] == kind) & (df["training"] == variant)].set_index(["test_set", "detector"])[metric]
    b = df[(df["kind"] == kind) & (df["training"] == base)].set_index(["test_set", "detector"])[metric]
    if a.empty or b.empty:
        return None
    return float((a - b).mean()) * 100


#: mean AUROC change (points) below which a difference is not called an effect: on this problem the spread
#: between training seeds is about ±1 point (see the README)
CLEAR_EFFECT = 2.0


def verdict(res: dict[str, Any], scope: str = "fused") -> list[str]:
    """Plain statements of whether each training variant helped here (mean change over detectors vs baseline)."""
    df = res["results"] if scope == "fused" else res["modality_wise"]
    if scope == "fused":
        df = df[df["scope"] == "fused"]
    base = res["variants"][0]
    acc = res["accuracy"].set_index("training")["acc_fused"]
    lines = []
    for v in res["variants"][1:]:
        parts, better, worse = [], [], []
        for kind in ("near", "far", "sensor"):
            d_auc = _mean_delta(df, kind, v, base, "auroc")
            d_fpr = _mean_delta(df, kind, v, base, FPR)
            if d_auc is None or d_fpr is None:
                continue
            parts.append(f"{kind} AUROC {d_auc:+.1f} / FPR95 {d_fpr:+.1f}")
            if d_auc >= CLEAR_EFFECT:
                better.append(kind)
            elif d_auc <= -CLEAR_EFFECT:
                worse.append(kind)
        if better or worse:
            word = "; ".join(x for x in (f"helps on {', '.join(better)}" if better else "",
                                         f"hurts on {', '.join(worse)}" if worse else "") if x)
        else:
            word = f"no clear effect (every mean AUROC change is within ±{CLEAR_EFFECT} points)"
        d_acc = (float(acc[v]) - float(acc[base])) * 100
        lines.append(f"{v} vs {base}: {'; '.join(parts)}; ID accuracy {d_acc:+.1f} -> {word}.")
    return lines


WHY = ("How to read this: between training seeds the mean AUROC of a variant moves by about ±1 point on this "
       "problem, so smaller changes are noise. Changes on the fused detectors stay small because (1) as in MultiOOD's "
       "code, the NP-Mix outlier terms see detached embeddings and so train only the per-modality heads, which the "
       "fused detectors reach only indirectly; (2) the near-OOD classes already disagree across modalities by "
       "construction, which the baseline's fused head exploits too; (3) the encoders are small and trained from "
       "scratch, not large pretrained video backbones fine-tuned on real videos. The modality-wise rows gain mostly "
       "because A2D's single-prediction loss trains the per-modality heads, which MultiOOD's baseline leaves "
       "untrained.")


def render(res: dict[str, Any], seconds: float) -> str:
    acc = res["accuracy"].copy()
    acc_cols = [c for c in acc.columns if c.startswith("acc_")]
    acc[acc_cols] = (acc[acc_cols] * 100).round(1)
    acc = acc.rename(columns={c: c[4:] for c in acc_cols})
    out = ["# oodlens demo multimodal: synthetic video + flow, MultiOOD training (seed-controlled)", "",
           "ID accuracy on the ID test split (%; video / flow = the per-modality heads, untrained in the baseline):",
           "", to_markdown(acc[["training", *[c[4:] for c in acc_cols]]], index=False), "",
           "Detectors on the fused logits / concatenated embeddings (as MultiOOD evaluates). FPR95 = OOD accepted "
           "while 95 % of ID is kept (lower is better); AUROC higher is better; both in %.", "",
           to_markdown(main_table(res)), ""]
    mt = modality_table(res)
    if not mt.empty:
        out += ["Modality-wise detectors (one per modality, on its own head / embedding) fused by the max of "
                "per-modality z-scores calibrated on ID validation; attrib% = share of one-sensor-failure rows whose "
                "most unusual modality is the failed one.", "", to_markdown(mt), ""]
    out += ["Verdict (mean change over detectors vs baseline, in points):"]
    out += [f"- fused detectors: {line}" for line in verdict(res, "fused")]
    if not mt.empty:
        out += [f"- modality-wise: {line}" for line in verdict(res, "modality")]
    out += ["", WHY]
    if res["notes"]:
        out += ["", "Notes:"] + [f"- {n}" for n in res["notes"]]
    out += ["", f"Wall time: {seconds:.1f} s"]
    return "\n".join(out)


def attribution_shares(res: dict[str, Any]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """{"training · failed set": {failed modality: share, "another modality": 1 − share}} (mean over detectors) for
    the one-sensor-failure rows, and the modality each row should blame."""
    mw = res["modality_wise"]
    if mw.empty or "attributed" not in mw:
        return {}, {}
    rows = mw[(mw["kind"] == "sensor") & mw["attributed"].notna()]
    shares, expected = {}, {}
    for (training, test_set), g in rows.groupby(["training", "test_set"], sort=False):
        failed = str(test_set).split(" ", 1)[0]
        share = float(g["attributed"].mean())
        label = f"{training} · {test_set}"
        shares[label] = {failed: share, "another modality": max(0.0, 1.0 - share)}
        expected[label] = failed
    return shares, expected


def html_report(res: dict[str, Any], seconds: float, settings: dict[str, Any] | None = None) -> "Any":
    """The demo's full report as an :class:`~oodlens.bench.html.HtmlReport`: accuracy, the fused-detector tables
    (one per test set, best value per column marked), the modality-wise table, an attribution plot, the verdict,
    how to read it, notes and run settings. ``.write(path)`` writes one self-contained HTML file."""
    import platform

    import numpy as np
    import torch

    from ... import __version__
    from ...plots import modality_attribution
    from ..html import HtmlReport

    rep = HtmlReport("oodlens demo multimodal-synthetic",
                     subtitle="synthetic video + flow, MultiOOD training variants (seed-controlled)")
    acc = res["accuracy"].copy()
    acc_cols = [c for c in acc.columns if c.startswith("acc_")]
    acc_t = acc.set_index("training")[acc_cols].rename(columns={c: c[4:] for c in acc_cols})
    rep.section("ID accuracy", "Accuracy on the ID test split (video / flow = the per-modality heads, untrained in "
                "the baseline). Values ×100.")
    rep.table(acc_t, percent=True, best="max", index_name="training")
    main = main_table(res)
    rep.section("Fused detectors", "Detectors on the fused logits / concatenated embeddings (as MultiOOD evaluates). "
                "FPR95 = OOD accepted while 95 % of ID is kept (lower is better); AUROC higher is better; both ×100. "
                "The best detector per column is marked.")
    for test_set in dict.fromkeys(main.index.get_level_values(0)):
        part = main.xs(test_set, level=0)
        best = {c: ("min" if c.endswith("FPR95") else "max") for c in part.columns}
        low = [(d, c) for c in part.columns if c.endswith("AUROC") for d in part.index if part.loc[d, c] < 50]
        rep.table(part, caption=str(test_set), best=best, flag_cells=low, index_name="detector")
    mt = modality_table(res)
    if not mt.empty:
        rep.section("Modality-wise detectors and attribution",
                    "One detector per modality (on its own head / embedding), fused by the max of per-modality "
                    "z-scores calibrated on ID validation; attrib% = share of one-sensor-failure rows whose most "
                    "unusual modality is the failed one.")
        for test_set in dict.fromkeys(mt.index.get_level_values(0)):
            part = mt.xs(test_set, level=0)
            rep.table(part, caption=str(test_set), best={c: "max" for c in part.columns if not part[c].isna().all()},
                      index_name="detector")
        shares, expected = attribution_shares(res)
        if shares:
            rep.figure(modality_attribution(shares, expected=expected),
                       caption="Share of one-sensor-failure inputs blamed on the failed modality (hatched), mean over "
                               "detectors, per training variant")
    rep.section("Verdict", "Mean change over detectors vs the baseline, in points.")
    rep.text("\n".join([f"- fused detectors: {line}" for line in verdict(res, "fused")]
                       + ([f"- modality-wise: {line}" for line in verdict(res, "modality")] if not mt.empty else [])))
    rep.callout(WHY)
    if res["notes"]:
        rep.text("\n".join(f"- {n}" for n in res["notes"]), note=True)
    rep.section("Run settings")
    rep.settings({**(settings or {}), "training variants": ", ".join(res["variants"]),
                  "detectors": ", ".join(res["detectors"]), "wall time": f"{seconds:.1f} s",
                  "versions": f"oodlens {__version__}, torch {torch.__version__}, numpy {np.__version__}, "
                              f"Python {platform.python_version()}"})
    return rep

"""Speed and memory benchmark of every registered detector ("method zoo"), with each method's matrix-product floor.

    python benchmarks/detectors.py                       # standard workload, every registered detector
    python benchmarks/detectors.py --quick               # small sizes: a smoke run
    python benchmarks/detectors.py --methods knn,vim     # a subset
    python benchmarks/detectors.py --imagenet            # fit 200 000 × 2048, 1 000 classes
    python benchmarks/detectors.py --device cuda         # on a GPU

Workloads (seeded; features are rectified Gaussian class clusters, like pooled post-ReLU activations):

* ``standard`` — fit on 50 000 × 512 ``features`` with 100 classes and their ``logits``; score 40 000 (half from the
  training clusters, half from 100 new clusters, so an AUROC column checks the scores make sense); 5 000 + 5 000
  validation rows for detectors with ``validation_needs``. The head is a nearest-class-mean classifier
  (W = s·μ_c, b = −s‖μ_c‖²/2, s = 30/D) plus a small random perturbation, so argmax ≈ label and the median top
  softmax probability is ≈ 0.9 on ID rows, as for a trained network.
* ``layers`` — for detectors that read per-layer maps (``layer1``..``layer4``, e.g. Gram, multi-layer Mahalanobis,
  RankFeat): maps of shape (D/8, 8, 8), (D/4, 4, 4), (D/2, 2, 2), (D, 2, 2), ``features`` = pooled ``layer4`` and
  logits from the same kind of head; a fifth of the standard number of rows (maps are large).

Model-based detectors (``needs_model``, e.g. ODIN) read raw inputs through a network and are skipped, as is any
detector that needs a feature neither workload provides.

Each detector runs in its own subprocess (clean memory accounting; a crash or timeout only costs its row). Fit time
(``fit`` plus ``fit_validation`` where the detector has one) and score time are medians of ``--repeats`` runs; the
method's *floor* — the matrix products no implementation can avoid (table ``FLOORS`` below) — is timed in the same
process on the same data, each score run straight after a floor run, and ``score/floor`` is the median of these
pairs' ratios: on a shared machine the speed of the same product drifts by tens of per cent within a minute, and
pairing keeps that drift out of the ratio. The first score (which also measures memory) is not timed. Peak memory is the growth
of the resident set (VmHWM reset through /proc/self/clear_refs; the CUDA allocator's peak on a GPU) during the first
fit and the first score, also given as a multiple of that phase's input size (training / test features). Workers
run with ``MALLOC_MMAP_THRESHOLD_`` fixed at 1 MiB so that freed tensors go back to the system and are not silently
reused from the heap. A method not in ``FLOORS`` gets "n/a".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _util import PeakMemory, fmt_mib, fmt_seconds, markdown_table, median_time, nbytes, timed  # type: ignore
else:  # pragma: no cover - imported as benchmarks.detectors
    from ._util import PeakMemory, fmt_mib, fmt_seconds, markdown_table, median_time, nbytes, timed

_MARK = "@@RESULT "
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")
STANDARD_NAMES = ("features", "logits")


@dataclass
class Sizes:
    n_fit: int
    n_score: int  # half ID, half OOD
    n_val: int  # ID validation rows (and as many OOD validation rows)
    dim: int
    classes: int
    layer_rows: float = 0.2  # fraction of the rows used by the ``layers`` workload
    repeats: int = 3


PRESETS = {
    "standard": Sizes(n_fit=50_000, n_score=40_000, n_val=5_000, dim=512, classes=100),
    "quick": Sizes(n_fit=4_000, n_score=2_000, n_val=500, dim=64, classes=10),
    "imagenet": Sizes(n_fit=200_000, n_score=50_000, n_val=10_000, dim=2048, classes=1000, layer_rows=0.05, repeats=1),
}


# -- synthetic data ------------------------------------------------------------------------------------------
@dataclass
class Workload:
    kind: str
    train: dict[str, torch.Tensor]
    labels: torch.Tensor
    head: tuple[torch.Tensor, torch.Tensor]
    test: dict[str, torch.Tensor]
    n_test_id: int
    val_id: dict[str, torch.Tensor]
    val_labels: torch.Tensor
    val_ood: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)


def _clusters(centres: torch.Tensor, y: torch.Tensor, g: torch.Generator, chunk: int = 8192) -> torch.Tensor:
    """relu(centres[y] + ε), ε ~ N(0, I), built in row chunks (a low, predictable memory peak)."""
    out = torch.empty((y.shape[0], *centres.shape[1:]), dtype=torch.float32)
    for i in range(0, y.shape[0], chunk):
        yi = y[i:i + chunk]
        out[i:i + chunk] = torch.randn((yi.shape[0], *centres.shape[1:]), generator=g).add_(centres[yi]).clamp_min_(0)
    return out


def _head(means: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A nearest-class-mean linear classifier with a small random perturbation. The scale s = 30/D makes it about
    as confident as a trained network: median top softmax probability ≈ 0.9 on ID rows of the standard workload
    (≈ 0.04 on OOD rows); at s = 10/D it was 0.09, so flat that the softmax-based scores said little."""
    s = 30.0 / means.shape[1]
    w = s * means + 0.1 * s * torch.randn(means.shape, generator=g)
    b = -0.5 * s * (means * means).sum(1)
    return w, b


def _logits(z: torch.Tensor, head: tuple[torch.Tensor, torch.Tensor], chunk: int = 16384) -> torch.Tensor:
    w, b = head
    out = torch.empty(z.shape[0], w.shape[0])
    for i in range(0, z.shape[0], chunk):
        out[i:i + chunk] = torch.addmm(b, z[i:i + chunk], w.T)
    return out


def _layer_shapes(dim: int) -> dict[str, tuple[int, ...]]:
    return {"layer1": (max(dim // 8, 1), 8, 8), "layer2": (max(dim // 4, 1), 4, 4),
            "layer3": (max(dim // 2, 1), 2, 2), "layer4": (dim, 2, 2)}


def make_workload(kind: str, sz: Sizes, seed: int = 0) -> Workload:
    """The seeded synthetic workload: ``standard`` (features + logits) or ``layers`` (maps + features + logits)."""
    g = torch.Generator().manual_seed(seed)
    frac = 1.0 if kind == "standard" else sz.layer_rows
    n_fit, n_half, n_val = (max(int(n * frac), 2 * sz.classes) for n in (sz.n_fit, sz.n_score // 2, sz.n_val))
    # centres ~ 0.5 + N(0, ½): two centres lie about √D apart, the radius of the unit noise, at every D
    shapes = {"features": (sz.dim,)} if kind == "standard" else _layer_shapes(sz.dim)
    centres = {k: 0.5 + 0.5 ** 0.5 * torch.randn(sz.classes, *s, generator=g) for k, s in shapes.items()}
    new_centres = {k: 0.5 + 0.5 ** 0.5 * torch.randn(sz.classes, *s, generator=g) for k, s in shapes.items()}

    def draw(c: dict[str, torch.Tensor], n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        y = torch.randint(0, sz.classes, (n,), generator=g)
        out = {k: _clusters(c[k], y, g) for k in shapes}
        if kind == "layers":
            out["features"] = out["layer4"].mean((2, 3))  # the penultimate = pooled last map, as in a ResNet
        return out, y

    train, labels = draw(centres, n_fit)
    means = torch.zeros(sz.classes, sz.dim).index_add_(0, labels, train["features"])
    means /= torch.bincount(labels, minlength=sz.classes).clamp_min(1)[:, None]
    head = _head(means, g)
    test_id, _ = draw(centres, n_half)
    test_ood, _ = draw(new_centres, n_half)
    val_id, val_labels = draw(centres, n_val)
    val_ood, _ = draw(new_centres, n_val)
    parts = [train, test_id, test_ood, val_id, val_ood]
    for p in parts:
        p["logits"] = _logits(p["features"], head)
    test = {k: torch.cat([test_id[k], test_ood[k]]) for k in test_id}
    return Workload(kind, train, labels, head, test, n_half, val_id, val_labels, val_ood)


# -- floors: the unavoidable matrix products of each method's score ----------------------------------------
def _chunked_bank_product(q: torch.Tensor, bank: torch.Tensor, budget: int = 1 << 25) -> torch.Tensor:
    """q @ bank.T in row blocks of at most ``budget`` numbers, keeping only a per-row reduction (no Q×N matrix)."""
    rows = max(1, budget // max(bank.shape[0], 1))
    out = torch.empty(q.shape[0], device=q.device)
    for i in range(0, q.shape[0], rows):
        out[i:i + rows] = (q[i:i + rows] @ bank.T).amax(1)
    return out


def _rand(*shape: int, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1)).to(like.device)


def floor_softmax(w: Workload) -> Callable[[], Any]:
    lg = w.test["logits"]
    return lambda: torch.logsumexp(lg, 1)


def floor_max(w: Workload) -> Callable[[], Any]:
    lg = w.test["logits"]
    return lambda: lg.amax(1)


def floor_head(w: Workload) -> Callable[[], Any]:
    z, (W, b) = w.test["features"], w.head
    W, b = W.to(z.device), b.to(z.device)
    return lambda: torch.addmm(b, z, W.T)


def floor_whiten_classes(w: Workload, whitenings: int = 1) -> Callable[[], Any]:
    z = w.test["features"]
    d, c = z.shape[1], w.head[0].shape[0]
    mats, means = [_rand(d, d, like=z) for _ in range(whitenings)], _rand(c, d, like=z)

    def run() -> Any:
        zw = [z @ a for a in mats]
        return zw[0] @ means.T
    return run


def floor_projection(w: Workload, with_head: bool = False) -> Callable[[], Any]:
    z = w.test["features"]
    a = _rand(z.shape[1], z.shape[1], like=z)
    head = floor_head(w) if with_head else None
    return lambda: (z @ a, head() if head else None)


def floor_bank(w: Workload, ratio: float = 1.0, with_probs: bool = False) -> Callable[[], Any]:
    z = w.test["features"]
    bank = w.train["features"][: max(1, int(ratio * w.train["features"].shape[0]))].to(z.device)
    p, pb = w.test["logits"], w.train["logits"][: bank.shape[0]].to(z.device)

    def run() -> Any:
        out = _chunked_bank_product(z, bank)
        if with_probs:
            out = out + _chunked_bank_product(p, pb)
        return out
    return run


def floor_class_templates(w: Workload, on: str = "logits") -> Callable[[], Any]:
    x = w.test[on]
    t = _rand(w.head[0].shape[0], x.shape[1], like=x)
    return lambda: (torch.logsumexp(x, 1), x @ t.T)


def floor_predicted_pattern(w: Workload) -> Callable[[], Any]:
    z, lg = w.test["features"], w.test["logits"]
    pat = _rand(w.head[0].shape[0], z.shape[1], like=z)
    return lambda: (z * pat[lg.argmax(1)]).sum(1)


def floor_logits_and_norms(w: Workload) -> Callable[[], Any]:
    z, lg = w.test["features"], w.test["logits"]
    return lambda: (torch.logsumexp(lg, 1), z.abs().sum(1))


#: method -> (what the floor is, how to time it). Add a row when a detector joins the zoo.
FLOORS: dict[str, tuple[str, Callable[[Workload], Callable[[], Any]]]] = {
    **{m: ("logsumexp M×C", floor_softmax)
       for m in ("msp", "energy", "entropy", "gen", "temp_scaled_msp")},
    "maxlogit": ("max M×C", floor_max),
    **{m: ("head M×D×C", floor_head)
       for m in ("react", "ash_b", "ash_p", "ash_s", "dice", "scale", "vra", "fdbd", "nci")},
    "mahalanobis": ("whiten M×D×D + classes M×D×C", floor_whiten_classes),
    "gmm": ("whiten M×D×D + classes M×D×C", floor_whiten_classes),
    "rmds": ("2 whitenings M×D×D + classes M×D×C", lambda w: floor_whiten_classes(w, 2)),
    "residual": ("projection M×D×D", floor_projection),
    "vim": ("projection M×D×D + head M×D×C", lambda w: floor_projection(w, True)),
    "knn": ("bank M×N×D", floor_bank),
    "nnguide": ("1% bank M×(N/100)×D", lambda w: floor_bank(w, 0.01)),
    "relation": ("bank M×N×D + M×N×C", lambda w: floor_bank(w, 1.0, True)),
    "kl_matching": ("logsumexp + templates M×C×C", floor_class_templates),
    "openmax": ("logsumexp + MAVs M×C×C", floor_class_templates),
    "she": ("predicted-class dot M×D", floor_predicted_pattern),
    "gradnorm": ("logsumexp M×C + L1 M×D", floor_logits_and_norms),
}


# -- one detector, in a worker process ---------------------------------------------------------------------
def plan(name: str) -> tuple[str | None, str]:
    """(workload kind or None to skip, reason)."""
    from oodlens.detectors import get_detector

    cls = get_detector(name)
    if cls.needs_model:
        return None, "model-based (reads raw inputs through a network)"
    try:
        req = set(cls().required_features())
    except Exception as e:  # noqa: BLE001 - a detector that cannot be built with defaults
        return None, f"cannot build with defaults: {e}"
    if req <= set(STANDARD_NAMES):
        return "standard", ""
    if req <= set(STANDARD_NAMES) | set(LAYER_NAMES):
        return "layers", ""
    return None, f"needs {sorted(req - set(STANDARD_NAMES) - set(LAYER_NAMES))} (no synthetic workload)"


def run_one(name: str, kind: str, sz: Sizes, device: torch.device, seed: int) -> dict[str, Any]:
    from oodlens.detectors import create
    from oodlens.metrics import auroc

    t0 = time.perf_counter()
    w = make_workload(kind, sz, seed)
    det0 = create(name)
    req = det0.required_features()

    def on(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: d[k].to(device) for k in req}

    train, test, val_id, val_ood = on(w.train), on(w.test), on(w.val_id), on(w.val_ood)
    labels, val_labels = w.labels.to(device), w.val_labels.to(device)
    head = (w.head[0].to(device), w.head[1].to(device))
    gen_s = time.perf_counter() - t0
    mem = PeakMemory(device)
    peaks: dict[str, int] = {}

    def fit() -> Any:
        det = det0.clone().fit(train, labels, head=head)
        if det.validation_needs:
            det.fit_validation(val_id, val_labels, val_ood if det.validation_needs == "id+ood" else None)
        return det

    fit_s, det = median_time(fit, sz.repeats, device, mem.start, lambda: peaks.__setitem__("fit", mem.stop()))
    mem.start()
    scores = det.score(test)  # the first score: its memory peak (timed runs follow, paired with the floor's)
    peaks["score"] = mem.stop()
    row: dict[str, Any] = {
        "method": name, "workload": kind, "fit_s": fit_s,
        "fit_peak": peaks["fit"], "score_peak": peaks["score"], "fit_input": nbytes(list(train.values())),
        "score_input": nbytes(list(test.values())), "exact_memory": mem.exact,
        "auroc": float(auroc(scores[: w.n_test_id].cpu(), scores[w.n_test_id:].cpu())),
        "n_fit": int(labels.shape[0]), "n_score": int(scores.shape[0]), "generate_s": gen_s,
        "validation": det0.validation_needs,
    }
    if name in FLOORS and kind == "standard":
        what, make = FLOORS[name]
        wd = Workload(w.kind, {k: v.to(device) for k, v in w.train.items()}, labels, head,
                      {k: v.to(device) for k, v in w.test.items()}, w.n_test_id, {}, val_labels, {})
        floor = make(wd)
        floor()  # warm-up, untimed
        pairs = [(timed(floor, device), timed(lambda: det.score(test), device)) for _ in range(max(1, sz.repeats))]
        row["floor_what"] = what
        row["floor_s"] = statistics.median(f for f, _ in pairs)
        row["score_s"] = statistics.median(t for _, t in pairs)
        row["ratio"] = statistics.median(t / f for f, t in pairs)
    else:
        row["score_s"] = statistics.median(timed(lambda: det.score(test), device) for _ in range(max(1, sz.repeats)))
    return row


def worker(args: argparse.Namespace) -> None:
    sz = Sizes(**json.loads(args.sizes))
    device = torch.device(args.device)
    try:
        row = run_one(args.worker, args.kind, sz, device, args.seed)
    except Exception as e:  # noqa: BLE001 - reported in the table
        traceback.print_exc(file=sys.stderr)
        row = {"method": args.worker, "workload": args.kind, "error": f"{type(e).__name__}: {e}"}
    print(_MARK + json.dumps(row), flush=True)


# -- driver ------------------------------------------------------------------------------------------------
def launch(name: str, kind: str, sz: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--kind", kind, "--sizes",
           json.dumps(asdict(sz)), "--device", args.device, "--seed", str(args.seed)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"method": name, "workload": kind, "error": f"timed out after {args.timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"method": name, "workload": kind, "error": f"worker exited {proc.returncode}: {tail}"}


def render(rows: list[dict[str, Any]]) -> str:
    headers = ["method", "workload", "fit", "score", "floor (what)", "floor", "score/floor",
               "fit peak (×in)", "score peak (×in)", "AUROC", "note"]
    out = []
    for r in rows:
        if "error" in r or "skip" in r:
            out.append([r["method"], r.get("workload") or "–", "–", "–", "–", "–", "–", "–", "–", "–",
                        r.get("error") or r.get("skip")])
            continue
        floor = r.get("floor_s")
        ratio = f"{r['ratio']:.1f}×" if floor else "n/a"
        note = [f"fit incl. fit_validation ({r['validation']})"] if r.get("validation") else []
        if not r.get("exact_memory", True):
            note.append("memory: ru_maxrss (approx.)")
        out.append([
            r["method"], f"{r['workload']} ({r['n_fit']:,}→{r['n_score']:,})", fmt_seconds(r["fit_s"]),
            fmt_seconds(r["score_s"]), r.get("floor_what", "n/a"), fmt_seconds(floor) if floor else "n/a", ratio,
            f"{fmt_mib(r['fit_peak'])} ({r['fit_peak'] / max(r['fit_input'], 1):.2f}×)",
            f"{fmt_mib(r['score_peak'])} ({r['score_peak'] / max(r['score_input'], 1):.2f}×)",
            f"{r['auroc']:.3f}", "; ".join(note)])
    return markdown_table(headers, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    size.add_argument("--imagenet", action="store_true", help="fit 200 000 × 2048 with 1 000 classes, score 50 000")
    p.add_argument("--methods", default="", help="comma-separated detector names (default: every registered one)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per phase; the median is shown")
    p.add_argument("--device", default="cpu", help="torch device for the features (cpu, cuda, cuda:1 …)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per detector before it is abandoned")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the raw rows to this JSON file")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="standard", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    from oodlens.detectors import available_detectors

    preset = "quick" if args.quick else "imagenet" if args.imagenet else "standard"
    sz = PRESETS[preset]
    if args.repeats is not None:
        if args.repeats < 1:
            p.error("--repeats must be ≥ 1")
        sz = Sizes(**{**asdict(sz), "repeats": args.repeats})
    known = available_detectors()
    names = [m.strip() for m in args.methods.split(",") if m.strip()] or known
    unknown = [m for m in names if m not in known]
    if unknown:
        p.error(f"unknown detector(s) {', '.join(unknown)}; registered: {', '.join(known)}")

    print(f"# oodlens detector benchmark — {preset}\n")
    print(f"fit {sz.n_fit:,} × {sz.dim} ({sz.classes} classes), score {sz.n_score:,} (half ID, half OOD); "
          f"layers workload at {sz.layer_rows:.0%} of the rows; median of {sz.repeats} run(s); device {args.device}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"seed {args.seed}\n", flush=True)
    rows = []
    for name in names:
        kind, why = plan(name)
        if kind is None:
            rows.append({"method": name, "workload": None, "skip": f"skipped: {why}"})
            print(f"- {name}: skipped ({why})", file=sys.stderr, flush=True)
            continue
        t0 = time.perf_counter()
        row = launch(name, kind, sz, args)
        rows.append(row)
        status = row.get("error") or f"fit {fmt_seconds(row['fit_s'])}, score {fmt_seconds(row['score_s'])}"
        print(f"- {name} [{kind}]: {status} ({time.perf_counter() - t0:.0f} s wall)", file=sys.stderr, flush=True)
    print(render(rows))
    print("\nfloor: the score's unavoidable products (M test rows, N training rows, D dims, C classes), timed in the "
          "same process; peaks: resident-set growth during the first fit / score, × the phase's input size.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": preset, "sizes": asdict(sz), "device": args.device, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Adversarial survey of the public API: many bad inputs, each outcome sorted into one class.

    clear    an OODLensError (a ValueError subclass) was raised: the user is told what is wrong
    correct  a result came back and it passed the case's check (finite; equal to a reference where one is known)
    internal any other exception (IndexError, KeyError, TypeError, torch RuntimeError, ...) reached the caller
    silent   a result came back that is wrong: non-finite, different from the reference, or a hyper-parameter
             that cannot be meaningful (NaN, a fractional count) was accepted without a word

    python benchmarks/bad_input_survey.py            # prints the counts per class and per area, lists the
    python benchmarks/bad_input_survey.py -v         # ... and every internal / silent case

Run before and after a robustness change to compare counts. Uses the toy problem of ``oodlens.testing``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import struct
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import oodlens
from oodlens import Features, OODLensError
from oodlens.detectors import Detector, available_detectors, create
from oodlens.testing import fit_on_toy, make_toy_problem, toy_detector, write_toy_benchmark

RESULTS: list[tuple[str, str, str]] = []  # (area, case, outcome)
DETAILS: list[str] = []


def _finite(r: Any) -> bool:
    if isinstance(r, torch.Tensor):
        return bool(torch.isfinite(r.double()).all()) if r.is_floating_point() else True
    if isinstance(r, (float, np.floating)):
        return math.isfinite(float(r))
    if isinstance(r, np.ndarray) and r.dtype.kind == "f":
        return bool(np.isfinite(r).all())
    if isinstance(r, dict):
        return all(_finite(v) for v in r.values())
    return True


def case(area: str, name: str, fn: Callable[[], Any], check: Callable[[Any], bool] | None = None,
         must_fail: bool = False) -> None:
    """Run ``fn``; ``check(result)`` says whether a returned result is right; ``must_fail``: any result is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = fn()
    except OODLensError:
        out = "clear"
    except Exception as e:  # noqa: BLE001
        out = "internal"
        DETAILS.append(f"internal  {area}: {name}: {type(e).__name__}: {str(e)[:140]}")
    else:
        ok = not must_fail and _finite(r)
        if ok and check is not None:
            try:
                ok = bool(check(r))
            except Exception as e:  # noqa: BLE001
                ok = False
                DETAILS.append(f"(check failed: {type(e).__name__}: {e})")
        out = "correct" if ok else "silent"
        if not ok:
            DETAILS.append(f"silent    {area}: {name}")
    RESULTS.append((area, name, out))


def _auroc(a, b) -> float:
    from oodlens.metrics import auroc
    return auroc(a, b)


# ---------------------------------------------------------------------------------------------------------------
def detector_cases(toy, names: list[str]) -> None:
    numeric_bad = {"nan": float("nan"), "inf": float("inf"), "neg": -1, "zero": 0, "frac": 2.5, "str": "x"}
    for name in names:
        base = toy_detector(create(name))
        req = base.required_features()
        f0 = req[0]
        def fit(d, tr=toy.train, y=toy.train_labels):
            d.fit(tr, y, head=toy.head, model=toy.model)
            if d.validation_needs:  # as fit_on_toy, so results compare with the reference
                half = toy.test_id.n // 2
                ood = toy.test_ood.subset(slice(0, half)) if d.validation_needs == "id+ood" else None
                d.fit_validation(toy.test_id.subset(slice(0, half)), toy.test_id_labels[:half], ood)
            return d
        try:
            ref = fit_on_toy(base.clone(), toy)
            s_ref = ref.score(toy.test_id)
        except Exception as e:  # noqa: BLE001
            DETAILS.append(f"reference fit of {name} failed: {e}")
            continue
        area = f"detector:{name}"

        def with_feat(feats, fn):
            return Features({**dict(feats), f0: fn(feats[f0])})

        # fit-time bad inputs
        case(area, "fit NaN", lambda: fit(base.clone(), with_feat(toy.train, lambda t: t.float().index_fill(0, torch.tensor([0]), float("nan")))), must_fail=True)
        case(area, "fit inf", lambda: fit(base.clone(), with_feat(toy.train, lambda t: t.float().index_fill(0, torch.tensor([0]), float("inf")))), must_fail=True)
        case(area, "fit empty", lambda: fit(base.clone(), toy.train.subset(slice(0, 0)), toy.train_labels[:0]), must_fail=True)
        case(area, "fit one row", lambda: fit(base.clone(), toy.train.subset(slice(0, 1)), toy.train_labels[:1]).score(toy.test_id))
        case(area, "fit 1-D feature", lambda: fit(base.clone(), with_feat(toy.train, lambda t: t.reshape(t.shape[0], -1)[:, 0])), must_fail=True)
        case(area, "labels out of range", lambda: fit(base.clone(), toy.train, toy.train_labels + 7).score(toy.test_id))
        case(area, "labels 2**62", lambda: fit(base.clone(), toy.train, torch.where(toy.train_labels == 0, 2 ** 62, toy.train_labels)).score(toy.test_id))
        case(area, "labels fractional", lambda: fit(base.clone(), toy.train, toy.train_labels.double() + 0.5), must_fail=True)
        case(area, "labels wrong length", lambda: fit(base.clone(), toy.train, toy.train_labels[:-1]), must_fail=True)
        case(area, "labels 2-D", lambda: fit(base.clone(), toy.train, toy.train_labels[:, None]), must_fail=True)
        for dt in (torch.float16, torch.float64):
            case(area, f"fit+score {dt}", lambda dt=dt: fit(base.clone(), with_feat(toy.train, lambda t: t.to(dt))).score(with_feat(toy.test_id, lambda t: t.to(dt))),
                 lambda r: abs(_auroc(r, r) - 0.5) < 1e-9)
        case(area, "requires_grad", lambda: fit(base.clone(), with_feat(toy.train, lambda t: t.float().clone().requires_grad_())).score(with_feat(toy.test_id, lambda t: t.float().clone().requires_grad_())),
             lambda r: torch.allclose(r.detach(), s_ref, rtol=1e-4, atol=1e-4))
        case(area, "non-contiguous", lambda: ref.score(with_feat(toy.test_id, lambda t: t.transpose(0, -1).contiguous().transpose(0, -1))),
             lambda r: torch.allclose(r, s_ref, rtol=1e-4, atol=1e-4))
        case(area, "D > N (8 rows)", lambda: fit(base.clone(), toy.train.subset(slice(0, 8)), toy.train_labels[:8]).score(toy.test_id))
        for label, scale in (("huge norms 1e30", 1e30), ("tiny norms 1e-30", 1e-30)):
            scaled = lambda feats, s=scale: Features({k: (v.double() * s if v.is_floating_point() and k in req else v) for k, v in feats.items()})
            case(area, label, lambda scaled=scaled: fit(base.clone(), scaled(toy.train)).score(scaled(toy.test_id)))
        # score-time bad inputs
        case(area, "score empty", lambda: ref.score(toy.test_id.subset(slice(0, 0))), lambda r: r.shape == (0,))
        case(area, "score NaN", lambda: ref.score(with_feat(toy.test_id, lambda t: t.float().index_fill(0, torch.tensor([0]), float("nan")))), must_fail=True)
        case(area, "score 1-D", lambda: ref.score(with_feat(toy.test_id, lambda t: t.reshape(t.shape[0], -1)[:, 0])), must_fail=True)
        case(area, "score list", lambda: ref.score([1, 2, 3]), must_fail=True)
        for bs in (0, -1, 2.5):
            case(area, f"batch_size={bs}", lambda bs=bs: ref.score(toy.test_id, batch_size=bs), must_fail=True)
        case(area, "batch_size=7", lambda: ref.score(toy.test_id, batch_size=7), lambda r: torch.allclose(r, s_ref, rtol=1e-4, atol=1e-4))
        perm = torch.randperm(toy.test_id.n, generator=torch.Generator().manual_seed(3))
        case(area, "row permutation", lambda: ref.score(toy.test_id.subset(perm)), lambda r: torch.allclose(r, s_ref[perm], rtol=1e-4, atol=1e-5))
        # training-row order (detectors with random subsampling may legitimately differ: check AUROC instead)
        tperm = torch.randperm(toy.train.n, generator=torch.Generator().manual_seed(4))
        case(area, "train row order", lambda: fit(base.clone(), toy.train.subset(tperm), toy.train_labels[tperm]).score(toy.test_id),
             lambda r: abs(_auroc(r, ref.score(toy.test_ood)) - _auroc(s_ref, ref.score(toy.test_ood))) < 0.05)
        # hyper-parameters: nonsense values must be refused at build or fit
        import inspect
        annotations = {p.name: str(p.annotation) for p in inspect.signature(type(base).__init__).parameters.values()}
        for p, v0 in base.get_params().items():
            if isinstance(v0, bool) or not isinstance(v0, (int, float)) or v0 is None:
                continue
            is_int = annotations.get(p, "").split("|")[0].strip() == "int"  # an integer count, not a number
            for tag, bad in numeric_bad.items():
                if tag in ("neg", "zero") and p in ("seed",):
                    continue
                if tag in ("neg", "zero"):
                    continue  # may be legitimate for some parameters (an offset, a percentile): not judged
                must = tag in ("nan", "str") or (tag in ("frac", "inf") and is_int)
                if not must:
                    continue
                case(area, f"param {p}={bad!r}", lambda p=p, bad=bad: fit(base.clone(**{p: bad})).score(toy.test_id), must_fail=True)
        # saved-file corruption
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "d.safetensors"
            ref.save(path)
            raw = path.read_bytes()
            hlen = struct.unpack("<Q", raw[:8])[0]
            header = json.loads(raw[8:8 + hlen])

            def write(h: dict | None = None, body: bytes | None = None, name="x.safetensors") -> Path:
                p = Path(tmp) / name
                if body is not None:
                    p.write_bytes(body)
                    return p
                blob = json.dumps(h).encode()
                blob += b" " * (-len(blob) % 8)
                p.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + hlen:])
                return p

            def edited(fn) -> Path:
                h = json.loads(json.dumps(header))
                fn(h)
                return write(h)

            load = Detector.load
            case(area, "load truncated", lambda: load(write(body=raw[: len(raw) - max(1, (len(raw) - 8 - hlen) // 2)])), must_fail=True)
            case(area, "load header garbage", lambda: load(write(body=raw[:8] + b"{" * hlen + raw[8 + hlen:])), must_fail=True)
            case(area, "load empty file", lambda: load(write(body=b"")), must_fail=True)
            case(area, "load huge header len", lambda: load(write(body=struct.pack("<Q", 10 ** 7) + raw[8:])), must_fail=True)
            other = "msp" if name != "msp" else "energy"
            case(area, "load other name", lambda: load(edited(lambda h: h["__metadata__"].update(oodlens_detector=other))).score(toy.test_id), must_fail=True)
            case(area, "load unknown param", lambda: load(edited(lambda h: h["__metadata__"].update(params=json.dumps({**json.loads(h["__metadata__"]["params"]), "bogus": 1})))), must_fail=True)
            params = json.loads(header["__metadata__"]["params"])
            if params:
                first = next(iter(params))
                case(area, "load missing param", lambda: load(edited(lambda h: h["__metadata__"].update(params=json.dumps({k: v for k, v in params.items() if k != first})))), must_fail=True)
                case(area, "load param wrong type", lambda: load(edited(lambda h: h["__metadata__"].update(params=json.dumps({**params, first: [1, {"a": 2}]})))).score(toy.test_id), must_fail=True)
            case(area, "load params not JSON", lambda: load(edited(lambda h: h["__metadata__"].update(params="{oops"))), must_fail=True)
            case(area, "load state wrong type", lambda: load(edited(lambda h: h["__metadata__"].update(state="[1, 2]"))).score(toy.test_id), must_fail=True)
            tensors = [k for k in header if k != "__metadata__"]
            if tensors:
                t0 = tensors[0]
                case(area, "load offsets past end", lambda: load(edited(lambda h: h[t0].update(data_offsets=[h[t0]["data_offsets"][0], h[t0]["data_offsets"][1] + 10 ** 6]))), must_fail=True)
                case(area, "load missing state tensor", lambda: load(edited(lambda h: h.pop(t0))).score(toy.test_id), must_fail=True)

                def reshape(h):
                    sh = h[t0]["shape"]
                    n = int(np.prod(sh)) if sh else 1
                    h[t0]["shape"] = [n] if len(sh) != 1 else [1, n]
                case(area, "load state wrong shape", lambda: load(edited(reshape)).score(toy.test_id), must_fail=True)

                def nan_state() -> Path:
                    from oodlens.safetensors_io import load_tensors, save_tensors
                    ts, meta = load_tensors(path, mmap=False)
                    bad = {k: (v.clone().fill_(float("nan")) if k == t0 and v.is_floating_point() else v) for k, v in ts.items()}
                    if not ts[t0].is_floating_point() or ts[t0].numel() == 0:
                        raise OODLensError("skip")
                    p = Path(tmp) / "nan.safetensors"
                    save_tensors(bad, p, meta)
                    return p
                case(area, "load NaN state", lambda: load(nan_state()).score(toy.test_id), must_fail=True)


# ---------------------------------------------------------------------------------------------------------------
def silent_oracles() -> None:
    """The specific silent-wrong cases named in issue 10, each with an exact oracle."""
    from oodlens.detectors.entropy import softmax_entropy

    g = torch.Generator().manual_seed(0)
    # residual / vim with rank below dim
    basis = torch.randn(3, 16, generator=g, dtype=torch.float64)
    ztr = (torch.randn(300, 3, generator=g, dtype=torch.float64) @ basis).float()
    head = (torch.randn(4, 16, generator=g), torch.zeros(4))
    zood = torch.randn(50, 16, generator=g) * 3
    for name in ("residual", "vim"):
        case("oracle", f"{name} rank 3 < dim 8",
             lambda name=name: create(name, dim=8).fit({"features": ztr}, head=head).score({"features": torch.cat([ztr[:50], zood])}),
             lambda r: _auroc(r[:50], r[50:]) > 0.9)
    # Gaussian detectors, N = 42 < D = 384: ID in a 12-d subspace, OOD = ID test
    # points moved off that span only; the pseudo-inverse ignores those directions (AUROC ~0.5)
    d, n = 384, 42
    span = torch.randn(12, d, generator=g)
    x = torch.randn(n, 12, generator=g) @ span
    y = torch.arange(n) % 3
    idt = torch.randn(200, 12, generator=g) @ span
    q = torch.linalg.qr(span.T).Q
    noise = torch.randn(200, d, generator=g)
    off = idt + (noise - noise @ q @ q.T)  # moved off the span only
    for name in ("mahalanobis", "rmds", "multi_mahalanobis"):
        params = {"layers": ["features"]} if name == "multi_mahalanobis" else {}
        case("oracle", f"{name} N={n} < D={d}: OOD off the training span caught (AUROC > 0.9)",
             lambda name=name, params=params: create(name, **params).fit({"features": x}, y).score({"features": torch.cat([idt, off])}),
             lambda r: _auroc(r[:200], r[200:]) > 0.9)
    # KNN / SHE under huge and tiny norms
    toy = make_toy_problem()
    for name in ("knn", "she"):
        det = toy_detector(create(name)) if name == "she" else create("knn", k=5)
        s_ref = fit_on_toy(det.clone(), toy).score(toy.test_id)
        for scale in (1e30, 1e-30):
            sc = lambda f, s=scale: Features({k: (v * s if k == "features" else v) for k, v in f.items()})
            case("oracle", f"{name} norms x{scale:g}",
                 lambda det=det, sc=sc: det.clone().fit(sc(toy.train), toy.train_labels).score(sc(toy.test_id)),
                 lambda r, s_ref=s_ref, det=det: (torch.argsort(r).equal(torch.argsort(s_ref)) or torch.allclose(r / r.abs().max(), s_ref / s_ref.abs().max(), atol=1e-4)) if det.get_params().get("metric", "cosine") != "inner_product" else True)
    # KNN tie order
    bank = torch.randn(30, 8, generator=g)
    bank = torch.cat([bank, bank[:10]])  # tied rows
    q = torch.randn(20, 8, generator=g)
    perm = torch.randperm(bank.shape[0], generator=g)
    case("oracle", "knn tie order",
         lambda: (create("knn", k=2).fit({"features": bank}).score({"features": q}),
                  create("knn", k=2).fit({"features": bank[perm]}).score({"features": q})),
         lambda r: torch.equal(r[0], r[1]))
    # Entropy precision
    logits = torch.tensor([[0.0, -16.0, -17.0, -18.0], [0.0, -20.0, -21.0, -30.0]])
    exact = softmax_entropy(logits.double())
    case("oracle", "entropy near-certain float32", lambda: create("entropy").fit({"logits": logits}).score({"logits": logits}),
         lambda r: bool(((r.double() - exact).abs() / exact).max() < 1e-3))


# ---------------------------------------------------------------------------------------------------------------
def api_cases() -> None:
    from oodlens import metrics as M
    from oodlens.calibrate import (ConformalCalibrator, benjamini_hochberg, conformal_pvalues, describe_degree,
                                   false_discovery_proportion, pvalue_table)
    from oodlens.calibrate.simulation import simulate_validity
    from oodlens.fusion import ScoreFusion, combine_pvalues

    a, b = np.random.default_rng(0).normal(size=50), np.random.default_rng(1).normal(1, 1, size=40)
    nan = a.copy(); nan[3] = np.nan
    for fname in ("auroc", "aupr_in", "aupr_out", "fpr_at_tpr", "detection_accuracy", "ood_metrics"):
        fn = getattr(M, fname)
        case("metrics", f"{fname} NaN", lambda fn=fn: fn(nan, b), must_fail=True)
        case("metrics", f"{fname} empty", lambda fn=fn: fn([], b), must_fail=True)
        case("metrics", f"{fname} 2-D", lambda fn=fn: fn(a[:, None].repeat(2, 1), b), must_fail=True)
        case("metrics", f"{fname} str", lambda fn=fn: fn("abc", b), must_fail=True)
        case("metrics", f"{fname} int", lambda fn=fn: fn(np.arange(5), np.arange(3, 9)))
        case("metrics", f"{fname} requires_grad", lambda fn=fn: fn(torch.tensor(a, requires_grad=True), torch.tensor(b)))
    case("metrics", "fpr_at_tpr level=1.5", lambda: M.fpr_at_tpr(a, b, 1.5), must_fail=True)
    case("metrics", "fpr_at_tpr level=nan", lambda: M.fpr_at_tpr(a, b, float("nan")), must_fail=True)
    case("metrics", "accuracy NaN", lambda: M.accuracy(np.array([[np.nan, 1.0], [0.0, 1.0]]), np.array([0, 1])), must_fail=True)
    case("metrics", "accuracy float labels", lambda: M.accuracy(np.array([0, 1]), np.array([0.5, 1.0])), must_fail=True)
    case("metrics", "severity_spearman NaN", lambda: M.severity_spearman({1: nan, 2: b}), must_fail=True)
    case("metrics", "auroc_by_severity NaN", lambda: M.auroc_by_severity(a, {1: nan}), must_fail=True)
    case("metrics", "aurc mismatched", lambda: M.aurc(a, a[:10] > 0), must_fail=True)
    case("metrics", "aurc NaN", lambda: M.aurc(nan, a > 0), must_fail=True)
    case("calibrate", "describe_degree count > n", lambda: describe_degree([5, 12], 10), must_fail=True)
    case("calibrate", "describe_degree negative", lambda: describe_degree([-3], 10), must_fail=True)
    case("calibrate", "describe_degree n=0", lambda: describe_degree([0], 0), must_fail=True)
    case("calibrate", "describe_degree fractional", lambda: describe_degree([2.5], 10), must_fail=True)
    case("calibrate", "simes k=2.7", lambda: pvalue_table(10, "simes", 0.1, k=2.7), must_fail=True)
    case("calibrate", "simes k=0", lambda: pvalue_table(10, "simes", 0.1, k=0), must_fail=True)
    case("calibrate", "pvalue_table n=2.5", lambda: pvalue_table(2.5), must_fail=True)
    case("calibrate", "simulate_validity reps=0", lambda: simulate_validity(n=10, m=5, reps=0))
    case("calibrate", "simulate_validity n=0", lambda: simulate_validity(n=0, m=5, reps=3), must_fail=True)
    case("calibrate", "BH mismatched FDP", lambda: false_discovery_proportion([True, False, True], [True, False]), must_fail=True)
    case("calibrate", "FDP float mask", lambda: false_discovery_proportion([0.3, 0.9], [1, 0]), must_fail=True)
    case("calibrate", "BH NaN", lambda: benjamini_hochberg([0.1, np.nan]), must_fail=True)
    case("calibrate", "BH alpha nan", lambda: benjamini_hochberg([0.1, 0.2], alpha=float("nan")), must_fail=True)
    case("calibrate", "BH empty", lambda: benjamini_hochberg([]), must_fail=True)
    case("calibrate", "calibrator empty", lambda: ConformalCalibrator([]), must_fail=True)
    case("calibrate", "calibrator NaN", lambda: ConformalCalibrator(nan), must_fail=True)
    case("calibrate", "calibrator delta=nan", lambda: ConformalCalibrator(a, "dkw", delta=float("nan")).pvalues(b), must_fail=True)
    case("calibrate", "calibrator method bogus", lambda: ConformalCalibrator(a, "bogus"), must_fail=True)
    case("calibrate", "pvalues empty scores", lambda: conformal_pvalues(a, []), lambda r: r.numel() == 0)
    case("calibrate", "threshold acceptance 2", lambda: ConformalCalibrator(a).threshold(2.0), must_fail=True)
    case("calibrate", "threshold acceptance nan", lambda: ConformalCalibrator(a).threshold(float("nan")), must_fail=True)
    case("fusion", "combine NaN", lambda: combine_pvalues([[0.1, np.nan]]), must_fail=True)
    case("fusion", "combine empty", lambda: combine_pvalues(np.zeros((0, 2))), lambda r: r.numel() == 0)
    case("fusion", "combine 0", lambda: combine_pvalues([[0.0, 0.5]]), must_fail=True)
    case("fusion", "ScoreFusion logistic_c=inf", lambda: ScoreFusion("logistic", logistic_c=float("inf")).fit(np.c_[a, a], np.c_[b, b]).score(np.c_[a, a]), must_fail=True)
    case("fusion", "ScoreFusion logistic_c=nan", lambda: ScoreFusion("logistic", logistic_c=float("nan")).fit(np.c_[a, a], np.c_[b, b]).score(np.c_[a, a]), must_fail=True)
    case("fusion", "ScoreFusion empty fit", lambda: ScoreFusion("fisher").fit(np.zeros((0, 2))), must_fail=True)
    case("fusion", "ScoreFusion width mismatch", lambda: ScoreFusion("fisher").fit(np.c_[a, a]).score(np.c_[a, a, a]), must_fail=True)
    case("fusion", "ScoreFusion bogus", lambda: ScoreFusion("bogus"), must_fail=True)
    case("fusion", "ScoreFusion unfitted", lambda: ScoreFusion("fisher").score(np.c_[a, a]), must_fail=True)
    # Features
    f = Features({"features": torch.randn(10, 3), "logits": torch.randn(10, 2)})
    case("features", "subset out of range", lambda: f.subset([0, 20]), must_fail=True)
    case("features", "subset float index", lambda: f.subset([0.5, 1.5]), must_fail=True)
    case("features", "subset 2-D bool", lambda: f.subset(torch.ones(10, 2, dtype=torch.bool)), must_fail=True)
    case("features", "subset str", lambda: f.subset("abc"), must_fail=True)
    case("features", "subset negative", lambda: f.subset([-1]), lambda r: torch.equal(r["features"][0], f["features"][-1]))
    case("features", "subset bool wrong length", lambda: f.subset(torch.ones(4, dtype=torch.bool)), must_fail=True)
    case("features", "non-str name", lambda: Features({1: torch.zeros(3)}), must_fail=True)
    case("features", "ragged N", lambda: Features({"a": torch.zeros(3), "b": torch.zeros(4)}), must_fail=True)
    case("features", "object array", lambda: Features({"a": np.array([object(), 1], dtype=object)}), must_fail=True)
    case("features", "ragged list", lambda: Features({"a": [[1, 2], [3]]}), must_fail=True)
    case("features", "concat different widths", lambda: Features.concat([f, Features({"features": torch.randn(2, 4), "logits": torch.randn(2, 2)})]), must_fail=True)
    case("features", "merge wrong N", lambda: f.merge({"x": torch.zeros(3)}), must_fail=True)
    case("features", "to bogus device", lambda: f.to("bogus"), must_fail=True)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "f.safetensors"
        f.save(p)
        raw = p.read_bytes()
        hlen = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + hlen])
        for mm in (True, False):
            def wr(body: bytes) -> Path:
                q = Path(tmp) / "g.safetensors"
                q.write_bytes(body)
                return q

            def ed(fn) -> Path:
                h = json.loads(json.dumps(header))
                fn(h)
                blob = json.dumps(h).encode()
                blob += b" " * (-len(blob) % 8)
                return wr(struct.pack("<Q", len(blob)) + blob + raw[8 + hlen:])
            tag = "mmap" if mm else "copy"
            case("features", f"load truncated ({tag})", lambda mm=mm: Features.load(wr(raw[:-20]), mmap=mm), must_fail=True)
            case("features", f"load empty file ({tag})", lambda mm=mm: Features.load(wr(b""), mmap=mm), must_fail=True)
            case("features", f"load garbage header ({tag})", lambda mm=mm: Features.load(wr(raw[:8] + b"x" * hlen + raw[8 + hlen:]), mmap=mm), must_fail=True)
            case("features", f"load offsets past end ({tag})", lambda mm=mm: Features.load(ed(lambda h: h["features"].update(data_offsets=[0, 10 ** 6])), mmap=mm), must_fail=True)
            case("features", f"load shape/offset mismatch ({tag})", lambda mm=mm: Features.load(ed(lambda h: h["features"].update(shape=[20, 3])), mmap=mm), must_fail=True)
            case("features", f"load bad dtype ({tag})", lambda mm=mm: Features.load(ed(lambda h: h["features"].update(dtype="Q99")), mmap=mm), must_fail=True)
            case("features", f"load shape not list ({tag})", lambda mm=mm: Features.load(ed(lambda h: h["features"].update(shape="ten")), mmap=mm), must_fail=True)
            case("features", f"load entry not dict ({tag})", lambda mm=mm: Features.load(ed(lambda h: h.update(features=5)), mmap=mm), must_fail=True)
            case("features", f"load header list ({tag})", lambda mm=mm: Features.load(wr(struct.pack("<Q", 8) + b"[1,2,3] " + raw[8 + hlen:]), mmap=mm), must_fail=True)
            case("features", f"load negative offsets ({tag})", lambda mm=mm: Features.load(ed(lambda h: h["features"].update(data_offsets=[-8, 112])), mmap=mm), must_fail=True)
        case("features", "load_metadata edited", lambda: Features.load_metadata(ed(lambda h: h["__metadata__"].update(user="{oops"))), must_fail=True)


def monitor_cases(toy) -> None:
    from oodlens.monitor import Monitor
    with tempfile.TemporaryDirectory() as tmp:
        try:
            dets = [create("msp").fit(toy.train), create("energy").fit(toy.train)]
            mon = Monitor(None, dets, toy.test_id.subset(slice(0, 100)))
        except Exception as e:  # noqa: BLE001
            DETAILS.append(f"monitor build failed: {e}")
            mon = None
        if mon is None:
            return
        folder = Path(tmp) / "mon"
        mon.save(folder)
        manifest = json.loads((folder / "manifest.json").read_text())

        def edit(fn) -> Path:
            m = json.loads(json.dumps(manifest))
            fn(m)
            (folder / "manifest.json").write_text(json.dumps(m))
            return folder

        cases = {
            "missing detectors": lambda m: m.pop("detectors"),
            "detectors not list": lambda m: m.update(detectors=5),
            "detector file outside": lambda m: m["detectors"][0].update(file="../../etc/passwd"),
            "detector file missing": lambda m: m["detectors"][0].update(file="detectors/99.safetensors"),
            "acceptance string": lambda m: m.update(acceptance="high"),
            "acceptance 2": lambda m: m.update(acceptance=2.0),
            "delta nan": lambda m: m.update(delta=float("nan")),
            "batch_size -1": lambda m: m.update(batch_size=-1),
            "pvalues bogus": lambda m: m.update(pvalues="bogus"),
            "layers int": lambda m: m.update(layers=3),
            "version 99": lambda m: m.update(version=99),
        }
        for label, fn in cases.items():
            case("monitor", f"load {label}", lambda fn=fn: Monitor.load(edit(fn)).assess(toy.test_id), must_fail=True)
        (folder / "manifest.json").write_text("{oops")
        case("monitor", "load manifest not JSON", lambda: Monitor.load(folder), must_fail=True)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        (folder / "calibration.safetensors").write_bytes(b"1234")
        case("monitor", "load calibration truncated", lambda: Monitor.load(folder), must_fail=True)


def cli_cases(toy) -> None:
    import subprocess
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = write_toy_benchmark(toy, root)
        variants = {
            "unknown detector param": {**base, "detectors": ["msp", "knn"], "detector_params": {"knn": {"kk": 3}}},
            "wrong feature name": {**base, "detectors": ["msp", "knn"], "detector_params": {"knn": {"features": "feats"}}},
            "unknown detector": {**base, "detectors": ["msp", "nosuch"]},
            "test_sets not list": {**base, "test_sets": 5},
            "split not dict": {**base, "train": 5},
            "bad kind": {**base, "test_sets": [{"name": "ood", "kind": "weird", "features": "ood.safetensors"}]},
            "detectors not list": {**base, "detectors": 5},
            "detector_params not dict": {**base, "detector_params": [1]},
            "labels missing tensor": {**base, "train": {"features": "train.safetensors", "labels": "nolabels"}},
        }
        for label, cfg in variants.items():
            p = root / "cfg.json"
            p.write_text(json.dumps(cfg))
            r = subprocess.run([sys.executable, "-m", "oodlens", "bench", str(p), "--no-progress"], capture_output=True,
                               text=True, timeout=300)
            if r.returncode == 0:
                out = "silent"
                DETAILS.append(f"silent    cli: {label}: exit 0")
            elif "Traceback" in r.stderr:
                out = "internal"
                DETAILS.append(f"internal  cli: {label}: {r.stderr.strip().splitlines()[-1][:140]}")
            else:
                out = "clear"
            RESULTS.append(("cli", label, out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI cases (subprocesses)")
    ap.add_argument("--detectors", default=None, help="comma-separated detector names (default: every registered one)")
    args = ap.parse_args()
    torch.manual_seed(0)
    toy = make_toy_problem()
    names = available_detectors()
    if args.detectors:
        names = [n for n in args.detectors.split(",") if n in names]
    detector_cases(toy, names)
    silent_oracles()
    api_cases()
    monitor_cases(toy)
    if not args.no_cli:
        cli_cases(toy)
    total = collections.Counter(o for _, _, o in RESULTS)
    by_area = collections.defaultdict(collections.Counter)
    for area, _, o in RESULTS:
        by_area[area.split(":")[0]][o] += 1
    print(f"{len(RESULTS)} cases: " + ", ".join(f"{k} {total[k]}" for k in ("clear", "correct", "internal", "silent")))
    for area, c in sorted(by_area.items()):
        print(f"  {area:10s} " + ", ".join(f"{k} {c[k]}" for k in ("clear", "correct", "internal", "silent")))
    if args.verbose:
        print("\n".join(DETAILS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

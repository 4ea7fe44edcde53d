"""``oodlens bench CONFIG``: a benchmark on your own model's features, described by a JSON or TOML file.
``oodlens bench CONFIG --out DIR`` also writes ``report.md``, a self-contained ``report.html`` (tables and plots)
and the tidy ``results.csv`` to ``DIR``.

Paths are relative to the config file. Each split names a safetensors file of features (see
:class:`oodlens.Features`); ``labels`` names the tensor in that file holding class labels (it is taken out of the
features). Example (TOML)::

    name = "resnet18 on CIFAR-10"
    detectors = ["msp", "energy", "mahalanobis", "knn"]    # optional: default = every detector that applies
    covariate_mode = "separate"                            # or "accept" (full-spectrum)
    head = "head.safetensors"                              # optional: tensors "weight" (C, D) and "bias" (C,)

    [train]
    features = "train.safetensors"
    labels = "labels"
    [val]
    features = "val.safetensors"
    labels = "labels"
    [test]
    features = "test.safetensors"
    labels = "labels"
    [val_ood]                                              # optional: enables tuning
    features = "tin.safetensors"

    [[test_sets]]
    name = "CIFAR-100"
    kind = "near"
    features = "cifar100.safetensors"
    [[test_sets]]
    name = "blur-3"
    kind = "covariate"
    group = "blur"
    severity = 3
    features = "cifar10c_blur3.safetensors"
    labels = "labels"

    [detector_params.knn]
    k = 50
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..detectors import create
from ..errors import OODLensError
from ..features import Features
from ..safetensors_io import load_tensors
from .protocol import Benchmark, TestSet
from .report import build_report, write_reports
from .runner import run_benchmark

_ALLOWED = {"name", "train", "val", "test", "val_ood", "test_sets", "head", "detectors", "detector_params",
            "covariate_mode", "objective", "tune"}


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise OODLensError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise OODLensError(f"{path}: invalid TOML: {e}") from None
    else:
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as e:
            raise OODLensError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise OODLensError(f"{path}: the config must be a table / object at the top level")
    unknown = set(cfg) - _ALLOWED
    if unknown:
        raise OODLensError(f"{path}: unknown config field(s) {sorted(unknown)}; allowed: {sorted(_ALLOWED)}")
    for key in ("train", "val", "test", "test_sets"):
        if key not in cfg:
            raise OODLensError(f"{path}: missing required field {key!r}")
    _check_types(cfg, path)
    return cfg


def _check_types(cfg: dict[str, Any], path: Path) -> None:
    """Each field's JSON/TOML type, so that a wrong one is one clear line rather than an error deep inside."""
    def need(ok: bool, field: str, want: str) -> None:
        if not ok:
            raise OODLensError(f"{path}: field {field!r} must be {want}, got {cfg.get(field)!r}")

    split = lambda v: isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("features"), str))  # noqa: E731
    for key in ("train", "val", "test"):
        need(split(cfg[key]), key, "a features file name or a table with 'features' (and 'labels')")
    if cfg.get("val_ood") is not None:
        need(split(cfg["val_ood"]), "val_ood", "a features file name or a table with 'features'")
    need(isinstance(cfg["test_sets"], list) and bool(cfg["test_sets"]) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("kind"), str)
        and isinstance(t.get("features"), str) for t in cfg["test_sets"]),
        "test_sets", "a non-empty list of tables with 'name', 'kind' and 'features'")
    if "detectors" in cfg:
        need(isinstance(cfg["detectors"], list) and all(isinstance(d, str) for d in cfg["detectors"]),
             "detectors", "a list of detector names")
    if "detector_params" in cfg:
        need(isinstance(cfg["detector_params"], dict) and all(isinstance(v, dict) for v in cfg["detector_params"].values()),
             "detector_params", "a table of tables (detector name -> hyper-parameters)")
    for key, kind, want in (("name", str, "a string"), ("covariate_mode", str, "a string"),
                            ("objective", str, "a string"), ("tune", bool, "true or false")):
        if key in cfg:
            need(isinstance(cfg[key], kind), key, want)
    if cfg.get("head") is not None:
        need(isinstance(cfg["head"], str) or (isinstance(cfg["head"], dict) and isinstance(cfg["head"].get("file"), str)),
             "head", "a file name or a table with 'file' (and 'weight', 'bias')")


def _split(entry: Any, root: Path, where: str) -> tuple[Features, torch.Tensor | None]:
    if isinstance(entry, str):
        entry = {"features": entry}
    if not isinstance(entry, dict) or "features" not in entry:
        raise OODLensError(f"{where}: needs a 'features' file")
    file = root / entry["features"]
    if not file.is_file():
        raise OODLensError(f"{where}: features file not found: {file}")
    feats = Features.load(file)
    labels = None
    if entry.get("labels"):
        key = entry["labels"]
        if key not in feats:
            raise OODLensError(f"{where}: no tensor {key!r} for labels in {file} (has: {', '.join(feats)})")
        labels = feats[key]
        feats = Features({k: v for k, v in feats.items() if k != key})
    return feats, labels


def benchmark_from_config(cfg: dict[str, Any], root: str | Path = ".") -> Benchmark:
    """Build a :class:`Benchmark` from a parsed config; paths resolve against ``root``."""
    root = Path(root)
    splits = {k: _split(cfg[k], root, k) for k in ("train", "val", "test")}
    val_ood = _split(cfg["val_ood"], root, "val_ood")[0] if cfg.get("val_ood") else None
    test_sets = []
    for i, t in enumerate(cfg["test_sets"]):
        where = f"test_sets[{i}]"
        if not isinstance(t, dict) or "name" not in t or "kind" not in t:
            raise OODLensError(f"{where}: needs 'name', 'kind' and 'features'")
        feats, labels = _split(t, root, f"{where} ({t['name']})")
        test_sets.append(TestSet(t["name"], feats, t["kind"], labels, t.get("group"), t.get("severity")))
    head = None
    if cfg.get("head"):
        h = cfg["head"] if isinstance(cfg["head"], dict) else {"file": cfg["head"]}
        tensors, _ = load_tensors(root / h["file"], mmap=False)
        w, b = h.get("weight", "weight"), h.get("bias", "bias")
        if w not in tensors:
            raise OODLensError(f"head: no tensor {w!r} in {h['file']} (has: {', '.join(tensors)})")
        head = (tensors[w], tensors.get(b))
    return Benchmark(
        name=cfg.get("name", "benchmark"), train=splits["train"][0], train_labels=splits["train"][1],
        val=splits["val"][0], val_labels=splits["val"][1], test=splits["test"][0], test_labels=splits["test"][1],
        test_sets=test_sets, val_ood=val_ood, head=head, covariate_mode=cfg.get("covariate_mode", "separate"),
        detector_params=cfg.get("detector_params", {}),
    )


def run_config(args: Any) -> int:
    """Entry point of ``oodlens bench CONFIG``."""
    cfg = read_config(args.config)
    bench = benchmark_from_config(cfg, Path(args.config).parent)
    detectors = [d.strip() for d in args.detectors.split(",")] if args.detectors else cfg.get("detectors")
    if detectors is not None:
        for d in detectors:  # unknown names and hyper-parameters: one clear line before any work
            create(d, **bench.detector_params.get(d, {}))
    result = run_benchmark(bench, detectors, tune_params=cfg.get("tune", True), objective=cfg.get("objective", "auroc"),
                           progress=not args.no_progress)
    out = getattr(args, "out", None)
    report = build_report(result, settings={"config": str(args.config)}, calibration=True, figures=bool(out))
    print(report.to_markdown(level=2))
    if out:
        paths = write_reports(result, out, report=report)
        print("Wrote " + ", ".join(str(p) for p in paths))
    for label, why in result.skipped.items():
        print(f"oodlens: detector {label!r} could not run: {why}", file=sys.stderr)
    if detectors is not None and result.skipped:  # a detector the user asked for is missing from the results
        print(f"oodlens: error: {len(result.skipped)} requested detector(s) could not run: "
              f"{', '.join(result.skipped)}", file=sys.stderr)
        return 1
    return 0

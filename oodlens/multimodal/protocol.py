"""MultiOOD protocol: ID train / validation / test, near-OOD (held-out classes of the same dataset) and far-OOD
(other datasets), evaluated from per-modality feature files; plus readers for MultiOOD's split lists.

**Split lists** (``HMDB-rgb-flow/splits/`` in github.com/donghao51/MultiOOD): text files with one
``<relative video path> <integer label>`` per line. Kinetics class folders contain spaces, so the label is the
last whitespace-separated token (their ``rsplit(' ', 1)``), which :func:`read_split_list` does for every file.
File names (see :func:`multiood_split_files`)::

    near-OOD:  {D}_train_near_ood.txt  {D}_val_near_ood.txt  {D}_test_near_ood.txt   ID classes
               {D}_eval_near_ood.txt                                                 the held-out (OOD) classes
    far-OOD:   {D}_train.txt  {D}_val.txt  {D}_test.txt                              all classes of D as ID
               ID_{D}_OOD_{O}.txt                                                    dataset O as OOD

with D ∈ {HMDB, UCF, Kinetics} (near-OOD: HMDB 25 ID classes, UCF 50, Kinetics 129; far-OOD: HMDB 43,
Kinetics 229). HAC far-OOD lists are CSV (``HAC_{train,test}_only_{human,animal,cartoon}.csv``, rows
``video,label``, all used as OOD): :func:`read_hac_split`. EPIC-Kitchens splits ship as pickled DataFrames, which
this library does not read (no pickle); convert them to the text format first. Flow files are found from the
video path as their dataloader does (:func:`flow_stem`): ``<root>/flow/<stem>_flow_x.mp4`` and ``_flow_y.mp4``.

**Evaluation** follows their ``eval_video_flow_{near,far}_ood.py``: detectors are fitted on ID *training*
features (Kinetics: validation) and score ID *test* (negatives) against each OOD set (positives); logit-based
detectors read the fused logits and feature-based ones the concatenated embeddings (``logits`` / ``features``).
:func:`evaluate` also runs modality-wise detectors fused by calibrated per-modality z-scores
(:mod:`oodlens.multimodal.modality_fusion`), calibrated on ID validation. FPR is reported as
``ood_accepted_at_95_id`` — the fraction of OOD accepted while 95 % of ID is kept (MultiOOD's FPR@95).

Reproducing the paper with your own extractor (see ``oodlens/multimodal/README.md``)::

    files = multiood_split_files("MultiOOD/HMDB-rgb-flow/splits", "HMDB", setting="near")
    paths, labels = read_split_list(files["train"])          # extract video / flow embeddings for these paths
    ...                                                       # save one Features file per split (and modality)
    bench = Benchmark.from_files({"train": ..., "val": ..., "test": ..., "ood": {"HMDB near": ...}}, ...)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from ..detectors import create, get_detector
from ..errors import OODLensError
from ..features import Features
from ..metrics import accuracy, ood_metrics
from .modality_fusion import ModalityWiseDetector

#: ID class counts of MultiOOD's benchmarks (from their training scripts)
NUM_CLASSES = {("HMDB", "near"): 25, ("UCF", "near"): 50, ("Kinetics", "near"): 129, ("EPIC", "near"): 4,
               ("HMDB", "far"): 43, ("Kinetics", "far"): 229}


# -- split lists ----------------------------------------------------------------------------------------------
def read_split_list(path: str | os.PathLike) -> tuple[list[str], torch.Tensor]:
    """Read a MultiOOD split list: (relative paths, int64 labels). Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise OODLensError(f"no such split list: {path}")
    samples, labels = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise OODLensError(f"{path}:{lineno}: expected '<path> <label>', got {line!r}")
            try:
                labels.append(int(parts[1]))
            except ValueError:
                raise OODLensError(f"{path}:{lineno}: label {parts[1]!r} is not an integer") from None
            samples.append(parts[0])
    if not samples:
        raise OODLensError(f"split list {path} is empty")
    return samples, torch.tensor(labels, dtype=torch.long)


def read_hac_split(path: str | os.PathLike, domain: str | None = None) -> tuple[list[str], torch.Tensor]:
    """Read a HAC CSV split (``video,label`` rows); with ``domain`` the paths are prefixed ``<domain>/``."""
    path = Path(path)
    if not path.is_file():
        raise OODLensError(f"no such split list: {path}")
    samples, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) < 2:
                raise OODLensError(f"{path}:{lineno}: expected 'video,label', got {row!r}")
            samples.append(f"{domain}/{row[0]}" if domain else row[0])
            labels.append(int(row[1]))
    return samples, torch.tensor(labels, dtype=torch.long)


def multiood_split_files(splits_dir: str | os.PathLike, dataset: str, setting: str = "near",
                         ood_datasets: Sequence[str] = ()) -> dict[str, Path]:
    """Paths of MultiOOD's split lists: keys ``train``, ``val``, ``test`` and, for near-OOD, ``near:<D>``; for
    far-OOD, ``far:<O>`` for each of ``ood_datasets``. Missing files raise, naming the file."""
    root = Path(splits_dir)
    if setting == "near":
        files = {s: root / f"{dataset}_{s}_near_ood.txt" for s in ("train", "val", "test")}
        files[f"near:{dataset}"] = root / f"{dataset}_eval_near_ood.txt"
    elif setting == "far":
        files = {s: root / f"{dataset}_{s}.txt" for s in ("train", "val", "test")}
        for o in ood_datasets:
            files[f"far:{o}"] = root / f"ID_{dataset}_OOD_{o}.txt"
    else:
        raise OODLensError(f"setting must be 'near' or 'far', got {setting!r}")
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise OODLensError(f"MultiOOD split lists not found: {', '.join(missing)}")
    return files


def flow_stem(sample: str, dataset: str) -> str:
    """The optical-flow file stem of a video, as MultiOOD's dataloader derives it: HMDB ``class/name.avi`` →
    ``name``; UCF ``name.avi`` → ``name``; Kinetics and HAC: the path without its 4-character extension."""
    if dataset == "HMDB":
        return sample[sample.index("/") + 1:sample.index(".")]
    if dataset == "UCF":
        return sample[:sample.index(".")]
    if dataset in ("Kinetics", "HAC"):
        return sample[:-4]
    raise OODLensError(f"unknown dataset {dataset!r}; flow stems are defined for HMDB, UCF, Kinetics, HAC")


# -- feature files ----------------------------------------------------------------------------------------------
def load_modal_features(spec: str | os.PathLike | Mapping[str, str | os.PathLike] | Features) -> Features:
    """Features from one file with prefixed names (``video/features``, ...) or a mapping modality → file whose
    names get the prefix (``{"video": "video_train.safetensors", "flow": ...}``)."""
    if isinstance(spec, Features):
        return spec
    if isinstance(spec, Mapping):
        out: dict[str, torch.Tensor] = {}
        for m, p in spec.items():
            out.update(Features.load(p).with_prefix(m))
        return Features(out)
    return Features.load(spec)


def modalities_of(feats: Features) -> list[str]:
    """Prefixes present in a Features (``video/features`` → ``video``), in order of first appearance."""
    seen: dict[str, None] = {}
    for k in feats:
        if "/" in k:
            seen.setdefault(k.split("/", 1)[0], None)
    return list(seen)


# -- benchmark ----------------------------------------------------------------------------------------------------
@dataclass
class Benchmark:
    """ID train / val / test features with labels and named OOD test sets tagged ``near``, ``far`` or
    ``sensor`` (one modality failed). Features hold ``logits``/``features`` (fused) and ``<m>/...`` names."""

    train: Features
    train_labels: torch.Tensor
    val: Features
    val_labels: torch.Tensor
    test: Features
    test_labels: torch.Tensor
    ood: dict[str, Features]
    kinds: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.ood:
            self.kinds.setdefault(name, "ood")
        bad = {k: v for k, v in self.kinds.items() if k not in self.ood}
        if bad:
            raise OODLensError(f"kinds name test sets that do not exist: {sorted(bad)}")

    @classmethod
    def from_files(cls, files: Mapping[str, Any], labels: Mapping[str, Any], kinds: Mapping[str, str] | None = None) -> "Benchmark":
        """``files``: ``train``, ``val``, ``test`` → a file spec (see :func:`load_modal_features`), ``ood`` →
        {name: spec}; ``labels``: ``train``, ``val``, ``test`` → label arrays or split-list paths."""
        def lab(v: Any) -> torch.Tensor:
            return read_split_list(v)[1] if isinstance(v, (str, os.PathLike)) else torch.as_tensor(v).long()

        return cls(load_modal_features(files["train"]), lab(labels["train"]),
                   load_modal_features(files["val"]), lab(labels["val"]),
                   load_modal_features(files["test"]), lab(labels["test"]),
                   {k: load_modal_features(v) for k, v in files.get("ood", {}).items()}, dict(kinds or {}))

    @property
    def modalities(self) -> list[str]:
        return modalities_of(self.train)


def _fit_detector(name: str, bench: Benchmark, heads: Mapping[str, Any] | None):
    det = create(name)
    cls = type(det)
    if cls.needs_model:
        return None, "needs the model itself"
    head = (heads or {}).get("fused")
    if cls.needs_head and head is None:
        return None, "needs the fused head (pass heads=model.all_heads())"
    det.fit(bench.train, bench.train_labels, head=head)
    if cls.validation_needs:
        det.fit_validation(bench.val, bench.val_labels)
    return det, ""


def evaluate(bench: Benchmark, detectors: Iterable[str], heads: Mapping[str, Any] | None = None,
             fusion: str | None = "max_z", level: float = 0.95,
             on_skip: Callable[[str], None] | None = None) -> tuple["Any", dict[str, float]]:
    """Score every detector on every OOD set. Returns (tidy DataFrame, ID accuracies).

    Rows: ``detector``, ``scope`` (``fused`` = the detector on the fused logits / concatenated features;
    ``modalities:<rule>`` = one detector per modality fused by ``fusion``), ``test_set``, ``kind`` and every
    metric of :func:`oodlens.metrics.ood_metrics`. Detectors that cannot run here are skipped and reported
    through ``on_skip``. ID accuracies: ``fused`` and each modality's head, on the ID test split.
    """
    import pandas as pd

    rows = []
    mods = bench.modalities
    note = on_skip or (lambda msg: None)
    for name in detectors:
        get_detector(name)
        det, why = _fit_detector(name, bench, heads)
        if det is None:
            note(f"{name}: skipped ({why})")
            continue
        s_id = det.score(bench.test)
        for test_name, feats in bench.ood.items():
            m = ood_metrics(s_id, det.score(feats), level)
            rows.append({"detector": name, "scope": "fused", "test_set": test_name, "kind": bench.kinds[test_name], **m})
        if fusion and len(mods) >= 2:
            probe = create(name)
            if probe.needs_head and not all(m in (heads or {}) for m in mods):
                note(f"{name}: modality-wise scores skipped (needs each modality's head)")
                continue
            mw = ModalityWiseDetector(name, mods, rule=fusion)
            mw.fit(bench.train, bench.train_labels, heads=heads).calibrate(bench.val)
            s_id = mw.score(bench.test)
            for test_name, feats in bench.ood.items():
                m = ood_metrics(s_id, mw.score(feats), level)
                rows.append({"detector": name, "scope": f"modalities:{fusion}", "test_set": test_name,
                             "kind": bench.kinds[test_name], **m})
    acc = {"fused": accuracy(bench.test["logits"], bench.test_labels)}
    for m in mods:
        if f"{m}/logits" in bench.test:
            acc[m] = accuracy(bench.test[f"{m}/logits"], bench.test_labels)
    return pd.DataFrame(rows), acc

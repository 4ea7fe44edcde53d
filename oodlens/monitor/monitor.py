"""Monitor: wrap fitted detector(s) — and optionally the model — to answer, for each input, the model's prediction,
the OOD score, a conformal p-value, the OOD degree (1 − p) in plain language, and a flag with a known false-alarm
rate; screen whole batches with FDR control; save and load without pickle.

>>> mon = Monitor(model, detector, calibration=x_cal, layers={"avgpool": "features"}, acceptance=0.95)
>>> mon.assess(x_batch)              # DataFrame: prediction, score, p_value, degree, flag, reading
>>> mon.screen(x_batch, alpha=0.1)   # + column 'screen_flag': Benjamini–Hochberg at FDR 10 %
>>> mon.save("monitor/"); Monitor.load("monitor/", model=model)

Guarantees (ID calibration data held out from fitting, exchangeable / i.i.d. with ID test inputs):

* ``flag = p ≤ α`` with ``α = 1 − acceptance``. With ``pvalues="marginal"`` an ID input is flagged with probability
  ≤ α (on average over calibration draws); with ``"simes"`` or ``"dkw"`` the false-alarm rate is ≤ α with
  probability ≥ 1 − δ over the calibration draw (:mod:`oodlens.calibrate.pvalues`). The flag is exactly
  ``score > threshold`` for a score threshold reported in :attr:`thresholds`.
* Several detectors: each gives a p-value; they are merged with ``combine`` (default Bonferroni, valid under any
  dependence; see :mod:`oodlens.fusion.rules`). For one calibrated score from several detectors, use a ``fused``
  detector instead.
* Across sites and scanners: ``Monitor(..., groups=cal_groups)`` calibrates within each acquisition group
  (Mondrian: ``P(p ≤ α | group) ≤ α``; unseen and small groups pooled and named) and ``adapt(site, unlabelled)``
  gives a new site weighted conformal p-values (valid under covariate shift for the true density ratio; here
  estimated, see :mod:`oodlens.calibrate.weighted`); ``bank=`` adds the nearest training examples to each reading.
* ``screen``: BH on one detector's marginal p-values controls the FDR at α (conformal p-values are PRDS); on
  Simes/DKW p-values, which are independent given the calibration set, it controls the FDR conditionally on the
  calibration set with probability ≥ 1 − δ. On merged p-values of several detectors it has no proof (a heuristic).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..calibrate import ConformalCalibrator, check_disjoint, describe_degree, rows_in_hashes, screen
from ..detectors.base import Detector
from ..errors import NotFittedError, OODLensError
from ..extract import extract
from ..features import Features
from ..calibrate.explain import FeatureBank, drivers, explain_table
from ..calibrate.groups import GroupCalibrator, group_names
from ..calibrate.weighted import DomainWeights, WeightedCalibrator
from ..fusion import Fused, combine_pvalues
from ..fusion.rules import P_RULES, member_pvalues, stack_scores
from ..safetensors_io import load_tensors, save_tensors
from .files import FORMAT, calibration_scores, inside, read_manifest



def _named_detectors(detectors: Any) -> dict[str, Detector]:
    if isinstance(detectors, Detector):
        detectors = [detectors]
    if isinstance(detectors, Mapping):
        items = [(str(k), d) for k, d in detectors.items()]
    elif isinstance(detectors, Sequence) and not isinstance(detectors, str):
        items, taken = [], set()
        for d in detectors:
            label, i = getattr(d, "name", "") or type(d).__name__, 2
            base = label
            while label in taken:
                label, i = f"{base}#{i}", i + 1
            taken.add(label)
            items.append((label, d))
    else:
        raise OODLensError(f"detectors must be a Detector, a list of them or a dict name -> Detector, "
                           f"got {type(detectors).__name__}")
    if not items:
        raise OODLensError("the monitor needs at least one detector")
    for label, d in items:
        if not isinstance(d, Detector):
            raise OODLensError(f"detector {label!r} is a {type(d).__name__}, not an oodlens Detector")
        if not d.is_fitted:
            raise NotFittedError(f"detector {label!r} is not fitted; fit it (on training data) before the monitor")
    return dict(items)


class Monitor:
    """Calibrated OOD monitoring of a model's inputs. See the module docstring for the guarantees.

    ``model``: a torch model or None (then every input must be :class:`Features`). ``detectors``: fitted
    detector(s). ``calibration``: ID data held out from fitting — Features, or raw inputs the model is run on
    (``layers``/``pool`` as in :func:`oodlens.extract.extract`). ``fit_data``: optionally the fitting features,
    to refuse a calibration set that shares rows with them (detectors that remember hashes of their training
    rows, like ``fused``, are checked without it).
    """

    def __init__(self, model: nn.Module | None, detectors: Any, calibration: Any, *,
                 layers: Sequence[str] | Mapping[str, str] | None = None, pool: str = "avg",
                 acceptance: float = 0.95, pvalues: str = "marginal", delta: float = 0.1,
                 combine: str = "bonferroni", fit_data: Any = None, batch_size: int = 256,
                 groups: Any = None, min_group: int = 40, bank: Any = None, bank_feature: str = "features",
                 neighbours: int = 3):
        self._configure(model, detectors, layers, pool, acceptance, pvalues, delta, combine, batch_size)
        cal = self.features(calibration)
        if fit_data is not None:
            fit = fit_data if isinstance(fit_data, (Features, Mapping)) else self.features(fit_data)
            check_disjoint(fit, cal, "fitting data", "calibration data")
        for label, det in self.detectors.items():
            hashes = getattr(det, "train_hashes_", None)
            if hashes is not None:
                hits = rows_in_hashes(hashes, {k: cal[k] for k in det.required_features()})
                if len(hits):
                    raise OODLensError(f"calibration data overlaps detector {label!r}'s training data: {len(hits)} "
                                       f"of {cal.n} rows are identical to training rows; calibrate on held-out data")
        cal_scores = {k: d.score(cal, batch_size=batch_size) for k, d in self.detectors.items()}
        self._calibrate(cal_scores)
        self._explainers(cal_scores, groups, min_group, bank, bank_feature, neighbours)
        # for adapt(): calibration scores in calibration order, beside the features the domain classifier reads
        self._ordered = {k: v.detach().double().cpu() for k, v in cal_scores.items()}
        self.domain_features = cal[bank_feature].detach().cpu() if bank_feature in cal else None
        self.sites: dict[str, DomainWeights] = {}

    def adapt(self, site: str, unlabelled: Any, folds: int = 5, clip: float = 0.01, c: float = 1.0,
              components: int | None = None, seed: int = 0) -> DomainWeights:
        """Prepare weighted conformal p-values for a new ``site`` from its *unlabelled* inputs (Tibshirani et al.,
        NeurIPS 2019; :class:`~oodlens.calibrate.WeightedCalibrator`): a cross-fitted, clipped domain classifier on
        the ``bank_feature`` features of the calibration data vs ``unlabelled``. Afterwards ``assess(batch,
        groups=site)`` uses the weighted p-values for that site's rows. Returns the fitted weights (``.ess_``:
        effective calibration sample size; ``.domain_auroc_``: how separable the site is)."""
        if self.domain_features is None or self._ordered is None:
            raise OODLensError(f"adapt needs the calibration features {self.bank_feature!r} (not in the calibration "
                               "data, or this monitor was saved without them): build the Monitor with them")
        name = str(site)
        group_names([name], 1, "site")
        x = self.features(unlabelled)[self.bank_feature]
        self.sites[name] = DomainWeights(folds, clip, c, seed=seed, components=components).fit(
            self.domain_features, x)
        return self.sites[name]

    def _explainers(self, cal_scores: Mapping[str, Any], groups: Any, min_group: int, bank: Any, bank_feature: str,
                    neighbours: int) -> None:
        """Group-conditional calibrators (when calibration ``groups`` are given) and the training feature bank."""
        self.group_calibrators = None if groups is None else {
            k: GroupCalibrator(s, groups, self.pvalue_method, self.delta, min_size=min_group)
            for k, s in cal_scores.items()}
        self.cal_groups = None if groups is None else group_names(groups, len(next(iter(cal_scores.values()))))
        self.min_group, self.bank_feature = int(min_group), bank_feature
        if bank is not None and not isinstance(bank, torch.Tensor):
            bank = self.features(bank)[bank_feature] if isinstance(bank, (Features, Mapping)) else bank
        self.bank = None if bank is None else FeatureBank(bank, k=neighbours)

    def _configure(self, model, detectors, layers, pool, acceptance, pvalues, delta, combine, batch_size) -> None:
        if model is not None and not isinstance(model, nn.Module):
            raise OODLensError(f"model must be a torch nn.Module or None, got {type(model).__name__}")
        if not (isinstance(acceptance, (int, float)) and 0.0 < float(acceptance) < 1.0):
            raise OODLensError(f"acceptance must be in (0, 1), got {acceptance!r}")
        if combine not in P_RULES:
            raise OODLensError(f"combine must be one of {', '.join(P_RULES)}, got {combine!r}")
        if not isinstance(pool, str):
            raise OODLensError("the monitor's pool must be a name ('avg', 'max', 'flatten', 'none') so it can be saved")
        self.model, self.detectors = model, _named_detectors(detectors)
        self.layers = dict(layers) if isinstance(layers, Mapping) else (list(layers) if layers is not None else None)
        self.pool, self.acceptance, self.pvalue_method = pool, float(acceptance), pvalues
        self.delta, self.combine, self.batch_size = float(delta), combine, int(batch_size)
        if model is not None:
            for d in self.detectors.values():
                if d.needs_model:
                    d.attach_model(model)

    def _calibrate(self, cal_scores: Mapping[str, Any]) -> None:
        self.calibrators = {k: ConformalCalibrator(s, self.pvalue_method, self.delta) for k, s in cal_scores.items()}
        alpha = self.alpha
        for c in self.calibrators.values():
            c.check_level(alpha)
        if len(self.calibrators) > 1:
            p_min = float(combine_pvalues({k: [c.min_pvalue] for k, c in self.calibrators.items()}, self.combine)[0])
            if p_min > alpha:
                raise OODLensError(f"calibration set too small: {self.combine} over {len(self.calibrators)} detectors "
                                   f"gives p ≥ {p_min:.4g} > α = {alpha:g}, so nothing could be flagged")
        self.thresholds = {k: _score_threshold(c, alpha) for k, c in self.calibrators.items()}

    @property
    def alpha(self) -> float:
        """Target false-alarm rate ``1 − acceptance``."""
        return 1.0 - self.acceptance

    @property
    def n_calibration(self) -> int:
        return next(iter(self.calibrators.values())).n

    # -- inputs --------------------------------------------------------------------------------------
    def features(self, batch: Any) -> Features:
        """Features of a batch: Features / dicts pass through; raw inputs are run through the model."""
        if isinstance(batch, Features):
            return batch
        if isinstance(batch, Mapping):
            return Features(batch)
        if self.model is None:
            raise OODLensError("this monitor has no model: pass Features (e.g. from oodlens.extract) instead of raw "
                               "inputs, or give the model (Monitor.load(path, model=...))")
        feats, _ = extract(self.model, batch, layers=self.layers, pool=self.pool, batch_size=self.batch_size,
                           progress=False)
        return feats

    # -- per input -------------------------------------------------------------------------------------
    def assess(self, batch: Any, groups: Any = None, explain: bool | None = None) -> "pd.DataFrame":  # noqa: F821
        """One row per input: ``prediction`` (argmax of logits when available), ``score`` / ``score/<name>``,
        ``p_value`` (``p_value/<name>`` per detector when there are several), ``degree`` = 1 − p, ``flag``
        (p ≤ 1 − acceptance) and ``reading`` (plain language).

        ``groups``: the inputs' acquisition groups (site, scanner, …; one label or one per input) for a monitor
        calibrated with ``groups=``: p-values are then Mondrian (within the input's group; unseen and small groups
        pooled and named). ``explain`` (default: on when the monitor has groups or a feature ``bank``) adds
        ``group`` (where each input was calibrated), ``quantile`` (the calibration quantile in words), ``nearest``
        / ``nearest_distance`` (training examples from the bank), ``driver`` (the detector — or the fused
        member — with the smallest p-value) and states them in ``reading``; ``df.attrs["unseen_groups"]`` names
        test groups without calibration data."""
        import pandas as pd

        feats = self.features(batch)
        cols: dict[str, Any] = {}
        if "logits" in feats:
            cols["prediction"] = feats["logits"].argmax(1).cpu().numpy()
        scores = {k: d.score(feats, batch_size=self.batch_size) for k, d in self.detectors.items()}
        pvals, where, lines, unseen = self._calibrated(scores, feats, groups)
        single = len(scores) == 1
        for k in scores:
            suffix = "" if single else f"/{k}"
            cols["score" + suffix] = scores[k].detach().double().cpu().numpy()
            if not single:
                cols["p_value" + suffix] = pvals[k].cpu().numpy()
        p = next(iter(pvals.values())) if single else combine_pvalues(pvals, self.combine)
        cols["p_value"] = p.cpu().numpy()
        cols["degree"] = 1.0 - cols["p_value"]
        cols["flag"] = cols["p_value"] <= self.alpha + 1e-12
        cols["reading"] = self._readings(scores, pvals, p)
        if explain if explain is not None else (self.group_calibrators is not None or self.bank is not None
                                                or bool(self.sites)):
            cols.update(self._explain(feats, scores, pvals, p, where, lines))
        df = pd.DataFrame(cols)
        if unseen is not None:
            df.attrs["unseen_groups"] = unseen
        return df

    def _calibrated(self, scores: dict[str, torch.Tensor], feats: Features, groups: Any):
        """Per detector p-values, and with ``groups``: where each row was calibrated, the quantile lines and the
        unseen groups. Rows of an adapted site get weighted p-values; others Mondrian (or marginal without
        calibration groups)."""
        names = list(scores)
        if groups is None:
            return {k: self.calibrators[k].pvalues(s) for k, s in scores.items()}, None, None, None
        n = int(next(iter(scores.values())).numel())
        labels = group_names(groups, n, "test groups")
        if self.group_calibrators is None and not all(g in self.sites for g in labels):
            raise OODLensError("this monitor was calibrated without groups: pass groups=... (one per calibration row) "
                               f"to Monitor(...), or adapt() each site first (adapted: {sorted(self.sites)})")
        if self.group_calibrators is not None:
            grouped = {k: self.group_calibrators[k].pvalues(s, labels) for k, s in scores.items()}
            pvals = {k: g.pvalues.clone() for k, g in grouped.items()}
            where, unseen = list(grouped[names[0]].calibrated_in), list(grouped[names[0]].unseen)
            lines = {k: g.describe() for k, g in grouped.items()}
        else:
            pvals = {k: self.calibrators[k].pvalues(s).double() for k, s in scores.items()}
            where, unseen = ["all"] * n, []
            lines = {k: self.calibrators[k].describe(s) for k, s in scores.items()}
        for site in sorted({g for g in labels if g in self.sites}):
            rows = torch.tensor([i for i, g in enumerate(labels) if g == site], dtype=torch.long)
            domain = self.sites[site]
            w = domain.weights(feats[self.bank_feature][rows])
            for k in names:
                wc = WeightedCalibrator(self._ordered[k], site=f"site {site!r}", domain=domain)
                s_rows = scores[k][rows]
                pvals[k][rows] = wc.pvalues(s_rows, weights=w).to(pvals[k].device, pvals[k].dtype)
                for i, line in zip(rows.tolist(), wc.describe(s_rows, weights=w)):
                    lines[k][i] = line
            for i in rows.tolist():
                where[i] = site
        return pvals, where, lines, [u for u in unseen if u not in self.sites]

    def _explain(self, feats: Features, scores: dict[str, torch.Tensor], pvals: dict[str, torch.Tensor],
                 p: torch.Tensor, where: list[str] | None, lines: dict[str, list[str]] | None) -> dict[str, Any]:
        """The interpretable-degree columns (:func:`oodlens.calibrate.explain.explain_table`)."""
        names = list(scores)
        if lines is None:
            lines = {k: self.calibrators[k].describe(scores[k]) for k in names}
        driver = drivers(pvals) if len(names) > 1 else _fused_driver(self.detectors[names[0]], feats)
        # the calibration quantile of the detector that drives the degree (the only one when there is one)
        source = driver[0] if len(names) > 1 else [names[0]] * len(p)
        quantile = [lines[k][i].split(": ", 1)[1] for i, k in enumerate(source)]
        bank_x = feats[self.bank_feature] if self.bank is not None else None
        table = explain_table(p, quantile, where, self.bank, bank_x, driver)
        table.pop("degree")
        return table

    __call__ = assess

    def _readings(self, scores: dict[str, torch.Tensor], pvals: dict[str, torch.Tensor], p: torch.Tensor) -> list[str]:
        names = list(scores)
        if len(names) == 1:
            k = names[0]
            cal = self.calibrators[k]
            return cal.describe(scores[k])
        stacked = torch.stack([pvals[k] for k in names], 1)
        worst = stacked.argmin(1).tolist()
        per = {k: describe_degree(self.calibrators[k].n - self.calibrators[k].counts(scores[k]), self.calibrators[k].n)
               for k in names}
        return [f"OOD degree {1 - float(pi):.3f} ({self.combine} over {len(names)} detectors); most atypical for "
                f"{names[j]}: {per[names[j]][i].split(': ', 1)[1]}" for i, (j, pi) in enumerate(zip(worst, p.tolist()))]

    def screen(self, batch: Any, alpha: float = 0.1, method: str = "bh") -> "pd.DataFrame":  # noqa: F821
        """:meth:`assess` plus ``screen_flag``: Benjamini–Hochberg (``method="bh"``) or Storey-BH (``"storey"``)
        at FDR level ``alpha`` over the batch's p-values. ``df.attrs`` holds the p-value cut-off."""
        df = self.assess(batch)
        result = screen(df["p_value"].to_numpy(copy=True), alpha, method)
        df["screen_flag"] = result.rejected.cpu().numpy()
        df.attrs.update({"alpha": float(alpha), "method": method, "p_cutoff": float(result.cutoff),
                         "pi0": float(result.pi0), "n_flagged": int(result.n_rejected)})
        return df

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """A folder: ``manifest.json``, ``calibration.safetensors`` (sorted calibration scores per detector) and
        ``detectors/<i>.safetensors`` (each detector's own save). The model is never saved."""
        folder = Path(path)
        (folder / "detectors").mkdir(parents=True, exist_ok=True)
        files = []
        for i, (k, d) in enumerate(self.detectors.items()):
            name = f"detectors/{i}.safetensors"
            d.save(folder / name)
            files.append({"label": k, "file": name, "detector": d.name})
        save_tensors({f"cal/{i}": c.scores for i, c in enumerate(self.calibrators.values())},
                     folder / "calibration.safetensors", {"oodlens": "monitor-calibration"})
        manifest = {"format": FORMAT, "version": 1, "detectors": files, "layers": self.layers, "pool": self.pool,
                    "acceptance": self.acceptance, "pvalues": self.pvalue_method, "delta": self.delta,
                    "combine": self.combine, "batch_size": self.batch_size, "n_calibration": self.n_calibration}
        manifest.update(self._save_explainers(folder))
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))

    def _save_explainers(self, folder: Path) -> dict[str, Any]:
        """``explain.safetensors``: calibration scores in calibration order with their group codes, and the feature
        bank; the manifest gains ``groups`` (names), ``min_group``, ``bank_feature`` and ``neighbours``."""
        tensors: dict[str, torch.Tensor] = {}
        extra: dict[str, Any] = {"min_group": self.min_group, "bank_feature": self.bank_feature,
                                 "neighbours": None if self.bank is None else self.bank.k}
        if self.group_calibrators is not None:
            first = next(iter(self.group_calibrators.values()))
            extra["groups"] = first.names
            tensors["group_codes"] = first.codes
            tensors.update({f"group_cal/{i}": g.scores for i, g in enumerate(self.group_calibrators.values())})
        if self.bank is not None:
            tensors["bank"] = self.bank.bank
        if tensors or self.sites:  # then also what adapt() needs, and every adapted site's domain classifier
            extra["sites"] = list(self.sites)
            for i, dw in enumerate(self.sites.values()):
                tensors.update({f"site/{i}/{k}": v for k, v in dw.state().items()})
            if self._ordered is not None:
                tensors.update({f"ordered/{i}": v for i, v in enumerate(self._ordered.values())})
            if self.domain_features is not None:
                tensors["domain_features"] = self.domain_features
            save_tensors(tensors, folder / "explain.safetensors", {"oodlens": "monitor-explain"})
        return extra

    @classmethod
    def load(cls, path: str | os.PathLike, model: nn.Module | None = None) -> "Monitor":
        """Rebuild a saved monitor; give ``model`` to assess raw inputs or for model-based detectors."""
        folder = Path(path)
        mpath = folder / "manifest.json"
        if not mpath.is_file():
            raise OODLensError(f"{folder} is not a saved monitor (no manifest.json)")
        manifest = read_manifest(mpath)
        dets = {}
        for e in manifest["detectors"]:
            det = Detector.load(inside(folder, e["file"], mpath))
            if det.name != e["detector"]:
                raise OODLensError(f"{mpath}: detector {e['label']!r} is listed as {e['detector']!r} but "
                                   f"{e['file']} holds {det.name!r}")
            dets[e["label"]] = det
        tensors = calibration_scores(folder / "calibration.safetensors", len(dets), manifest["n_calibration"])
        mon = cls.__new__(cls)
        mon._configure(model, dets, manifest["layers"], manifest["pool"], manifest["acceptance"],
                       manifest["pvalues"], manifest["delta"], manifest["combine"], manifest["batch_size"])
        mon._calibrate({k: tensors[i] for i, k in enumerate(dets)})
        try:
            mon._load_explainers(folder, manifest, list(dets))
        except OODLensError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:  # fields read_manifest does not know
            raise OODLensError(f"{mpath}: a saved field does not fit ({type(e).__name__}: {e})") from None
        return mon

    def _load_explainers(self, folder: Path, manifest: dict[str, Any], labels: list[str]) -> None:
        groups, neighbours, sites = manifest.get("groups"), manifest.get("neighbours"), manifest.get("sites")
        path = folder / "explain.safetensors"
        tensors = load_tensors(path, mmap=False)[0] if path.is_file() else {}
        if (groups is not None or neighbours is not None or sites) and not tensors:
            raise OODLensError(f"{path} is missing (the manifest lists groups, a feature bank or adapted sites)")
        cal, codes = None, None
        if groups is not None:
            if not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
                raise OODLensError(f"{folder / 'manifest.json'}: field 'groups' must be a list of group names")
            need = ["group_codes"] + [f"group_cal/{i}" for i in range(len(labels))]
            missing = [k for k in need if k not in tensors]
            if missing:
                raise OODLensError(f"{path}: tensor(s) {missing} missing")
            codes = tensors["group_codes"].long()
            if codes.ndim != 1 or (codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= len(groups))):
                raise OODLensError(f"{path}: 'group_codes' must be 1-D codes in 0..{len(groups) - 1}")
            cal = {k: tensors[f"group_cal/{i}"] for i, k in enumerate(labels)}
            for k, t in cal.items():
                if t.shape != codes.shape:
                    raise OODLensError(f"{path}: group calibration scores of {k!r} do not match 'group_codes'")
        if neighbours is not None and "bank" not in tensors:
            raise OODLensError(f"{path}: tensor 'bank' missing")
        self._explainers(cal or {k: c.scores for k, c in self.calibrators.items()},
                         None if codes is None else [groups[i] for i in codes.tolist()],
                         int(manifest.get("min_group", 40)), tensors.get("bank"),
                         str(manifest.get("bank_feature", "features")), int(neighbours or 3))
        ordered = [tensors.get(f"ordered/{i}") for i in range(len(labels))]
        self._ordered = dict(zip(labels, ordered)) if all(t is not None for t in ordered) else None
        self.domain_features = tensors.get("domain_features")
        if not (sites is None or (isinstance(sites, list) and all(isinstance(x, str) for x in sites))):
            raise OODLensError(f"{folder / 'manifest.json'}: field 'sites' must be a list of site names")
        if sites and (self._ordered is None or any(t.shape != (self.n_calibration,) for t in ordered)):
            raise OODLensError(f"{path}: calibration scores for the adapted sites are missing or of the wrong size")
        self.sites = {}
        for i, name in enumerate(sites or []):
            prefix = f"site/{i}/"
            self.sites[name] = DomainWeights.from_state({k[len(prefix):]: v for k, v in tensors.items()
                                                         if k.startswith(prefix)})

    def __repr__(self) -> str:
        return (f"Monitor(detectors={list(self.detectors)}, n_calibration={self.n_calibration}, "
                f"acceptance={self.acceptance:g}, pvalues={self.pvalue_method!r})")


def _fused_driver(det: Detector, feats: Features) -> tuple[list[str], torch.Tensor] | None:
    """For a ``fused`` detector with a p-value rule: the member with the smallest p-value per input."""
    if not isinstance(det, Fused) or det.method not in P_RULES or not hasattr(det, "cal_sorted_"):
        return None
    members = det.member_detectors()
    scores, _ = stack_scores([m.score(feats) for m in members])
    names = [f"{i}:{m.name}" if [x.name for x in members].count(m.name) > 1 else m.name for i, m in enumerate(members)]
    return drivers(member_pvalues(scores, det.cal_sorted_), names)


def _score_threshold(cal: ConformalCalibrator, alpha: float) -> float:
    """Score τ with ``p ≤ α ⟺ score > τ``: p = table[#{s_i ≥ s}] is non-decreasing in the count, so the flag is
    ``count ≤ m*`` (m* = last count with table ≤ α), i.e. ``score > S_(n − m*)``."""
    m_star = int((cal.table <= alpha + 1e-12).sum()) - 1
    k = cal.n - m_star
    return float(cal.scores[k - 1]) if k >= 1 else float("-inf")


__all__ = ["Monitor"]

"""``fused``: a detector that runs several registered detectors and combines their scores with one rule.

    score(x) = rule(s_1(x), …, s_K(x))          (higher = more OOD; rules in :mod:`oodlens.fusion.rules`)

Hyper-parameters (JSON): ``members`` — a list of ``{"name": <registered detector>, "params": {...}}`` (or plain
names; default energy + mahalanobis, a logit-based and a feature-based score), ``method`` — the rule (default
``"fisher"``), ``holdout`` (fallback calibration fraction), ``seed``, ``logistic_c``.

Fitting:

1. ``fit(train, labels, head, model)`` fits every member on the training data (and remembers 64-bit hashes of the
   training rows, to refuse calibration data that overlaps them).
2. ``fit_validation(id_val, labels, ood_val)`` — what the rules learn from: the members' ID calibration scores
   (p-value rules, z-scores) and, for ``method="logistic"``, validation OOD too (``validation_needs`` is
   ``"id+ood"`` for that rule and ``"id"`` otherwise). If a member has its own validation stage, ``id_val`` is
   split in two with ``seed``: one half for the members, the other for the rule's calibration.
3. Fallback when ``fit_validation`` is never called (documented, not silent — see ``calibration_source_``): at
   the first ``score`` (or ``save``), a seeded ``holdout`` fraction of the training rows is held out, clones of
   the members are fitted on the rest and scored on the held-out rows, and those scores calibrate the rule.
   Members used for scoring stay fitted on all training rows, so calibration is approximate (the clones saw
   fewer rows). Not available for ``logistic`` (it needs validation OOD), for members with their own
   validation stage, or with ``holdout=0``: scoring then raises.

Memory: between ``fit`` and calibration the detector keeps a reference to the training Features (for the
fallback); ``fit_validation`` or the fallback releases it.

Persistence: members' fitted tensors are stored in the same safetensors file under ``members.<i>.<name>`` and
their JSON state in ``member_states_`` (no pickle); a round-trip is exact.

Layering: this module imports ``oodlens.detectors`` (never the reverse); ``import oodlens`` (whose package imports this one) registers it.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..calibrate.overlap import row_hashes, rows_in_hashes
from ..detectors.base import Detector, Head
from ..detectors.registry import create
from ..errors import NotFittedError, OODLensError
from ..features import Features
from .rules import RULES, apply_rule, check_rule, fit_rule

DEFAULT_MEMBERS: tuple[tuple[str, dict], ...] = (("energy", {}), ("mahalanobis", {}))
_RULE_KEYS = ("cal_sorted", "mean", "std", "coef", "intercept")


def _specs(members: Any) -> list[tuple[str, dict]]:
    """Validated ``[(name, params), ...]`` from the ``members`` hyper-parameter."""
    if members is None:
        return [(n, dict(p)) for n, p in DEFAULT_MEMBERS]
    if isinstance(members, (str, Mapping)) or not isinstance(members, Sequence) or len(members) == 0:
        raise OODLensError('members must be a non-empty list like [{"name": "energy", "params": {...}}, '
                           f'{{"name": "mahalanobis"}}], got {members!r}')
    out = []
    for i, m in enumerate(members):
        if isinstance(m, str):
            out.append((m, {}))
            continue
        if not isinstance(m, Mapping) or not isinstance(m.get("name"), str) or set(m) - {"name", "params"}:
            raise OODLensError(f'member {i} must be a detector name or {{"name": ..., "params": {{...}}}}, got {m!r}')
        params = m.get("params") or {}
        if not isinstance(params, Mapping):
            raise OODLensError(f"member {i} ({m['name']}): params must be a dict, got {type(params).__name__}")
        out.append((m["name"], dict(params)))
    try:
        json.dumps(out)
    except TypeError as e:
        raise OODLensError(f"member hyper-parameters must be JSON-serialisable: {e}") from e
    return out


class _AnyMember:
    """A class flag that is true when any member's is (class access: for the default members)."""

    def __init__(self, flag: str):
        self.flag = flag

    def __get__(self, obj: "Fused | None", owner: type) -> bool:
        templates = obj._templates() if obj is not None else [create(n, **p) for n, p in DEFAULT_MEMBERS]
        return any(bool(getattr(t, self.flag)) for t in templates)


class _ValidationNeeds:
    def __get__(self, obj: "Fused | None", owner: type) -> str:
        return "id+ood" if obj is not None and obj.method == "logistic" else "id"


class Fused(Detector):
    name = "fused"
    needs_labels = _AnyMember("needs_labels")  # type: ignore[assignment]
    needs_head = _AnyMember("needs_head")  # type: ignore[assignment]
    needs_model = _AnyMember("needs_model")  # type: ignore[assignment]
    spatial_inputs = _AnyMember("spatial_inputs")  # type: ignore[assignment]
    validation_needs = _ValidationNeeds()  # type: ignore[assignment]

    def __init__(self, members: list | None = None, method: str = "fisher", holdout: float = 0.2, seed: int = 0,
                 logistic_c: float = 1.0):
        self.members = members
        self.method = method
        self.holdout = holdout
        self.seed = seed
        self.logistic_c = logistic_c

    # -- members ---------------------------------------------------------------------------------------
    def _templates(self) -> list[Detector]:
        key = json.dumps(_specs(self.members), sort_keys=True)
        cached = self.__dict__.get("_template_cache")
        if cached is None or cached[0] != key:
            cached = (key, [create(n, **p) for n, p in _specs(self.members)])
            self._template_cache = cached
        return cached[1]

    def required_features(self) -> tuple[str, ...]:
        names: list[str] = []
        for t in self._templates():
            names += [f for f in t.required_features() if f not in names]
        return tuple(names)

    def member_detectors(self) -> list[Detector]:
        """The fitted member detectors (rebuilt from the saved state after ``load``)."""
        members = self.__dict__.get("_members")
        if members is None and "member_states_" in self.__dict__:
            members = self._restore_members()
        if members is None:
            raise NotFittedError("fused detector is not fitted; call fit(...) first")
        return members

    def _restore_members(self) -> list[Detector]:
        states = self.__dict__.pop("member_states_")
        flat = {k: self.__dict__.pop(k) for k in list(self.__dict__) if k.startswith("members.")}
        members = []
        for i, st in enumerate(states):
            det = create(st["name"], **st["params"])
            prefix = f"members.{i}."
            tensors = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
            det.restore_state(tensors, st["values"])
            model = self.__dict__.get("_model")
            if det.needs_model and model is not None:
                det.attach_model(model)
            members.append(det)
        self._members = members
        return members

    def attach_model(self, model: nn.Module) -> "Fused":
        super().attach_model(model)
        if "_members" in self.__dict__ or "member_states_" in self.__dict__:
            for m in self.member_detectors():
                if m.needs_model:
                    m.attach_model(model)
        return self

    def _member_scores(self, members: Sequence[Detector], x: Features) -> torch.Tensor:
        cols = [m.score(x) for m in members]
        sizes = {f"{i}:{m.name}": int(c.shape[0]) for i, (m, c) in enumerate(zip(members, cols))}
        if len(set(sizes.values())) > 1:
            raise OODLensError(f"fused members disagree on their inputs (different N): {sizes}")
        return torch.stack([c.to(torch.float64) for c in cols], 1)

    # -- fit -------------------------------------------------------------------------------------------
    def _fit(self, train: Features, labels: torch.Tensor | None, head: Head | None, model: nn.Module | None) -> None:
        check_rule(self.method)
        if not 0.0 <= float(self.holdout) < 1.0:
            raise OODLensError(f"holdout must be in [0, 1), got {self.holdout}")
        members = [create(n, **p) for n, p in _specs(self.members)]
        for m in members:
            m.fit(train, labels, head=head, model=model)
        self._members = members
        self.member_names_ = [m.name for m in members]
        self.train_hashes_ = row_hashes({k: train[k] for k in self.required_features()})
        for k in _RULE_KEYS:
            self.__dict__.pop(k + "_", None)
        self.calibration_source_ = None
        self._pending = (train, labels, head, model)

    def _set_rule(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        for k in _RULE_KEYS:
            self.__dict__.pop(k + "_", None)
            if k in state:
                setattr(self, k + "_", state[k])
        self.calibration_source_ = source
        self._pending = None

    def _fit_validation(self, id_val: Features, id_labels: torch.Tensor | None, ood_val: Features | None) -> None:
        members = self.member_detectors()
        hits = rows_in_hashes(self.train_hashes_, {k: id_val[k] for k in self.required_features()})
        if len(hits):
            raise OODLensError(f"ID validation data overlaps the training data: {len(hits)} of {id_val.n} rows are "
                               f"identical to training rows (e.g. row {int(hits[0])}); calibrate on held-out data")
        if self.method == "logistic" and ood_val is None:
            raise OODLensError("fused method 'logistic' needs validation OOD: fit_validation(id_val, labels, ood_val)")
        cal, cal_labels = id_val, id_labels
        staged = [m for m in members if m.validation_needs]
        if staged:
            if id_val.n < 4:
                raise OODLensError(f"fused: {id_val.n} ID validation rows cannot be split between the members' "
                                   "validation stage and calibration")
            perm = torch.randperm(id_val.n, generator=torch.Generator().manual_seed(int(self.seed)))
            first, second = perm[: id_val.n // 2], perm[id_val.n // 2:]
            for m in staged:
                m.fit_validation(id_val.subset(first), None if id_labels is None else id_labels[first],
                                 ood_val if m.validation_needs == "id+ood" else None)
            cal, cal_labels = id_val.subset(second), None if id_labels is None else id_labels[second]
        s_id = self._member_scores(members, cal)
        s_ood = self._member_scores(members, ood_val) if (ood_val is not None and self.method == "logistic") else None
        self._set_rule(fit_rule(s_id, self.method, s_ood, "validation", self.logistic_c, self.member_names_),
                       "validation")

    def _fallback(self) -> None:
        """Calibrate the rule from a seeded hold-out of the training rows (see the module docstring)."""
        train, labels, head, model = self._pending
        members = self.member_detectors()
        why = None
        if self.method == "logistic":
            why = "the logistic rule learns from validation OOD"
        elif any(m.validation_needs for m in members):
            why = "a member has its own validation stage"
        elif float(self.holdout) <= 0.0:
            why = "holdout=0 disables the fallback"
        n_hold = int(round(float(self.holdout) * train.n))
        if why is None and not 2 <= n_hold <= train.n - 2:
            why = f"holdout={self.holdout} of {train.n} training rows leaves too few rows on one side"
        if why is not None:
            raise NotFittedError(f"fused detector has no calibration: call fit_validation(id_val, labels"
                                 f"{', ood_val' if self.method == 'logistic' else ''}) ({why})")
        perm = torch.randperm(train.n, generator=torch.Generator().manual_seed(int(self.seed)))
        hold, rest = perm[:n_hold], perm[n_hold:]
        clones = [m.clone() for m in members]
        try:
            for c in clones:
                c.fit(train.subset(rest), None if labels is None else labels[rest], head=head, model=model)
        except OODLensError as e:
            raise OODLensError(f"fused fallback calibration (fit on {len(rest)} training rows) failed: {e}") from e
        s = self._member_scores(clones, train.subset(hold))
        self._set_rule(fit_rule(s, self.method, None, "train-holdout", self.logistic_c, self.member_names_),
                       "train-holdout")

    def _rule_state(self) -> dict[str, torch.Tensor]:
        if self.__dict__.get("_pending") is not None:
            self._fallback()
        state = {k: getattr(self, k + "_") for k in _RULE_KEYS if hasattr(self, k + "_")}
        if "cal_sorted" not in state:
            raise NotFittedError("fused detector has no calibration: call fit_validation(id_val, labels, ood_val)")
        return state

    # -- score / persistence -----------------------------------------------------------------------------
    def _score(self, x: Features) -> torch.Tensor:
        state = self._rule_state()
        return apply_rule(self._member_scores(self.member_detectors(), x), self.method, state)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        self._rule_state()
        members = self.member_detectors()
        tensors, values = super().state()
        states = []
        for i, m in enumerate(members):
            t, v = m.state()
            tensors.update({f"members.{i}.{k}": tt for k, tt in t.items()})
            states.append({"name": m.name, "params": m.get_params(), "values": v})
        values["member_states_"] = states
        return tensors, values


__all__ = ["DEFAULT_MEMBERS", "Fused", "RULES"]

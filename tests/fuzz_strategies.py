"""Shared pieces of the property-based fuzz suite (``tests/test_fuzz_*.py``): hypothesis profiles, the toy problem
used by every detector, strategies for bad inputs, and the outcome check.

Profiles: ``ci`` (default; few, derandomised examples so the whole fuzz suite stays well under 3 minutes) and
``long`` (many random examples, on demand): ``HYPOTHESIS_PROFILE=long pytest tests/test_fuzz_*.py``.
The profile is applied per test (``@FUZZ``), so other hypothesis tests keep their own settings.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from oodlens import Features, OODLensError
from oodlens.testing import make_toy_problem

_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
          HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=5, deadline=None, derandomize=True, suppress_health_check=_QUIET,
                          print_blob=True)
settings.register_profile("long", max_examples=150, deadline=None, suppress_health_check=_QUIET, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
FUZZ = settings(settings.get_profile(PROFILE))


def scaled(ci: int, long: int) -> settings:
    """The active profile with ``ci`` (or ``long``) examples, for tests much cheaper or dearer than the rest."""
    return settings(settings.get_profile(PROFILE), max_examples=long if PROFILE == "long" else ci)


@functools.lru_cache(maxsize=1)
def toy():
    """The toy problem with a smaller training split (faster fits; every detector's needs are met)."""
    t = make_toy_problem()
    n = 240
    return t.__class__(t.train.subset(slice(0, n)), t.train_labels[:n], t.test_id.subset(slice(0, 60)),
                       t.test_id_labels[:60], t.test_ood.subset(slice(0, 60)), t.head, t.model)


#: perturbations of one feature tensor: name -> (function, preserves the values exactly)
def _nan(t, i):
    t = t.double().clone()
    t.view(-1)[i % t.numel()] = float("nan")
    return t


def _inf(t, i):
    t = t.double().clone()
    t.view(-1)[i % t.numel()] = float("inf") if i % 2 else -float("inf")
    return t


PERTURBATIONS: dict[str, tuple[Callable[[torch.Tensor, int], torch.Tensor], bool]] = {
    "nan": (_nan, False),
    "inf": (_inf, False),
    "empty": (lambda t, i: t[:0], False),
    "one_row": (lambda t, i: t[i % t.shape[0]: i % t.shape[0] + 1], False),
    "huge": (lambda t, i: t.double() * 1e30, False),
    "tiny": (lambda t, i: t.double() * 1e-30, False),
    "zeros": (lambda t, i: torch.zeros_like(t), False),
    "float16": (lambda t, i: t.half(), False),
    "float64": (lambda t, i: t.double(), False),  # rank-based scores (p-values) may move with the rounding
    "integer": (lambda t, i: t.round().long(), False),
    "non_contiguous": (lambda t, i: t.transpose(0, -1).contiguous().transpose(0, -1), True),
    "requires_grad": (lambda t, i: t.float().clone().requires_grad_(), True),
    "wrong_rank": (lambda t, i: t.reshape(t.shape[0], -1)[:, 0], False),
    "extra_dim": (lambda t, i: t[..., None], False),
    "duplicated_rows": (lambda t, i: t[torch.arange(t.shape[0]) // 2 * 2], False),
}

perturbation = st.sampled_from(sorted(PERTURBATIONS))


def perturb(feats: Features, name: str, kind: str, i: int) -> Features:
    """``feats`` with feature ``name`` perturbed by ``kind``; row-changing kinds apply to every feature alike."""
    fn, _ = PERTURBATIONS[kind]
    if kind in ("empty", "one_row", "duplicated_rows"):
        return Features({k: fn(v, i) for k, v in feats.items()})
    return Features({**dict(feats), name: fn(feats[name], i)})


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """('error', message) for an OODLensError (a clear error), ('ok', result) otherwise; any other exception
    propagates, failing the test (an internal exception reached the user)."""
    try:
        return "ok", fn()
    except OODLensError as e:
        assert str(e).strip(), "an OODLensError without a message"
        return "error", str(e)


def assert_scores(s: Any, n: int) -> None:
    """A detector's scores: a finite float tensor of shape (n,)."""
    assert isinstance(s, torch.Tensor) and s.shape == (n,), getattr(s, "shape", type(s))
    assert s.is_floating_point() and bool(torch.isfinite(s).all()), s

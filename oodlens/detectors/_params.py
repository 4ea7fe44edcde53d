"""Hyper-parameter checks of the Detector contract: a subclass's constructor is wrapped so that the outermost one
checks what it set, against the annotated types (int, float, str, bool, None) and for NaN / ±inf."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from typing import Any


def checked_init(init):
    """Wrap a subclass's ``__init__`` so that the outermost constructor checks the hyper-parameters it set."""

    @functools.wraps(init)
    def wrapped(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self).__init__ is wrapped:  # not when called through super() from a subclass's constructor
            self.check_params()

    wrapped._checks_params = True  # type: ignore[attr-defined]
    return wrapped


_SIMPLE = {"int", "float", "str", "bool", "None"}


def param_problem(value: Any, annotation: Any, infinite_ok: bool) -> str:
    """Why ``value`` does not fit ``annotation`` (a string under ``from __future__ import annotations``), or ''.
    Annotations other than unions of int/float/str/bool/None are not type-checked; NaN is refused everywhere."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        if math.isnan(float(value)):
            return "is NaN"
        if math.isinf(float(value)) and not infinite_ok:
            return "is infinite; give a finite number"
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    kinds = {t.strip() for t in text.replace("Optional[", "None | ").rstrip("]").split("|")}
    if not kinds <= _SIMPLE:
        return ""
    if value is None:
        ok = "None" in kinds
    elif isinstance(value, bool):
        ok = "bool" in kinds
    elif isinstance(value, numbers.Integral):
        ok = bool(kinds & {"int", "float"})
    elif isinstance(value, numbers.Real):
        ok = "float" in kinds
    elif isinstance(value, str):
        ok = "str" in kinds
    else:
        ok = False
    if ok:
        return ""
    want = " or ".join({"int": "an integer", "float": "a number", "str": "a string", "bool": "True/False",
                        "None": "None"}[k] for k in sorted(kinds))
    return f"must be {want}, got {type(value).__name__}"

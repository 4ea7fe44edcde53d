"""Reading the ``oodlens demo`` options that every demo shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import OODLensError


def requested_detectors(args: Any) -> list[str] | None:
    """``--detectors a,b,c`` as a list (None when the option is not given); an empty list is an error."""
    raw = getattr(args, "detectors", None)
    if raw is None:
        return None
    names = [d.strip() for d in str(raw).split(",") if d.strip()]
    if not names:
        raise OODLensError("--detectors is empty: give comma-separated detector names (see `oodlens methods`)")
    return names


@dataclass
class DemoOptions:
    """The shared options of a demo run, read once from the parsed arguments."""

    detectors: list[str] | None
    seed: int
    cache: str | None
    out: Path | None
    progress: bool
    fast: bool  # a reduced configuration (tests only; no command-line flag)


def demo_options(args: Any) -> DemoOptions:
    out = getattr(args, "out", None)
    return DemoOptions(requested_detectors(args), int(getattr(args, "seed", 0)), getattr(args, "cache", None),
                       Path(out) if out else None, not getattr(args, "no_progress", False),
                       bool(getattr(args, "fast", False)))

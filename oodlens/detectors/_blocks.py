"""Row blocks: how many rows fit a buffer budget, and the slices that cover the rows — the one place detectors that
work on row blocks (to keep their peak memory near their input size) size their blocks."""

from __future__ import annotations

from typing import Iterator


def rows_within(n: int, width: int, budget: int) -> int:
    """Rows per block so that a (rows × width) buffer holds at most ``budget`` numbers: at least 1, at most n
    (at least 1 also when n = 0)."""
    return max(1, min(n, budget // max(1, width)))


def row_slices(n: int, rows: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``rows`` rows each (``rows`` < 1 counts as 1)."""
    rows = max(1, int(rows))
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))

"""Small helpers for the benchmark scripts: median wall-clock timing, peak-memory probes (host RSS through
/proc, CUDA through the caching allocator), and Markdown tables."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any, Callable, Sequence

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``fn`` (the device synchronised before and after)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def median_time(fn: Callable[[], Any], repeats: int, device: torch.device,
                first: Callable[[], None] | None = None, after_first: Callable[[], None] | None = None
                ) -> tuple[float, Any]:
    """Median wall-clock seconds of ``repeats`` calls of ``fn`` and its last result. ``first``/``after_first`` run
    around the first call only (outside the timing), e.g. to start and read a memory probe."""
    times, out = [], None
    for r in range(max(1, repeats)):
        if r == 0 and first is not None:
            first()
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if r == 0 and after_first is not None:
            after_first()
    return statistics.median(times), out


def _proc_status(field: str) -> int | None:
    """A ``/proc/self/status`` size field in bytes (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory growth over a stretch of code, in bytes.

    Host: the peak resident set size (VmHWM) is reset by writing 5 to ``/proc/self/clear_refs`` at ``start`` and
    read at ``stop``, so the growth over the RSS at ``start`` is the stretch's own peak. Where that reset is not
    allowed, falls back to ``getrusage`` ru_maxrss, which only sees a peak above every earlier one (``exact`` is
    False then). CUDA: the caching allocator's peak over the memory allocated at ``start``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.exact = True
        self._base = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._base = _proc_status("VmRSS") or 0
        except OSError:
            self.exact = False
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def stop(self) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            return max(0, torch.cuda.max_memory_allocated(self.device) - self._base)
        if self.exact:
            peak = _proc_status("VmHWM")
            if peak is not None:
                return max(0, peak - self._base)
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._base)


def nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_mib(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**20:.0f} MiB"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c).replace("|", "\\|") for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])

"""Rows of a NumPy job split over Python threads: the compiled shaping kernels (:mod:`._select`) release the GIL,
so a few threads sharing one pool keep every core busy without numba's own threading layer."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def run_rows(fn: Callable[[slice], None], rows: int, threads: int, min_rows: int = 64) -> None:
    """Call ``fn(part)`` on consecutive slices that cover ``range(rows)``, from up to ``threads`` threads at once
    (the kernels release the GIL): the calling thread and workers of a shared pool take the next slice until none
    is left. Slices have at least ``min_rows`` rows and there are about 8 per thread, so a thread that gets less
    CPU (another process on the machine) takes fewer of them instead of holding up the others."""
    global _pool, _pool_workers
    workers = max(1, min(threads, rows // max(1, min_rows)))
    if workers == 1:
        fn(slice(0, rows))
        return
    size = max(min_rows, -(-rows // (8 * workers)))
    parts = [slice(i, min(i + size, rows)) for i in range(0, rows, size)]
    taken = itertools.count()  # next() on a count is atomic under the GIL

    def work() -> None:
        while (i := next(taken)) < len(parts):
            fn(parts[i])
    with _pool_lock:
        if _pool is None or _pool_workers < workers - 1:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="oodlens-shaping")
            _pool_workers = workers - 1
        pool = _pool
    futures = [pool.submit(work) for _ in range(workers - 1)]
    try:
        work()
    finally:
        for f in futures:
            f.result()

"""Per-model work in worker processes of one CPU thread each.

On few cores, small models use threads poorly: two one-thread processes get through about 1.5x
more work per second than one two-thread process (measured for lab training). Workers are
spawned (fresh interpreters: no forked torch state) and inherit the environment (XL_CACHE...).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch


def one_thread() -> None:
    torch.set_num_threads(1)


def map_in_processes(fn, items: list, workers: int, *args) -> list:
    """[fn(item, *args) for item in items], in `workers` processes of one thread each; in this
    process when there is one worker or one item. `fn` must be importable (a module-level function)."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(item, *args) for item in items]
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=get_context("spawn"),
                             initializer=one_thread) as pool:
        return list(pool.map(fn, items, *([arg] * len(items) for arg in args)))

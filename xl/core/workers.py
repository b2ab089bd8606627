"""Per-model work in worker processes of one CPU thread each.

On few cores, small models use threads poorly: two one-thread processes get through about 1.5x
more work per second than one two-thread process (measured for lab training). Workers are
spawned (fresh interpreters: no forked torch state) and inherit the environment (XL_CACHE...).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch
from tqdm.auto import tqdm


def one_thread() -> None:
    torch.set_num_threads(1)


def map_in_processes(fn, items: list, workers: int, *args, desc: str | None = None) -> list:
    """[fn(item, *args) for item in items], in `workers` processes of one thread each; in this
    process when there is one worker or one item. `fn` must be importable (a module-level function).
    `desc`: a progress bar of that name, one step per item."""
    items = list(items)
    bar = dict(total=len(items), desc=desc, disable=desc is None)
    if workers <= 1 or len(items) <= 1:
        return [fn(item, *args) for item in tqdm(items, **bar)]
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=get_context("spawn"),
                             initializer=one_thread) as pool:
        return list(tqdm(pool.map(fn, items, *([arg] * len(items) for arg in args)), **bar))

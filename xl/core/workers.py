"""Per-model work in worker processes of one CPU thread each.

On few cores, small models use threads poorly: two one-thread processes get through about 1.5x
more work per second than one two-thread process (measured for lab training). Workers are
spawned (fresh interpreters: no forked torch state) and inherit the environment (XL_CACHE...).
"""
from __future__ import annotations

import ctypes
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)


def keep_freed_memory() -> bool:
    """Let this process's allocator (glibc) keep freed memory for reuse instead of returning it to the kernel.

    By default glibc gives large allocations (always those above 32 MB, as a seq2seq batch's logits over the
    lab vocabulary) a fresh memory map and unmaps it when freed, so each step faults in and zeroes its pages:
    a fifth of a lab denoising worker's CPU time went to the kernel. Returns whether it applied
    (False off glibc, where nothing changes). The heap then keeps its peak size."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt (musl)
        return False
    applied = [mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, 2**30)]  # 1 on success
    return all(applied)


def as_worker() -> None:
    """What every worker process does first: one CPU thread, freed memory kept for reuse."""
    torch.set_num_threads(1)
    keep_freed_memory()


def map_in_processes(fn, items: list, workers: int, *args) -> list:
    """[fn(item, *args) for item in items], in `workers` processes of one thread each; in this
    process when there is one worker or one item. `fn` must be importable (a module-level function)."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(item, *args) for item in items]
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=get_context("spawn"),
                             initializer=as_worker) as pool:
        return list(pool.map(fn, items, *([arg] * len(items) for arg in args)))

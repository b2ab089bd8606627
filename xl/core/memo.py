"""One way to keep a computed result on disk: `memo(cache, key, compute)`.

The result of `compute()` is stored under `xl.core.paths.cache_dir(cache)` as `<key>.json` (JSON-able
values) or `<key>.npy` (numpy arrays), written atomically. A later call with the same key reads it
instead of computing; a file that is truncated, garbled or not what `check` expects is a miss, with a
warning, and is computed again. Callers build `key` with `xl.core.io.digest` from everything the
result depends on.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xl.core import io, paths

FORMATS = ("json", "npy")
# what each cache holds, as warnings name it
WHAT = {"reps": "representation cache", "mt": "translation cache", "transfer": "transfer cache"}


def path(cache: str, key: str, fmt: str = "json") -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown memo format {fmt!r}; choose one of {FORMATS}")
    return paths.cache_dir(cache) / f"{key}.{fmt}"


def read(cache: str, key: str, fmt: str = "json", check: Callable[[object], str | None] | None = None):
    """The stored result, or None when there is none or it is unreadable (then with a warning).

    check(value) returns a description of what is wrong with a value read (e.g. its shape), or None."""
    file, what = path(cache, key, fmt), WHAT.get(cache, f"{cache} cache")
    if not file.is_file():
        return None
    try:
        value = io.read_json(file, what) if fmt == "json" else np.load(file)
    except (OSError, ValueError, EOFError) as err:  # a truncated or garbled .npy
        value, problem = None, f"{type(err).__name__}: {err}"
    else:
        problem = check(value) if (check and value is not None) else None
    if problem is not None:
        warnings.warn(f"ignoring the unreadable {what} {file} ({problem}); computing it again", stacklevel=3)
        return None
    return value


def write(cache: str, key: str, value, fmt: str = "json") -> None:
    file = path(cache, key, fmt)
    if fmt == "json":
        io.write_json(value, file)
    else:
        with io.atomic_path(file) as tmp, open(tmp, "wb") as f:
            np.save(f, value)


def memo(cache: str, key: str, compute: Callable[[], object], *, fmt: str = "json", enabled: bool = True,
         check: Callable[[object], str | None] | None = None):
    """`compute()`, or its stored result under (`cache`, `key`); `enabled=False` computes and stores nothing."""
    if not enabled:
        return compute()
    hit = read(cache, key, fmt, check)
    if hit is not None:
        return hit
    value = compute()
    write(cache, key, value, fmt)
    return value

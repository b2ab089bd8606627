"""Atomic writes: a file is either its old self or its complete new self, never half-written;
and cache reads that treat an unreadable file as a miss."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: some writers (papermill, numpy) check or append it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_csv(df: pd.DataFrame, path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def write_json(obj, path) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def read_json(path, what: str = "cache"):
    """The JSON object in `path`, or None if there is none or it is unreadable (with a warning)."""
    path = Path(path)
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError as err:  # truncated or garbled (JSONDecodeError, UnicodeDecodeError)
            warnings.warn(f"ignoring the unreadable {what} {path} ({err}); computing it again", stacklevel=3)
    return None


def write_text(text: str, path) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def digest(*parts) -> str:
    """A short stable hash of strings, bytes or JSON-able objects (cache keys)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        elif isinstance(part, str):
            h.update(part.encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]

"""The on-disk caches (tokenizers, models, representations, translations, fine-tuning results): sizes and clearing.

They live in <root>/data/cache unless XL_CACHE says otherwise; everything in them can be
recomputed, so clearing only costs time.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from xl.core import paths
from xl.core.errors import XLError


def root() -> Path:
    return paths.cache_dir()


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def table() -> pd.DataFrame:
    rows = [{"cache": p.name, "size": human(size(p)), "path": str(p)} for p in sorted(root().iterdir())]
    rows.append({"cache": "total", "size": human(size(root())), "path": str(root())})
    return pd.DataFrame(rows)


def clear(name: str | None = None) -> int:
    """Delete one named cache, or all; return the bytes freed."""
    targets = sorted(root().iterdir()) if name is None else [root() / name]
    missing = [t.name for t in targets if not t.exists()]
    if missing:
        known = ", ".join(p.name for p in sorted(root().iterdir())) or "none"
        raise XLError(f"no cache named {missing[0]!r}; caches: {known}")
    freed = sum(size(t) for t in targets)
    for t in targets:
        shutil.rmtree(t) if t.is_dir() else t.unlink()
    return freed

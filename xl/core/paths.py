"""Where things live: the book's root, the results of each preset, the caches.

The root is the folder that holds `_toc.yml` (override with XL_ROOT); caches
default to `<root>/data/cache` (override with XL_CACHE).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from xl.core.errors import XLError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def root() -> Path:
    """The book's root folder: XL_ROOT, else the source checkout, else the current folder."""
    for candidate in (os.environ.get("XL_ROOT"), PACKAGE_ROOT, Path.cwd()):
        if candidate and (Path(candidate) / "_toc.yml").is_file():
            return Path(candidate).resolve()
    raise XLError("cannot find the book's root (a folder with _toc.yml): run from it or set XL_ROOT")


def cache_dir(*parts: str) -> Path:
    """A cache folder (created on demand); XL_CACHE moves all caches elsewhere."""
    base = os.environ.get("XL_CACHE")
    path = Path(base) if base else root() / "data" / "cache"
    path = path.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(preset: str) -> Path:
    """Final results tables of one preset; XL_RESULTS moves them elsewhere."""
    base = os.environ.get("XL_RESULTS")
    path = (Path(base) if base else root() / "results") / preset
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _not_writable(path, err) from None
    return path


def check_writable(folder: Path) -> Path:
    """`folder` if files can be created in it (permissions, then a real file), else an XLError."""
    try:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        # os.access misses read-only mounts, immutable folders, full disks: try for real
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".xl-write-check-"):
            pass
    except OSError as err:
        raise _not_writable(folder, err) from None
    return folder


def _not_writable(folder: Path, err: OSError) -> XLError:
    return XLError(f"the results folder {folder} is not writable ({err.strerror or err}): fix its permissions "
                   "or choose another folder with the XL_RESULTS environment variable")


def data_file(name: str) -> Path:
    """A small committed data file (language table, the paper's tables)."""
    return PACKAGE_ROOT / "data" / name if (PACKAGE_ROOT / "data" / name).exists() else root() / "data" / name


def model_dir(preset: str, name: str) -> Path:
    """Folder of a lab model trained under a preset (written by xl.training with save_pretrained)."""
    return cache_dir("models", preset) / name

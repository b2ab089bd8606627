"""Shared fixtures: an isolated cache for the whole session, a throwaway copy of the book, the smoke book."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The front matter of every jupytext MyST notebook in notebooks/.
MYST_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def require_browser():
    """tests/browser.py with a Chromium to drive, or skip saying what is missing."""
    pytest.importorskip("tornado", reason="tests/browser.py talks to Chromium through tornado")
    browser = pytest.importorskip("browser", reason="tests/browser.py not importable")
    if browser.chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium, or set $XL_CHROMIUM)")
    return browser


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Keep tests away from the user's data/cache; share it across tests (tokenizers, models)."""
    path = tmp_path_factory.mktemp("xl-cache")
    old = os.environ.get("XL_CACHE")
    os.environ["XL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("XL_CACHE", None)
    else:
        os.environ["XL_CACHE"] = old


def copy_book(root: Path) -> Path:
    """A copy of the book's sources (no results, no build, no cache) in `root`."""
    root.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, root / name)
    for name in ("book", "notebooks", "data"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("cache", "chapters", "*.ipynb"))
    return root


@pytest.fixture
def book_root(tmp_path, monkeypatch):
    """A copy of the book's sources that XL_ROOT points at."""
    root = copy_book(tmp_path / "book")
    monkeypatch.setenv("XL_ROOT", str(root))
    monkeypatch.delenv("XL_RESULTS", raising=False)
    return root


def xl_book(root: Path, *args, **env) -> subprocess.CompletedProcess:
    """`xl book --preset smoke` on the book copy `root`, with the cache `root`/../cache unless `env` says otherwise."""
    env = {"XL_ROOT": str(root), "XL_CACHE": str(root.parent / "cache"), **env}
    return subprocess.run([sys.executable, "-m", "xl", "book", "--preset", "smoke", *args],
                          capture_output=True, text=True, cwd=root, env={**os.environ, **env})


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """The smoke book built once per session from an empty cache: (book root, the finished `xl book`)."""
    root = copy_book(tmp_path_factory.mktemp("smoke") / "book")
    start = time.perf_counter()
    done = xl_book(root)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"xl book --preset smoke: {time.perf_counter() - start:.0f}s")
    return root, done

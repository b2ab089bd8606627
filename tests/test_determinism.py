"""Determinism: the smoke book built twice, from empty caches into other folders, writes the same tables."""
import difflib
import re

import pandas as pd
import pytest
from conftest import copy_book, xl_book

pytestmark = pytest.mark.slow

TIMING = re.compile(r"seconds|wall|time|elapsed", re.IGNORECASE)


def without_timing(path) -> tuple[str, list[str]]:
    """The table's text without its timing columns (cells kept as written), and the columns dropped."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    dropped = [c for c in df.columns if TIMING.search(c)]
    return df.drop(columns=dropped).to_csv(index=False), dropped


def test_two_builds_from_empty_caches_write_identical_tables(smoke_book, tmp_path):
    first = smoke_book[0] / "results" / "smoke"
    second = tmp_path / "results" / "smoke"
    root = copy_book(tmp_path / "book")
    done = xl_book(root, "--no-html", XL_CACHE=str(tmp_path / "cache"), XL_RESULTS=str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr[-3000:]
    tables = sorted(p.name for p in first.glob("*.csv"))
    assert tables == sorted(p.name for p in second.glob("*.csv")) and len(tables) >= 10
    dropped = {}
    for name in tables:
        (a, cols), (b, _) = without_timing(first / name), without_timing(second / name)
        if cols:
            dropped[name] = cols
        diff = "".join(list(difflib.unified_diff(a.splitlines(True), b.splitlines(True)))[:12])
        assert a == b, f"{name} differs between the two builds:\n{diff}"
    print(f"identical: {', '.join(tables)}; timing columns dropped: {dropped}")
    assert dropped == {"lab_models.csv": ["seconds"]}  # the only timing column: a new one must be listed here

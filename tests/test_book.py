"""End to end: `xl book --preset smoke` executes every chapter and renders the HTML book."""
import subprocess
import sys
import time

import pytest

from xl import runner


@pytest.mark.slow
def test_smoke_book_builds_and_then_is_all_cached(book_root):
    cmd = [sys.executable, "-m", "xl", "book", "--preset", "smoke"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=book_root)
    assert first.returncode == 0, first.stderr[-3000:]
    html = book_root / "_build" / "smoke" / "_build" / "html"
    for name in runner.toc_notebooks():
        page = html / "book" / "chapters" / f"{name}.html"
        assert page.is_file(), f"missing page for chapter {name}"
        assert "Traceback" not in page.read_text(), f"chapter {name} shows an error"
    assert (html / "book" / "intro.html").is_file() and (html / "book" / "paper.html").is_file()
    assert "summary" in first.stderr and "ran" in first.stderr
    corpus_csv = book_root / "results" / "smoke" / "corpus.csv"
    assert corpus_csv.is_file() and "pieces_per_word" in corpus_csv.read_text()

    start = time.perf_counter()
    second = subprocess.run(cmd + ["--no-html"], capture_output=True, text=True, cwd=book_root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert " ran " not in second.stderr and "cached" in second.stderr
    assert time.perf_counter() - start < 60

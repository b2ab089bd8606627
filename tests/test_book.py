"""End to end: `xl book --preset smoke` executes every chapter, renders the HTML book, and the
book reads offline in a real browser."""
import time

import pytest
from conftest import require_browser, xl_book

from xl.book import runner

pytestmark = pytest.mark.slow


def test_every_page_is_built(smoke_book):
    root, done = smoke_book
    html = root / "_build" / "smoke" / "_build" / "html"
    for name in runner.toc_notebooks():
        page = html / "book" / "chapters" / f"{name}.html"
        assert page.is_file(), f"missing page for chapter {name}"
        text = page.read_text()
        assert "Traceback" not in text, f"chapter {name} shows an error"
        for plumbing in ("parameters", "injected-parameters"):  # collapsed behind a toggle
            assert f"tag_{plumbing} tag_hide-cell" in text, f"chapter {name} shows its {plumbing} cell"
    assert (html / "book" / "intro.html").is_file() and (html / "book" / "paper.html").is_file()
    assert "summary" in done.stderr and "ran" in done.stderr
    for table in ("corpus", "training", "mt_quality", "similarity", "separability", "svd", "transfer", "conclusions"):
        assert (root / "results" / "smoke" / f"{table}.csv").is_file(), f"{table}.csv not written"


def test_second_run_is_all_cached(smoke_book):
    root, _ = smoke_book
    start = time.perf_counter()
    again = xl_book(root, "--no-html")
    assert again.returncode == 0, again.stderr[-3000:]
    assert " ran " not in again.stderr and again.stderr.count("cached") >= len(runner.toc_notebooks())
    assert time.perf_counter() - start < 60


def test_book_reads_offline_in_a_browser(smoke_book):
    """Every page loads with no failed request and no console error; every explorer switches images."""
    browser = require_browser()
    root, _ = smoke_book
    html = root / "_build" / "smoke" / "_build" / "html" / "book"
    pages = [html / "intro.html", html / "paper.html"] + [html / "chapters" / f"{n}.html" for n in runner.toc_notebooks()]
    explorers = 0
    for page in pages:
        report = browser.check_page(page)
        assert report["failed_requests"] == [], (page.name, report["failed_requests"])
        assert report["external_requests"] == [], (page.name, report["external_requests"])
        assert report["unexpected_errors"] == [], (page.name, report["console_errors"])
        n = len(report["explorers"])
        if n:
            explorers += n
            picked = browser.check_page(page, select=[(i, 0, 1) for i in range(n)])
            assert all(s["changed"] for s in picked["selections"]), (page.name, picked["selections"])
    assert explorers >= 2, "the similarity and weights chapters each have an explorer"

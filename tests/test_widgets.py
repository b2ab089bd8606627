"""Offline explorers (xl/widgets.py) and their life in the built book.

Fast tests check the widget tree; the slow one executes a tiny notebook with papermill,
builds a throwaway Jupyter Book with the repository's sphinx config and vendored widget
JavaScript, and drives the page in headless Chromium (tests/browser.py).
"""
from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import MYST_HEADER, require_browser

ipywidgets = pytest.importorskip("ipywidgets")

from xl.book import widgets as W  # noqa: E402
from xl.core.errors import XLError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATE_MIME = "application/vnd.jupyter.widget-state+json"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"
PNG = b"\x89PNG\r\n\x1a\n"


def parts(box):
    """(dropdowns, root stack) of an explorer VBox."""
    hbox, root = box.children[-2], box.children[-1]
    return list(hbox.children), root


def image_at(root, path):
    node = root
    for i in path:
        assert isinstance(node, ipywidgets.Stack)
        node = node.children[i]
    assert isinstance(node, ipywidgets.Image)
    return node


def png_at(root, path) -> bytes:
    return bytes(image_at(root, path).value)


def links_of(box, dropdown):
    return [link for link in box._xl_links if link.source[0] is dropdown]


# -- the generic explorer ---------------------------------------------------------------

def test_explorer_stacks_every_combination_and_jslinks_each_level():
    options = {"a": [1, 2], "b": ["x", "y", "z"], "c": [True]}
    calls = []

    def render(**sel):
        calls.append(sel)
        return f"{sel['a']}-{sel['b']}-{sel['c']}".encode()  # bytes pass through as they are

    box = W.explorer(render, options, title="T <&>")
    assert isinstance(box, ipywidgets.VBox)
    assert "T &lt;&amp;&gt;" in box.children[0].value
    dropdowns, root = parts(box)
    assert [d.description for d in dropdowns] == ["a", "b", "c"]
    assert [list(d.options) for d in dropdowns] == [[("1", 1), ("2", 2)],
                                                    [("x", "x"), ("y", "y"), ("z", "z")],
                                                    [("True", True)]]
    assert len(calls) == 6
    for path in itertools.product(range(2), range(3), range(1)):
        a, b, c = (options[k][i] for k, i in zip(options, path))
        assert png_at(root, path) == f"{a}-{b}-{c}".encode()
    # one jslink per Stack of the dropdown's level: 1, 2 and 2*3 Stacks
    stacks = [[root], list(root.children), [s for t in root.children for s in t.children]]
    for dropdown, level in zip(dropdowns, stacks):
        links = links_of(box, dropdown)
        assert len(links) == len(level)
        assert {id(link.target[0]) for link in links} == {id(s) for s in level}
        assert all(link.source[1] == "index" and link.target[1] == "selected_index" for link in links)
        assert all(s.selected_index == 0 for s in level)


def test_explorer_renders_figures_to_small_png_and_closes_them():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def render(k):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, k])
        return fig

    before = len(plt.get_fignums())
    box = W.explorer(render, {"k": [1, 2]})
    assert len(plt.get_fignums()) == before
    _, root = parts(box)
    for i in range(2):
        png = png_at(root, [i])
        assert png.startswith(PNG) and len(png) < 30_000
        assert image_at(root, [i]).format == "png"


@pytest.mark.fault
def test_explorer_rejects_bad_input():
    with pytest.raises(XLError, match="no values"):
        W.explorer(lambda **s: b"", {"a": []})
    with pytest.raises(XLError, match="at least one"):
        W.explorer(lambda **s: b"", {})
    with pytest.raises(XLError, match="Figure or PNG"):
        W.explorer(lambda **s: "not a figure", {"a": [1]})
    with pytest.raises(XLError, match="too many"):
        W.explorer(lambda **s: b"", {"a": range(100), "b": range(100)})


# -- the concrete explorers ---------------------------------------------------------------

def similarity_frame(models=("mBERT", "XLM-R"), layers=(12, 1), metrics=("cosine", "cka"),
                     langs=("en", "de", "zh"), seed=0):
    rng = np.random.default_rng(seed)
    rows = [(m, layer, met, a, b, 1.0 if a == b else rng.random())
            for m in models for layer in layers for met in metrics
            for i, a in enumerate(langs) for b in langs[i:]]  # upper triangle only: mirrored
    return pd.DataFrame(rows, columns=["model", "layer", "metric", "lang_a", "lang_b", "value"])


def spectra_frame(models=("base", "mt", "lm"), layers=(1, 2), matrices=("K", "Q", "FC up"), n=8, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(m, layer, x, i + 1, s) for m in models for layer in layers for x in matrices
            for i, s in enumerate(np.sort(rng.random(n))[::-1] * (1 + models.index(m)))]
    return pd.DataFrame(rows, columns=["model", "layer", "matrix", "index", "sigma"])


def test_similarity_explorer_shape_and_titles(monkeypatch):
    titles = []
    real = W.to_png

    def spy(fig, dpi=W.DPI):
        ax = fig.axes[0]
        titles.append(ax.get_title())
        heat = ax.collections[0].get_array()
        assert np.isfinite(np.asarray(heat, dtype=float)).all()  # mirrored: no holes
        return real(fig, dpi)

    monkeypatch.setattr(W, "to_png", spy)
    box = W.similarity_explorer(similarity_frame())
    dropdowns, root = parts(box)
    assert [d.description for d in dropdowns] == ["model", "layer", "metric"]
    assert [d.value for d in dropdowns] == ["mBERT", 1, "cosine"]  # layers sorted numerically
    assert list(dropdowns[1].options) == [("1", 1), ("12", 12)]
    assert len(titles) == 2 * 2 * 2
    assert titles[0] == "mBERT · layer 1 · cosine"
    png = png_at(root, [1, 1, 1])
    assert png.startswith(PNG) and len(png) < 60_000


@pytest.mark.fault
def test_similarity_explorer_needs_its_columns():
    with pytest.raises(XLError, match="missing \\['value'\\]"):
        W.similarity_explorer(similarity_frame().drop(columns="value"))


def test_spectrum_distance_sorts_and_pads():
    assert W.spectrum_distance([1, 3], [3, 1]) == 0
    assert W.spectrum_distance([3, 4], [0, 0]) == 5
    assert W.spectrum_distance([2], [2, 1]) == 1


def test_svd_explorer_compares_with_base(monkeypatch):
    spectra = spectra_frame()
    captured = []
    real = W.to_png

    def spy(fig, dpi=W.DPI):
        captured.append((fig._suptitle.get_text(), [ax.get_title() for ax in fig.axes]))
        return real(fig, dpi)

    monkeypatch.setattr(W, "to_png", spy)
    box = W.svd_explorer(spectra, base="base")
    dropdowns, root = parts(box)
    assert [d.description for d in dropdowns] == ["model", "matrix", "layer"]
    assert [v for _, v in dropdowns[0].options] == ["mt", "lm"]  # the base is the reference
    assert [v for _, v in dropdowns[1].options] == ["K", "Q", "FC up"]
    assert len(captured) == 2 * 3 * 2
    title, axes = captured[0]
    s = lambda m: spectra.query("model == @m and matrix == 'K' and layer == 1")["sigma"]  # noqa: E731
    d = W.spectrum_distance(s("mt"), s("base"))
    assert title == f"mt vs base, K, layer 1: d = {d:.3g}" and d > 0
    assert axes == ["base", "mt"]
    assert png_at(root, [1, 2, 1]).startswith(PNG)


@pytest.mark.fault
def test_svd_explorer_unknown_base():
    with pytest.raises(XLError, match="base model 'nope'"):
        W.svd_explorer(spectra_frame(), base="nope")


# -- the vendored JavaScript -------------------------------------------------------------

def test_config_serves_vendored_widget_javascript():
    import hashlib
    import yaml

    sphinx = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    scripts = list(sphinx["nb_ipywidgets_js"])
    assert all("://" not in s for s in scripts), "widget JavaScript must not come from a CDN"
    assert scripts[0].endswith("require.js") and scripts[-1].endswith("embed-amd.js")
    static = [ROOT / p for p in sphinx["html_static_path"]]
    for script in scripts:
        assert any((d / script).is_file() for d in static), f"{script} is not in {static}"
    folder = ROOT / "book" / "_static" / "widgets"
    notes = (folder / "LICENSE.txt").read_text()
    for name in ["require.js", "embed-amd.js", *(p.name for p in folder.glob("*.woff2"))]:
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in notes, f"{name} differs from the version noted in LICENSE.txt"


def test_config_serves_its_stylesheets():
    import yaml

    sphinx = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    static = [ROOT / p for p in sphinx["html_static_path"]]
    assert "tables.css" in sphinx["html_css_files"]
    for sheet in sphinx["html_css_files"]:
        assert any((d / sheet).is_file() for d in static), f"{sheet} is not in {static}"


# -- executed notebook -> built book -> browser ------------------------------------------

NOTEBOOK = MYST_HEADER + textwrap.dedent('''\

    # Explorers

    ```{code-cell} ipython3
    import sys
    sys.path.insert(0, TESTS)
    from test_widgets import similarity_frame, spectra_frame
    from xl.book.widgets import similarity_explorer, svd_explorer
    similarity_explorer(similarity_frame(metrics=("cosine",)))
    ```

    ```{code-cell} ipython3
    svd_explorer(spectra_frame(models=("base", "mt"), matrices=("K", "Q")), base="base")
    ```
    ''')


def build_widget_book(root: Path) -> Path:
    """Execute a notebook with two explorers, build it as a book with the repository's
    sphinx config and static files; return the chapter's HTML file."""
    import papermill
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    md = root / "explore.md"
    md.write_text(NOTEBOOK.replace("TESTS", repr(str(ROOT / "tests"))))
    subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", str(md)], check=True)
    chapters = root / "book" / "chapters"
    chapters.mkdir(parents=True, exist_ok=True)
    executed = chapters / "explore.ipynb"
    papermill.execute_notebook(str(root / "explore.ipynb"), str(executed), cwd=str(ROOT),
                               kernel_name="python3", progress_bar=False)
    shutil_copytree(ROOT / "book" / "_static", root / "book" / "_static")
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())
    config = {"title": "widgets", "author": "xl", "only_build_toc_files": True,
              "execute": {"execute_notebooks": "off"}, "html": repo.get("html", {}),
              "sphinx": repo["sphinx"]}
    (root / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))  # order matters
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: book/chapters/explore\n")
    (root / "intro.md").write_text("# Widgets\n\nNo widgets on this page.\n")
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb) if jb.exists() else "jupyter-book", "build", "--quiet", str(root)], check=True,
                   stdout=subprocess.DEVNULL)
    return root / "_build" / "html" / "book" / "chapters" / "explore.html"


def shutil_copytree(src: Path, dst: Path) -> None:
    import shutil
    shutil.copytree(src, dst, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def widget_book(tmp_path_factory):
    pytest.importorskip("papermill")
    pytest.importorskip("jupyter_book")
    root = tmp_path_factory.mktemp("widget-book")
    return root, build_widget_book(root)


@pytest.mark.slow
def test_executed_notebook_carries_widget_state(widget_book):
    root, _ = widget_book
    nb = json.loads((root / "book" / "chapters" / "explore.ipynb").read_text())
    state = nb["metadata"]["widgets"][STATE_MIME]["state"]
    names = [m["model_name"] for m in state.values()]
    assert names.count("ImageModel") == 2 * 2 * 1 + 1 * 2 * 2
    assert names.count("LinkModel") == (1 + 2 + 4) + (1 + 1 + 2)
    views = [o["data"][VIEW_MIME]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
             if VIEW_MIME in o.get("data", {})]
    assert len(views) == 2 and all(v in state for v in views)
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    assert all(m["buffers"][0]["path"] == ["value"] for m in images)


@pytest.mark.slow
def test_built_page_embeds_state_and_local_javascript(widget_book):
    root, page = widget_book
    html = page.read_text()
    assert html.count(f'<script type="{STATE_MIME}">') == 1
    assert html.count(f'<script type="{VIEW_MIME}">') == 2
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    widget_js = [s.split("?")[0] for s in scripts if "/widgets/" in s]
    assert widget_js == ["../../_static/widgets/require.js", "../../_static/widgets/require-config.js",
                         "../../_static/widgets/embed-amd.js"]
    for src in widget_js:
        assert (page.parent / src).is_file()
    assert not [s for s in scripts if "jupyter-widgets" in s or "require.min.js" in s]  # no CDN
    assert "require.js" not in (root / "_build" / "html" / "intro.html").read_text()  # only where needed
    styles = [s.split("?")[0] for s in re.findall(r'<link[^>]*href="([^"]+\.css[^"]*)"', html)]
    assert "../../_static/tables.css" in styles and (page.parent / "../../_static/tables.css").is_file()


@pytest.mark.slow
def test_built_page_works_offline_in_a_browser(widget_book):
    browser = require_browser()
    _, page = widget_book
    report = browser.check_page(page, select=[(0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 2, 1)])
    assert report["widget_views"] == 2
    assert [[d["label"] for d in e["dropdowns"]] for e in report["explorers"]] == [
        ["model", "layer", "metric"], ["model", "matrix", "layer"]]
    assert all(len(e["images"]) == 1 for e in report["explorers"])
    assert [s["changed"] for s in report["selections"]] == [True] * 4, report["selections"]
    assert report["failed_requests"] == []
    assert report["external_requests"] == []  # nothing from a CDN: base, controls, fonts are local
    assert all(n >= 1 for n in report["fonts"].values()), report["fonts"]  # served from _static/widgets
    fonts = [u for u in report["requests"] if u.endswith(".woff2") and "/widgets/" in u]
    assert len(fonts) == 3 and all("/_static/widgets/" in u for u in fonts), fonts
    assert report["unexpected_errors"] == [], report["console_errors"]


def state_png(state: dict, view_id: str, path) -> bytes:
    """PNG of the image at `path` (indices into the nested Stacks) of a saved explorer."""
    import base64

    def model(ref):
        return state[ref.removeprefix("IPY_MODEL_")]

    node = model(model(view_id)["state"]["children"][-1])  # VBox: [title], dropdowns, root Stack
    for i in path:
        assert node["model_name"] == "StackModel"
        node = model(node["state"]["children"][i])
    assert node["model_name"] == "ImageModel"
    return base64.b64decode(node["buffers"][0]["data"])


@pytest.mark.slow
def test_browser_shows_the_image_of_the_selected_combination(widget_book):
    browser = require_browser()
    root, page_file = widget_book
    nb = json.loads((root / "book" / "chapters" / "explore.ipynb").read_text())
    state = nb["metadata"]["widgets"][STATE_MIME]["state"]
    views = [o["data"][VIEW_MIME]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
             if VIEW_MIME in o.get("data", {})]
    with browser.open_page(page_file) as page:
        assert page.image_bytes(0) == [state_png(state, views[0], [0, 0, 0])]
        page.select(0, dropdown=1, option=1)   # layer 12 of the first model
        page.select(0, dropdown=0, option=1)   # then the second model: its layer must follow
        assert page.image_bytes(0) == [state_png(state, views[0], [1, 1, 0])]
        page.select(1, dropdown=2, option=1)
        page.select(1, dropdown=1, option=1)
        assert page.image_bytes(1) == [state_png(state, views[1], [0, 1, 1])]
        assert page.image_bytes(0) == [state_png(state, views[0], [1, 1, 0])]  # independent explorers

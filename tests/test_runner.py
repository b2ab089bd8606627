"""The runner: caching, failures that leave nothing half-written, parameters, the CLI."""
import json
import shutil

import pytest
from conftest import MYST_HEADER, REPO

from xl.book import cli, imports, runner
from xl.core.errors import XLError

HEADER = MYST_HEADER
OK = HEADER + """
```{code-cell} ipython3
:tags: [parameters]
preset = "lab"
overrides = {}
rows = 3
```

```{code-cell} ipython3
import pandas as pd
import xl
from xl.core.results import Store
cfg = xl.config(preset, **overrides)
Store(preset).write("toy", pd.DataFrame({"i": range(rows), "langs": [",".join(cfg["languages"])] * rows}))
```
"""
FAIL = HEADER + """
```{code-cell} ipython3
:tags: [parameters]
preset = "lab"
```

```{code-cell} ipython3
import pandas as pd
from xl.core.results import Store
Store(preset).write("broken", pd.DataFrame({"i": [1]}))
```

```{code-cell} ipython3
raise ValueError("boom")
```
"""


@pytest.fixture
def toy(book_root):
    (book_root / "notebooks" / "toy.md").write_text(OK)
    (book_root / "notebooks" / "broken.md").write_text(FAIL)
    return book_root


def test_runs_once_then_uses_the_cache(toy):
    first = runner.run("toy", "smoke")
    assert first.status == "ran"
    table = toy / "results" / "smoke" / "toy.csv"
    assert table.read_text().count("\n") == 4
    executed = json.loads(runner.executed_path("smoke", "toy").read_text())
    tags = [set(c["metadata"].get("tags", [])) for c in executed["cells"]]
    plumbing = [t for t in tags if t & {"parameters", "injected-parameters"}]
    assert len(plumbing) == 2, "the parameters cell and papermill's injected one"
    assert all("hide-cell" in t for t in plumbing), "plumbing shown in the book"
    assert runner.run("toy", "smoke").status == "cached"
    assert runner.run("toy", "smoke", force=True).status == "ran"


def test_changed_inputs_rerun(toy):
    runner.run("toy", "smoke")
    assert runner.run("toy", "smoke", {"rows": 5}).status == "ran"
    assert (toy / "results" / "smoke" / "toy.csv").read_text().count("\n") == 6
    assert runner.run("toy", "smoke", {"rows": 5}).status == "cached"
    path = toy / "notebooks" / "toy.md"
    path.write_text(path.read_text() + "\n% a new comment\n")
    assert runner.run("toy", "smoke", {"rows": 5}).status == "ran"
    # Each preset keeps its own executed notebook and tables.
    assert runner.run("toy", "lab", {"rows": 5}).status == "ran"
    assert runner.run("toy", "smoke", {"rows": 5}).status == "cached"


def test_preset_overrides_reach_the_notebook(toy):
    runner.run("toy", "smoke", {"languages": ["en", "de"]})
    assert "en,de" in (toy / "results" / "smoke" / "toy.csv").read_text()


def test_book_overrides_preset_keys_in_every_chapter(toy, monkeypatch):
    monkeypatch.setattr(runner, "toc_notebooks", lambda: ["toy"])
    results = runner.run_all("smoke", log=lambda *a, **k: None, params={"languages": ["en", "de"]})
    assert [r.status for r in results] == ["ran"]
    assert "en,de" in (toy / "results" / "smoke" / "toy.csv").read_text()
    with pytest.raises(XLError, match="rows is not one"):  # a chapter's own parameter: not for the whole book
        runner.run_all("smoke", log=lambda *a, **k: None, params={"rows": 2})


@pytest.mark.fault
def test_failure_names_the_cell_and_leaves_nothing_behind(toy):
    results = toy / "results" / "smoke"
    with pytest.raises(XLError, match=r"'broken' failed in code cell 3 \(raise ValueError.*ValueError: boom"):
        runner.run("broken", "smoke")
    assert not (results / "broken.csv").exists(), "a failed notebook's table was kept"
    assert not runner.executed_path("smoke", "broken").exists()
    assert not [p for p in results.rglob("*") if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.fault
def test_failure_keeps_the_previous_good_results(toy):
    runner.run("toy", "smoke")
    before = (toy / "results" / "smoke" / "toy.csv").read_text()
    path = toy / "notebooks" / "toy.md"
    path.write_text(path.read_text().replace("range(rows)", "range(rows // 0)"))
    with pytest.raises(XLError, match="ZeroDivisionError"):
        runner.run("toy", "smoke")
    assert (toy / "results" / "smoke" / "toy.csv").read_text() == before


@pytest.mark.fault
def test_bad_input(toy):
    with pytest.raises(XLError, match="no notebook named 'nope'; available: .*toy"):
        runner.run("nope", "smoke")
    with pytest.raises(XLError, match="unknown preset 'huge'"):
        runner.run("toy", "huge")
    with pytest.raises(XLError, match="unknown parameter 'colour'"):
        runner.run("toy", "smoke", {"colour": "red"})
    with pytest.raises(XLError, match="'rows' must be an int"):
        runner.run("toy", "smoke", {"rows": "many"})
    with pytest.raises(XLError, match="'languages' must be a list"):
        runner.run("toy", "smoke", {"languages": "en"})
    with pytest.raises(XLError, match="'analysis_verses' must be an int, got None"):  # -p analysis_verses=null
        runner.run("toy", "smoke", {"analysis_verses": None})
    with pytest.raises(XLError, match="key=value"):
        runner.parse_params(["rows"])
    assert runner.parse_params(["rows=4", "languages=[en, fr]", "x=0.5", "mt_languages=null"]) == \
        {"rows": 4, "languages": ["en", "fr"], "x": 0.5, "mt_languages": None}


@pytest.mark.fault
def test_cli_reports_errors_cleanly(toy, capsys):
    assert cli.main(["run", "nope", "--preset", "smoke"]) == 2
    assert "xl: error: no notebook named 'nope'" in capsys.readouterr().err
    assert cli.main(["run", "toy", "--preset", "smoke", "-p", "rows=2"]) == 0
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "smoke" in out and "lab" in out and "paper" in out and "languages" in out


def test_toc_order(toy):
    assert runner.toc_notebooks()[0] == "corpus"


def test_manifest_records_each_run(toy):
    runner.run("toy", "smoke", {"rows": 2})
    runner.run("toy", "smoke", {"rows": 2})
    manifest = json.loads((toy / "results" / "smoke" / "manifest.json").read_text())
    assert manifest["notebooks"]["toy"]["status"] == "cached"
    assert manifest["parameters"]["languages"] == ["en", "de", "ru", "zh"] and manifest["seed"] == 0
    assert manifest["versions"]["torch"].startswith("2.13") and manifest["versions"]["tokenizers"]
    assert len(manifest["data_checksums"]["bible.db"]) == 64
    assert manifest["device"].startswith(("cpu", "cuda"))


def test_cache_command_shows_and_clears(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XL_CACHE", str(tmp_path / "c"))
    (tmp_path / "c" / "reps").mkdir(parents=True)
    (tmp_path / "c" / "reps" / "a.npy").write_bytes(b"x" * 2048)
    assert cli.main(["cache"]) == 0
    assert "reps" in capsys.readouterr().out
    assert cli.main(["cache", "--clear", "nothing"]) == 2
    assert cli.main(["cache", "--clear", "reps"]) == 0
    assert not (tmp_path / "c" / "reps").exists() and "2.0 KB" in capsys.readouterr().err


@pytest.mark.fault
def test_leftovers_of_a_killed_run_are_cleared(toy):
    stale = toy / "results" / "smoke" / ".pending-toy-abc123"
    stale.mkdir(parents=True)
    (stale / "toy.csv").write_text("half,written\n")
    runner.run("toy", "smoke")
    assert not stale.exists()
    assert "half" not in (toy / "results" / "smoke" / "toy.csv").read_text()


# ---------------------------------------------------------------- the xl files a chapter's key hashes

def test_a_chapter_hashes_only_the_modules_it_imports():
    chapter = imports.chapter_files(REPO / "notebooks" / "corpus.md")
    files = {p.relative_to(imports.PACKAGE_DIR).as_posix() for p in chapter}
    assert {"__init__.py", "data/__init__.py", "data/corpus.py", "book/plots.py"} <= files
    assert not [f for f in files if f.startswith("transfer/")]


TOY_PACKAGE = {  # a fake `xl` package: path -> source
    "__init__.py": "from xl.core import base\n",
    "core/__init__.py": "",
    "core/base.py": "import os\n",
    "core/lazy.py": "def helper():\n    from xl.core import late\n",
    "core/late.py": "",
    "core/rel.py": "from . import base\nfrom .. import tools\n",
    "tools.py": "CODE = 'import sys; from xl.worker import main; main()'\nARGV = ['python', '-m', 'xl.cli']\n",
    "worker.py": "", "cli.py": "",
    "unused.py": "import xl.core.late\n",
}


def test_imports_are_followed_inside_functions_relative_and_in_subprocess_code(tmp_path):
    package = tmp_path / "xl"
    for name, text in TOY_PACKAGE.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    nb = tmp_path / "chapter.md"
    nb.write_text(MYST_HEADER + "\n```{code-cell} ipython3\n%matplotlib inline\n"
                  "from xl.core import lazy, rel\nfrom xl.core.base import os\n```\n")
    files = {p.relative_to(package).as_posix() for p in imports.chapter_files(nb, package)}
    assert files == {"__init__.py", "core/__init__.py", "core/base.py", "core/lazy.py", "core/late.py",
                     "core/rel.py", "tools.py", "worker.py", "cli.py"}


def test_the_key_changes_with_the_imported_files_only(book_root, tmp_path, monkeypatch):
    package = tmp_path / "xl"
    shutil.copytree(imports.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(imports, "PACKAGE_DIR", package)
    source = runner.notebook_source("corpus")
    key = runner.chapter_key(source, {"preset": "smoke"})
    for path in (package / "transfer").rglob("*.py"):
        path.write_text(path.read_text() + "\n# not imported by the corpus chapter\n")
    assert runner.chapter_key(source, {"preset": "smoke"}) == key
    corpus = package / "data" / "corpus.py"
    corpus.write_text(corpus.read_text() + "\n# imported by it\n")
    assert runner.chapter_key(source, {"preset": "smoke"}) != key

"""Execute the book's notebooks with papermill, cached per preset, and build the HTML book.

A notebook is re-executed only when its inputs change: its text, its parameters, the
source of the `xl` modules it imports (xl.book.imports), or the data version. Executed
notebooks are kept under results/<preset>/notebooks/; a failed run leaves neither an
executed notebook nor any results table behind (tables go to a pending folder, moved in
on success).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
import papermill
import yaml

from xl.book import imports, manifest
from xl.core import io, paths, presets
from xl.core.errors import XLError, did_you_mean
from xl.data import corpus


@dataclasses.dataclass
class RunResult:
    name: str
    status: str  # "ran" or "cached"
    seconds: float


def notebook_source(name: str) -> Path:
    path = paths.root() / "notebooks" / f"{name}.md"
    if not path.is_file():
        known = sorted(p.stem for p in (paths.root() / "notebooks").glob("*.md"))
        raise XLError(f"no notebook named {name!r}; {did_you_mean(name, known)}available: {', '.join(known) or 'none'}")
    return path


# The kernel's own log (ipykernel's "running over TCP without encryption", a KeyboardInterrupt
# caught while it shuts down) is noise to a reader; errors in cells still come through papermill.
KERNEL_QUIET = ["--IPKernelApp.log_level=CRITICAL"]


def toc_notebooks() -> list[str]:
    """Chapters of _toc.yml that are executed notebooks (files under book/chapters/), in order."""
    toc = yaml.safe_load((paths.root() / "_toc.yml").read_text())
    files = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [Path(f).stem for f in files if f.startswith("book/chapters/")]


def data_digest() -> str:
    data = sorted(p for p in (paths.root() / "data").glob("*") if p.is_file())
    return io.digest(corpus.data_version(), *[p.read_bytes() for p in data])


def executed_path(preset: str, name: str) -> Path:
    return paths.results_dir(preset) / "notebooks" / f"{name}.ipynb"


def parse_params(items: list[str]) -> dict:
    """`key=value` strings to a dict; values are YAML (3, 0.5, [en, fr], true, text)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise XLError(f"parameter {item!r} must look like key=value")
        params[key.strip()] = yaml.safe_load(value)
    return params


def _check_type(key, value, default):
    presets.check_type(key, value, default)  # the notebook's own parameters, typed by their defaults


def notebook_parameters(nb_path: Path, preset: str, params: dict) -> dict:
    """Split user parameters into the notebook's own and preset overrides, checking names and types."""
    cfg = presets.config(preset)
    declared = notebook_defaults(nb_path)
    own, overrides = {"preset": preset}, {}
    for key, value in params.items():
        if key in declared and key not in ("preset", "overrides"):
            _check_type(key, value, declared[key])
            own[key] = value
        elif key in cfg and key != "preset":
            overrides[key] = value
        else:
            known = sorted((set(declared) | set(cfg)) - {"preset", "overrides", "description"})
            raise XLError(f"unknown parameter {key!r} for {nb_path.stem}; {did_you_mean(key, known)}"
                          f"known: {', '.join(known)}")
    presets.config(preset, **overrides)  # presets.check: each override's type and range, and their consistency
    if overrides:
        own["overrides"] = overrides
    return own


def notebook_defaults(nb_path: Path) -> dict:
    """The names and default values assigned in the notebook's `parameters` cell."""
    nb = jupytext.read(nb_path)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            scope: dict = {}
            exec(cell.source, {}, scope)  # noqa: S102 - our own notebook's literal defaults
            return scope
    raise XLError(f"{nb_path} has no cell tagged 'parameters'")


def chapter_key(source: Path, parameters: dict) -> str:
    """What an executed notebook depends on: its text, parameters, the xl files it runs, the data."""
    return io.digest(source.read_text(), parameters, imports.code_digest(source), data_digest())


def run(name: str, preset: str = "lab", params: dict | None = None, force: bool = False) -> RunResult:
    """Execute one notebook (unless cached) and commit its results tables."""
    source = notebook_source(name)
    parameters = notebook_parameters(source, preset, params or {})
    paths.check_writable(paths.results_dir(preset))
    key = chapter_key(source, parameters)
    out = executed_path(preset, name)
    key_file = out.with_suffix(".key")
    if not force and out.is_file() and key_file.is_file() and key_file.read_text() == key:
        manifest.record(preset, name, "cached", 0.0, parameters)
        return RunResult(name, "cached", 0.0)
    start = time.perf_counter()
    for stale in paths.results_dir(preset).glob(f".pending-{name}-*"):  # left by a run that was killed
        shutil.rmtree(stale, ignore_errors=True)
    pending = Path(tempfile.mkdtemp(prefix=f".pending-{name}-", dir=paths.results_dir(preset)))
    try:
        _execute(source, out, parameters, pending)
        for table in pending.iterdir():
            os.replace(table, paths.results_dir(preset) / table.name)
        io.write_text(key, key_file)
    finally:
        shutil.rmtree(pending, ignore_errors=True)
    seconds = time.perf_counter() - start
    manifest.record(preset, name, "ran", seconds, parameters)
    return RunResult(name, "ran", seconds)


def _execute(source: Path, out: Path, parameters: dict, pending: Path) -> None:
    nb = jupytext.read(source)
    env = {"XL_PENDING": str(pending), "XL_ROOT": str(paths.root())}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"{source.stem}.ipynb"
            jupytext.write(nb, src)
            with io.atomic_path(out) as tmp_out:
                try:
                    papermill.execute_notebook(
                        str(src), str(tmp_out), parameters=parameters, kernel_name="python3",
                        progress_bar=sys.stderr.isatty(), cwd=str(paths.root() / "notebooks"),
                        extra_arguments=KERNEL_QUIET,
                    )
                except papermill.PapermillExecutionError as err:
                    cell = _source_cell_number(nb, err.cell_index)
                    raise XLError(f"notebook {source.stem!r} failed in code cell {cell} "
                                  f"({_first_line(err.source)}): {err.ename}: {err.evalue}") from None
                _hide_plumbing(tmp_out)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


# Cells a reader of the book need not see, collapsed behind a toggle (myst-nb's `hide-cell` hides
# input and output): the parameters cell and papermill's injected values.
PLUMBING_TAGS = ("parameters", "injected-parameters")


def _hide_plumbing(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if any(tag in PLUMBING_TAGS for tag in tags) and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    nbformat.write(nb, path)


def _source_cell_number(nb, index: int) -> int:
    """The failing cell's number among the code cells of notebooks/<name>.md.

    `index` counts the executed notebook's cells, where papermill injected one after `parameters`.
    """
    tags = [c.get("metadata", {}).get("tags", []) for c in nb.cells]
    params = next(i for i, t in enumerate(tags) if "parameters" in t)
    index = index - 1 if index > params else index
    return sum(c.cell_type == "code" for c in nb.cells[: index + 1])


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[0][:80] + (" ..." if len(lines) > 1 else "")) if lines else "empty cell"


def run_all(preset: str = "lab", force: bool = False, log=print, params: dict | None = None) -> list[RunResult]:
    """Execute every chapter of _toc.yml in order, with preset keys overridden by `params` in all
    of them; stop at the first failure."""
    cfg = presets.config(preset)
    params = params or {}
    own = sorted((set(params) - set(cfg)) | (set(params) & {"preset", "description"}))
    if own:
        raise XLError(f"xl book -p takes preset keys, shared by every chapter; {', '.join(own)} is not one "
                      f"(a chapter's own parameters: xl run CHAPTER -p KEY=VALUE)")
    paths.check_writable(paths.results_dir(preset))  # before the first chapter, not after it ran
    names = toc_notebooks()
    results = []
    for i, name in enumerate(names, 1):
        log(f"[{i}/{len(names)}] {name} ({preset}) ...", end=" ", flush=True)
        start = time.perf_counter()
        try:
            result = run(name, preset, params, force=force)
        except XLError:
            log(f"FAILED after {time.perf_counter() - start:.1f}s")
            raise
        log(f"{result.status} in {time.perf_counter() - start:.1f}s")
        results.append(result)
    return results


def build_html(preset: str, strict: bool = True) -> Path:
    """Copy the preset's executed notebooks into book/chapters/ and render the HTML book."""
    root = paths.root()
    chapters = root / "book" / "chapters"
    chapters.mkdir(parents=True, exist_ok=True)
    for name in toc_notebooks():
        executed = executed_path(preset, name)
        if not executed.is_file():
            raise XLError(f"chapter {name!r} has not been executed for preset {preset!r}: run xl book --preset {preset}")
        shutil.copyfile(executed, chapters / f"{name}.ipynb")
    out = root / "_build" / preset
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(root), "--path-output", str(out), "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise XLError(f"jupyter-book build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return out / "_build" / "html"

"""Colab: every chapter has a paired .ipynb in sync with its .md, an "Open in Colab" link to it,
a first code cell that installs xl there, and switches to the paper preset on a Colab GPU."""
import sys
import tomllib
import types
from pathlib import Path

import jupytext
import pytest
import torch

from xl.book import colab

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p.stem for p in (REPO / "notebooks").glob("*.md"))


def _cells(notebook):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in notebook.cells]


@pytest.mark.parametrize("name", CHAPTERS)
def test_paired_notebook_matches_its_markdown(name):
    md, ipynb = REPO / "notebooks" / f"{name}.md", REPO / "notebooks" / f"{name}.ipynb"
    assert ipynb.exists(), f"run: jupytext --sync notebooks/{name}.md"
    paired = jupytext.read(ipynb)
    assert _cells(jupytext.read(md)) == _cells(paired), f"out of sync: run jupytext --sync notebooks/{name}.md"
    assert all(not c.get("outputs") for c in paired.cells), "the paired notebook must carry no outputs"


@pytest.mark.parametrize("name", CHAPTERS)
def test_colab_link_and_install_cell(name):
    cells = jupytext.read(REPO / "notebooks" / f"{name}.md").cells
    assert f"]({colab.colab_url(name)})" in cells[0].source
    code = [c for c in cells if c.cell_type == "code"]
    assert f"xl @ git+{colab.REPOSITORY}" in code[0].source and "remove-cell" in code[0].metadata["tags"]
    assert "parameters" in code[1].metadata["tags"]
    assert any("xl.book.colab.preset(preset)" in c.source for c in code[2:3]), "the setup cell picks the preset"


def test_repository_is_declared_once_for_pip_and_colab():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["urls"]["Repository"] == colab.REPOSITORY


def test_paper_preset_on_a_colab_gpu_only(monkeypatch):
    monkeypatch.delenv("XL_PRESET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert colab.preset("lab") == "lab"  # not on Colab
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert colab.preset("lab") == "paper"
    assert colab.preset("smoke") == "smoke"  # an explicit non-default choice stays
    monkeypatch.setenv("XL_PRESET", "lab")
    assert colab.preset("lab") == "lab"
    monkeypatch.delenv("XL_PRESET")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert colab.preset("lab") == "lab"

"""Running the chapters on Google Colab.

Each notebook in `notebooks/` has a paired `.ipynb` (jupytext) that Colab opens from the
repository; its first code cell installs `xl` there. On a Colab GPU the chapters switch from
the default `lab` preset to `paper` (the paper's models, FLORES-200 and XGLUE need a GPU and
the hub); set the environment variable XL_PRESET to choose another preset there.
"""
from __future__ import annotations

import os
import sys

REPOSITORY = "https://github.com/xl-book/xl"  # also in pyproject.toml [project.urls]; tests check both agree


def on_colab() -> bool:
    return "google.colab" in sys.modules


def colab_url(notebook: str, branch: str = "main") -> str:
    """The "Open in Colab" address of `notebooks/<notebook>.ipynb` in the repository."""
    return f"https://colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}" \
           f"/blob/{branch}/notebooks/{notebook}.ipynb"


def preset(chosen: str) -> str:
    """The preset a chapter runs: `chosen`, except on Colab, where XL_PRESET if set, else `paper`
    in place of the default `lab` when a GPU is present."""
    if not on_colab():
        return chosen
    if os.environ.get("XL_PRESET"):
        return os.environ["XL_PRESET"]
    import torch  # here, not at the top: `import xl` (which imports this module) stays light

    if chosen == "lab" and torch.cuda.is_available():
        print("Colab with a GPU: running the paper preset (set XL_PRESET=lab to keep the lab one)")
        return "paper"
    return chosen

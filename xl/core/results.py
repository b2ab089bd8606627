"""Results tables of a preset: tidy CSV files under results/<preset>/, written atomically.

While `xl run`/`xl book` executes a notebook, its tables go to a pending folder
(XL_PENDING) and are moved into results/<preset>/ only when the whole notebook
succeeds, so a failed run leaves no half-written results. Run interactively
(Jupyter, Colab), tables are written straight to results/<preset>/.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from xl.core import io, paths
from xl.core.errors import XLError


class Store:
    def __init__(self, preset: str):
        self.preset = preset
        self.final = paths.results_dir(preset)
        pending = os.environ.get("XL_PENDING")
        self.pending = Path(pending) if pending else None

    def write(self, name: str, df: pd.DataFrame) -> Path:
        """Write table `name` (e.g. 'corpus' -> corpus.csv)."""
        folder = paths.check_writable(self.pending or self.final)
        return io.write_csv(df, folder / f"{name}.csv")

    def exists(self, name: str) -> bool:
        return any((d / f"{name}.csv").is_file() for d in self._dirs())

    def read(self, name: str) -> pd.DataFrame:
        """Read table `name`, from this run if it wrote it, else from earlier runs."""
        for d in self._dirs():
            if (d / f"{name}.csv").is_file():
                return pd.read_csv(d / f"{name}.csv", keep_default_na=False, na_values=[""])
        raise XLError(f"no results table {name!r} for preset {self.preset!r} in {self.final}: "
                      f"run the chapter that writes it first (xl book --preset {self.preset})")

    def _dirs(self):
        return [d for d in (self.pending, self.final) if d is not None]

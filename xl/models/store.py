"""Saved lab models: each folder (`save_pretrained` model and tokenizer) holds a marker file with the
digest of everything that defines it, and a training checkpoint waits beside it until it is saved.

A folder is written to a temporary folder and renamed into place, a checkpoint atomically, so a run
killed at any moment leaves a complete folder or none (and `leftovers`, removed by the next save).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from xl.core import io

MARKER = "xl_training.json"


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.checkpoint.pt"


def marker(out_dir: str | os.PathLike) -> dict | None:
    """What `save` recorded about a saved model (digest, log, time), or None."""
    path = Path(out_dir) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def is_trained(out_dir, digest: str) -> bool:
    info = marker(out_dir)
    return info is not None and info.get("digest") == digest and (Path(out_dir) / "config.json").is_file()


def save(model, tokenizer, out_dir, info: dict) -> Path:
    """save_pretrained model and tokenizer to a temporary folder beside `out_dir`, then rename it into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        io.write_json(info, tmp / MARKER)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def save_trained(model, tokenizer, out_dir, info: dict) -> Path:
    """`save`, then remove the training checkpoint of `out_dir` and what killed runs left beside it."""
    save(model, tokenizer, out_dir, info)
    checkpoint_path(out_dir).unlink(missing_ok=True)
    for path in leftovers(out_dir):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return Path(out_dir)


def save_checkpoint(path: Path, state: dict) -> None:
    with io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint saved at `path`, or None when there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - truncated zip, bad pickle, ...: either way it is lost
        warnings.warn(f"ignoring the unreadable checkpoint {path} ({type(err).__name__}: {err}); "
                      "training from the start", stacklevel=2)
        return None


def leftovers(out_dir: str | os.PathLike) -> list[Path]:
    """Temporary files and folders that a run killed while saving `out_dir` or its checkpoint left beside it."""
    out_dir, ck = Path(out_dir), checkpoint_path(out_dir)
    return [*out_dir.parent.glob(f".{out_dir.name}.*.tmp"), *out_dir.parent.glob(f".{out_dir.name}.old-*"),
            *out_dir.parent.glob(f".{ck.stem}.*.tmp{ck.suffix}")]

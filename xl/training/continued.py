"""Paper-scale continued pretraining: an mBART-like model (a local folder, a lab model or a hub id)
trained further with the translation objective on a parallel corpus (a DataFrame or a hub dataset).
The settings a caller leaves out are the paper preset's."""
from __future__ import annotations

import os
import time
from pathlib import Path

import datasets
import pandas as pd
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from xl.core import hub, io, presets
from xl.core.errors import XLError
from xl.models.store import checkpoint_path, is_trained, marker
from xl.training import objectives
from xl.training.loop import VERSION, at_labels, finish, fit, set_generation, unwrap
from xl.training.objectives import TranslationTask, directions

PAPER = presets.config("paper")


def continue_pretraining(base: str | os.PathLike, parallel, kind: str | list, out_dir: str | os.PathLike, *,
                         steps: int, batch_size: int, lr: float | None = None, warmup: float | None = None,
                         max_length: int = PAPER["model_max_length"], seed: int = PAPER["seed"],
                         cfg: dict | None = None, digest: str | None = None, name: str | None = None,
                         languages=None, checkpoint_every: int | None = None, short_first: int | None = None) -> Path:
    """Continue training an mBART-like model (`base`: a local folder or a hub id such as
    `facebook/mbart-large-50`) with the translation objective and save it to `out_dir`.

    parallel: a DataFrame with one column per language and aligned rows (NaN where a sentence
    is missing, e.g. an English-centric corpus), or a hub dataset id in the OPUS-100 layout
    (configs `de-en`, rows {'translation': {'de': ..., 'en': ...}}), read with `hub_parallel`.
    kind: 'm2m', 'm2o', 'o2m' or an explicit list of (src, tgt) directions.
    lr, warmup: default to the preset's (cfg), else the paper preset's; checkpoint_every to the
    preset's or 0 (none). short_first: the first half of the steps on pairs whose two sides fit in this
    many pieces (`xl.training.objectives.short_first`); None: the plain schedule.
    Reuses `out_dir` if it was saved with the same digest; resumes from its checkpoint.
    """
    cfg = cfg or {}
    lr = lr if lr is not None else cfg.get("train_mt_lr", PAPER["train_mt_lr"])
    warmup = warmup if warmup is not None else cfg.get("train_warmup", PAPER["train_warmup"])
    checkpoint_every = checkpoint_every if checkpoint_every is not None else cfg.get("train_checkpoint_every") or 0
    out_dir = Path(out_dir)
    local = Path(base).expanduser()
    is_local = local.is_dir()
    if not is_local:
        hub.require(f"the base model {base!r}", "Download it where the hub is reachable "
                    f"(huggingface-cli download {base} --local-dir DIR) and pass DIR as the base.")
    if isinstance(parallel, str):
        parallel = hub_parallel(parallel, languages or cfg.get("languages"))
    if languages is None:
        languages = cfg.get("languages") or list(parallel.columns)
    dirs = directions(kind, languages) if isinstance(kind, str) else [tuple(d) for d in kind]
    base_id = str(local.resolve()) if is_local else str(base)
    base_digest = (marker(local) or {}).get("digest") if is_local else None
    digest = digest or io.digest(VERSION, "cp", base_id, base_digest, dirs, steps, batch_size, lr, warmup,
                                 max_length, seed, pd.util.hash_pandas_object(parallel, index=False).sum(),
                                 *([short_first] if short_first else []))
    if is_trained(out_dir, digest):
        return out_dir
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(base_id)
    model = AutoModelForSeq2SeqLM.from_pretrained(base_id)
    set_generation(model, tok, max_length)

    def translation(pairs, n_steps, task_seed):
        return TranslationTask(tok, pairs, dirs, steps=n_steps, batch_size=batch_size, max_length=max_length,
                               seed=task_seed)

    task = objectives.short_first(translation, parallel, tok, short_first, steps, seed)
    fitted, log = fit(at_labels(model), task, steps, lr=lr, warmup=warmup, seed=seed, digest=digest,
                      checkpoint=checkpoint_path(out_dir), checkpoint_every=checkpoint_every,
                      log_every=cfg.get("train_log_every") or 10, desc=name or out_dir.name)
    return finish(unwrap(fitted), tok, out_dir, digest, log, time.perf_counter() - start,
                  {"name": name or out_dir.name, "objective": "cp", "base": base_id,
                   "directions": kind if isinstance(kind, str) else [list(d) for d in dirs],
                   "steps": steps, "batch_size": batch_size})


def hub_parallel(dataset: str, languages, pivot: str = "en", split: str = "train",
                 max_pairs: int | None = None) -> pd.DataFrame:
    """An English-centric hub corpus in the OPUS-100 layout (e.g. `Helsinki-NLP/opus-100`) as one
    column per language, one row per sentence pair (NaN in the other columns)."""
    hub.require(f"the parallel corpus {dataset!r}", "Pass a DataFrame with one column per language instead "
                "(xl.data.corpus.read_parallel_files reads one text file per language).")
    configs = set(datasets.get_dataset_config_names(dataset))
    frames = []
    for lang in languages:
        if lang == pivot:
            continue
        config = next((c for c in (f"{lang}-{pivot}", f"{pivot}-{lang}") if c in configs), None)
        if config is None:
            raise XLError(f"{dataset} has no {lang}-{pivot} configuration")
        rows = datasets.load_dataset(dataset, config, split=split)
        if max_pairs:
            rows = rows.select(range(min(max_pairs, len(rows))))
        frames.append(pd.DataFrame(rows["translation"])[[lang, pivot]])
    return pd.concat(frames, ignore_index=True)

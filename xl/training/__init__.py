"""The lab models: small analogues of the paper's models, trained here on the Bible corpus.

| lab model | paper analogue | objective | data |
| --- | --- | --- | --- |
| lab-mlm | XLM-R, mBERT | masked LM | monolingual training verses |
| lab-dae | mBART | denoising (span infilling) | monolingual training verses |
| lab-m2m / m2o / o2m | mBART-50 MMT | lab-dae continued with translation | parallel training verses |
| lab-mt | NLLB | translation from scratch, all directions | parallel training verses |

Each is saved with `save_pretrained` (model and tokenizer) to
`xl.core.paths.model_dir(preset, name)`, atomically, with a marker file holding the
digest of everything that defines it: `lab_model` trains it only when that
folder is missing or was trained with other parameters. Training writes a
checkpoint (model, optimizer, schedule, step, random state) beside the folder
every `train_checkpoint_every` steps and resumes from it after a crash.

The loop uses `accelerate`, so `accelerate launch -m xl.training --preset lab`
spreads each batch over several GPUs unchanged. `continue_pretraining` is the
paper-scale entry point as well: a hub mBART and a hub parallel corpus.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, MBartConfig, MBartForConditionalGeneration,
                          XLMRobertaConfig, XLMRobertaForMaskedLM, get_linear_schedule_with_warmup)

from xl.core import hub, io, paths, presets
from xl.core.errors import XLError
from xl.core.results import Store
from xl.models import registry
from xl.data import corpus
from xl.models import tokenizer as lab_tokenizer
from xl.training.objectives import IGNORE, MLM_MASK, MonolingualTask, TranslationTask, directions

VERSION = "lab-train-v2"
MARKER = "xl_training.json"

ARCH_KEYS = ["model_dim", "model_layers", "model_decoder_layers", "model_ffn", "model_heads", "model_max_length"]
TRAIN_KEYS = ["train_batch", "train_lr", "train_warmup", "seed"]
# A few hundred steps over ~25,000 verses per language: the models underfit, dropout would only slow them.
DROPOUT = 0.0
# Weights start with std d_model**-0.5 (0.0625 for 256) rather than transformers' 0.02 (made for
# d_model 768-1024), and token embeddings are not scaled by sqrt(d_model): with 0.02 and scaling a
# small encoder-decoder needs thousands of steps before cross-attention aligns target and source
# (a copy task stays at chance for 300 steps); with these it copies after ~100.


# ---------------------------------------------------------------- saving and loading

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


def _save_checkpoint(path: Path, state: dict) -> None:
    with io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict | None:
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


# ---------------------------------------------------------------- the loop

class MaskedPositionsOnly(torch.nn.Module):
    """Masked LM training with the LM head applied to the masked positions only.

    XLMRobertaForMaskedLM projects every position onto the vocabulary and then ignores 85% of
    them; the projection is most of a small model's compute. Same loss, same gradients.
    """

    def __init__(self, mlm):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids, attention_mask, labels):
        hidden = self.mlm.roberta(input_ids, attention_mask=attention_mask).last_hidden_state
        chosen = labels != IGNORE
        logits = self.mlm.lm_head(hidden[chosen])
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(logits, labels[chosen]))


def _shard(batch: dict, accelerator) -> dict:
    """This process's share of a global batch (all of it on one process)."""
    n, i = accelerator.num_processes, accelerator.process_index
    return {k: (v if n == 1 else v[i::n]).to(accelerator.device) for k, v in batch.items()}


def _rows(batch: dict) -> int:
    return len(next(iter(batch.values())))


def _targets(batch: dict) -> int:
    """What the loss averages over: label tokens (every lab objective), else rows."""
    labels = batch.get("labels")
    return int((labels != IGNORE).sum()) if labels is not None else _rows(batch)


def _backward(model, batch: dict, parts: int, accelerator) -> torch.Tensor:
    """Forward and backward of `batch` in `parts` pieces of consecutive rows; returns the batch's loss.

    The models' losses are means over label tokens, so each piece's loss is weighted by its
    share of the batch's label tokens: the accumulated gradient is the whole batch's.
    """
    total, loss = _targets(batch), 0.0
    for values in zip(*(torch.tensor_split(v, parts) for v in batch.values())):
        piece = dict(zip(batch, values))
        weight = _targets(piece) / total
        if weight:  # a piece without targets has no (NaN) loss and no gradient
            piece_loss = model(**piece).loss * weight
            accelerator.backward(piece_loss)
            loss = loss + piece_loss.detach()
    return loss


def _backward_within_memory(model, batch: dict, parts: int, accelerator, optimizer, where: str):
    """`_backward` in `parts` pieces, twice as many after every out-of-memory error; returns (loss, parts)."""
    while True:
        try:
            return _backward(model, batch, parts, accelerator), parts
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)  # the pieces that fitted start again
            if parts >= _rows(batch):
                raise
            parts *= 2
            if accelerator.device.type == "cuda":
                torch.cuda.empty_cache()
            tqdm.write(f"{where}: out of memory, batch size halved to {-(-_rows(batch) // parts)} "
                       f"(gradients of {parts} pieces accumulated: still a batch of {_rows(batch)})")


def fit(model, task, steps: int, *, lr: float, warmup: float, seed: int, digest: str, checkpoint: Path,
        checkpoint_every: int = 0, log_every: int = 10, clip: float = 1.0, desc: str = "training"):
    """Train `model` on `task.batch(step)` for steps 0..steps-1; returns (model, [(step, loss)]).

    AdamW, linear warmup (a fraction `warmup` of the steps) then linear decay to 0, gradient
    clipping, loss logged every `log_every` steps (mean since the last log). Every
    `checkpoint_every` steps model, optimizer, schedule, step, log and random state go to
    `checkpoint` (atomically); a checkpoint with the same `digest` is resumed from, an
    unreadable one ignored with a warning. Out of memory, each batch is cut into halves,
    quarters, ... whose gradients are accumulated: the updates stay those of the whole batch.
    """
    from accelerate import Accelerator

    accelerator = Accelerator()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup * steps), steps)
    start, log, running = 0, [], []  # running: losses since the last log entry
    torch.manual_seed(seed)
    state = _load_checkpoint(checkpoint)
    if state is not None and state.get("digest") == digest and state["step"] < steps:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, log = state["step"], [tuple(x) for x in state["log"]]
        running = [x.to(accelerator.device) for x in state.get("running", [])]
        tqdm.write(f"{desc}: resuming from the checkpoint at step {start}")
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc, leave=False,
               disable=not accelerator.is_local_main_process)
    parts = 1  # pieces each batch is cut into: doubles at every out-of-memory error
    for step in bar:
        batch = _shard(task.batch(step), accelerator)
        loss, parts = _backward_within_memory(model, batch, parts, accelerator, optimizer, f"{desc} step {step}")
        accelerator.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running.append(loss.detach())
        done = step + 1
        if done % log_every == 0 or done == steps:
            value = accelerator.reduce(torch.stack(running).mean(), "mean").item()
            log.append((done, value))
            running = []
            bar.set_postfix(loss=f"{value:.3f}")
        if checkpoint_every and done % checkpoint_every == 0 and done < steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _save_checkpoint(checkpoint, {
                    "digest": digest, "step": done, "log": log, "running": running, "rng": torch.get_rng_state(),
                    "model": accelerator.unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    bar.close()
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model), log


def _finish(model, tok, out_dir: Path, digest: str, log, seconds: float, extra: dict) -> Path:
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        info = {"digest": digest, "log": log, "seconds": round(seconds, 1),
                "parameters": sum(p.numel() for p in model.parameters()), **extra}
        save(model, tok, out_dir, info)
        checkpoint_path(out_dir).unlink(missing_ok=True)
        for path in leftovers(out_dir):  # of runs killed while saving
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    state.wait_for_everyone()
    return out_dir


# ---------------------------------------------------------------- lab models

def _settings(cfg: dict, keys) -> dict:
    missing = [k for k in keys if cfg.get(k) is None]
    if missing:
        raise XLError(f"preset {cfg.get('preset')!r} does not define {missing} (needed to train lab models)")
    return {k: cfg[k] for k in keys}


def steps_of(name: str, cfg: dict) -> int:
    objective = registry.lab_spec(name).objective
    steps = cfg.get("train_steps") or {}
    if objective not in steps:
        raise XLError(f"preset {cfg.get('preset')!r}: train_steps has no entry {objective!r} for {name}")
    return int(steps[objective])


def digest_of(name: str, cfg: dict) -> str:
    """Everything that defines a lab model: corpus, tokenizer, sizes, schedule, and its base's digest."""
    spec = registry.lab_spec(name)
    objective, kind, base = spec.objective, spec.directions, spec.base
    parts = [VERSION, name, objective, kind, cfg["languages"], cfg["books"], corpus.data_version(),
             lab_tokenizer.spm_path(cfg).parent.name, _settings(cfg, ARCH_KEYS + TRAIN_KEYS), steps_of(name, cfg)]
    if objective == "mlm":
        parts.append(MLM_MASK)
    if base:
        parts.append(digest_of(base, cfg))
    return io.digest(*parts)


def mbart_config(cfg: dict, tok) -> MBartConfig:
    s = _settings(cfg, ARCH_KEYS)
    return MBartConfig(
        vocab_size=len(tok), d_model=s["model_dim"], encoder_layers=s["model_layers"],
        decoder_layers=s["model_decoder_layers"], encoder_attention_heads=s["model_heads"],
        decoder_attention_heads=s["model_heads"], encoder_ffn_dim=s["model_ffn"], decoder_ffn_dim=s["model_ffn"],
        max_position_embeddings=s["model_max_length"], dropout=DROPOUT, attention_dropout=0.0, activation_dropout=0.0,
        scale_embedding=False, init_std=s["model_dim"] ** -0.5, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id, forced_eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True)


def xlmr_config(cfg: dict, tok) -> XLMRobertaConfig:
    s = _settings(cfg, ARCH_KEYS)
    return XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=s["model_dim"], num_hidden_layers=s["model_layers"],
        num_attention_heads=s["model_heads"], intermediate_size=s["model_ffn"],
        max_position_embeddings=s["model_max_length"] + tok.pad_token_id + 1, type_vocab_size=1,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=0.0, initializer_range=s["model_dim"] ** -0.5,
        tie_word_embeddings=True)


def _set_generation(model, tok, max_length: int) -> None:
    g = model.generation_config
    g.decoder_start_token_id = tok.eos_token_id
    g.forced_eos_token_id = tok.eos_token_id
    g.bos_token_id, g.eos_token_id, g.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    g.max_length, g.num_beams, g.do_sample = max_length, 1, False


def monolingual(cfg: dict) -> tuple[list[str], list[str]]:
    """Training-split verses (primary translation) of the preset's languages: (texts, languages)."""
    df = corpus.bible_frame(cfg["languages"], books=cfg["books"])
    df = df[df.split == "train"].drop_duplicates(["lang", "id"])
    return df.text.tolist(), df.lang.tolist()


def parallel_train(cfg: dict) -> pd.DataFrame:
    """Training-split verses present in every language of the preset, one column per language."""
    df = corpus.bible_frame(cfg["languages"], books=cfg["books"])
    return corpus.parallel(df, cfg["languages"], "train").reset_index(drop=True)


def lab_model(name: str, cfg: dict | str = "lab", force: bool = False) -> Path:
    """The folder of lab model `name`, training it (and its base) first if it is not saved yet."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    spec = registry.lab_spec(name)
    out_dir = paths.model_dir(cfg["preset"], name)
    digest = digest_of(name, cfg)
    if not force and is_trained(out_dir, digest):
        return out_dir
    objective, kind, base = spec.objective, spec.directions, spec.base
    steps = steps_of(name, cfg)
    common = dict(steps=steps, batch_size=cfg["train_batch"], max_length=cfg["model_max_length"], seed=cfg["seed"])
    if objective == "cp":
        return continue_pretraining(lab_model(base, cfg), parallel_train(cfg), kind, out_dir, cfg=cfg,
                                    digest=digest, name=name, **common)
    start = time.perf_counter()
    torch.manual_seed(cfg["seed"])
    if objective == "mlm":
        tok = lab_tokenizer.xlmr_tokenizer(cfg)
        model = XLMRobertaForMaskedLM(xlmr_config(cfg, tok))
        task = MonolingualTask("mlm", tok, *monolingual(cfg), **common)
    else:
        tok = lab_tokenizer.mbart_tokenizer(cfg)
        model = MBartForConditionalGeneration(mbart_config(cfg, tok))
        _set_generation(model, tok, cfg["model_max_length"])
        if objective == "dae":
            task = MonolingualTask("dae", tok, *monolingual(cfg), **common)
        else:
            task = TranslationTask(tok, parallel_train(cfg), directions(kind, cfg["languages"]), **common)
    trained, log = fit(MaskedPositionsOnly(model) if objective == "mlm" else model, task, steps, lr=cfg["train_lr"],
                       warmup=cfg["train_warmup"], seed=cfg["seed"], digest=digest,
                       checkpoint=checkpoint_path(out_dir), checkpoint_every=cfg.get("train_checkpoint_every") or 0,
                       log_every=cfg.get("train_log_every") or 10, desc=name)
    model = trained.mlm if objective == "mlm" else trained
    return _finish(model, tok, out_dir, digest, log, time.perf_counter() - start,
                   {"name": name, "objective": objective, "directions": kind, "steps": steps,
                    "batch_size": cfg["train_batch"]})


def continue_pretraining(base: str | os.PathLike, parallel, kind: str | list, out_dir: str | os.PathLike, *,
                         steps: int, batch_size: int, lr: float | None = None, warmup: float | None = None,
                         max_length: int = 128, seed: int = 0, cfg: dict | None = None, digest: str | None = None,
                         name: str | None = None, languages=None, checkpoint_every: int | None = None) -> Path:
    """Continue training an mBART-like model (`base`: a local folder or a hub id such as
    `facebook/mbart-large-50`) with the translation objective and save it to `out_dir`.

    parallel: a DataFrame with one column per language and aligned rows (NaN where a sentence
    is missing, e.g. an English-centric corpus), or a hub dataset id in the OPUS-100 layout
    (configs `de-en`, rows {'translation': {'de': ..., 'en': ...}}), read with `hub_parallel`.
    kind: 'm2m', 'm2o', 'o2m' or an explicit list of (src, tgt) directions.
    lr, warmup, checkpoint_every: default to the preset's (cfg) or 3e-5, 0.1, 0.
    Reuses `out_dir` if it was saved with the same digest; resumes from its checkpoint.
    """
    cfg = cfg or {}
    lr = lr if lr is not None else cfg.get("train_lr", 3e-5)
    warmup = warmup if warmup is not None else cfg.get("train_warmup", 0.1)
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
                                 max_length, seed, pd.util.hash_pandas_object(parallel, index=False).sum())
    if is_trained(out_dir, digest):
        return out_dir
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(base_id)
    model = AutoModelForSeq2SeqLM.from_pretrained(base_id)
    _set_generation(model, tok, max_length)
    task = TranslationTask(tok, parallel, dirs, steps=steps, batch_size=batch_size, max_length=max_length, seed=seed)
    model, log = fit(model, task, steps, lr=lr, warmup=warmup, seed=seed, digest=digest,
                     checkpoint=checkpoint_path(out_dir), checkpoint_every=checkpoint_every,
                     log_every=cfg.get("train_log_every") or 10, desc=name or out_dir.name)
    return _finish(model, tok, out_dir, digest, log, time.perf_counter() - start,
                   {"name": name or out_dir.name, "objective": "cp", "base": base_id,
                    "directions": kind if isinstance(kind, str) else [list(d) for d in dirs],
                    "steps": steps, "batch_size": batch_size})


def hub_parallel(dataset: str, languages, pivot: str = "en", split: str = "train",
                 max_pairs: int | None = None) -> pd.DataFrame:
    """An English-centric hub corpus in the OPUS-100 layout (e.g. `Helsinki-NLP/opus-100`) as one
    column per language, one row per sentence pair (NaN in the other columns)."""
    hub.require(f"the parallel corpus {dataset!r}", "Pass a DataFrame with one column per language instead "
                "(xl.data.corpus.read_parallel_files reads one text file per language).")
    import datasets

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


# ---------------------------------------------------------------- all of them

SUMMARY_COLUMNS = ["model", "analogue", "objective", "data", "parameters", "steps", "batch_size", "seconds",
                   "trained", "wall_seconds"]


def train_lab_models(cfg: dict | str = "lab", names=None, write: bool = True) -> pd.DataFrame:
    """Train (or reuse) the lab models; write `training.csv` (model, step, loss) and return
    one row per model: model, paper analogue, objective, directions, parameters, steps, seconds,
    trained (False when it was already saved)."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    names = list(names if names is not None else [n for n in cfg.get("models", registry.LAB_MODELS) if registry.is_lab(n)])
    rows = []
    for name in names:
        before = marker(paths.model_dir(cfg["preset"], name))
        start = time.perf_counter()
        out_dir = lab_model(name, cfg)
        elapsed = time.perf_counter() - start
        info = marker(out_dir)
        trained = before is None or before.get("digest") != info["digest"]
        spec = registry.lab_spec(name)
        rows.append({"model": name, "analogue": spec.paper_analogue, "objective": registry.OBJECTIVES[spec.objective],
                     "data": f"{spec.data} ({info['steps'] * info['batch_size']:,} seen)", "parameters": info["parameters"],
                     "steps": info["steps"], "batch_size": info["batch_size"],
                     "seconds": info["seconds"], "trained": trained, "wall_seconds": round(elapsed, 1)})
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    from accelerate import PartialState

    if write and PartialState().is_main_process:
        store = Store(cfg["preset"])
        store.write("training", training_log(cfg, names))
        store.write("lab_models", summary.drop(columns=["trained", "wall_seconds"]))
    return summary


def training_log(cfg: dict | str = "lab", names=None) -> pd.DataFrame:
    """The loss curves of the saved lab models: model, step, loss."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    rows = []
    for name in names if names is not None else registry.LAB_MODELS:
        info = marker(paths.model_dir(cfg["preset"], name))
        if info:
            rows += [{"model": name, "step": s, "loss": loss} for s, loss in info["log"]]
    return pd.DataFrame(rows, columns=["model", "step", "loss"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m xl.training", description="Train the lab models of a preset.")
    p.add_argument("--preset", default="lab")
    p.add_argument("--models", nargs="*", help=f"some of {' '.join(registry.LAB_MODELS)} (default: all)")
    p.add_argument("--force", action="store_true", help="retrain even if saved")
    p.add_argument("--no-eval", action="store_true", help="skip the chrF evaluation")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is much faster on "
                   "cores shared with other busy processes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset key, value in YAML (repeatable), e.g. --set 'train_steps={mlm: 400}'")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from xl.book.runner import parse_params

    cfg = presets.config(args.preset, **parse_params(args.set))
    if args.force:
        for name in args.models or registry.LAB_MODELS:
            d = paths.model_dir(cfg["preset"], name)
            if d.exists():
                shutil.rmtree(d)
    start = time.perf_counter()
    summary = train_lab_models(cfg, args.models)
    total = time.perf_counter() - start
    print(summary.to_string(index=False))
    print(f"training total: {total:.1f}s (sum of per-model training: {summary.seconds.sum():.1f}s)")
    if not args.no_eval:
        from xl.analysis import translation

        start = time.perf_counter()
        quality = translation.mt_quality(cfg, [n for n in (args.models or registry.LAB_MODELS) if registry.directions(n)])
        print(quality.round(1).to_string(index=False))
        print(translation.against_baseline(quality).to_string())
        cp = quality[quality.model.map(lambda m: registry.family(m) == "CP")]
        if len(cp):
            print(f"CP models: mean chrF {cp.groupby('model').chrf.mean().mean():.1f} "
                  f"(source-blind baseline {cp.groupby('model').baseline.mean().mean():.1f})")
        print(f"evaluation: {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    try:
        main()
    except XLError as e:
        sys.exit(f"error: {e}")

"""The lab models' schedule: their architectures, data and settings read from the preset, each trained
once (`lab_model`, its base first) and found again by the digest of everything that defines it."""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import torch
from accelerate import PartialState
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, MBartConfig, MBartForConditionalGeneration,
                          XLMRobertaConfig, XLMRobertaForMaskedLM)

from xl.core import io, paths, presets
from xl.core.errors import XLError
from xl.core.results import Store
from xl.core.workers import as_worker
from xl.data import corpus
from xl.models import registry
from xl.models import tokenizer as lab_tokenizer
from xl.models.store import checkpoint_path, is_trained, marker
from xl.training.continued import continue_pretraining
from xl.training.loop import VERSION, at_labels, finish, fit, set_generation, unwrap
from xl.training.objectives import MLM_MASK, MonolingualTask, TranslationTask, directions, short_first

ARCH_KEYS = ["model_dim", "model_layers", "model_decoder_layers", "model_ffn", "model_heads", "model_max_length"]
TRAIN_KEYS = ["train_warmup", "seed"]  # every objective's; its batch and learning rate: batch_of, lr_of
# The objectives trained on the translation schedule: translation (continued or from scratch) and its
# equal-compute control (`train_mt_lr`, `train_mt_batch`, the translation languages' verses).
TRANSLATION_SCHEDULE = ("cp", "mt", "dae-cont")
# A few hundred steps over ~25,000 verses per language: the models underfit, dropout would only slow them.
DROPOUT = 0.0
# Weights start with std d_model**-0.5 (0.0625 for 256) rather than transformers' 0.02 (made for
# d_model 768-1024), and token embeddings are not scaled by sqrt(d_model): with 0.02 and scaling a
# small encoder-decoder needs thousands of steps before cross-attention aligns target and source
# (a copy task stays at chance for 300 steps); with these it copies after ~100.
# (see mbart_config and xlmr_config)
SUMMARY_COLUMNS = ["model", "analogue", "objective", "data", "parameters", "steps", "batch_size", "seconds",
                   "trained"]


def _settings(cfg: dict, keys) -> dict:
    missing = [k for k in keys if cfg.get(k) is None]
    if missing:
        raise XLError(f"preset {cfg.get('preset')!r} does not define {missing} (needed to train lab models)")
    return {k: cfg[k] for k in keys}


def lr_of(objective: str, cfg: dict) -> float:
    """The peak learning rate of an objective: `train_mt_lr` for translation and for the control that
    trains as long as the CP models (the same schedule, only the objective differs), else `train_lr`."""
    return cfg["train_mt_lr"] if objective in TRANSLATION_SCHEDULE else cfg["train_lr"]


def batch_of(objective: str, cfg: dict) -> int:
    """Examples per step of an objective: `train_mt_batch` on the translation schedule, else `train_batch`."""
    return cfg["train_mt_batch"] if objective in TRANSLATION_SCHEDULE else cfg["train_batch"]


def steps_of(name: str, cfg: dict) -> int:
    """Training steps of a lab model: its objective's entry of `train_steps`, or of `train_steps_on_gpu`
    where a preset gives one and a CUDA GPU is present (more steps where they are cheap; the model's
    digest records the steps)."""
    objective = registry.STEPS_OF[registry.lab_spec(name).objective]
    on_gpu = (cfg.get("train_steps_on_gpu") or {}) if torch.cuda.is_available() else {}
    steps = {**(cfg.get("train_steps") or {}), **on_gpu}
    if objective not in steps:
        raise XLError(f"preset {cfg.get('preset')!r}: train_steps has no entry {objective!r} for {name}")
    return int(steps[objective])


def digest_of(name: str, cfg: dict) -> str:
    """Everything that defines a lab model: corpus, tokenizer, sizes, schedule, and its base's digest."""
    spec = registry.lab_spec(name)
    objective, kind, base = spec.objective, spec.directions, spec.base
    # the batch and learning rate of the model's own schedule: changing the translation schedule's
    # leaves the language models (and the saved ones) as they are
    parts = [VERSION, name, objective, kind, cfg["languages"], cfg["books"], corpus.data_version(),
             lab_tokenizer.spm_path(cfg).parent.name, _settings(cfg, ARCH_KEYS + TRAIN_KEYS), steps_of(name, cfg),
             batch_of(objective, cfg), lr_of(objective, cfg)]
    if objective == "mlm":
        parts.append(MLM_MASK)
    if objective in TRANSLATION_SCHEDULE:
        parts.append(cfg.get("train_mt_short_first"))
    narrowed = narrowed_languages(objective, cfg)
    if narrowed:  # only where mt_languages narrows them
        parts.append(narrowed)
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


def monolingual(cfg: dict) -> tuple[list[str], list[str]]:
    """Training-split verses (primary translation) of the preset's languages: (texts, languages)."""
    df = corpus.bible_frame(cfg["languages"], books=cfg["books"])
    df = df[df.split == "train"].drop_duplicates(["lang", "id"])
    return df.text.tolist(), df.lang.tolist()


def translation_languages(cfg: dict) -> list[str]:
    """The languages of the translation objective: those of the preset's in `mt_languages` (all without it)."""
    chosen = cfg.get("mt_languages")
    return [lang for lang in cfg["languages"] if chosen is None or lang in chosen]


def narrowed_languages(objective: str, cfg: dict) -> list[str] | None:
    """The translation languages a model of `objective` trains on where `mt_languages` narrows them; else None."""
    return translation_languages(cfg) if objective in TRANSLATION_SCHEDULE and cfg.get("mt_languages") else None


def parallel_train(cfg: dict) -> pd.DataFrame:
    """Training-split verses present in every translation language (`translation_languages`), one column each."""
    languages = translation_languages(cfg)
    df = corpus.bible_frame(languages, books=cfg["books"])
    return corpus.parallel(df, languages, "train").reset_index(drop=True)


def _untrained(objective: str, cfg: dict):
    """(model, tokenizer) of a lab model trained from scratch with `objective`, freshly initialised
    from torch's current random state (building the tokenizer draws nothing from it)."""
    if objective == "mlm":
        tok = lab_tokenizer.xlmr_tokenizer(cfg)
        return XLMRobertaForMaskedLM(xlmr_config(cfg, tok)), tok
    tok = lab_tokenizer.mbart_tokenizer(cfg)
    model = MBartForConditionalGeneration(mbart_config(cfg, tok))
    set_generation(model, tok, cfg["model_max_length"])
    return model, tok


def initial_model(name: str, cfg: dict | str = "lab") -> torch.nn.Module:
    """The untrained network lab model `name` (trained from scratch) starts from: the same seed and the same
    constructor as `lab_model`, so the same weights; no task or data is built. A model continued from a
    base has no initialisation of its own (its starting point is the base): an XLError."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    spec = registry.lab_spec(name)
    if spec.base:
        raise XLError(f"{name} continues {spec.base}: it starts from {spec.base}'s weights, not from an "
                      f"initialisation of its own")
    torch.manual_seed(cfg["seed"])
    return _untrained(spec.objective, cfg)[0]


def _new_model(objective: str, kind: str | None, cfg: dict, common: dict):
    """(model, tokenizer, task) of a lab model trained from scratch with `objective`."""
    model, tok = _untrained(objective, cfg)
    if objective == "mlm":
        return model, tok, MonolingualTask("mlm", tok, *monolingual(cfg), **common)
    if objective == "dae":
        return model, tok, MonolingualTask("dae", tok, *monolingual(cfg), **common)
    pairs, dirs = parallel_train(cfg), directions(kind, translation_languages(cfg))
    return model, tok, short_first(
        lambda verses, steps, seed: TranslationTask(tok, verses, dirs, **{**common, "steps": steps, "seed": seed}),
        pairs, tok, cfg.get("train_mt_short_first"), common["steps"], common["seed"])


def _continued_denoising(base: Path, cfg: dict, common: dict):
    """(model, tokenizer, task) of the equal-compute control: `base` denoising the CP models' verses (every
    language of the parallel training verses) for as many steps of as many examples as they train, short
    verses first as they do (a verse short in its own language)."""
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSeq2SeqLM.from_pretrained(base)

    def denoising(pairs, steps, seed):
        verses = pairs.melt(var_name="lang", value_name="text").dropna()
        return MonolingualTask("dae", tok, verses.text.tolist(), verses.lang.tolist(),
                               **{**common, "steps": steps, "seed": seed})

    return model, tok, short_first(denoising, parallel_train(cfg), tok, cfg.get("train_mt_short_first"),
                                   common["steps"], common["seed"])


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
    common = dict(steps=steps, batch_size=batch_of(objective, cfg), max_length=cfg["model_max_length"],
                  seed=cfg["seed"])
    lr = lr_of(objective, cfg)
    if objective == "cp":
        return continue_pretraining(lab_model(base, cfg), parallel_train(cfg), kind, out_dir, cfg=cfg, lr=lr,
                                    digest=digest, name=name, languages=translation_languages(cfg),
                                    short_first=cfg.get("train_mt_short_first"), **common)
    start = time.perf_counter()
    torch.manual_seed(cfg["seed"])
    if objective == "dae-cont":
        model, tok, task = _continued_denoising(lab_model(base, cfg), cfg, common)
    else:
        model, tok, task = _new_model(objective, kind, cfg, common)
    fitted, log = fit(at_labels(model), task, steps, lr=lr, warmup=cfg["train_warmup"], seed=cfg["seed"],
                      digest=digest, checkpoint=checkpoint_path(out_dir),
                      checkpoint_every=cfg.get("train_checkpoint_every") or 0,
                      log_every=cfg.get("train_log_every") or 10, desc=name)
    model = unwrap(fitted)
    return finish(model, tok, out_dir, digest, log, time.perf_counter() - start,
                  {"name": name, "objective": objective, "directions": kind, "steps": steps,
                   "batch_size": common["batch_size"]})


def _train_alone(name: str, cfg: dict) -> None:
    """A worker process: train one lab model with one CPU thread (its base is trained already)."""
    as_worker()
    lab_model(name, cfg)


def _train_in_workers(names: list[str], cfg: dict, executor=None) -> None:
    """Train `names` in `train_workers` processes, each model as soon as its base is trained: bases
    go first, and the models continuing a base start when it ends, not when every base has ended.
    `executor`: another concurrent.futures executor class (the tests use threads)."""
    todo = [n for n in names if not is_trained(paths.model_dir(cfg["preset"], n), digest_of(n, cfg))]
    for base in {registry.lab_spec(n).base for n in todo} - set(todo) - {None}:
        lab_model(base, cfg)  # a base outside `names`, needed here
    bases = {registry.lab_spec(n).base for n in todo}
    waiting, running = sorted(todo, key=lambda n: n not in bases), {}
    pool = (executor(max_workers=cfg["train_workers"]) if executor else
            ProcessPoolExecutor(max_workers=cfg["train_workers"], mp_context=get_context("spawn")))
    with pool:
        while waiting or running:
            ready = [n for n in waiting if registry.lab_spec(n).base not in set(waiting) | set(running.values())]
            for name in ready:
                running[pool.submit(_train_alone, name, cfg)] = name
                waiting.remove(name)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
                del running[future]


def train_lab_models(cfg: dict | str = "lab", names=None, write: bool = True) -> pd.DataFrame:
    """Train (or reuse) the lab models, in `train_workers` processes; write `training.csv` (model, step,
    loss) and return one row per model: model, paper analogue, objective, directions, parameters, steps,
    seconds, trained (False when it was already saved)."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    names = list(names if names is not None else [n for n in cfg.get("models", registry.LAB_MODELS) if registry.is_lab(n)])
    before = {name: marker(paths.model_dir(cfg["preset"], name)) for name in names}
    if cfg["train_workers"] > 1 and len(names) > 1:
        _train_in_workers(names, cfg)
    rows = []
    for name in names:
        out_dir = lab_model(name, cfg)  # trained above, or here
        info = marker(out_dir)
        trained = before[name] is None or before[name].get("digest") != info["digest"]
        spec = registry.lab_spec(name)
        narrowed = narrowed_languages(spec.objective, cfg)
        data = spec.data + (f", of {', '.join(narrowed)}" if narrowed else "")
        rows.append({"model": name, "analogue": spec.paper_analogue, "objective": registry.OBJECTIVES[spec.objective],
                     "data": f"{data} ({info['steps'] * info['batch_size']:,} seen)", "parameters": info["parameters"],
                     "steps": info["steps"], "batch_size": info["batch_size"],
                     "seconds": info["seconds"], "trained": trained})
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if write and PartialState().is_main_process:
        store = Store(cfg["preset"])
        store.write("training", training_log(cfg, names))
        store.write("lab_models", summary.drop(columns=["trained"]))
    return summary


def longer_training(summary: pd.DataFrame, name: str = "lab-mt", peer: str = "lab-m2m") -> str:
    """A sentence for a `train_lab_models` summary where `name` trains more examples than `peer` (the MT
    model from scratch against the continued models): how much more, and why that matters; else ""."""
    rows = summary.set_index("model")
    if name not in rows.index or peer not in rows.index:
        return ""
    seen = rows.steps * rows.batch_size
    if seen[name] <= seen[peer]:
        return ""
    own, other = rows.loc[name], rows.loc[peer]
    return (f"**`{name}` trains for {own.steps:,} steps of {own.batch_size} pairs, the continued models for "
            f"{other.steps:,} of {other.batch_size}**: starting from random weights it has to learn the "
            f"languages as well as translation, and in the continued models' steps it learned the length of the "
            f"source rather than its meaning. It has seen {seen[name] / seen[peer]:.1f} times their verse pairs "
            f"({seen[name]:,}), and the equal-compute control covers the continued models only: where `{name}` "
            f"differs from the language models, its longer training is a cause besides the objective.")


def training_log(cfg: dict | str = "lab", names=None) -> pd.DataFrame:
    """The loss curves of the saved lab models: model, step, loss."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    rows = []
    for name in names if names is not None else registry.LAB_MODELS:
        info = marker(paths.model_dir(cfg["preset"], name))
        if info:
            rows += [{"model": name, "step": s, "loss": loss} for s, loss in info["log"]]
    return pd.DataFrame(rows, columns=["model", "step", "loss"])

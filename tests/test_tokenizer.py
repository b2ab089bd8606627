import sentencepiece as spm
from transformers import AutoTokenizer

import xl
from xl.data import corpus
from xl.models import tokenizer


def test_round_trip_and_agreement_with_sentencepiece(tmp_path):
    cfg = xl.config("smoke")
    path = tokenizer.spm_path(cfg)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    mbart, xlmr = tokenizer.mbart_tokenizer(cfg), tokenizer.xlmr_tokenizer(cfg)
    verses = corpus.bible_frame(cfg["languages"], books=[43]).groupby("lang").head(20)
    for lang, text in zip(verses.lang, verses.text):
        # SentencePiece: 0 <unk>, 1 <s>, 2 </s>, then pieces; ours: <s> <pad> </s> <unk>, then pieces.
        expected = [3 if i == 0 else i + 1 for i in sp.encode(text)]
        ids = xlmr(text, add_special_tokens=False)["input_ids"]
        assert ids == expected
        assert mbart(text, add_special_tokens=False)["input_ids"] == ids, "same pieces at the same ids"
        if 3 not in ids:
            assert xlmr.decode(ids) == sp.decode(sp.encode(text))
    # Saved and reloaded like a hub tokenizer, with the language code first and </s> last.
    mbart.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    loaded.src_lang = "ru_RU"
    ids = loaded("В начале было Слово")["input_ids"]
    assert loaded.convert_ids_to_tokens(ids)[0] == "ru_RU" and ids[-1] == loaded.eos_token_id


def test_cached_and_deterministic(monkeypatch):
    cfg = xl.config("smoke")
    first = tokenizer.spm_path(cfg)
    monkeypatch.setattr(spm.SentencePieceTrainer, "train", lambda **_: (_ for _ in ()).throw(AssertionError))
    assert tokenizer.spm_path(cfg) == first  # reused from the cache, not retrained


def test_fertility_counts():
    cfg = xl.config("smoke")
    tok = tokenizer.xlmr_tokenizer(cfg)
    text = "In the beginning God created the heavens and the earth."
    stats = tokenizer.fertility(tok, [text, text])
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert stats["pieces_per_verse"] == n and stats["words_per_verse"] == 10
    assert stats["pieces_per_word"] == n / 10

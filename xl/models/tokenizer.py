"""The lab tokenizer: one SentencePiece unigram model trained on the lab corpus with
the same number of verses from every language, cached on disk and reused.

It is wrapped as transformers tokenizers so lab models save and load like hub
models: an mBART-50 tokenizer (language codes such as `fr_XX`) for the
encoder-decoders and an XLM-R tokenizer (no language codes) for the MLM. Both
share the same pieces at the same ids.
"""
from __future__ import annotations

import random
from io import BytesIO
from pathlib import Path

import pandas as pd
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as spm_pb2
from transformers import AutoTokenizer, MBart50Tokenizer, XLMRobertaTokenizer

from xl.core import io, paths
from xl.data import corpus
from xl.models import registry
from xl.models.encoder import locate, quiet_transformers

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def _training_verses(cfg) -> list[str]:
    """Language-balanced sample of training-split verses (primary translations)."""
    df = corpus.bible_frame(cfg["languages"], books=cfg["books"])
    df = df[df.split == "train"]
    rng = random.Random(cfg["seed"])
    n = cfg["tokenizer_verses_per_language"]
    sample = []
    for _, group in df.groupby("lang", sort=True):
        texts = group.text.tolist()
        sample += rng.sample(texts, min(n, len(texts)))
    rng.shuffle(sample)
    return sample


def spm_path(cfg) -> Path:
    """Train (once) and return the SentencePiece model for this configuration."""
    key = io.digest("spm-v1", cfg["languages"], cfg["books"], cfg["vocab_size"],
                    cfg["tokenizer_verses_per_language"], cfg["seed"], corpus.data_version())
    path = paths.cache_dir("tokenizer", key) / "spm.model"
    if path.is_file():
        return path
    verses = _training_verses(cfg)
    model = BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(verses), model_writer=model, vocab_size=cfg["vocab_size"],
        model_type="unigram", character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False, num_threads=2, minloglevel=2,
    )
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(model.getvalue())
    return path


def _pieces(path: Path):
    """(piece, score) pairs after SentencePiece's own <unk> <s> </s>, and the normaliser's charsmap."""
    proto = spm_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    pieces = [(p.piece, p.score) for p in proto.pieces][3:]
    return pieces, proto.normalizer_spec.precompiled_charsmap


def mbart_tokenizer(cfg) -> MBart50Tokenizer:
    """Encoder-decoder tokenizer: `<lang_code> pieces </s>`, with mBART-50's language codes."""
    pieces, charsmap = _pieces(spm_path(cfg))
    # MBart50Tokenizer drops the first three entries (SentencePiece's own specials) and adds its own.
    return MBart50Tokenizer(vocab=[("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + pieces,
                            _spm_precompiled_charsmap=charsmap)


def xlmr_tokenizer(cfg) -> XLMRobertaTokenizer:
    """MLM tokenizer: `<s> pieces </s>`, no language codes (as XLM-R)."""
    pieces, charsmap = _pieces(spm_path(cfg))
    vocab = [(s, 0.0) for s in SPECIALS] + pieces + [("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap)


def fertility(tokenizer, texts) -> dict:
    """Pieces per whitespace word and per character (special tokens excluded)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    n_pieces = sum(len(x) for x in ids)
    n_words = sum(len(t.split()) for t in texts)
    n_chars = sum(len(t.replace(" ", "")) for t in texts)
    return {"pieces_per_verse": n_pieces / len(texts), "words_per_verse": n_words / len(texts),
            "pieces_per_word": n_pieces / n_words, "pieces_per_char": n_pieces / n_chars}


def model_tokenizers(cfg) -> dict:
    """The tokenizers of the preset's models, by model label: 'lab' (the one every lab model shares)
    and each other model's own, from its folder, the local Hugging Face cache, or the hub (which
    must then be reachable: paper preset)."""
    out = {}
    for name in cfg["models"]:
        if registry.is_lab(name):
            if "lab" not in out:
                out["lab"] = xlmr_tokenizer(cfg)
        else:
            out[registry.label(name)] = pretrained_tokenizer(name)
    return out


def pretrained_tokenizer(name: str):
    """The tokenizer of a saved folder or of a hub id (cached, or downloaded where the hub is reachable)."""
    quiet_transformers()  # fertility tokenizes whole sentences: no warnings about the models' length limits
    source, _, local = locate(name)
    return AutoTokenizer.from_pretrained(source, local_files_only=local)


def fertility_table(tokenizers: dict, df: pd.DataFrame, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Pieces per sentence ('verse') / word / character of each tokenizer on the same sentences of each language."""
    rows = []
    ids = df.drop_duplicates("id").id.sample(min(n, df.id.nunique()), random_state=seed)
    sample = df[df.id.isin(ids)].drop_duplicates(["lang", "id"])
    for name, tok in tokenizers.items():
        for lang, group in sample.groupby("lang", sort=True):
            rows.append({"tokenizer": name, "lang": lang, "sampled": len(group),
                         **fertility(tok, group.text.tolist())})
    return pd.DataFrame(rows)

"""Shared fixtures: an isolated cache for the whole session, a throwaway copy of the book, the smoke book,
and tiny random models of each architecture of the paper, saved like hub models.

Tiny models' tokenizers: XLM-R and mBART-50 ones from the smoke lab SentencePiece; BERT a WordPiece
BertTokenizer from a small vocabulary list; M2M100 an NllbTokenizer built from the lab pieces (a BPE
without merges, so it splits words into characters) with the NLLB codes it is given.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The front matter of every jupytext MyST notebook in notebooks/.
MYST_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def require_browser():
    """tests/browser.py with a Chromium to drive, or skip saying what is missing."""
    pytest.importorskip("tornado", reason="tests/browser.py talks to Chromium through tornado")
    browser = pytest.importorskip("browser", reason="tests/browser.py not importable")
    if browser.chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium, or set $XL_CHROMIUM)")
    return browser


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot when the cores are shared.
    Modules that train or run tiny models use it: pytestmark = pytest.mark.usefixtures("one_thread")."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cfg():
    """The smoke preset's configuration (modules that need more override this fixture)."""
    import xl

    return xl.config("smoke")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Keep tests away from the user's data/cache; share it across tests (tokenizers, models)."""
    path = tmp_path_factory.mktemp("xl-cache")
    old = os.environ.get("XL_CACHE")
    os.environ["XL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("XL_CACHE", None)
    else:
        os.environ["XL_CACHE"] = old


def copy_book(root: Path) -> Path:
    """A copy of the book's sources (no results, no build, no cache) in `root`."""
    root.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO / name, root / name)
    for name in ("book", "notebooks", "data"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("cache", "chapters", "*.ipynb"))
    return root


@pytest.fixture
def book_root(tmp_path, monkeypatch):
    """A copy of the book's sources that XL_ROOT points at."""
    root = copy_book(tmp_path / "book")
    monkeypatch.setenv("XL_ROOT", str(root))
    monkeypatch.delenv("XL_RESULTS", raising=False)
    return root


def xl_book(root: Path, *args, **env) -> subprocess.CompletedProcess:
    """`xl book --preset smoke` on the book copy `root`, with the cache `root`/../cache unless `env` says otherwise."""
    env = {"XL_ROOT": str(root), "XL_CACHE": str(root.parent / "cache"), **env}
    return subprocess.run([sys.executable, "-m", "xl", "book", "--preset", "smoke", *args],
                          capture_output=True, text=True, cwd=root, env={**os.environ, **env})


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """The smoke book built once per session from an empty cache: (book root, the finished `xl book`)."""
    root = copy_book(tmp_path_factory.mktemp("smoke") / "book")
    start = time.perf_counter()
    done = xl_book(root)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"xl book --preset smoke: {time.perf_counter() - start:.0f}s")
    return root, done


# ---------------------------------------------------------------- tiny models of the paper's architectures

TINY_TEXTS = ["In the beginning was the Word, and the Word was with God.",
              "Jesus wept.",
              "And the light shineth in darkness; and the darkness comprehended it not.",
              "He came unto his own, and his own received him not.",
              "There was a man sent from God, whose name was John.",
              "Amen."]
TINY_H, TINY_LAYERS = 32, 2
TINY_ARCHS = ["bert", "xlmr", "mbart", "m2m100"]
SMOKE_NLLB = ["eng_Latn", "deu_Latn", "rus_Cyrl", "zho_Hans"]


def bert_tokenizer(texts=TINY_TEXTS):
    from transformers import BertTokenizer

    words = sorted({w for t in texts for w in t.replace(",", " ").replace(".", " ").replace(";", " ").split()})
    chars = sorted({c for t in texts for c in t if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + ["##" + c for c in chars]
    return BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=False)


def nllb_tokenizer(cfg, codes=SMOKE_NLLB):
    from transformers import NllbTokenizer

    from xl.models import tokenizer as lab_tokenizer
    pieces, charsmap = lab_tokenizer._pieces(lab_tokenizer.spm_path(cfg))
    vocab = {s: i for i, s in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for piece, _ in pieces:
        vocab.setdefault(piece, len(vocab))
    return NllbTokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap, extra_special_tokens=list(codes))


def _seq2seq_config(config_cls, tok):
    return config_cls(vocab_size=len(tok), d_model=TINY_H, encoder_layers=TINY_LAYERS, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                      decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.eos_token_id)


def tiny_model(arch, cfg, texts=TINY_TEXTS, nllb_codes=SMOKE_NLLB, seed=0):
    """(random model, tokenizer) of `arch` (bert, xlmr, mbart, m2m100), hidden size 32, 2 layers."""
    import torch
    from transformers import (BertConfig, BertForMaskedLM, M2M100Config, M2M100ForConditionalGeneration,
                              MBartConfig, MBartForConditionalGeneration, XLMRobertaConfig, XLMRobertaForMaskedLM)

    from xl.models import tokenizer as lab_tokenizer
    torch.manual_seed(seed)
    enc_args = dict(hidden_size=TINY_H, num_hidden_layers=TINY_LAYERS, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=130)
    if arch == "bert":
        tok = bert_tokenizer(texts)
        return BertForMaskedLM(BertConfig(vocab_size=len(tok), **enc_args)), tok
    if arch == "xlmr":
        tok = lab_tokenizer.xlmr_tokenizer(cfg)
        return XLMRobertaForMaskedLM(XLMRobertaConfig(vocab_size=len(tok), pad_token_id=1, **enc_args)), tok
    if arch == "mbart":
        tok = lab_tokenizer.mbart_tokenizer(cfg)
        return MBartForConditionalGeneration(_seq2seq_config(MBartConfig, tok)), tok
    if arch == "m2m100":
        tok = nllb_tokenizer(cfg, nllb_codes)
        return M2M100ForConditionalGeneration(_seq2seq_config(M2M100Config, tok)), tok
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHS}")


def save_tiny(arch, folder, **kwargs):
    """A tiny random `arch` model and its tokenizer saved with save_pretrained in `folder` (returned)."""
    import xl
    model, tok = tiny_model(arch, xl.config("smoke"), **kwargs)
    model.eval().save_pretrained(folder)
    tok.model_max_length = 128
    tok.save_pretrained(folder)
    return Path(folder)

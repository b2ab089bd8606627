"""Sentences per second of `Encoder.encode` (sorted dynamic batches) against a naive
one-sentence-at-a-time loop, on the same random XLM-R-like model and real Bible verses.

    python benchmarks/bench_encode.py [--layers 6 --hidden 256 --sentences 1000]

The model is random (hub models cannot be downloaded here) with the smoke lab
tokenizer; the naive loop does the same pooling per sentence, without batching or
cache. On CUDA a paper-size configuration (12 layers, hidden 768) is timed too.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from transformers import XLMRobertaConfig, XLMRobertaModel

import xl
from xl.data import corpus
from xl.models import encoder, tokenizer as lab_tokenizer


def make_model(folder, layers, hidden, tok):
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
                              max_position_embeddings=514, pad_token_id=tok.pad_token_id)
    XLMRobertaModel(config).save_pretrained(folder)
    tok.model_max_length = 512
    tok.save_pretrained(folder)
    return folder


def naive(enc, texts, lang):
    """What one writes first: tokenize, run and pool each sentence on its own."""
    out = []
    with torch.no_grad():
        for text in texts:
            batch = enc.tokenize([text], lang)
            states = enc.model(**batch, output_hidden_states=True).hidden_states
            mask = enc.pool_mask(batch)[..., None]
            out.append(torch.stack([(h * mask).sum(1) / mask.sum(1) for h in states]).cpu().numpy())
    return np.concatenate(out, axis=1)


def rate(fn, n):
    start = time.perf_counter()
    result = fn()
    return result, n / (time.perf_counter() - start)


def sentences(n):
    df = corpus.bible_frame(["en", "de"], books=[43])
    return {lang: group.text.tolist()[: n // 2] for lang, group in df.groupby("lang")}


def bench(folder, texts, device, with_naive):
    enc = encoder.load_encoder(str(folder), device=device)
    n = sum(len(t) for t in texts.values())
    enc.encode(texts["en"][:8], "en", cache=False)  # warm-up
    fast, fast_rate = rate(lambda: [enc.encode(t, lang, cache=False) for lang, t in texts.items()], n)
    line = f"{enc!r}: encode {fast_rate:8.1f} sentences/s"
    if with_naive:
        slow, slow_rate = rate(lambda: [naive(enc, t, lang) for lang, t in texts.items()], n)
        diff = max(np.abs(a - b).max() for a, b in zip(fast, slow))
        line += f" | naive loop {slow_rate:7.1f} sentences/s | speed-up {fast_rate / slow_rate:4.1f}x (max |diff| {diff:.1e})"
    print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--sentences", type=int, default=1000)
    args = parser.parse_args()
    tok = lab_tokenizer.xlmr_tokenizer(xl.config("smoke"))
    texts = sentences(args.sentences)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{sum(map(len, texts.values()))} Bible verses (John, en + de), device {device}, "
          f"{torch.get_num_threads()} torch threads")
    with tempfile.TemporaryDirectory() as tmp:
        bench(make_model(f"{tmp}/small", args.layers, args.hidden, tok), texts, device, with_naive=True)
        if device == "cuda":
            bench(make_model(f"{tmp}/paper", 12, 768, tok), texts, device, with_naive=True)


if __name__ == "__main__":
    main()

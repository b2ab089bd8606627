"""Estimated GPU time of each chapter at the paper preset, from measured throughput.

Run: python benchmarks/paper_gpu_time.py [--gpu-tflops 20]

The work of a chapter is counted in encoder tokens (forward, and forward+backward for
fine-tuning) per model shape. Throughput is *measured* here: a paper-size encoder (random
weights, the real layer shapes) runs batches of 128-token sequences on this machine's device,
which gives achieved FLOP/s under the usual count (2 x non-embedding parameters + attention
per token forward, 3x that to train). A second shape checks that the count predicts the
measured time. On a GPU the measured rate is used as is; on a CPU the script also converts
to a GPU that achieves `--gpu-tflops` (effective, not peak: a T4 sustains about 20 in bf16/fp16
mixed precision on encoders of this size, an A100 about 120). Sizes of XGLUE (train, dev and
test per language) are those of the XGLUE paper; sequence lengths are typical lengths after
the preset's `transfer_max_length` cut, stated below. These are estimates, to plan a Colab
session, not measurements of the book.
"""
from __future__ import annotations

import argparse
import time

import torch
from transformers import XLMRobertaConfig, XLMRobertaModel

import xl
from xl.data import xglue

# encoder shapes of the paper's models: (layers, hidden, ffn)
SHAPES = {"mBERT": (12, 768, 3072), "XLM-R": (12, 768, 3072), "mBART": (12, 1024, 4096),
          "NLLB 600M": (12, 1024, 4096), "mBART m2m": (12, 1024, 4096), "mBART m2o": (12, 1024, 4096),
          "mBART o2m": (12, 1024, 4096)}
# XGLUE: training examples (English), dev and test examples per language, tokens per example
XGLUE = {"NC": (100_000, 10_000, 10_000, 128), "XNLI": (392_702, 2_490, 5_010, 60),
         "PAWS-X": (49_401, 2_000, 2_000, 70), "QAM": (100_000, 10_000, 10_000, 60),
         "QADSM": (100_000, 10_000, 10_000, 40), "WPR": (100_000, 10_000, 10_000, 100),
         "NER": (14_987, 2_800, 3_400, 30), "POS": (25_376, 2_000, 2_000, 30)}
FLORES_TOKENS = 40  # pieces per FLORES sentence (about 25 words)


def flops_per_token(shape, seq: int) -> float:
    """Forward FLOPs per token: 2 per weight of the layers, plus attention scores and mixing."""
    layers, d, ffn = shape
    return layers * (2 * (4 * d * d + 2 * d * ffn) + 4 * seq * d)


def measure(shape, device: str, seq: int = 128, batch: int = 32, repeats: int = 3) -> float:
    """Achieved FLOP/s of a forward pass of an encoder of `shape` on `device`."""
    layers, d, ffn = shape
    config = XLMRobertaConfig(vocab_size=1000, hidden_size=d, num_hidden_layers=layers, intermediate_size=ffn,
                              num_attention_heads=d // 64, max_position_embeddings=seq + 2)
    model = XLMRobertaModel(config).to(device).eval()
    ids = torch.randint(5, 1000, (batch, seq), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    with torch.inference_mode(), autocast:
        model(input_ids=ids)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=ids)
        if device == "cuda":
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    return flops_per_token(shape, seq) * batch * seq / seconds


def chapter_work(cfg: dict) -> dict[str, float]:
    """Forward-equivalent FLOPs of each chapter's GPU work at preset `cfg`, summed over models."""
    models = [m for m in SHAPES if xl.models.registry.PAPER_MODELS.get(m) in cfg["models"]]
    languages, sentences, seeds = len(cfg["languages"]), cfg["analysis_verses"], len(cfg["transfer_seeds"])
    work = {"similarity": 0.0, "transfer": 0.0, "models (chrF of the MT models)": 0.0}
    for m in models:
        shape = SHAPES[m]
        work["similarity"] += sentences * languages * FLORES_TOKENS * flops_per_token(shape, FLORES_TOKENS)
        for task in cfg["transfer_tasks"]:
            train, dev, test, seq = XGLUE[task]
            train = min(train, cfg["transfer_train_size"] or train)
            dev, test = min(dev, cfg["transfer_dev_size"] or dev), min(test, cfg["transfer_eval_size"] or test)
            n_lang = len(xglue.SPECS[task]["languages"])
            per_token = flops_per_token(shape, seq) * seq
            trained = 3 * train * cfg["transfer_epochs"]  # forward + backward = 3 forwards
            evaluated = dev * cfg["transfer_epochs"] + test * n_lang
            work["transfer"] += seeds * (trained + evaluated) * per_token
        if m.startswith(("mBART m", "NLLB")):  # greedy decoding: encoder once, decoder once per piece
            pairs, n = len(cfg["mt_eval_pairs"]), cfg["mt_eval_verses"]
            work["models (chrF of the MT models)"] += pairs * n * FLORES_TOKENS * 2 * flops_per_token(shape, 64)
    return work


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu-tflops", type=float, default=20.0, help="effective TFLOP/s of the GPU to convert to")
    for size in ("train", "dev", "eval"):
        p.add_argument(f"--{size}-size", type=int, help=f"the transfer_{size}_size override to estimate (default: all)")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base, large = SHAPES["XLM-R"], SHAPES["mBART"]
    rate = measure(base, device)
    rate_large = measure(large, device)
    print(f"device {device}: {rate / 1e12:.3f} TFLOP/s on the XLM-R shape, {rate_large / 1e12:.3f} on the mBART "
          f"encoder shape (ratio {rate_large / rate:.2f}: 1 means the FLOP count predicts the time)")
    gpu = rate if device == "cuda" else args.gpu_tflops * 1e12
    print(f"converting with {gpu / 1e12:.1f} TFLOP/s ({'measured' if device == 'cuda' else 'assumed GPU'})")
    cfg = xl.config("paper", transfer_train_size=args.train_size, transfer_dev_size=args.dev_size,
                    transfer_eval_size=args.eval_size)
    for chapter, flops in chapter_work(cfg).items():
        print(f"{chapter:32s} {flops / 1e15:10.1f} PFLOP  {flops / gpu / 3600:8.2f} GPU-hours"
              f"  ({flops / rate / 3600:9.1f} h on this {device})")
    print("corpus, weights (SVD) and conclusions: minutes, CPU-bound (tokenizers, SVD of 7 x 72 matrices)")


if __name__ == "__main__":
    main()

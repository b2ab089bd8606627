"""All-pairs linear CKA between languages, every layer: xl.analysis.similarity.language_matrix
against a pair-by-pair loop of a published implementation (ckatorch.cka_base, PyPI `ckatorch`).

Random representations shaped like a 12-layer base encoder (13 hidden states incl. embeddings,
22 languages, n sentences, width d): a shared sentence signal, a per-language offset and noise,
in float32 like real model outputs. The loop uses symmetry (pairs a <= b only), as a careful
user would. Targets: max |difference| <= 1e-6 and at least 10x faster.

    python benchmarks/bench_cka.py                    # 13 layers x 22 languages x n=1000 x d=768
    python benchmarks/bench_cka.py --n 500 --d 384    # smaller, when CPU time is short
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from xl.analysis.similarity import language_matrix


def representations(layers: int, langs: int, n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(layers, 1, n, d, generator=g)
    offset = 5 * torch.randn(layers, langs, 1, d, generator=g)
    return shared + offset + torch.randn(layers, langs, n, d, generator=g)


def loop(reps: torch.Tensor, cka_base) -> np.ndarray:
    layers, langs = reps.shape[:2]
    out = np.empty((layers, langs, langs))
    for layer in range(layers):
        for a in range(langs):
            for b in range(a, langs):
                out[layer, a, b] = out[layer, b, a] = float(cka_base(reps[layer, a], reps[layer, b]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--langs", type=int, default=22)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from ckatorch import cka_base  # the published reference; `pip install ckatorch`

    reps = representations(args.layers, args.langs, args.n, args.d, args.seed)
    pairs = args.layers * args.langs * (args.langs + 1) // 2
    print(f"reps {tuple(reps.shape)} float32; {pairs} layer-language pairs; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    language_matrix(reps[:1, :2, :8]), cka_base(reps[0, 0, :8], reps[0, 1, :8])  # one-time start-up costs
    start = time.perf_counter()
    ours = language_matrix(reps, "linear_cka")
    t_ours = time.perf_counter() - start
    print(f"xl.analysis.similarity.language_matrix : {t_ours:8.2f} s")

    start = time.perf_counter()
    theirs = loop(reps, cka_base)
    t_theirs = time.perf_counter() - start
    print(f"ckatorch.cka_base pair loop   : {t_theirs:8.2f} s")

    diff = float(np.abs(ours - theirs).max())
    speedup = t_theirs / t_ours
    print(f"speed-up {speedup:.1f}x (target >= 10x); max |difference| {diff:.2e} (target <= 1e-6); "
          f"CKA range [{theirs.min():.3f}, {theirs.max():.3f}]")
    print("PASS" if speedup >= 10 and diff <= 1e-6 else "FAIL")


if __name__ == "__main__":
    main()

"""How separable are languages in a model's representations, layer by layer?

The paper explains its result by separability: MT-trained encoders keep
languages apart. Two views of it, per layer of reps (layers, langs, n, d),
the same n sentences in every language, rows aligned:

- a linear probe's held-out accuracy at telling the language of a sentence
  (chance 1/langs), split by sentence so no sentence is seen in training and test;
- cosine similarity gaps: same language (different sentences) minus
  translations, and translations minus unrelated cross-language pairs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from xl.analysis.similarity import _f64, _tensor
from xl.core.errors import XLError
from xl.core.tensors import unit

GAP_METRICS = ("same_language_sim", "translation_sim", "unrelated_sim",
               "same_minus_translation", "translation_minus_unrelated")


def _reps(reps, langs=None) -> torch.Tensor:
    reps = _tensor(reps, 4, "reps (layers, langs, n, d)")
    _, g, n, _ = reps.shape
    if langs is not None and len(langs) != g:
        raise XLError(f"{len(langs)} language names for {g} languages in reps")
    if g < 2 or n < 2:
        raise XLError(f"need at least 2 languages and 2 sentences, got {g} and {n}")
    return reps


def sentence_split(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test sentence indices, disjoint: a sentence's translations all fall on one side."""
    if not 0 < test_size < 1:
        raise XLError(f"test_size is a fraction in (0, 1), got {test_size}")
    n_test = min(n - 1, max(1, round(n * test_size)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def language_id_accuracy(reps, langs, seed: int = 0, test_size: float = 0.25, C: float = 1.0) -> np.ndarray:
    """Held-out accuracy of a logistic-regression language probe on standardized features, per layer."""
    reps = _reps(reps, langs)
    _, g, n, d = reps.shape
    train, test = sentence_split(n, test_size, seed)
    y_train, y_test = np.repeat(np.arange(g), len(train)), np.repeat(np.arange(g), len(test))
    scores = []
    for layer in reps:
        X = _f64(layer, "reps").numpy()  # float64: StandardScaler then removes large offsets exactly
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000, random_state=seed))
        probe.fit(X[:, train].reshape(-1, d), y_train)
        scores.append(probe.score(X[:, test].reshape(-1, d), y_test))
    return np.array(scores)


def similarity_gap(reps) -> dict[str, np.ndarray]:
    """Mean cosine similarities per layer, from per-language sums (no n x n matrices):
    same_language_sim (different sentences, same language), translation_sim (the same sentence
    in two languages), unrelated_sim (different sentences, different languages), and the gaps
    same_minus_translation and translation_minus_unrelated."""
    reps = _reps(reps)
    _, g, n, _ = reps.shape
    off = ~torch.eye(g, dtype=torch.bool)
    out = {k: [] for k in GAP_METRICS}
    for layer in reps:
        u = unit(_f64(layer, "reps"))
        s = u.sum(1)
        all_pairs = s @ s.T                                   # [a, b]: sum over i, j of cos(a_i, b_j)
        same_sentence = torch.einsum("and,bnd->ab", u, u)     # [a, b]: sum over i of cos(a_i, b_i)
        unrelated = (all_pairs - same_sentence) / (n * (n - 1))
        out["same_language_sim"].append(float(unrelated.diagonal().mean()))
        out["translation_sim"].append(float((same_sentence / n)[off].mean()))
        out["unrelated_sim"].append(float(unrelated[off].mean()))
    out = {k: np.array(v) for k, v in out.items()}
    out["same_minus_translation"] = out["same_language_sim"] - out["translation_sim"]
    out["translation_minus_unrelated"] = out["translation_sim"] - out["unrelated_sim"]
    return out


def separability_frame(reps, langs, model: str, seed: int = 0) -> pd.DataFrame:
    """Tidy table (model, layer, metric, value) of the probe accuracy, its chance level and the gaps."""
    reps = _reps(reps, langs)
    metrics = {"language_id_accuracy": language_id_accuracy(reps, langs, seed),
               "language_id_chance": np.full(reps.shape[0], 1 / len(langs)),
               **similarity_gap(reps)}
    return pd.DataFrame([{"model": model, "layer": layer, "metric": name, "value": float(v)}
                         for name, values in metrics.items() for layer, v in enumerate(values)])

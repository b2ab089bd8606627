"""How separable are languages in a model's representations, layer by layer?

The paper explains its result by separability: MT-trained encoders keep
languages apart. Two views of it, per layer of reps (layers, langs, n, d),
the same n sentences in every language, rows aligned:

- a linear probe's held-out accuracy at telling the language of a sentence
  (chance 1/langs), split by sentence so no sentence is seen in training and test;
- cosine similarity gaps: same language (different sentences) minus
  translations, and translations minus unrelated cross-language pairs.

Both saturate on real models: the full-data probe scores ~1.0 everywhere (embedding layer
included) and the raw cosines are all ~0.98 (anisotropy: every vector shares one large mean
direction). So there are also measures that can fail:

- centred gaps (`centred_gap`): the same cosines after removing the model's mean vector
  (per layer, over all languages and sentences);
- `variance_ratio`: variance of the language means over the mean within-language variance;
- a few-shot probe (`few_shot_language_id`): k labelled sentences per language, tested on
  held-out sentences, averaged over random draws of the k sentences.

`replicates` recomputes a centred measure on bootstrap resamples of the sentences
(xl.analysis.bootstrap) for the one verdict rule (xl.analysis.verdict).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from xl.analysis import bootstrap
from xl.analysis.similarity import _f64, _tensor
from xl.core.errors import XLError
from xl.core.tensors import unit

GAP_METRICS = ("same_language_sim", "translation_sim", "unrelated_sim",
               "same_minus_translation", "translation_minus_unrelated")
CENTRED_METRICS = ("centred_same_language_sim", "centred_translation_sim", "centred_unrelated_sim",
                   "centred_same_minus_translation", "variance_ratio")
FEW_SHOT_K, FEW_SHOT_DRAWS = 8, 20
# The separability verdict's measure. Centred (so not anisotropy), scale-free and bounded in
# [-2, 2] (a family mean is not dominated by one model, as it is for the unbounded variance_ratio,
# which spans 0.01-7 across the lab models), never at a ceiling (unlike a probe), cheap to
# bootstrap, and it weighs language against meaning as the paper's explanation does (> 0: a
# sentence is closer to other sentences of its language than to its own translations), with
# the sign of the uncentred gap the conclusions used so far.
HEADLINE = "centred_same_minus_translation"


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
    # one BLAS thread: measured 1.2 s for a lab model's five layers, 109 s with two threads on busy cores
    with threadpool_limits(1):
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


def _layer(layer) -> torch.Tensor:
    layer = _f64(_tensor(layer, 3, "layer reps (langs, n, d)"), "layer reps")
    g, n, _ = layer.shape
    if g < 2 or n < 2:
        raise XLError(f"need at least 2 languages and 2 sentences, got {g} and {n}")
    return layer


def _counts(n: int, sample) -> torch.Tensor:
    """How often each sentence is drawn: all ones for the full data, else a bootstrap resample's counts."""
    if sample is None:
        return torch.ones(n, dtype=torch.float64)
    sample = np.asarray(sample)
    if sample.ndim != 1 or sample.size < 2 or not np.issubdtype(sample.dtype, np.integer) \
            or sample.min() < 0 or sample.max() >= n:
        raise XLError(f"sample must be at least 2 sentence indices in [0, {n}), got {sample!r:.80}")
    return torch.as_tensor(np.bincount(sample, minlength=n), dtype=torch.float64)


def centred_layer(layer, sample=None) -> dict[str, float]:
    """The centred measures (CENTRED_METRICS) of one layer (langs, n, d), on all its sentences or on
    `sample`, sentence indices with repeats (a bootstrap resample: sentence i is taken in every
    language at once, so translations stay aligned)."""
    x = _layer(layer)
    return {k: float(v[0]) for k, v in _centred(x, _counts(x.shape[1], sample)[None]).items()}


def _centred(x: torch.Tensor, counts: torch.Tensor, chunk: int = 25) -> dict[str, np.ndarray]:
    """The centred measures of x, float64 (langs, n, d), for each row of `counts` (replicates, n):
    how often each sentence is drawn (all ones: the full data). Exact, without copying x per replicate.

    Each replicate is centred on its own mean m. Its cosines come from dot products with m
    (x_i - m).(x_j - m) = x_i.x_j - x_i.m - x_j.m + m.m, so the only (langs, n, d) work is shared.
    A pair of positions holding the same sentence is a translation pair (or a sentence with itself),
    never a same-language or unrelated pair: those average over the sum_{s != t} c_s c_t pairs.
    """
    x = x - x.mean((0, 1))             # a shift changes no centred measure; it keeps the norms free of cancellation
    g = x.shape[0]
    norms2 = (x * x).sum(-1)                                         # (langs, n)
    dots = torch.einsum("asd,csd->sac", x, x)                        # (n, langs, langs) per-sentence products
    off = ~torch.eye(g, dtype=torch.bool)
    parts = []
    for c in counts.split(chunk):
        total = c.sum(1)                                             # (B,)
        means = torch.einsum("bs,asd->bad", c, x) / total[:, None, None]
        grand = means.mean(1)                                        # (B, d)
        xm = torch.einsum("asd,bd->bsa", x, grand)                   # (B, n, langs): x_as . m_b
        mm = (grand * grand).sum(1)[:, None, None]
        inv = (norms2.T[None] - 2 * xm + mm).clamp_min(torch.finfo(x.dtype).tiny).rsqrt()  # 1 / |x - m|
        weight = c[..., None] * inv                                  # (B, n, langs)
        sums = torch.einsum("bsa,asd->bad", weight, x) - weight.sum(1)[..., None] * grand[:, None]
        cos = (dots - xm[..., :, None] - xm[..., None, :] + mm[..., None]) * inv[..., :, None] * inv[..., None, :]
        translation = torch.einsum("bs,bsac->bac", c, cos) / total[:, None, None]
        pairs = total ** 2 - (c * c).sum(1)
        unrelated = (sums @ sums.transpose(1, 2) - torch.einsum("bs,bsac->bac", c * c, cos)) / pairs[:, None, None]
        unrelated[pairs <= 0] = torch.nan                            # a resample of one sentence has no such pairs
        between = ((means - grand[:, None]) ** 2).sum(2).mean(1)
        within = torch.einsum("bs,bsa->b", c, norms2.T[None] - 2 * xm + mm) / total / g - between
        parts.append({"centred_same_language_sim": unrelated.diagonal(dim1=1, dim2=2).mean(1),
                      "centred_translation_sim": translation[:, off].mean(1),
                      "centred_unrelated_sim": unrelated[:, off].mean(1),
                      "variance_ratio": torch.where(within > 0, between / within, torch.nan)})
    out = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
    out["centred_same_minus_translation"] = out["centred_same_language_sim"] - out["centred_translation_sim"]
    return {k: out[k] for k in CENTRED_METRICS}


def _per_layer(reps) -> dict[str, np.ndarray]:
    rows = [centred_layer(layer) for layer in _reps(reps)]
    return {k: np.array([r[k] for r in rows]) for k in CENTRED_METRICS}


def centred_gap(reps) -> dict[str, np.ndarray]:
    """Per layer, the mean cosine similarities of `similarity_gap` after subtracting the layer's mean
    vector (over all languages and sentences): centred_same_language_sim, centred_translation_sim,
    centred_unrelated_sim and centred_same_minus_translation (> 0: languages apart more than meaning
    brings translations together). Adding one vector to every representation leaves them unchanged."""
    out = _per_layer(reps)
    return {k: out[k] for k in CENTRED_METRICS if k != "variance_ratio"}


def variance_ratio(reps) -> np.ndarray:
    """Per layer, sum over features of the variance of the language means around the grand mean,
    over the mean (over languages) within-language variance summed over features.

    Scale: 0 to infinity; r / (1 + r) is the share of the total variance explained by the language.
    With one shared distribution, r is only sampling noise, about (langs - 1) / (langs * n) (~0.001 for
    1,000 sentences; less when translations share their meaning, which cancels in the language means);
    r ~ 1 means language accounts for half the variance.
    """
    return _per_layer(reps)["variance_ratio"]


def few_shot_language_id(reps, langs, k: int = FEW_SHOT_K, draws: int = FEW_SHOT_DRAWS, seed: int = 0,
                         test_size: float = 0.25, C: float = 1.0) -> dict[str, np.ndarray]:
    """A language probe that can fail: logistic regression on standardized features trained on k
    sentences per language (the same k sentences in every language, from the training side of
    `sentence_split`) and scored on all the held-out sentences, per layer.

    Each of `draws` draws has its own split and its own k sentences (the same draws for every layer
    and, given the seed, every model). Returns per layer: accuracy (mean over draws), ci_low and ci_high
    (the 95% percentile range of the draws' accuracies: a draw interval, wider than the mean's own),
    and chance (1 / langs).
    """
    reps = _reps(reps, langs)
    n_layers, g, n, d = reps.shape
    if draws < 1:
        raise XLError(f"draws must be at least 1, got {draws}")
    splits = [_few_shot_split(n, k, test_size, seed + t) for t in range(draws)]
    acc = np.empty((n_layers, draws))
    with threadpool_limits(1):  # many tiny fits: BLAS threads only add overhead (2-3x slower here)
        for li, layer in enumerate(reps):
            X = _f64(layer, "reps").numpy()
            for t, (train, test) in enumerate(splits):
                probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
                probe.fit(X[:, train].reshape(-1, d), np.repeat(np.arange(g), k))
                acc[li, t] = probe.score(X[:, test].reshape(-1, d), np.repeat(np.arange(g), len(test)))
    lows, highs = zip(*(bootstrap.interval(a) for a in acc))
    return {"accuracy": acc.mean(1), "ci_low": np.array(lows), "ci_high": np.array(highs),
            "chance": np.full(n_layers, 1 / g)}


def _few_shot_split(n: int, k: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    train, test = sentence_split(n, test_size, seed)
    if not 1 <= k <= len(train):
        raise XLError(f"k must be between 1 and the {len(train)} training sentences, got {k}")
    return np.sort(np.random.default_rng((seed, k)).choice(train, k, replace=False)), test  # own stream


def separability_frame(reps, langs, model: str, seed: int = 0) -> pd.DataFrame:
    """Tidy table (model, layer, metric, value): the full-data probe accuracy and its chance level,
    the raw gaps, the centred measures (CENTRED_METRICS) and the 8-shot probe
    (language_id_8shot_accuracy, _ci_low, _ci_high, _chance)."""
    reps = _reps(reps, langs)
    few = few_shot_language_id(reps, langs, seed=seed)
    metrics = {"language_id_accuracy": language_id_accuracy(reps, langs, seed),
               "language_id_chance": np.full(reps.shape[0], 1 / len(langs)),
               **similarity_gap(reps), **_per_layer(reps),
               **{f"language_id_{FEW_SHOT_K}shot_{key}": v for key, v in few.items()}}
    return pd.DataFrame([{"model": model, "layer": layer, "metric": name, "value": float(v)}
                         for name, values in metrics.items() for layer, v in enumerate(values)])


def replicates(reps_by_model: dict, measure: str = HEADLINE, n_boot: int = bootstrap.N_BOOT,
               seed: int = 0) -> pd.DataFrame:
    """A centred measure at each model's last layer on bootstrap resamples of the sentences:
    rows replicate, columns model labels; every model gets the same resamples (paired)."""
    if measure not in CENTRED_METRICS:
        raise XLError(f"unknown measure {measure!r}; choose one of {', '.join(CENTRED_METRICS)}")
    if not reps_by_model:
        raise XLError("replicates needs at least one model")
    last = {m: _layer(_reps(r)[-1]) for m, r in reps_by_model.items()}
    sizes = {m: r.shape[1] for m, r in last.items()}
    if len(set(sizes.values())) != 1:
        raise XLError(f"models must share the same sentences, got sizes {sizes}")
    samples = bootstrap.resamples(next(iter(sizes.values())), n_boot, seed)
    counts = torch.stack([_counts(samples.shape[1], idx) for idx in samples])
    return pd.DataFrame({m: _centred(x, counts)[measure] for m, x in last.items()},
                        index=pd.RangeIndex(n_boot, name="replicate"))

"""Representational similarity between languages and between models: CKA, SVCCA, retrieval.

Everything is computed in float64 on features centred *before* any product:
transformer features carry offsets of 1e2-1e4 that wreck float32 Gram centring.

CKA (Kornblith et al. 2019) is HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for
kernel Gram matrices K, L. `debiased=True` uses the unbiased HSIC estimator of
Song et al. 2012 (as in Nguyen et al. 2021), whose value for independent
representations is ~0 even when n is close to d; the biased one is not.

All-pairs functions (`language_matrix`, `model_matrix`) compute every kernel
Gram matrix once and take all pairwise inner products with one matrix product
(or, for a linear kernel with few features, one batched cross-covariance per
representation), never a loop over pairs.

Length control: a mean-pooled sentence vector carries its sentence's length, and a
sentence and its translation have correlated lengths, so CKA rewards length alone.
`length_controlled_*` regress each representation on log length (with an intercept)
and compare the residuals; `length_shuffled_baseline` pairs unrelated sentences of
similar length (what length alone buys).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
import torch

from xl.core.errors import XLError
from xl.core.tensors import unit

DEFAULT_SIGMA = 0.8  # Kornblith et al.: RBF bandwidth = 0.8 x median pairwise distance
KERNELS = ("linear", "rbf")
MATRIX_METRICS = ("linear_cka", "linear_cka_debiased", "rbf_cka", "rbf_cka_debiased", "retrieval")
_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_BLOCK_BYTES = 2**28  # bounds the similarity blocks that retrieval holds at once


# ---------------------------------------------------------------- validation

def _tensor(x, ndim: int, name: str) -> torch.Tensor:
    """`x` (numpy, torch, lists) as a tensor with `ndim` dims, dtype kept: converted to float64 per block."""
    try:
        t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as e:
        raise XLError(f"{name} must be a numeric array: {e}") from None
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype in _INTS):
        raise XLError(f"{name} must be a real numeric array, got dtype {t.dtype}")
    if t.ndim != ndim:
        raise XLError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    return t


def _f64(t: torch.Tensor, name: str) -> torch.Tensor:
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise XLError(f"{name} contains NaN or infinite values")
    return t


def _check_n(n: int, debiased: bool, what: str = "sentences") -> None:
    if n < 2:
        raise XLError(f"need at least 2 {what} (rows), got {n}")
    if debiased and n < 4:
        raise XLError(f"debiased CKA needs at least 4 {what} (rows): its estimator divides by n(n-3); got {n}")


def _check_kernel(kernel: str, sigma) -> float:
    if kernel not in KERNELS:
        raise XLError(f"unknown kernel {kernel!r}; choose one of: {', '.join(KERNELS)}")
    sigma = DEFAULT_SIGMA if sigma is None else float(sigma)
    if not sigma > 0:
        raise XLError(f"sigma must be positive, got {sigma}")
    return sigma


def _pair(X, Y, same_width: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    X, Y = _f64(_tensor(X, 2, "X (n, d)"), "X"), _f64(_tensor(Y, 2, "Y (n, d)"), "Y")
    if X.shape[0] != Y.shape[0]:
        raise XLError(f"X and Y must hold the same sentences, aligned by row: {X.shape[0]} != {Y.shape[0]} rows")
    if same_width and X.shape[1] != Y.shape[1]:
        raise XLError(f"X and Y must live in the same space (same width) to compare rows: {X.shape[1]} != {Y.shape[1]}")
    return X, Y


# ---------------------------------------------------------------- kernels

def _centre(t: torch.Tensor) -> torch.Tensor:
    return t - t.mean(-2, keepdim=True)


def _median(t: torch.Tensor) -> torch.Tensor:
    """Median along the last dim, averaging the two middle values like numpy (torch.median does not)."""
    m = t.shape[-1]
    lo = t.kthvalue((m + 1) // 2, dim=-1).values
    hi = t.kthvalue(m // 2 + 1, dim=-1).values
    return (lo + hi) / 2


def _gram(X: torch.Tensor, kernel: str, sigma: float) -> torch.Tensor:
    """Kernel Gram matrices of (..., n, d) centred features -> (..., n, n)."""
    dot = X @ X.mT
    if kernel == "linear":
        return dot
    sq_norms = dot.diagonal(dim1=-2, dim2=-1)
    sq_dist = (sq_norms[..., :, None] + sq_norms[..., None, :] - 2 * dot).clamp_min(0)
    # Kornblith et al.'s reference: median of all n*n squared distances (diagonal included)
    med = _median(sq_dist.flatten(-2))[..., None, None]
    return torch.exp(-sq_dist / (2 * sigma**2 * med))


def _double_centre(K: torch.Tensor) -> torch.Tensor:
    """HKH: the biased HSIC is <HKH, HLH>/(n-1)^2."""
    return K - K.mean(-1, keepdim=True) - K.mean(-2, keepdim=True) + K.mean((-2, -1), keepdim=True)


def _u_centre(K: torch.Tensor) -> torch.Tensor:
    """U-centring: <U(K), U(L)> / (n(n-3)) is the unbiased HSIC estimator of Song et al. 2012."""
    n = K.shape[-1]
    K = K.clone()
    K.diagonal(dim1=-2, dim2=-1).zero_()
    total = K.sum((-2, -1), keepdim=True) / ((n - 1) * (n - 2))
    U = K - K.sum(-1, keepdim=True) / (n - 2) - K.sum(-2, keepdim=True) / (n - 2) + total
    U.diagonal(dim1=-2, dim2=-1).zero_()
    return U


def _centred_gram(X: torch.Tensor, kernel: str, debiased: bool, sigma: float) -> torch.Tensor:
    K = _gram(X, kernel, sigma)
    if debiased:
        return _u_centre(K)
    return K if kernel == "linear" else _double_centre(K)  # centred features: XX' is already HKH


def _debias_linear(inner, ka, kb, n: int):
    """Unbiased HSIC (times n(n-3)) from <K, L> of centred linear kernels, their diagonals ka, kb and sums.

    With centred features K1 = 0, so Song et al.'s tr(K~L~) + 1'K~1 1'L~1/((n-1)(n-2)) - 2/(n-2) 1'K~L~1
    reduces to <K, L> + sum(ka) sum(kb)/((n-1)(n-2)) - n/(n-2) ka.kb (K~: K with zero diagonal).
    """
    return inner + ka.sum(-1)[..., :, None] * kb.sum(-1)[..., None, :] / ((n - 1) * (n - 2)) \
        - n / (n - 2) * ka @ kb.mT


# ---------------------------------------------------------------- pairwise metrics

def cka(X, Y, kernel: str = "linear", debiased: bool = False, sigma: float | None = None) -> float:
    """Centred kernel alignment of X (n, d1) and Y (n, d2), rows aligned (the same sentences).

    kernel 'linear' or 'rbf' (bandwidth sigma x median pairwise distance, sigma default 0.8);
    debiased=True uses the unbiased HSIC estimator. NaN when a representation is constant.
    """
    X, Y = _pair(X, Y)
    sigma = _check_kernel(kernel, sigma)
    n = X.shape[0]
    _check_n(n, debiased)
    X, Y = _centre(X), _centre(Y)
    if kernel == "linear" and max(X.shape[1], Y.shape[1]) < n:
        # feature space: <XX', YY'> = ||Y'X||_F^2 costs n d1 d2 instead of n^2 (d1 + d2)
        xy, xx, yy = (_linear_hsic(A, B, debiased) for A, B in ((X, Y), (X, X), (Y, Y)))
    else:
        K, L = _centred_gram(X, kernel, debiased, sigma), _centred_gram(Y, kernel, debiased, sigma)
        xy, xx, yy = (K * L).sum(), K.square().sum(), L.square().sum()
    return float(xy / torch.sqrt(xx * yy))


def _linear_hsic(A: torch.Tensor, B: torch.Tensor, debiased: bool) -> torch.Tensor:
    """HSIC (up to a constant factor) of two centred (n, d) representations with a linear kernel."""
    h = (B.T @ A).square().sum()
    if not debiased:
        return h
    return _debias_linear(h[None, None], A.square().sum(1)[None], B.square().sum(1)[None], A.shape[0])[0, 0]


def svcca(X, Y, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): keep the top singular directions explaining `keep` of the variance
    of each, then the mean canonical correlation. Needs n well above the kept dimensions (CCA overfits)."""
    if not 0 < keep <= 1:
        raise XLError(f"keep is a fraction of variance in (0, 1], got {keep}")
    X, Y = _pair(X, Y)
    _check_n(X.shape[0], False)
    Ux, Uy = _top_subspace(_centre(X), keep), _top_subspace(_centre(Y), keep)
    if Ux is None or Uy is None:
        return float("nan")
    # canonical correlations are the cosines of the principal angles between the two column spaces
    return float(torch.linalg.svdvals(Ux.T @ Uy).clamp(max=1).mean())


def _top_subspace(X: torch.Tensor, keep: float):
    U, s, _ = torch.linalg.svd(X, full_matrices=False)
    var = s.square()
    if var.sum() == 0:
        return None
    k = int((torch.cumsum(var, 0) / var.sum() < keep - 1e-12).sum()) + 1
    return U[:, :k]


class Retrieval(NamedTuple):
    x_to_y: float  # fraction of rows i of X whose nearest row of Y (cosine) is row i
    y_to_x: float
    mean: float


def retrieval_accuracy(X, Y) -> Retrieval:
    """Translation retrieval by cosine nearest neighbour, both directions; chance is 1/n."""
    X, Y = _pair(X, Y, same_width=True)
    sim = unit(X) @ unit(Y).T
    target = torch.arange(X.shape[0])
    x_to_y = float((sim.argmax(1) == target).double().mean())
    y_to_x = float((sim.argmax(0) == target).double().mean())
    return Retrieval(x_to_y, y_to_x, (x_to_y + y_to_x) / 2)


PAIR_METRICS: dict[str, Callable] = {
    "linear_cka": cka,
    "linear_cka_debiased": partial(cka, debiased=True),
    "rbf_cka": partial(cka, kernel="rbf"),
    "rbf_cka_debiased": partial(cka, kernel="rbf", debiased=True),
    "svcca": svcca,
    "retrieval": lambda X, Y: retrieval_accuracy(X, Y).mean,
}


def shuffled_baseline(X, Y, metric: str | Callable = "linear_cka", n_perm: int = 10, seed: int = 0) -> np.ndarray:
    """Scores of X against Y with its rows permuted (unrelated sentences), one per permutation.

    `metric` is a name in PAIR_METRICS or a function (X, Y) -> float.
    """
    fn = metric if callable(metric) else PAIR_METRICS.get(metric)
    if fn is None:
        raise XLError(f"unknown metric {metric!r}; choose one of: {', '.join(PAIR_METRICS)} or pass a function")
    if int(n_perm) < 1:
        raise XLError(f"n_perm must be at least 1, got {n_perm}")
    X, Y = _pair(X, Y)
    rng = np.random.default_rng(seed)
    return np.array([fn(X, Y[torch.as_tensor(rng.permutation(len(Y)))]) for _ in range(int(n_perm))])


# ---------------------------------------------------------------- all pairs at once

def _parse_metric(metric: str) -> tuple[str, bool]:
    if metric not in MATRIX_METRICS:
        raise XLError(f"unknown metric {metric!r}; choose one of: {', '.join(MATRIX_METRICS)}")
    return metric.split("_")[0], metric.endswith("_debiased")


def _features_cheaper(A: torch.Tensor, B: torch.Tensor) -> bool:
    """Linear CKA: cross-covariances (n da db per pair) vs Gram matrices (n^2 d each, n^2 per pair)."""
    (ga, n, da), (gb, _, db) = A.shape, B.shape
    return ga * gb * n * da * db < n * n * (ga * da + gb * db + ga * gb)


def _linear_inner_features(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """<K_a, L_b> = ||B_b' A_a||_F^2 for all pairs; one batched product per representation of A."""
    return torch.stack([torch.einsum("nd,gne->gde", a, B).square().sum((1, 2)) for a in A])


def _linear_self(A: torch.Tensor) -> torch.Tensor:
    """<K_a, K_a> = ||A_a' A_a||_F^2 for each representation of A."""
    return torch.einsum("gnd,gne->gde", A, A).square().sum((1, 2))


def _cka_cross(A: torch.Tensor, B: torch.Tensor | None, kernel: str, debiased: bool, sigma: float) -> torch.Tensor:
    """CKA of every representation in A (ga, n, da) with every one in B (gb, n, db); B None means A."""
    same = B is None
    A = _centre(A)
    B = A if same else _centre(B)
    n = A.shape[1]
    if kernel == "linear" and _features_cheaper(A, B):
        inner = _linear_inner_features(A, B)
        self_a = _linear_self(A)
        self_b = self_a if same else _linear_self(B)
        if debiased:
            ka, kb = A.square().sum(-1), B.square().sum(-1)
            inner = _debias_linear(inner, ka, kb, n)
            self_a = _debias_linear(torch.diag(self_a), ka, ka, n).diagonal()
            self_b = _debias_linear(torch.diag(self_b), kb, kb, n).diagonal()
    else:
        ga = _centred_gram(A, kernel, debiased, sigma).flatten(1)
        gb = ga if same else _centred_gram(B, kernel, debiased, sigma).flatten(1)
        inner = ga @ gb.T
        self_a, self_b = ga.square().sum(1), gb.square().sum(1)
    return inner / torch.sqrt(self_a[:, None] * self_b[None, :])


def _retrieval_cross(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """[a, b]: fraction of rows i of A[a] whose cosine nearest row of B[b] is row i."""
    A, B = unit(A), unit(B)
    (ga, n, _), gb = A.shape, B.shape[0]
    rows = max(1, _BLOCK_BYTES // (8 * gb * n))
    target = torch.arange(n)
    out = torch.zeros(ga, gb, dtype=torch.float64)
    for a in range(ga):  # one representation against all of B at once, in row blocks to bound memory
        for start in range(0, n, rows):
            sim = torch.einsum("nd,gmd->gnm", A[a, start:start + rows], B)
            out[a] += (sim.argmax(-1) == target[start:start + rows]).sum(-1)
    return out / n


def _retrieval_within(A: torch.Tensor) -> torch.Tensor:
    """`_retrieval_cross(A, A)` with each block of similarities computed once (a <= b): along its rows the
    nearest rows of A[b] to those of A[a], down its columns the nearest rows of A[a] to those of A[b]."""
    A = unit(A)
    g, n, _ = A.shape
    rows = max(1, _BLOCK_BYTES // (8 * g * n))
    target = torch.arange(n)
    out = torch.zeros(g, g, dtype=torch.float64)
    for a in range(g):
        later = A[a:]
        best = torch.full((g - a, n), -torch.inf, dtype=A.dtype)  # each column's best row so far
        best_row = torch.zeros(g - a, n, dtype=torch.long)
        for start in range(0, n, rows):  # row blocks bound memory
            sim = torch.einsum("nd,gmd->gnm", A[a, start:start + rows], later)
            out[a, a:] += (sim.argmax(-1) == target[start:start + rows]).sum(-1)
            value, row = sim.max(1)
            better = value > best  # strictly: ties keep the first row, as argmax does
            best, best_row = torch.where(better, value, best), torch.where(better, row + start, best_row)
        out[a + 1:, a] = (best_row[1:] == target).sum(-1).double()
    return out / n


def _cross(A, B, metric: str, sigma) -> torch.Tensor:
    kind, debiased = _parse_metric(metric)
    if kind == "retrieval":
        return _retrieval_within(A) if B is None else _retrieval_cross(A, B)
    return _cka_cross(A, B, kind, debiased, _check_kernel(kind, sigma))


def language_matrix(reps, metric: str = "linear_cka", sigma: float | None = None) -> np.ndarray:
    """All language pairs of every layer: reps (layers, langs, n, d), the same n sentences in each
    language, rows aligned -> (layers, langs, langs). For 'retrieval', [l, a, b] is the accuracy
    of retrieving the translation in language b of each sentence of language a."""
    reps = _tensor(reps, 4, "reps (layers, langs, n, d)")
    _parse_metric(metric)
    _check_n(reps.shape[2], metric.endswith("_debiased"))
    # one layer at a time in float64: the whole stack in float64 can be gigabytes
    return np.stack([_cross(_f64(r, "reps"), None, metric, sigma).numpy() for r in reps])


def model_matrix(reps_a, reps_b, metric: str = "linear_cka", sigma: float | None = None) -> np.ndarray:
    """All layer pairs of two models on the same n sentences: (layers_a, n, d_a), (layers_b, n, d_b)
    -> (layers_a, layers_b). 'retrieval' needs d_a == d_b (cosine compares rows in one space)."""
    A, B = _tensor(reps_a, 3, "reps_a (layers, n, d)"), _tensor(reps_b, 3, "reps_b (layers, n, d)")
    if A.shape[1] != B.shape[1]:
        raise XLError(f"both models must encode the same sentences: {A.shape[1]} != {B.shape[1]} rows")
    kind, debiased = _parse_metric(metric)
    if kind == "retrieval" and A.shape[2] != B.shape[2]:
        raise XLError(f"retrieval compares rows in one space; widths differ: {A.shape[2]} != {B.shape[2]}")
    _check_n(A.shape[1], debiased)
    return _cross(_f64(A, "reps_a"), _f64(B, "reps_b"), metric, sigma).numpy()


def to_frame(matrix, layers, langs, metric: str, model: str) -> pd.DataFrame:
    """A (layers, langs, langs) matrix as a tidy table: model, layer, metric, lang_a, lang_b, value."""
    m = np.asarray(matrix)
    layers, langs = list(layers), list(langs)
    if m.shape != (len(layers), len(langs), len(langs)):
        raise XLError(f"matrix shape {m.shape} does not match {len(layers)} layers x {len(langs)} x {len(langs)} languages")
    li, ai, bi = (g.ravel() for g in np.indices(m.shape))
    return pd.DataFrame({
        "model": model,
        "layer": np.asarray(layers, dtype=object)[li],
        "metric": metric,
        "lang_a": np.asarray(langs, dtype=object)[ai],
        "lang_b": np.asarray(langs, dtype=object)[bi],
        "value": m.ravel(),
    })

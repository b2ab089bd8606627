"""Sentence length as a confound of representational similarity, and its control.

The lengths of a verse and of its translation correlate (r ~ 0.9), and mean-pooled
representations carry their sentence's length: two languages' representations then share
structure through length alone, and CKA reads it as alignment. Controlled here by regressing
each representation on its sentences' log length (with an intercept) before CKA, and checked
with a length-matched shuffled baseline (unrelated sentences of similar length).
"""
from __future__ import annotations

import numpy as np
import torch

from xl.analysis.similarity import _centre, _check_n, _f64, _pair, _tensor, cka
from xl.core.errors import XLError

_FLAT = 1e-20  # log lengths whose variance per sentence is below this are constant (nothing to regress)
MIN_BUCKET = 10  # length-matched shuffle: sentences per length bucket, at least


def log_lengths(lengths, shape: tuple, name: str = "lengths") -> torch.Tensor:
    """Validated float64 log of positive, finite lengths of exactly `shape`."""
    shape = tuple(int(s) for s in shape)
    t = _f64(_tensor(lengths, len(shape), f"{name} {shape}"), name)
    if tuple(t.shape) != shape:
        raise XLError(f"{name} must hold one length per sentence, shape {shape}; got {tuple(t.shape)}")
    if not (t > 0).all():
        raise XLError(f"{name} must be positive (pieces per sentence)")
    return t.log()


def _length_direction(log_len: torch.Tensor) -> torch.Tensor:
    """Centred log length scaled to unit norm (..., n); zero where lengths are all equal."""
    lc = log_len - log_len.mean(-1, keepdim=True)
    ss = lc.square().sum(-1, keepdim=True)
    return torch.where(ss > _FLAT * lc.shape[-1], lc / ss.clamp_min(_FLAT).sqrt(), 0)


def residualise(X, log_len) -> torch.Tensor:
    """Least-squares residuals (float64) of X (..., n, d) on an intercept and log_len (..., n):
    what a linear function of log length does not explain."""
    X = _centre(torch.as_tensor(X, dtype=torch.float64))
    u = _length_direction(torch.as_tensor(log_len, dtype=torch.float64))
    return X - u[..., :, None] * (u[..., None, :] @ X)


def length_controlled_cka(X, Y, len_x, len_y, debiased: bool = False) -> float:
    """Linear CKA of X (n, d1) and Y (n, d2) after regressing each on its sentences' log length
    (len_x, len_y: (n,) lengths in pieces, > 0). NaN when length explains a representation fully."""
    X, Y = _pair(X, Y)
    n = X.shape[0]
    _check_n(n, debiased)
    lx, ly = log_lengths(len_x, (n,), "len_x"), log_lengths(len_y, (n,), "len_y")
    return cka(residualise(X, lx), residualise(Y, ly), debiased=debiased)


def length_r2(X, len_x) -> float:
    """Share of the total variance of X (n, d), summed over features, explained by log length."""
    X = _f64(_tensor(X, 2, "X (n, d)"), "X")
    resid = residualise(X, log_lengths(len_x, (X.shape[0],), "len_x"))
    return float(1 - resid.square().sum() / _centre(X).square().sum())


def _weighted_basis(log_len: torch.Tensor, root_w: torch.Tensor) -> torch.Tensor:
    """(g, m, 2) orthonormal basis of the sqrt-weighted intercept and log length (zero column if lengths are flat)."""
    e1 = (root_w / root_w.norm()).expand_as(log_len)
    e2 = root_w * log_len
    e2 = e2 - (e2 * e1).sum(-1, keepdim=True) * e1
    ss = e2.square().sum(-1, keepdim=True)
    e2 = torch.where(ss > _FLAT * root_w.square().sum(), e2 / ss.clamp_min(_FLAT).sqrt(), 0)
    return torch.stack([e1, e2], -1)


def length_controlled_gram_cka(grams, lengths, weights=None) -> np.ndarray:
    """Length-controlled linear CKA of all pairs from linear Gram matrices K_a = X_a X_a' (g, m, m),
    lengths (g, m) and optional row multiplicities `weights` (m,) -> (g, g).

    Rows with weight k count k times: a bootstrap resample is its distinct rows and their counts, and
    the result equals `residualise` (centre and regress on the resample) then all-pairs linear CKA of
    the duplicated rows. With D = diag(sqrt w) and E an orthonormal basis of D[1, log length], the
    weighted residuals' Gram is (I - EE') DKD (I - EE'): no pass over the features.
    """
    K = _tensor(grams, 3, "grams (g, m, m)").to(torch.float64)
    if not torch.isfinite(K.diagonal(dim1=-2, dim2=-1)).all():  # a non-finite feature shows on the diagonal
        raise XLError("grams contain NaN or infinite values")
    g, m = K.shape[:2]
    logs = log_lengths(lengths, (g, m), "lengths (g, m)")
    w = torch.ones(m, dtype=torch.float64) if weights is None else _f64(_tensor(weights, 1, "weights (m,)"), "weights")
    if w.shape != (m,) or not (w > 0).all():
        raise XLError(f"weights must be {m} positive row counts, got shape {tuple(w.shape)}")
    root = w.sqrt()
    E = _weighted_basis(logs, root)
    N = K * (root[:, None] * root[None, :])
    V = N @ E
    V -= 0.5 * E @ (E.mT @ V)  # then E V' + V E' = EE'N + NEE' - EE'NEE'
    G = N.baddbmm_(torch.cat([E, V], -1), torch.cat([V, E], -1).mT, alpha=-1).flatten(1)
    inner = G @ G.T
    return (inner / torch.sqrt(torch.outer(inner.diagonal(), inner.diagonal()))).numpy()


def length_matched_orders(key, n_orders: int, seed: int = 0, bucket: int | None = None) -> np.ndarray:
    """(n_orders, n) row orders that pair each sentence with an unrelated one of similar length.

    Sentences are sorted by `key` (n,) (e.g. mean log length) and cut into buckets of at least
    `bucket` (default max(MIN_BUCKET, n_orders)); within a bucket in random order, order j takes
    the member s_j places on, with distinct shifts s_j: two orders never put one sentence at the
    same row, so rows pair different sentences from the same length bucket.
    """
    key = _f64(_tensor(key, 1, "key (n,)"), "key").numpy()
    n, bucket = len(key), max(MIN_BUCKET, n_orders) if bucket is None else int(bucket)
    if not n_orders <= min(bucket, n):
        raise XLError(f"{n_orders} orders need length buckets of at least {n_orders} of the {n} sentences "
                      f"(bucket={bucket})")
    rng = np.random.default_rng(seed)
    ranked = np.lexsort((rng.random(n), key))  # by key, ties in random order
    orders = np.empty((n_orders, n), dtype=np.int64)
    for members in np.array_split(ranked, max(1, n // bucket)):
        members = rng.permutation(members)
        for j, shift in enumerate(rng.choice(len(members), n_orders, replace=False)):
            orders[j, members] = np.roll(members, -shift)
    return orders


def length_shuffled_baseline(X, Y, len_x, len_y, n_perm: int = 10, seed: int = 0) -> np.ndarray:
    """Raw linear CKA of X against Y with rows re-paired within buckets of similar mean log length
    (unrelated sentences of similar length), one per permutation: what length alone buys."""
    if int(n_perm) < 1:
        raise XLError(f"n_perm must be at least 1, got {n_perm}")
    X, Y = _pair(X, Y)
    n = X.shape[0]
    key = (log_lengths(len_x, (n,), "len_x") + log_lengths(len_y, (n,), "len_y")) / 2
    out = []
    for i in range(int(n_perm)):
        ox, oy = (torch.as_tensor(o) for o in length_matched_orders(key, 2, seed + i))
        out.append(cka(X[ox], Y[oy]))
    return np.array(out)

"""CKA, SVCCA and retrieval against independent references and their defining properties."""
import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from xl.analysis import similarity as sim
from xl.core.errors import XLError


def rng(seed=0):
    return np.random.default_rng(seed)


def related(n, d1, d2, seed=0, offset=0.0):
    """X (n, d1) and a noisy linear function of it Y (n, d2): CKA strictly between 0 and 1."""
    r = rng(seed)
    X = r.normal(size=(n, d1))
    Y = X @ r.normal(size=(d1, d2)) + 2 * r.normal(size=(n, d2))
    return X + offset, Y - offset


# -------- independent references, straight from the formulas (Gram matrices of the raw data)

def ref_hsic(K, L, unbiased):
    n = len(K)
    if not unbiased:  # Gretton et al. 2005: tr(KHLH)/(n-1)^2
        H = np.eye(n) - np.ones((n, n)) / n
        return np.trace(K @ H @ L @ H) / (n - 1) ** 2
    # Song et al. 2012, eq. 5
    K, L, one = K.copy(), L.copy(), np.ones(n)
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


def ref_rbf(X, sigma):
    sq = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * sigma**2 * np.median(sq)))


def ref_cka(X, Y, kernel="linear", unbiased=False, sigma=0.8):
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    K, L = (X @ X.T, Y @ Y.T) if kernel == "linear" else (ref_rbf(X, sigma), ref_rbf(Y, sigma))
    return ref_hsic(K, L, unbiased) / np.sqrt(ref_hsic(K, K, unbiased) * ref_hsic(L, L, unbiased))


CASES = [(kernel, unbiased) for kernel in ("linear", "rbf") for unbiased in (False, True)]


@pytest.mark.parametrize("kernel,unbiased", CASES)
@pytest.mark.parametrize("n,d", [(30, 7), (16, 40)])  # feature-space path (d < n) and Gram path; n even: numpy median
def test_cka_matches_reference(kernel, unbiased, n, d):
    X, Y = related(n, d, d + 3, offset=3.0)
    got = sim.cka(X, Y, kernel=kernel, debiased=unbiased)
    assert 0.05 < got < 0.95
    assert got == pytest.approx(ref_cka(X, Y, kernel, unbiased), rel=1e-9)


@pytest.mark.parametrize("kernel,unbiased", CASES)
def test_cka_matches_published_implementation(kernel, unbiased):
    ckatorch = pytest.importorskip("ckatorch")
    X, Y = related(31, 12, 20, seed=1)  # n odd: n*n odd, so torch.median (lower median) is the median
    theirs = ckatorch.cka_base(torch.tensor(X), torch.tensor(Y), kernel=kernel, unbiased=unbiased, threshold=0.8)
    assert sim.cka(X, Y, kernel=kernel, debiased=unbiased) == pytest.approx(float(theirs), rel=1e-9)


@pytest.mark.parametrize("kernel,unbiased", CASES)
def test_cka_identity_and_invariances(kernel, unbiased):
    X, Y = related(40, 10, 6, seed=2)
    assert sim.cka(X, X, kernel=kernel, debiased=unbiased) == pytest.approx(1.0, abs=1e-12)
    Q, _ = np.linalg.qr(rng(3).normal(size=(10, 10)))
    base = sim.cka(X, Y, kernel=kernel, debiased=unbiased)
    moved = sim.cka(3.7 * X @ Q + 5.0, Y, kernel=kernel, debiased=unbiased)
    assert moved == pytest.approx(base, rel=1e-10)
    # anisotropic scaling is not an invariance: the check above can tell transforms apart
    stretched = sim.cka(X * np.geomspace(0.01, 10, 10), Y, kernel=kernel, debiased=unbiased)
    assert abs(stretched - base) > 1e-3


def test_debiased_cka_is_near_zero_for_independent_data_when_n_close_to_d():
    r = rng(4)
    X, Y = r.normal(size=(60, 50)), r.normal(size=(60, 50))
    assert sim.cka(X, Y) > 0.35  # the biased estimator is inflated by d/n
    assert abs(sim.cka(X, Y, debiased=True)) < 0.06
    assert abs(sim.cka(X, Y, kernel="rbf", debiased=True)) < 0.06


def naive_float32_cka(X, Y):
    """What goes wrong without centring first: float32 Gram matrices, then centred."""
    X, Y = torch.tensor(X), torch.tensor(Y)
    K, L = X @ X.T, Y @ Y.T
    K, L = (M - M.mean(0) - M.mean(1, keepdim=True) + M.mean() for M in (K, L))
    return float((K * L).sum() / torch.sqrt((K * K).sum() * (L * L).sum()))


@pytest.mark.parametrize("unbiased", [False, True])
def test_float32_with_large_offset_equals_centred_float64(unbiased):
    X, Y = related(200, 32, 32, seed=5)
    X32, Y32 = (X + 1e4).astype(np.float32), (Y - 1e4).astype(np.float32)
    # the same (rounded) numbers, centred in float64 before anything else
    Xc, Yc = (M.astype(np.float64) - M.astype(np.float64).mean(0) for M in (X32, Y32))
    got = sim.cka(X32, Y32, debiased=unbiased)
    assert got == pytest.approx(ref_cka(Xc, Yc, unbiased=unbiased), rel=1e-10)
    assert got == pytest.approx(ref_cka(X, Y, unbiased=unbiased), abs=1e-4)  # only float32 rounding left
    assert sim.cka(torch.tensor(X32), torch.tensor(Y32), debiased=unbiased) == got
    assert abs(naive_float32_cka(X32, Y32) - got) > 0.1


# -------- all pairs at once

LANG_METRICS = ["linear_cka", "linear_cka_debiased", "rbf_cka", "rbf_cka_debiased"]


def pairwise(metric, X, Y):
    kind, debiased = metric.split("_")[0], metric.endswith("_debiased")
    return sim.cka(X, Y, kernel=kind, debiased=debiased)


def language_reps(layers, langs, n, d, seed=0, dtype=np.float64):
    """Languages sharing a sentence signal plus their own offset and noise, like real encoders."""
    r = rng(seed)
    shared = r.normal(size=(layers, 1, n, d))
    own = r.normal(size=(layers, langs, 1, d)) * 3 + r.normal(size=(layers, langs, n, d))
    return (shared * r.uniform(0.3, 2, size=(layers, langs, 1, 1)) + own).astype(dtype)


@pytest.mark.parametrize("metric", LANG_METRICS)
@pytest.mark.parametrize("n,d,features", [(40, 6, True), (12, 30, False)])
def test_language_matrix_equals_pairwise_for_every_pair(metric, n, d, features):
    reps = language_reps(2, 3, n, d, dtype=np.float32)
    A = torch.tensor(reps[0], dtype=torch.float64)
    assert sim._features_cheaper(A, A) == features  # both linear code paths are exercised
    M = sim.language_matrix(reps, metric)
    assert M.shape == (2, 3, 3)
    for layer in range(2):
        for a in range(3):
            for b in range(3):
                assert M[layer, a, b] == pytest.approx(pairwise(metric, reps[layer, a], reps[layer, b]), rel=1e-9)


@pytest.mark.parametrize("metric", LANG_METRICS)
@pytest.mark.parametrize("n,da,db,features", [(60, 5, 7, True), (9, 20, 25, False)])
def test_model_matrix_equals_pairwise_for_every_pair(metric, n, da, db, features):
    r = rng(6)
    A, B = r.normal(size=(3, n, da)), r.normal(size=(4, n, db))
    B[:, :, :da] += A[1]  # some layers related
    assert sim._features_cheaper(torch.tensor(A), torch.tensor(B)) == features
    M = sim.model_matrix(A, torch.tensor(B, dtype=torch.float32), metric)
    assert M.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert M[i, j] == pytest.approx(pairwise(metric, A[i], B[j].astype(np.float32)), rel=1e-9)


def test_retrieval_matrix_equals_pairwise(monkeypatch):
    monkeypatch.setattr(sim, "_BLOCK_BYTES", 8 * 3 * 50 * 7)  # force several row blocks
    reps = language_reps(2, 3, 50, 8, seed=7)
    M = sim.language_matrix(reps, "retrieval")
    for layer in range(2):
        for a in range(3):
            for b in range(3):
                r = sim.retrieval_accuracy(reps[layer, a], reps[layer, b])
                assert M[layer, a, b] == r.x_to_y and M[layer, b, a] == r.y_to_x
    assert 0.05 < M[0, 0, 1] < 1  # neither trivial nor chance


def test_retrieval_identical_and_shuffled():
    r = rng(8)
    X = r.normal(size=(300, 16))
    assert sim.retrieval_accuracy(X, X) == (1.0, 1.0, 1.0)
    noisy = X + 0.1 * r.normal(size=X.shape)
    assert sim.retrieval_accuracy(X, noisy).mean == 1.0
    shuffled = sim.shuffled_baseline(X, noisy, "retrieval", n_perm=3, seed=1)
    assert shuffled.shape == (3,) and shuffled.max() < 0.03  # chance is 1/300


def test_shuffled_baseline_scores_unrelated_sentences():
    X, Y = related(80, 8, 8, seed=9)
    assert sim.cka(X, Y, debiased=True) > 0.5
    base = sim.shuffled_baseline(X, Y, "linear_cka_debiased", n_perm=5, seed=0)
    assert np.abs(base).max() < 0.1
    again = sim.shuffled_baseline(X, Y, lambda a, b: sim.cka(a, b, debiased=True), n_perm=5, seed=0)
    np.testing.assert_allclose(again, base)


# -------- SVCCA

def ref_svcca(X, Y, keep):
    """Top-variance SVD directions, then classical CCA: rho^2 = eig(Sxx^-1 Sxy Syy^-1 Syx)."""
    def reduce(M):
        M = M - M.mean(0)
        U, s, _ = np.linalg.svd(M, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / (s**2).sum(), keep - 1e-12)) + 1
        return U[:, :k] * s[:k]
    X, Y = reduce(X), reduce(Y)
    Sxx, Syy, Sxy = X.T @ X, Y.T @ Y, X.T @ Y
    rho2 = scipy.linalg.eigvals(np.linalg.solve(Sxx, Sxy) @ np.linalg.solve(Syy, Sxy.T)).real
    k = min(X.shape[1], Y.shape[1])
    return np.sqrt(np.clip(np.sort(rho2)[::-1][:k], 0, 1)).mean()


@pytest.mark.parametrize("keep", [0.99, 0.7])
def test_svcca_matches_classical_cca(keep):
    X, Y = related(300, 12, 9, seed=10)
    got = sim.svcca(X, Y, keep=keep)
    assert 0.05 < got < 0.95
    assert got == pytest.approx(ref_svcca(X, Y, keep), rel=1e-8)


def test_svcca_invariant_to_invertible_maps_and_low_for_independent():
    r = rng(11)
    X = r.normal(size=(500, 6))
    assert sim.svcca(X, X @ r.normal(size=(6, 6)) + 4, keep=1.0) == pytest.approx(1.0, abs=1e-10)
    assert sim.svcca(X, r.normal(size=(500, 6))) < 0.15


# -------- tidy frame and errors

def test_to_frame_is_tidy():
    M = np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3)
    df = sim.to_frame(M, [0, 12], ["en", "de", "zh"], "linear_cka", "mBERT")
    assert list(df.columns) == ["model", "layer", "metric", "lang_a", "lang_b", "value"]
    assert len(df) == 18
    row = df[(df.layer == 12) & (df.lang_a == "de") & (df.lang_b == "zh")]
    assert row.value.item() == M[1, 1, 2]
    pivot = df.pivot_table(index=["layer", "lang_a"], columns="lang_b", values="value")
    assert isinstance(pivot, pd.DataFrame)
    with pytest.raises(XLError, match="does not match"):
        sim.to_frame(M, [0], ["en", "de", "zh"], "linear_cka", "mBERT")


@pytest.mark.fault
def test_bad_input_raises_xlerror():
    X = rng(12).normal(size=(10, 4))
    with pytest.raises(XLError, match="same sentences"):
        sim.cka(X, X[:9])
    with pytest.raises(XLError, match="2 dimensions"):
        sim.cka(X[None], X)
    with pytest.raises(XLError, match="at least 4"):
        sim.cka(X[:3], X[:3], debiased=True)
    with pytest.raises(XLError, match="at least 4"):
        sim.language_matrix(np.zeros((1, 2, 3, 4)), "linear_cka_debiased")
    with pytest.raises(XLError, match="4 dimensions"):
        sim.language_matrix(X, "linear_cka")
    with pytest.raises(XLError, match="unknown kernel"):
        sim.cka(X, X, kernel="poly")
    with pytest.raises(XLError, match="unknown metric"):
        sim.language_matrix(np.zeros((1, 2, 5, 4)), "cosine")
    with pytest.raises(XLError, match="same sentences"):
        sim.model_matrix(np.zeros((1, 5, 4)), np.zeros((1, 6, 4)))
    with pytest.raises(XLError, match="same space"):
        sim.retrieval_accuracy(X, X[:, :3])
    with pytest.raises(XLError, match="NaN"):
        sim.cka(np.full((5, 2), np.nan), X[:5, :2])
    with pytest.raises(XLError, match="numeric"):
        sim.cka([["a", "b"]] * 5, X[:5, :2])
    with pytest.raises(XLError, match="keep"):
        sim.svcca(X, X, keep=0)
    with pytest.raises(XLError, match="unknown metric"):
        sim.shuffled_baseline(X, X, "cosine")

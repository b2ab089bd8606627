"""CKA, SVCCA and retrieval against independent references and their defining properties."""
import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from conftest import TINY_TEXTS, tiny_model

from xl.analysis import bootstrap, length, tables
from xl.analysis import similarity as sim
from xl.core.errors import XLError
from xl.models.encoder import Encoder


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
    reps[1, 1] = reps[1, 0] + 0.01 * rng(9).normal(size=reps[1, 0].shape)  # a near copy: retrieval near 1
    reps[:, :, 30] = reps[:, :, 3]  # a sentence twice, in another row block: tied nearest rows
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


# -------- length control

def ref_residuals(X, lengths):
    """Least squares of X on [1, log length] with numpy's lstsq: the residuals."""
    A = np.c_[np.ones(len(X)), np.log(np.asarray(lengths, np.float64))]
    return X - A @ np.linalg.lstsq(A, X, rcond=None)[0]


def ref_controlled_cka(X, Y, len_x, len_y, unbiased=False):
    return ref_cka(ref_residuals(X, len_x), ref_residuals(Y, len_y), unbiased=unbiased)


def ref_r2(X, lengths):
    Xc = X - X.mean(0)
    return 1 - (ref_residuals(X, lengths) ** 2).sum() / (Xc**2).sum()


def verse_lengths(n, seed=0, langs=2):
    """Lengths in pieces of n verses in `langs` languages: a verse's length carries over to its translations."""
    r = rng(seed)
    base = np.exp(r.normal(3, 0.5, size=n))
    return np.maximum(1, np.round(base * np.exp(0.15 * r.normal(size=(langs, n))))).astype(np.int64)


def meaning_and_length(n, d, lengths, seed=0, length_weight=3.0):
    """Per language: a shared meaning (the same for every language, through its own linear map) plus a
    length direction, plus noise. Returns (reps (langs, n, d), meaning parts (langs, n, d))."""
    r = rng(seed)
    meaning = r.normal(size=(n, 6))
    parts = np.stack([meaning @ r.normal(size=(6, d)) for _ in lengths])
    length = np.stack([np.log(n_)[:, None] * r.normal(size=(1, d)) for n_ in lengths])
    noise = 0.3 * r.normal(size=parts.shape)
    return parts + length_weight * length + noise + 5.0, parts + noise


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("n,d", [(60, 5), (20, 40)])  # feature-space path and Gram path of cka
def test_length_controlled_cka_matches_reference(unbiased, n, d):
    lengths = verse_lengths(n, seed=1)
    (X, Y), _ = meaning_and_length(n, d, lengths, seed=2)
    got = length.length_controlled_cka(X, Y[:, :d - 1], lengths[0], lengths[1], debiased=unbiased)
    assert got == pytest.approx(ref_controlled_cka(X, Y[:, :d - 1], *lengths, unbiased), rel=1e-9)
    assert length.length_r2(X, lengths[0]) == pytest.approx(ref_r2(X, lengths[0]), rel=1e-9)


def test_length_only_representation_is_not_aligned_once_length_is_controlled():
    lengths = verse_lengths(400, seed=3)
    assert np.corrcoef(np.log(lengths))[0, 1] > 0.85  # a verse and its translation: correlated lengths
    r = rng(4)
    X = np.log(lengths[0])[:, None] * r.normal(size=(1, 16)) + 0.05 * r.normal(size=(400, 16))
    Y = np.log(lengths[1])[:, None] * r.normal(size=(1, 12)) + 0.05 * r.normal(size=(400, 12))
    assert sim.cka(X, Y) > 0.7  # raw CKA: fooled by length
    controlled = length.length_controlled_cka(X, Y, *lengths)
    assert abs(controlled) < 0.05
    assert controlled == pytest.approx(ref_controlled_cka(X, Y, *lengths), rel=1e-9)
    assert length.length_r2(X, lengths[0]) > 0.99
    assert length.length_r2(r.normal(size=(400, 16)), lengths[0]) < 0.02  # noise: length explains nothing


def test_meaning_plus_length_keeps_its_meaning_part():
    lengths = verse_lengths(500, seed=5)
    (X, Y), (mx, my) = meaning_and_length(500, 24, lengths, seed=6, length_weight=6.0)
    raw, controlled, meaning = sim.cka(X, Y), length.length_controlled_cka(X, Y, *lengths), sim.cka(mx, my)
    assert 0.3 < meaning < 0.95 and length.length_r2(X, lengths[0]) > 0.3
    assert controlled == pytest.approx(meaning, abs=0.05)
    assert raw - meaning > 0.05  # length inflates raw CKA here


def test_length_controlled_cka_is_orthogonally_invariant_and_exact_for_length_free_data():
    lengths = verse_lengths(80, seed=7)
    (X, Y), _ = meaning_and_length(80, 10, lengths, seed=8)
    Q, _ = np.linalg.qr(rng(9).normal(size=(10, 10)))
    base = length.length_controlled_cka(X, Y, *lengths)
    assert length.length_controlled_cka(2.5 * X @ Q - 7, Y, *lengths) == pytest.approx(base, rel=1e-10)
    assert length.length_controlled_cka(X, X @ Q, lengths[0], lengths[0]) == pytest.approx(1.0, rel=1e-12)
    # data already orthogonal to log length (and centred): control changes nothing
    R = ref_residuals(X, lengths[0]), ref_residuals(Y, lengths[1])
    assert length.length_controlled_cka(*R, *lengths) == pytest.approx(sim.cka(*R), rel=1e-10)
    # equal lengths: nothing to regress, the control is plain CKA
    flat = np.full(80, 7)
    assert length.length_controlled_cka(X, Y, flat, flat) == pytest.approx(sim.cka(X, Y), rel=1e-10)
    assert length.length_r2(X, flat) == pytest.approx(0, abs=1e-12)


def test_residualise_batches_over_leading_dims():
    lengths = verse_lengths(30, seed=10, langs=3)
    reps = rng(11).normal(size=(2, 3, 30, 4))
    got = length.residualise(reps, np.log(lengths)).numpy()
    for layer in range(2):
        for lang in range(3):
            np.testing.assert_allclose(got[layer, lang], ref_residuals(reps[layer, lang], lengths[lang]), atol=1e-12)


def test_gram_form_equals_residualised_language_matrix_with_duplicate_rows():
    lengths = verse_lengths(50, seed=12, langs=4)
    reps, _ = meaning_and_length(50, 7, lengths, seed=13)
    grams = np.einsum("gnd,gmd->gnm", reps, reps)
    plain = length.length_controlled_gram_cka(grams, lengths)
    idx = rng(14).integers(0, 50, size=50)  # a bootstrap resample: duplicates, regressed on its own rows
    rows, counts = np.unique(idx, return_counts=True)
    assert counts.max() > 1
    weighted = length.length_controlled_gram_cka(grams[:, rows][:, :, rows], lengths[:, rows], counts)
    for a in range(4):
        for b in range(4):
            assert plain[a, b] == pytest.approx(ref_controlled_cka(reps[a], reps[b], lengths[a], lengths[b]), rel=1e-9)
            X, Y = reps[a, idx], reps[b, idx]
            ref = ref_controlled_cka(X, Y, lengths[a, idx], lengths[b, idx])
            assert weighted[a, b] == pytest.approx(ref, rel=1e-9)
    assert not np.allclose(weighted, plain, rtol=1e-3)  # the resample does change the value


def test_length_matched_orders_pair_unrelated_sentences_of_similar_length():
    n, langs = 203, 5
    lengths = verse_lengths(n, seed=15, langs=langs)
    key = np.log(lengths).mean(0)
    orders = length.length_matched_orders(key, langs, seed=1, bucket=12)
    assert orders.shape == (langs, n)
    for order in orders:
        assert sorted(order) == list(range(n))  # a permutation of the sentences
    for a in range(langs):
        for b in range(a + 1, langs):
            assert (orders[a] != orders[b]).all()  # no row pairs a sentence with its own translation
    rank = np.empty(n, dtype=int)
    rank[np.argsort(key, kind="stable")] = np.arange(n)
    assert (np.abs(rank[orders[0]] - rank[orders[1]]) < 2 * 12 + 12).all()  # same bucket: near in rank
    gap_matched = np.abs(key[orders[0]] - key[orders[1]]).mean()
    gap_random = np.abs(key - key[rng(16).permutation(n)]).mean()
    assert gap_matched < gap_random / 4
    np.testing.assert_array_equal(orders, length.length_matched_orders(key, langs, seed=1, bucket=12))


def test_length_shuffled_baseline_keeps_length_and_destroys_meaning():
    lengths = verse_lengths(600, seed=17)
    (X, Y), (mx, my) = meaning_and_length(600, 16, lengths, seed=18)
    assert sim.cka(mx, my) > 0.5
    meaning_only = length.length_shuffled_baseline(mx, my, *lengths, n_perm=3, seed=0)
    assert meaning_only.shape == (3,) and meaning_only.max() < 0.05  # unrelated sentences
    r = rng(19)
    Lx = np.log(lengths[0])[:, None] * r.normal(size=(1, 8)) + 0.05 * r.normal(size=(600, 8))
    Ly = np.log(lengths[1])[:, None] * r.normal(size=(1, 8)) + 0.05 * r.normal(size=(600, 8))
    length_only = length.length_shuffled_baseline(Lx, Ly, *lengths, n_perm=3, seed=0)
    assert length_only.min() > 0.5 * sim.cka(Lx, Ly)  # length pairing survives the shuffle
    assert sim.shuffled_baseline(Lx, Ly, n_perm=3).max() < 0.05  # the plain shuffle destroys it too


@pytest.mark.fault
def test_length_control_bad_input_raises_xlerror():
    X = rng(20).normal(size=(10, 4))
    lens = np.arange(1, 11)
    with pytest.raises(XLError, match="one length per sentence"):
        length.length_controlled_cka(X, X, lens[:9], lens)
    with pytest.raises(XLError, match="positive"):
        length.length_controlled_cka(X, X, lens - 1, lens)
    with pytest.raises(XLError, match="NaN or infinite"):
        length.length_r2(X, np.r_[lens[:9], np.inf])
    with pytest.raises(XLError, match="1 dimensions"):
        length.length_r2(X, lens[:, None])
    with pytest.raises(XLError, match="numeric"):
        length.length_controlled_cka(X, X, ["a"] * 10, lens)
    with pytest.raises(XLError, match="same sentences"):
        length.length_controlled_cka(X, X[:9], lens, lens[:9])
    with pytest.raises(XLError, match="buckets of at least"):
        length.length_matched_orders(np.arange(10.0), 5, bucket=3)
    with pytest.raises(XLError, match="n_perm"):
        length.length_shuffled_baseline(X, X, lens, lens, n_perm=0)
    with pytest.raises(XLError, match="one length per sentence"):
        length.length_controlled_gram_cka(np.zeros((2, 10, 10)), np.ones((3, 10)))
    with pytest.raises(XLError, match="positive row counts"):
        length.length_controlled_gram_cka(np.zeros((2, 10, 10)), np.ones((2, 10)), np.zeros(10))


# -------- length-controlled tables

def length_stack(layers=3, langs=3, n=40, d=6, seed=21):
    lengths = verse_lengths(n, seed=seed, langs=langs)
    parts = [meaning_and_length(n, d, lengths, seed=seed + layer)[0] for layer in range(layers)]
    return np.stack(parts).astype(np.float32), lengths


def test_language_similarity_length_metrics_match_pairwise_references():
    langs = ["en", "de", "zh"]
    reps = {"m1": length_stack(seed=21)[0], "m2": length_stack(seed=22)[0]}
    lengths = {"m1": length_stack(seed=21)[1], "m2": length_stack(seed=22)[1]}
    plain = tables.language_similarity(reps, langs, seed=3)
    table = tables.language_similarity(reps, langs, seed=3, lengths=lengths)
    assert set(plain.metric) == {"linear_cka", "linear_cka_debiased", "retrieval", "linear_cka_shuffled"}
    pd.testing.assert_frame_equal(table[table.metric.isin(set(plain.metric))].reset_index(drop=True), plain)
    got = table.set_index(["model", "metric", "layer", "lang_a", "lang_b"]).value
    for model in reps:
        X, lens = reps[model].astype(np.float64), lengths[model]
        for layer in range(3):
            for a, la in enumerate(langs):
                assert got[model, "length_r2", layer, la, la] == pytest.approx(ref_r2(X[layer, a], lens[a]), rel=1e-9)
                for b, lb in enumerate(langs):
                    ref = ref_controlled_cka(X[layer, a], X[layer, b], lens[a], lens[b])
                    assert got[model, "linear_cka_length_controlled", layer, la, lb] == pytest.approx(ref, rel=1e-8)
    r2 = table[table.metric == "length_r2"]
    assert (r2.lang_a == r2.lang_b).all() and len(r2) == 2 * 3 * 3
    assert len(table[table.metric == "linear_cka_length_shuffled"]) == 2 * 3 * 9
    with pytest.raises(XLError, match="no sentence lengths"):
        tables.language_similarity(reps, langs, lengths={"m1": lengths["m1"]})


def test_length_shuffled_table_re_pairs_within_length_buckets():
    reps, lengths = length_stack(layers=1, langs=3, n=60, seed=23)
    tagged = np.broadcast_to(np.arange(60.0)[None, None, :, None], (1, 3, 60, 1))  # each row holds its sentence id
    ids = tables.length_shuffled(tagged, lengths, seed=0)[0, :, :, 0].astype(int)
    orders = length.length_matched_orders(np.log(lengths).mean(0), 3, seed=0)
    np.testing.assert_array_equal(ids, orders)
    assert (ids[0] != ids[1]).all() and (ids[1] != ids[2]).all()


def test_alignment_replicates_match_resampled_reference():
    langs_n = 3
    reps = {m: length_stack(layers=2, langs=langs_n, n=30, seed=s)[0] for m, s in (("m1", 24), ("m2", 25))}
    lengths = {m: length_stack(layers=2, langs=langs_n, n=30, seed=s)[1] for m, s in (("m1", 24), ("m2", 25))}
    reps_ = tables.alignment_replicates(reps, lengths, n_boot=4, seed=7)
    assert reps_.shape == (4, 2) and list(reps_.columns) == ["m1", "m2"]
    for r, idx in enumerate(bootstrap.resamples(30, 4, seed=7)):
        for model in reps:
            X, lens = reps[model][-1].astype(np.float64)[:, idx], lengths[model][:, idx]
            ref = np.mean([ref_controlled_cka(X[a], X[b], lens[a], lens[b])
                           for a in range(langs_n) for b in range(langs_n) if a != b])
            assert reps_.loc[r, model] == pytest.approx(ref, rel=1e-8)
    table = tables.language_similarity(reps, ["en", "de", "zh"], lengths=lengths)
    last = table[(table.metric == "linear_cka_length_controlled") & (table.layer == 1) & (table.lang_a != table.lang_b)]
    est = tables.alignment_estimate(reps, lengths)
    pd.testing.assert_series_equal(est, last.groupby("model").value.mean(), check_names=False, rtol=1e-9)


def test_lengths_count_the_pieces_the_encoder_pools(monkeypatch):
    model, tok = tiny_model("bert", None)
    tok.model_max_length = 12  # truncation as encode truncates: [CLS] + 10 pieces + [SEP]
    enc = Encoder("tiny", model, tok, device="cpu")
    monkeypatch.setattr(tables, "encoder", lambda name, cfg: enc)
    sents = pd.DataFrame({"en": TINY_TEXTS, "de": TINY_TEXTS[::-1]})
    got = tables.lengths("tiny", {}, sents, batch_size=4)
    ref = np.array([[len(tok.tokenize(t)) for t in sents[lang]] for lang in sents.columns])
    assert got.shape == (2, len(TINY_TEXTS)) and ref.max() > 10 and ref.min() < 10
    np.testing.assert_array_equal(got, np.minimum(ref, 10))

"""Language separability: the probes on synthetic languages, the similarity gaps and the centred
measures against brute force, the bootstrap replicates."""
import itertools

import numpy as np
import pytest

from xl.analysis import bootstrap
from xl.analysis import separability as sep
from xl.core.errors import XLError

LANGS = ["en", "de", "ru", "zh"]


def synthetic(language_shift, sentence_weight=1.0, layers=2, n=120, d=16, seed=0):
    """Each sentence has a meaning vector shared by its translations; each language a mean shift."""
    r = np.random.default_rng(seed)
    meaning = r.normal(size=(layers, 1, n, d)) * sentence_weight
    shift = r.normal(size=(layers, len(LANGS), 1, d)) * language_shift
    return meaning + shift + r.normal(size=(layers, len(LANGS), n, d)) + 100.0  # a transformer-like offset


def test_probe_separates_languages_with_different_means():
    acc = sep.language_id_accuracy(synthetic(language_shift=3.0), LANGS, seed=0)
    assert acc.shape == (2,)
    assert (acc > 0.97).all()


def test_probe_is_at_chance_for_identical_distributions():
    # d close to the training size: scored on its own training sentences the probe would reach ~0.5
    acc = sep.language_id_accuracy(synthetic(language_shift=0.0, n=200, d=128), LANGS, seed=0)
    assert (np.abs(acc - 1 / len(LANGS)) < 0.08).all()


def test_sentence_split_keeps_sentences_on_one_side():
    train, test = sep.sentence_split(100, 0.25, seed=3)
    assert len(test) == 25 and len(np.intersect1d(train, test)) == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    again, _ = sep.sentence_split(100, 0.25, seed=3)
    other, _ = sep.sentence_split(100, 0.25, seed=4)
    assert (again == train).all() and not np.array_equal(other, train)


def brute_force_gaps(layer):
    """Mean cosine similarity over explicitly listed pairs."""
    g, n, _ = layer.shape
    u = layer / np.linalg.norm(layer, axis=-1, keepdims=True)
    cos = lambda a, i, b, j: float(u[a, i] @ u[b, j])  # noqa: E731
    same = [cos(a, i, a, j) for a in range(g) for i, j in itertools.permutations(range(n), 2)]
    trans = [cos(a, i, b, i) for a, b in itertools.permutations(range(g), 2) for i in range(n)]
    unrel = [cos(a, i, b, j) for a, b in itertools.permutations(range(g), 2)
             for i, j in itertools.permutations(range(n), 2)]
    return np.mean(same), np.mean(trans), np.mean(unrel)


def test_similarity_gap_matches_brute_force():
    reps = synthetic(language_shift=0.5, n=7, d=5, seed=1) - 100.0
    gaps = sep.similarity_gap(reps)
    for layer in range(2):
        same, trans, unrel = brute_force_gaps(reps[layer])
        assert gaps["same_language_sim"][layer] == pytest.approx(same, rel=1e-12)
        assert gaps["translation_sim"][layer] == pytest.approx(trans, rel=1e-12)
        assert gaps["unrelated_sim"][layer] == pytest.approx(unrel, rel=1e-12)
        assert gaps["same_minus_translation"][layer] == pytest.approx(same - trans, rel=1e-10)
        assert gaps["translation_minus_unrelated"][layer] == pytest.approx(trans - unrel, rel=1e-10)


def test_gaps_point_the_right_way():
    separated = sep.similarity_gap(synthetic(language_shift=3.0, sentence_weight=0.3) - 100.0)
    aligned = sep.similarity_gap(synthetic(language_shift=0.3, sentence_weight=3.0) - 100.0)
    assert (separated["same_minus_translation"] > 0.3).all()
    assert (aligned["same_minus_translation"] < -0.3).all()
    assert (aligned["translation_minus_unrelated"] > 0.5).all()


FEW_SHOT = ["language_id_8shot_accuracy", "language_id_8shot_ci_low", "language_id_8shot_ci_high",
            "language_id_8shot_chance"]


def test_separability_frame_is_tidy():
    reps = synthetic(language_shift=3.0, n=40)
    df = sep.separability_frame(reps, LANGS, "lab-mlm", seed=0)
    assert list(df.columns) == ["model", "layer", "metric", "value"]
    assert set(df.metric) == {"language_id_accuracy", "language_id_chance", *sep.GAP_METRICS,
                              *sep.CENTRED_METRICS, *FEW_SHOT}
    assert len(df) == 2 * (2 + len(sep.GAP_METRICS) + len(sep.CENTRED_METRICS) + len(FEW_SHOT))
    assert (df[df.metric == "language_id_chance"].value == 0.25).all()
    assert (df[df.metric == "language_id_8shot_chance"].value == 0.25).all()
    assert (df[df.metric == "language_id_accuracy"].value > 0.9).all()
    assert (df.model == "lab-mlm").all() and sorted(set(df.layer)) == [0, 1]
    value = lambda m: df[df.metric == m].sort_values("layer").value.to_numpy()  # noqa: E731
    # the existing metrics keep their values; the new ones are those of their own functions
    assert (value("language_id_accuracy") == sep.language_id_accuracy(reps, LANGS, seed=0)).all()
    for name, v in sep.similarity_gap(reps).items():
        assert (value(name) == v).all()
    for name, v in {**sep.centred_gap(reps), "variance_ratio": sep.variance_ratio(reps)}.items():
        assert (value(name) == v).all()
    few = sep.few_shot_language_id(reps, LANGS, seed=0)
    assert (value("language_id_8shot_accuracy") == few["accuracy"]).all()


# ---- centred measures, against loops over explicitly listed pairs ----

def reference_centred(layer, sample):
    """Centred cosines and variance ratio of the resampled layer, pair by pair. Positions i, j hold
    sentences sample[i], sample[j]; a sentence is never paired with its own duplicate."""
    x = layer[:, sample].astype(float)
    g, m, d = x.shape
    x = x - x.reshape(-1, d).mean(0)
    u = x / np.linalg.norm(x, axis=-1, keepdims=True)
    same, trans, unrel = [], [], []
    for a, b in itertools.product(range(g), repeat=2):
        for i, j in itertools.product(range(m), repeat=2):
            cos = float(u[a, i] @ u[b, j])
            if a != b and i == j:
                trans.append(cos)
            elif sample[i] != sample[j]:
                (same if a == b else unrel).append(cos)
    means = x.mean(1)
    between = np.mean([np.sum((means[a] - means.mean(0)) ** 2) for a in range(g)])
    within = np.mean([np.mean(np.sum((x[a] - means[a]) ** 2, axis=1)) for a in range(g)])
    return {"centred_same_language_sim": np.mean(same), "centred_translation_sim": np.mean(trans),
            "centred_unrelated_sim": np.mean(unrel),
            "centred_same_minus_translation": np.mean(same) - np.mean(trans), "variance_ratio": between / within}


@pytest.mark.parametrize("sample", [None, [0, 0, 3, 5, 5, 5, 1, 9, 2, 2], [4, 4, 4, 7]])
def test_centred_layer_matches_pairwise_loops(sample):
    layer = synthetic(language_shift=0.7, n=10, d=5, seed=2)[0]
    got = sep.centred_layer(layer, None if sample is None else np.array(sample))
    want = reference_centred(layer, np.arange(10) if sample is None else np.array(sample))
    assert set(got) == set(sep.CENTRED_METRICS)
    for name in sep.CENTRED_METRICS:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name


def test_centred_gap_and_variance_ratio_per_layer():
    reps = synthetic(language_shift=0.7, n=9, d=6, seed=3)
    gaps, ratio = sep.centred_gap(reps), sep.variance_ratio(reps)
    assert set(gaps) == set(sep.CENTRED_METRICS) - {"variance_ratio"} and ratio.shape == (2,)
    for layer in range(2):
        want = reference_centred(reps[layer], np.arange(9))
        assert ratio[layer] == pytest.approx(want["variance_ratio"], rel=1e-9)
        for name, v in gaps.items():
            assert v[layer] == pytest.approx(want[name], rel=1e-9, abs=1e-12)


def test_centred_measures_ignore_a_common_offset_and_raw_ones_do_not():
    reps = synthetic(language_shift=1.0, n=30, seed=4) - 100.0
    shifted = reps + 5.0 * np.random.default_rng(0).normal(size=reps.shape[-1])
    for name, v in sep.centred_gap(reps).items():
        np.testing.assert_allclose(sep.centred_gap(shifted)[name], v, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sep.variance_ratio(shifted), sep.variance_ratio(reps), rtol=1e-9)
    raw, raw_shifted = sep.similarity_gap(reps), sep.similarity_gap(shifted)
    assert np.abs(raw["same_language_sim"] - raw_shifted["same_language_sim"]).min() > 0.1


def test_variance_ratio_near_noise_level_for_one_distribution_and_large_when_separated():
    g, n = len(LANGS), 2000
    noise = np.random.default_rng(5).normal(size=(1, g, n, 16))
    # language means of one distribution differ by sampling noise only: ratio ~ (g - 1) / (g n)
    assert sep.variance_ratio(noise)[0] == pytest.approx((g - 1) / (g * n), rel=0.5)
    assert (sep.variance_ratio(synthetic(language_shift=0.0)) < 0.01).all()
    separated = sep.variance_ratio(synthetic(language_shift=3.0))
    assert (separated > 1).all()
    # r / (1 + r) is the share of the pooled variance that lies between the language means
    x = synthetic(language_shift=1.0, seed=6)[0]
    between = np.sum(np.var(x.mean(1), axis=0))
    total = np.sum(np.var(x.reshape(-1, x.shape[-1]), axis=0))
    r = sep.variance_ratio(x[None])[0]
    assert r / (1 + r) == pytest.approx(between / total, rel=1e-9)


def test_centred_same_minus_translation_points_the_right_way():
    separated = sep.centred_gap(synthetic(language_shift=3.0, sentence_weight=0.3))
    aligned = sep.centred_gap(synthetic(language_shift=0.3, sentence_weight=3.0))
    assert (separated["centred_same_minus_translation"] > 0.3).all()
    assert (aligned["centred_same_minus_translation"] < -0.3).all()
    assert (np.abs(aligned["centred_unrelated_sim"]) < 0.1).all()  # unrelated sentences: ~orthogonal once centred


# ---- the few-shot probe ----

def test_few_shot_probe_is_high_on_separated_languages():
    out = sep.few_shot_language_id(synthetic(language_shift=3.0), LANGS, seed=0)
    assert set(out) == {"accuracy", "ci_low", "ci_high", "chance"}
    assert (out["accuracy"] > 0.9).all() and (out["chance"] == 0.25).all()
    assert ((out["ci_low"] <= out["accuracy"]) & (out["accuracy"] <= out["ci_high"])).all()


def test_few_shot_probe_is_near_chance_on_one_distribution():
    out = sep.few_shot_language_id(synthetic(language_shift=0.0, n=200), LANGS, seed=1)
    assert (np.abs(out["accuracy"] - 0.25) < 0.06).all()
    assert (out["ci_low"] < 0.25).all() and (out["ci_high"] > 0.25).all()


def test_few_shot_probe_fails_more_with_fewer_examples_and_is_reproducible():
    reps = synthetic(language_shift=0.4, sentence_weight=2.0, seed=7)
    one = sep.few_shot_language_id(reps, LANGS, k=1, seed=0)["accuracy"]
    many = sep.few_shot_language_id(reps, LANGS, k=64, seed=0)["accuracy"]
    assert (many > one + 0.1).all()
    again = sep.few_shot_language_id(reps, LANGS, k=1, seed=0)["accuracy"]
    assert (again == one).all()


def test_few_shot_split_keeps_test_sentences_unseen():
    for seed in range(5):
        train, test = sep._few_shot_split(100, 8, 0.25, seed)
        assert len(train) == 8 == len(set(train)) and len(test) == 25
        assert len(np.intersect1d(train, test)) == 0


# ---- bootstrap replicates ----

def test_replicates_use_the_same_resamples_for_every_model():
    a = synthetic(language_shift=1.0, n=30, seed=8)
    b = synthetic(language_shift=0.2, n=30, seed=9)
    shifted = a + 3.0  # the same model seen through a common offset: the same numbers, replicate by replicate
    rep = sep.replicates({"lab-a": a, "lab-b": b, "lab-a+": shifted}, "centred_same_minus_translation",
                         n_boot=6, seed=3)
    assert rep.shape == (6, 3) and list(rep.columns) == ["lab-a", "lab-b", "lab-a+"]
    assert list(rep.index) == list(range(6)) and rep.index.name == "replicate"
    np.testing.assert_allclose(rep["lab-a+"], rep["lab-a"], rtol=1e-9)
    assert rep["lab-a"].nunique() == 6 and not np.allclose(rep["lab-a"], rep["lab-b"])
    for r, sample in enumerate(bootstrap.resamples(30, 6, 3)):   # the last layer, on bootstrap's resamples
        want = reference_centred(b[-1], sample)["centred_same_minus_translation"]
        assert rep["lab-b"][r] == pytest.approx(want, rel=1e-9)


def test_headline_is_a_replicable_measure():
    assert sep.HEADLINE in sep.CENTRED_METRICS
    rep = sep.replicates({"m": synthetic(language_shift=1.0, n=20)}, sep.HEADLINE, n_boot=3, seed=0)
    assert rep.shape == (3, 1) and np.isfinite(rep.to_numpy()).all()


@pytest.mark.fault
def test_bad_input_raises_xlerror():
    reps = synthetic(language_shift=1.0, n=10)
    with pytest.raises(XLError, match="4 dimensions"):
        sep.language_id_accuracy(reps[0], LANGS)
    with pytest.raises(XLError, match="language names"):
        sep.separability_frame(reps, LANGS[:3], "m")
    with pytest.raises(XLError, match="at least 2 languages"):
        sep.similarity_gap(reps[:, :1])
    with pytest.raises(XLError, match="test_size"):
        sep.language_id_accuracy(reps, LANGS, test_size=1.5)
    with pytest.raises(XLError, match="NaN"):
        sep.similarity_gap(np.full((1, 2, 3, 4), np.nan))


@pytest.mark.fault
def test_new_measures_refuse_bad_input():
    reps = synthetic(language_shift=1.0, n=10)
    with pytest.raises(XLError, match="3 dimensions"):
        sep.centred_layer(reps)
    with pytest.raises(XLError, match="sample"):
        sep.centred_layer(reps[0], np.array([0, 10]))
    with pytest.raises(XLError, match="sample"):
        sep.centred_layer(reps[0], np.array([0.5, 1.0]))
    with pytest.raises(XLError, match="at least 2 languages"):
        sep.variance_ratio(reps[:, :1])
    with pytest.raises(XLError, match="k must be"):
        sep.few_shot_language_id(reps, LANGS, k=9)
    with pytest.raises(XLError, match="draws"):
        sep.few_shot_language_id(reps, LANGS, draws=0)
    with pytest.raises(XLError, match="language names"):
        sep.few_shot_language_id(reps, LANGS[:2])
    with pytest.raises(XLError, match="unknown measure"):
        sep.replicates({"m": reps}, "language_id_accuracy", n_boot=2)
    with pytest.raises(XLError, match="at least one model"):
        sep.replicates({}, "variance_ratio", n_boot=2)
    with pytest.raises(XLError, match="same sentences"):
        sep.replicates({"a": reps, "b": reps[:, :, :5]}, "variance_ratio", n_boot=2)
    with pytest.raises(XLError, match="n_boot"):
        sep.replicates({"a": reps}, "variance_ratio", n_boot=0)

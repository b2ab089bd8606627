"""Language separability: the probe on synthetic languages, the similarity gaps against brute force."""
import itertools

import numpy as np
import pytest

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


def test_separability_frame_is_tidy():
    df = sep.separability_frame(synthetic(language_shift=3.0, n=40), LANGS, "lab-mlm", seed=0)
    assert list(df.columns) == ["model", "layer", "metric", "value"]
    assert set(df.metric) == {"language_id_accuracy", "language_id_chance", *sep.GAP_METRICS}
    assert len(df) == 2 * (2 + len(sep.GAP_METRICS))
    assert (df[df.metric == "language_id_chance"].value == 0.25).all()
    assert (df[df.metric == "language_id_accuracy"].value > 0.9).all()
    assert (df.model == "lab-mlm").all() and sorted(set(df.layer)) == [0, 1]


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

"""Transfer tables without models: the layer column, chance-normalised scores, the binomial
bootstrap over seeds and test examples, tasks at floor, and the verdict (synthetic frames, fast)."""

import numpy as np
import pandas as pd
import pytest

from xl import transfer
from xl.core.errors import XLError
from xl.data.tasks import Task
from xl.transfer import jobs

LANGS = ["en", "de", "zh"]


def _chance(tasks: dict, n: int = 400) -> pd.DataFrame:
    """A chance table: {task: (metric, chance)} in every language of LANGS, n test examples each."""
    return pd.DataFrame([(t, lang, metric, c, n) for t, (metric, c) in tasks.items() for lang in LANGS],
                        columns=["task", "lang", "metric", "chance", "n"])


def _rows(scores: dict, seeds=(0,), metric="accuracy") -> pd.DataFrame:
    """transfer.csv rows: scores[(model, task)] = score in every language and seed."""
    rows = [(m, t, lang, s, metric, None, v) for (m, t), v in scores.items() for lang in LANGS for s in seeds]
    return jobs._frame(rows)


def test_normalised_scores_match_a_hand_computation():
    df = jobs._frame([("lab-mlm", "genre", "en", 0, "accuracy", None, 0.90),
                      ("lab-mlm", "genre", "de", 0, "accuracy", None, 0.30),
                      ("lab-mlm", "genre", "de", 1, "accuracy", None, 0.40),
                      ("lab-mlm", "genre", "zh", 0, "accuracy", None, 0.10),
                      ("lab-mlm", "xref", "de", 0, "accuracy", None, 0.75),
                      ("lab-mlm", "xref", "zh", 0, "accuracy", None, 0.60)])
    chance = pd.DataFrame([("genre", "en", "accuracy", 0.2, 50), ("genre", "de", "accuracy", 0.2, 50),
                           ("genre", "zh", "accuracy", 0.25, 40), ("xref", "de", "accuracy", 0.5, 50),
                           ("xref", "zh", "accuracy", 0.5, 50)], columns=["task", "lang", "metric", "chance", "n"])
    genre_de = (0.35 - 0.2) / 0.8  # mean over seeds first
    genre_zh = (0.10 - 0.25) / 0.75  # below chance: negative
    xref = ((0.75 - 0.5) / 0.5 + (0.60 - 0.5) / 0.5) / 2
    table = transfer.normalised_table1(df, chance)
    assert table.loc["lab-mlm", "genre"] == pytest.approx(100 * (genre_de + genre_zh) / 2)
    assert table.loc["lab-mlm", "xref"] == pytest.approx(100 * xref)
    estimate, replicates = transfer.transfer_estimates(df, chance, n_boot=20)
    assert estimate["lab-mlm"] == pytest.approx(((genre_de + genre_zh) / 2 + xref) / 2)  # tasks weigh the same
    assert replicates.shape == (20, 1)
    np.testing.assert_allclose(transfer.normalised([0.2, 1.0, 0.0], 0.2), [0.0, 1.0, -0.25])


def test_retrieval_rows_carry_their_layer_and_main_rows_keeps_headlines():
    task = Task("retrieval", "retrieval", "acc@1", [], None, None, {"en": pd.DataFrame(), "de": pd.DataFrame()})
    cached = {"de": [0.1, 0.2, 0.3], "en": [0.5, 0.7, 0.9]}  # a cached result: accuracy per layer
    df = jobs._frame(jobs._rows("m", "retrieval", task, 0, cached))
    assert list(df.columns) == transfer.COLUMNS and set(df.metric) == {"acc@1"}
    assert df.layer.isna().sum() == 2 and sorted(df.layer.dropna()) == [0, 0, 1, 1, 2, 2]
    headline = transfer.main_rows(df).set_index("lang").score
    assert headline.to_dict() == {"en": 0.9, "de": 0.3}  # the last layer's score
    assert transfer.layer_rows(df).groupby("layer").score.mean().tolist() == pytest.approx([0.3, 0.45, 0.6])
    old = df.assign(metric=[m if pd.isna(k) else f"{m} layer {k}" for m, k in zip(df.metric, df.layer)])
    converted = transfer.with_layer(old.drop(columns="layer"))  # a table written before the layer column
    pd.testing.assert_frame_equal(converted.reset_index(drop=True), df.reset_index(drop=True), check_dtype=False)


def test_per_layer_rows_do_not_enter_the_verdict():
    """Equal last-layer retrieval; the LM model retrieves better at the lower layers. Averaging the
    per-layer rows with the headline (the old string bug) would favour LM; the verdict must not."""
    rows = []
    for model, lower in (("lab-mlm", 0.9), ("lab-o2m", 0.1)):
        for lang in LANGS:
            rows.append((model, "retrieval", lang, 0, "acc@1", None, 0.5))
            rows += [(model, "retrieval", lang, 0, "acc@1", layer, lower) for layer in range(3)]
            rows.append((model, "retrieval", lang, 0, "acc@1", 3, 0.5))
    df = jobs._frame(rows)
    chance = _chance({"retrieval": ("acc@1", 0.0025)})
    everything = df[df.lang != "en"].groupby("model").score.mean()
    assert everything["lab-mlm"] - everything["lab-o2m"] > 0.4  # what the bug averaged
    estimate, _ = transfer.transfer_estimates(df, chance)
    assert estimate["lab-mlm"] == estimate["lab-o2m"]
    verdict = transfer.agreement(df, chance)
    assert verdict["difference"] == 0 and verdict["ci_low"] < 0 < verdict["ci_high"]
    assert verdict["verdict"] == "inconclusive" and verdict["agrees"] is None
    old = df.assign(metric=[m if pd.isna(k) else f"{m} layer {k}" for m, k in zip(df.metric, df.layer)])
    assert transfer.agreement(old.drop(columns="layer"), chance)["verdict"] == "inconclusive"


def _simulated(p_true: dict, n: int, seeds, rng) -> pd.DataFrame:
    """Observed accuracies: Binomial(n, p) / n per model, language and seed."""
    rows = [(m, "t", lang, s, "accuracy", None, rng.binomial(n, p) / n)
            for m, p in p_true.items() for lang in LANGS for s in seeds]
    return jobs._frame(rows)


def test_binomial_bootstrap_covers_the_truth_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    chance_level, p_true = 0.5, {"lab-mlm": 0.62}
    truth = (0.62 - chance_level) / (1 - chance_level)
    widths, covered = {}, 0
    for trial in range(40):
        df = _simulated(p_true, 200, (0, 1, 2), rng)
        _, replicates = transfer.transfer_estimates(df, _chance({"t": ("accuracy", chance_level)}, 200),
                                                    n_boot=200, seed=trial)
        low, high = np.percentile(replicates["lab-mlm"], [2.5, 97.5])
        covered += low <= truth <= high
    assert covered >= 36  # a 95% interval (conservative: seeds and examples both resampled)
    for n in (100, 1600):
        df = _simulated(p_true, n, (0, 1, 2), np.random.default_rng(2))
        _, replicates = transfer.transfer_estimates(df, _chance({"t": ("accuracy", chance_level)}, n), n_boot=400)
        widths[n] = np.subtract(*np.percentile(replicates["lab-mlm"], [97.5, 2.5]))
    assert widths[1600] < 0.4 * widths[100]  # sqrt(16) = 4 times narrower, up to noise


def test_one_seed_one_language_replicates_have_the_binomial_spread():
    df = jobs._frame([("lab-mlm", "t", "de", 0, "accuracy", None, 0.3)])
    chance = pd.DataFrame([("t", "de", "accuracy", 0.2, 500)], columns=["task", "lang", "metric", "chance", "n"])
    _, replicates = transfer.transfer_estimates(df, chance, n_boot=4000)
    expected = np.sqrt(0.3 * 0.7 / 500) / 0.8  # sd of Binomial(n, p) / n, normalised
    assert replicates["lab-mlm"].std() == pytest.approx(expected, rel=0.08)
    assert replicates["lab-mlm"].mean() == pytest.approx(0.125, abs=0.005)


def test_non_proportion_metrics_resample_seeds_only():
    df = _rows({("lab-mlm", "t"): 0.4}, seeds=(0, 1), metric="ndcg")
    df.loc[df.seed == 1, "score"] = 0.6
    _, replicates = transfer.transfer_estimates(df, _chance({"t": ("ndcg", 0.3)}), n_boot=300)
    values = set(np.round(replicates["lab-mlm"], 9))  # seed resamples: (0.4, 0.4), (0.4, 0.6), (0.6, 0.6)
    assert values == {round((v - 0.3) / 0.7, 9) for v in (0.4, 0.5, 0.6)}


def test_tasks_at_floor():
    models = ["lab-mlm", "lab-dae", "lab-o2m", "lab-mt"]
    scores = {}
    for i, m in enumerate(models):
        scores[(m, "floor")] = 0.155  # 62 of 400 against 0.147: p ~ 0.3
        scores[(m, "clear")] = 0.40
        scores[(m, "half")] = 0.40 if i < 2 else 0.15  # two of four models above: not more than half below
        scores[(m, "ranked")] = 0.31  # nDCG: no binomial test, never at floor
    df = _rows(scores)
    df.loc[(df.task == "floor") & (df.lang == "en"), "score"] = 0.9  # English above chance does not count
    df.loc[df.task == "ranked", "metric"] = "ndcg"
    chance = _chance({"floor": ("accuracy", 0.147), "clear": ("accuracy", 0.147), "half": ("accuracy", 0.147),
                      "ranked": ("ndcg", 0.3)})
    table = transfer.above_chance(df, chance)
    assert len(table) == len(df) and set(table.lang) == set(LANGS)
    assert table[table.task == "ranked"].clearly.isna().all()
    floor = transfer.at_floor(table)
    assert floor == ["floor"]
    sentence = transfer.floor_sentence(table, floor)
    assert "floor (0 of 4 models)" in sentence and "half (2 of 4 models)" in sentence
    assert "left out of the transfer verdict: floor" in sentence
    verdict = transfer.agreement(df, chance, at_floor=floor)
    assert verdict["tasks"] == ["clear", "half", "ranked"] and verdict["at_floor"] == ["floor"]
    assert transfer.agreement(df, chance, at_floor=["floor", "clear", "half", "ranked"])["verdict"] == "not tested"


def test_floor_sentence_names_the_model_that_would_turn_a_narrow_decision():
    langs = ["en", "de", "fr", "ru", "zh"]
    above_in = {"wide": [4, 4, 4, 4],  # languages above chance, of four, per model: no one model turns it
                "kept": [4, 3, 0, 0],  # two of four models above: one fewer and it is at floor
                "low": [4, 2, 1, 0]}  # one of four above: one more and it is not
    models = ["lab-mlm", "lab-dae", "lab-o2m", "lab-mt"]
    df = jobs._frame([(m, task, lang, 0, "accuracy", None, 0.9 if lang == "en" or k <= n else 0.15)
                      for task, counts in above_in.items() for m, n in zip(models, counts)
                      for k, lang in enumerate(langs)])
    chance = pd.DataFrame([(t, lang, "accuracy", 0.147, 400) for t in above_in for lang in langs],
                          columns=["task", "lang", "metric", "chance", "n"])
    table = transfer.above_chance(df, chance)
    floor = transfer.at_floor(table)
    assert floor == ["low"]
    narrow = transfer.narrow_floor(table)
    assert narrow.values.tolist() == [["kept", False, "lab-dae", 3, 4], ["low", True, "lab-dae", 2, 4]]
    sentence = transfer.floor_sentence(table, floor)
    assert ("with one model fewer above chance, kept would be at floor (the weakest, lab-dae, is clearly above "
            "chance in 3 of its 4 non-English languages)") in sentence
    assert ("with one model more above chance, low would no longer be at floor (the strongest of the others, "
            "lab-dae, is clearly above chance in 2 of its 4 non-English languages)") in sentence
    assert "wide would" not in sentence
    assert "narrow" not in transfer.floor_sentence(table[table.task == "wide"], [])
    none = transfer.narrow_floor(table[table.task == "wide"])
    assert none[~none.at_floor].task.tolist() == []  # empty, and still a table of those columns
    assert "No task is at floor" in transfer.floor_sentence(table[table.task == "kept"], [])
    assert "kept would be at floor" in transfer.floor_sentence(table[table.task == "kept"], [])


def test_verdict_comes_from_the_one_rule():
    models = {"lab-mlm": 0.45, "lab-dae": 0.44, "lab-o2m": 0.25, "lab-mt": 0.26}
    df = _rows({(m, "t"): v for m, v in models.items()}, seeds=(0, 1, 2))
    chance = _chance({"t": ("accuracy", 0.2)})
    verdict = transfer.agreement(df, chance)
    lm, mt = (0.45 + 0.44) / 2, (0.25 + 0.26) / 2
    assert verdict["difference"] == pytest.approx((mt - lm) / 0.8)
    assert verdict["ci_low"] < verdict["difference"] < verdict["ci_high"] < 0
    assert verdict["verdict"] == "agrees" and verdict["agrees"] is True and "agrees" in verdict["sentence"]
    gated = transfer.agreement(df, chance, failed={"lab-o2m", "lab-mt"})
    assert gated["verdict"] == "not tested" and gated["agrees"] is None and "not tested" in gated["sentence"]
    flipped = _rows({(m, "t"): 0.7 - v for m, v in models.items()}, seeds=(0, 1, 2))
    assert transfer.agreement(flipped, chance)["verdict"] == "disagrees"


def test_chance_table_has_the_test_sizes():
    frame = pd.DataFrame({"text": ["a"] * 6, "label": [0, 0, 0, 0, 1, 1]})
    task = Task("t", "classification", "accuracy", ["x", "y"], frame, frame, {"en": frame, "de": frame.iloc[2:5]})
    table = transfer.chance_table({"t": task})
    assert list(table.columns) == ["task", "lang", "metric", "chance", "n"]
    assert table.set_index("lang").n.to_dict() == {"en": 6, "de": 3}
    assert table.set_index("lang").chance.to_dict() == pytest.approx({"en": 4 / 6, "de": 2 / 3})  # majority class


@pytest.mark.fault
def test_bad_input_raises():
    df = _rows({("lab-mlm", "t"): 0.4})
    chance = _chance({"t": ("accuracy", 0.2)})
    with pytest.raises(XLError, match="no chance level for u/"):
        transfer.transfer_estimates(df.assign(task="u"), chance)
    with pytest.raises(XLError, match="no test-set size n"):
        transfer.transfer_estimates(df, chance.drop(columns="n"))
    with pytest.raises(XLError, match="n_boot"):
        transfer.transfer_estimates(df, chance, n_boot=0)
    with pytest.raises(XLError, match="proportion scores"):
        transfer.transfer_estimates(df.assign(score=40.0), chance)  # a percentage, not a share
    with pytest.raises(XLError, match="no zero-shot results"):
        transfer.transfer_estimates(df, chance, at_floor=["t"])
    with pytest.raises(XLError, match="more than one row"):
        transfer.transfer_estimates(df, pd.concat([chance, chance]))
    with pytest.raises(XLError, match="chance levels lie in"):
        transfer.transfer_estimates(df, chance.assign(chance=1.0))
    with pytest.raises(XLError, match="lack columns"):
        transfer.transfer_estimates(df.drop(columns="score"), chance)
    with pytest.raises(XLError, match="alpha"):
        transfer.above_chance(df, chance, alpha=1.5)
    with pytest.raises(XLError, match="repeated"):
        transfer.transfer_estimates(pd.concat([df, df]), chance)

"""Verdicts follow the numbers: one rule (xl.analysis.verdict) on synthetic evidence where we know the answer."""
import numpy as np
import pandas as pd
import pytest

from xl.analysis import bootstrap, verdict
from xl.book import conclusions
from xl.core.errors import XLError
from xl.core.results import Store

LM, MT = ("lab-mlm", "lab-dae"), ("lab-m2m", "lab-mt")


def measured(lm: float, mt: float, noise: float = 0.01, n_boot: int = 200, seed: int = 0):
    """Estimates per model and bootstrap replicates scattered around them with sd `noise`."""
    estimate = pd.Series({**{m: lm for m in LM}, **{m: mt for m in MT}})
    rng = np.random.default_rng(seed)
    replicates = pd.DataFrame({m: v + noise * rng.normal(size=n_boot) for m, v in estimate.items()})
    return estimate, replicates


def test_the_rule_reads_the_interval():
    est, boot = measured(lm=0.6, mt=0.4)
    r = verdict.decide(est, boot, paper_sign=-1)
    assert r["verdict"] == "agrees" and r["difference"] == pytest.approx(-0.2)
    assert r["ci_low"] < -0.2 < r["ci_high"] < 0 and (r["n_models_lm"], r["n_models_mt"]) == (2, 2)
    assert verdict.decide(est, boot, paper_sign=1)["verdict"] == "disagrees"
    est, boot = measured(lm=0.5, mt=0.505, noise=0.05)  # the difference is well inside the noise
    assert verdict.decide(est, boot, paper_sign=1)["verdict"] == "inconclusive"
    assert verdict.decide(est, None, paper_sign=1)["verdict"] == "inconclusive"  # no interval, no call


def test_interval_is_the_basic_interval_of_the_paired_differences():
    est, boot = measured(lm=0.6, mt=0.4, noise=0.05)
    boot[list(MT)] += 0.03  # resampling shifts a statistic (duplicated sentences raise CKA): the interval must not
    diffs = boot[list(MT)].mean(axis=1) - boot[list(LM)].mean(axis=1)
    q_low, q_high = np.percentile(diffs, [2.5, 97.5])
    r = verdict.decide(est, boot, paper_sign=-1)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((2 * -0.2 - q_high, 2 * -0.2 - q_low))
    assert r["ci_low"] < -0.2 - 0.01 < -0.2 + 0.01 < r["ci_high"]  # centred on the estimate, not on -0.17
    assert bootstrap.basic_interval(1.0, [1.1, 1.2, 1.3]) == pytest.approx((0.7, 0.9), abs=0.02)


def test_failed_models_and_missing_families_are_not_tested():
    est, boot = measured(lm=0.6, mt=0.4)
    kept = verdict.decide(est, boot, paper_sign=-1, failed=["lab-mt"])
    assert kept["n_models_mt"] == 1 and kept["verdict"] == "agrees"
    gone = verdict.decide(est, boot, paper_sign=-1, failed=list(MT))
    assert gone["verdict"] == "not tested" and gone["n_models_mt"] == 0
    assert verdict.decide(est, boot, paper_sign=-1, at_floor=True)["verdict"] == "not tested"
    with pytest.raises(XLError, match="paper_sign"):
        verdict.decide(est, boot, paper_sign=0)


def test_bootstrap_helpers():
    idx = bootstrap.resamples(50, n_boot=7, seed=3)
    assert idx.shape == (7, 50) and idx.min() >= 0 and idx.max() < 50
    assert (idx == bootstrap.resamples(50, n_boot=7, seed=3)).all()
    assert bootstrap.interval(np.arange(101)) == pytest.approx((2.5, 97.5))
    with pytest.raises(XLError):
        bootstrap.resamples(1)


def test_evidence_round_trip():
    est, boot = measured(lm=0.6, mt=0.4, n_boot=5)
    table = verdict.evidence("alignment", "CKA", est, boot)
    e, b, measure, floor = verdict.from_evidence(table, "alignment")
    assert measure == "CKA" and not floor
    pd.testing.assert_series_equal(e, est, check_names=False)
    np.testing.assert_allclose(b[est.index].values, boot.values)
    floor_table = verdict.evidence("transfer", "no task above chance", pd.Series(dtype=float), None, at_floor=True)
    assert verdict.from_evidence(floor_table, "transfer")[3]
    with pytest.raises(XLError, match="no evidence"):
        verdict.from_evidence(table, "transfer")


@pytest.mark.fault
def test_verdicts_come_from_the_chapters_evidence(book_root):
    store = Store("smoke")
    est, boot = measured(lm=0.6, mt=0.4)
    store.write("similarity_evidence", pd.concat([verdict.evidence("alignment", "CKA", est, boot),
                                                  verdict.evidence("separability", "gap", est, boot)]))
    table = conclusions.verdicts("smoke").set_index("finding")
    assert table.loc["alignment", "verdict"] == "agrees"        # the paper: MT not more aligned
    assert table.loc["separability", "verdict"] == "disagrees"  # the paper: MT more separable
    assert table.loc["transfer", "verdict"] == "not run" and table.loc["scaling", "verdict"] == "not run"
    assert table.loc["alignment", "LM"] == pytest.approx(0.6) and table.loc["alignment", "MT/CP"] == pytest.approx(0.4)
    assert conclusions.scales_run() == ["smoke"]
    assert conclusions.at_scale(table, "smoke") == (
        "**At the smoke scale**, this run agrees with the paper on 1 of 4 findings (alignment); disagrees on "
        "separability; has not run scaling and transfer.")


@pytest.mark.fault
def test_models_that_fail_the_source_gate_are_left_out(book_root):
    store = Store("smoke")
    est, boot = measured(lm=0.6, mt=0.4)
    est["lab-mt"] = 0.9  # a failing model that would flip the verdict
    store.write("similarity_evidence", verdict.evidence("alignment", "CKA", est, boot.assign(**{"lab-mt": 0.9})))
    store.write("gate", pd.DataFrame({"model": ["lab-m2m", "lab-mt"], "passes_gate": [True, False]}))
    kept = conclusions.verdicts("smoke").set_index("finding")
    assert kept.loc["alignment", "verdict"] == "agrees" and kept.loc["alignment", "MT/CP"] == pytest.approx(0.4)
    store.write("gate", pd.DataFrame({"model": ["lab-m2m", "lab-mt"], "passes_gate": [False, False]}))
    none = conclusions.verdicts("smoke").set_index("finding")
    assert none.loc["alignment", "verdict"] == "not tested" and "lab-m2m, lab-mt fail" in none.loc["alignment", "measure"]
    assert none.loc["alignment", "verdict_ignoring_gate"] == "disagrees"  # MT (0.4 + 0.9) / 2 above the LMs' 0.6


def test_what_did_not_work_is_read_from_the_tables(book_root):
    store = Store("smoke")
    est, boot = measured(lm=0.6, mt=0.4)
    est["lab-mt"] = 0.9  # fails the gate, and would flip the alignment verdict
    store.write("similarity_evidence", verdict.evidence("alignment", "CKA", est, boot.assign(**{"lab-mt": 0.9})))
    gate = pd.DataFrame({"model": ["lab-m2m", "lab-mt"], "passes_gate": [True, False], "min_gap": [0.8, 0.31],
                         "min_margin": [4.0, -1.5]})
    store.write("gate", gate)
    said = conclusions.did_not_work(conclusions.verdicts("smoke"), "smoke")
    assert "1 of 2 models trained with MT fail" in said
    assert "lab-mt: a same-length wrong source costs only 0.31 nats per piece and chrF falls 1.5 below" in said
    assert "the MT/CP side of the verdicts above is lab-m2m alone" in said
    assert "the same rule would say: alignment *disagrees*." in said  # 'not run' findings are not listed there
    assert "Findings left undecided at this scale: " not in said  # none is 'not tested'
    store.write("gate", gate.assign(passes_gate=True))
    passing = conclusions.did_not_work(conclusions.verdicts("smoke"), "smoke")
    assert "fail the" not in passing and "What the gate changes" not in passing
    store.write("gate", gate.assign(passes_gate=False))
    none = conclusions.did_not_work(conclusions.verdicts("smoke"), "smoke")
    assert "Every finding that needs them is *not tested*" in none
    assert "Findings left undecided at this scale: alignment." in none


def test_models_that_pass_the_gate_narrowly_are_a_sensitivity_not_a_verdict(book_root):
    store = Store("smoke")
    est, boot = measured(lm=0.6, mt=0.4)
    est["lab-mt"] = 0.75  # passes narrowly; without it the MT side is lab-m2m's 0.4 alone
    store.write("similarity_evidence", verdict.evidence("alignment", "CKA", est, boot.assign(**{"lab-mt": 0.75})))
    gate = pd.DataFrame({"model": ["lab-m2m", "lab-mt"], "passes_gate": [True, True], "narrow": [False, True]})
    store.write("gate", gate)
    table = conclusions.verdicts("smoke").set_index("finding")
    # both count for the verdict: MT (0.4 + 0.75) / 2 = 0.575 against 0.6, an interval below 0
    assert table.loc["alignment", "verdict"] == "agrees" and table.loc["alignment", "MT/CP"] == pytest.approx(0.575)
    assert table.loc["alignment", "difference_strict_gate"] == pytest.approx(-0.2)  # lab-mt left out
    said = conclusions.did_not_work(table.reset_index().assign(preset="smoke"), "smoke")
    assert "**Narrow passes.** lab-mt passes the gate only narrowly" in said
    assert "Leaving it out as well (the MT/CP side then lab-m2m alone) would not change any verdict." in said
    est["lab-mt"] = 1.0  # now lab-mt turns the verdict: with it MT 0.7 > 0.6
    store.write("similarity_evidence", verdict.evidence("alignment", "CKA", est, boot.assign(**{"lab-mt": 1.0})))
    table = conclusions.verdicts("smoke")
    assert table.set_index("finding").loc["alignment", "verdict"] == "disagrees"
    said = conclusions.did_not_work(table, "smoke")
    assert "(the MT/CP side then lab-m2m alone), the same rule would say: alignment *agrees*: those verdicts" in said
    store.write("gate", gate.assign(narrow=True))  # every passing model narrow: nothing left on the MT side
    said = conclusions.did_not_work(conclusions.verdicts("smoke"), "smoke")
    assert "Leaving them out as well (no MT/CP model left), the same rule would say: alignment *not tested*" in said
    store.write("gate", gate.assign(narrow=False))
    clear = conclusions.verdicts("smoke").set_index("finding")
    assert clear.loc["alignment", "verdict_strict_gate"] == "disagrees"  # nothing narrow: the verdict itself
    assert "Narrow passes" not in conclusions.did_not_work(clear.reset_index(), "smoke")

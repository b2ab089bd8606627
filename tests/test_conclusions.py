"""Verdicts follow the numbers: synthetic tables where we know the answer, and the flipped case."""
import pandas as pd
import pytest

from xl.book import conclusions
from xl.core.results import Store


def similarity(lm, cp):
    rows = []
    for model, value in (("lab-mlm", lm), ("lab-dae", lm), ("lab-m2m", cp), ("lab-mt", cp)):
        for layer in (0, 1):
            rows += [(model, layer, "linear_cka", a, b, value if layer == 1 else 0.9)
                     for a in ("en", "de") for b in ("en", "de")]
    return pd.DataFrame(rows, columns=["model", "layer", "metric", "lang_a", "lang_b", "value"])


def transfer(lm, cp):
    rows = [(m, t, lang, 0, "accuracy", lm if m in ("lab-mlm", "lab-dae") else cp)
            for m in ("lab-mlm", "lab-dae", "lab-m2o") for t in ("genre", "xref") for lang in ("de", "ru")]
    rows += [(m, "genre", "en", 0, "accuracy", 0.99) for m in ("lab-mlm", "lab-m2o")]
    return pd.DataFrame(rows, columns=["model", "task", "lang", "seed", "metric", "score"])


def test_alignment_and_transfer_verdicts_follow_the_numbers():
    assert conclusions.alignment(similarity(lm=0.6, cp=0.4))["verdict"] == "agrees"
    flipped = conclusions.alignment(similarity(lm=0.4, cp=0.6))
    assert flipped["verdict"] == "disagrees" and flipped["MT/CP"] == pytest.approx(0.6)
    ours = conclusions.transfer(transfer(lm=0.7, cp=0.5))
    assert ours["verdict"] == "agrees" and ours["LM"] == pytest.approx(0.7)  # English left out
    assert conclusions.transfer(transfer(lm=0.5, cp=0.7))["verdict"] == "disagrees"


def test_scaling_and_separability():
    svd = pd.DataFrame([("lab-dae", 2, "K", 1.0, None), ("lab-m2m", 2, "K", 1.2, 0.2), ("lab-o2m", 2, "K", 0.7, 0.3),
                        ("lab-dae", 1, "K", 9.0, None)], columns=["model", "layer", "matrix", "sigma_norm", "d"])
    s = conclusions.scaling(svd)
    assert s["LM"] == 1.0 and s["MT/CP"] == pytest.approx(0.95) and s["verdict"] == "disagrees"
    sep = pd.DataFrame([("lab-mlm", 1, "same_minus_translation", 0.1), ("lab-m2m", 1, "same_minus_translation", 0.3)],
                       columns=["model", "layer", "metric", "value"])
    assert conclusions.separability(sep)["verdict"] == "agrees"


@pytest.mark.fault
def test_missing_tables_are_not_run(book_root):
    store = Store("smoke")
    store.write("similarity", similarity(lm=0.6, cp=0.4))
    table = conclusions.verdicts("smoke").set_index("finding").verdict
    assert table["alignment"] == "agrees" and table["transfer"] == "not run"
    assert conclusions.scales_run() == ["smoke"]


def test_a_difference_within_the_tolerance_is_inconclusive():
    assert conclusions.alignment(similarity(lm=0.500, cp=0.495))["verdict"] == "inconclusive"
    assert conclusions.alignment(similarity(lm=0.500, cp=0.480))["verdict"] == "agrees"


@pytest.mark.fault
def test_models_that_fail_the_source_gate_are_left_out(book_root):
    store = Store("smoke")
    store.write("similarity", similarity(lm=0.6, cp=0.4))  # the MT/CP side: lab-m2m and lab-mt
    store.write("gate", pd.DataFrame({"model": ["lab-m2m", "lab-mt"], "passes_gate": [True, False]}))
    kept = conclusions.verdicts("smoke").set_index("finding")
    assert kept.loc["alignment", "verdict"] == "agrees" and kept.loc["alignment", "MT/CP"] == pytest.approx(0.4)
    store.write("gate", pd.DataFrame({"model": ["lab-m2m", "lab-mt"], "passes_gate": [False, False]}))
    none = conclusions.verdicts("smoke").set_index("finding")
    assert none.loc["alignment", "verdict"] == "not tested" and "lab-m2m, lab-mt fail" in none.loc["alignment", "measure"]

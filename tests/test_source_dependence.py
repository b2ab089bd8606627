"""The source-dependence gate (xl.analysis.source_dependence): a model that reads its source passes,
one that learned only the target language (its sources carried no information) fails."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from xl import training
from xl.analysis import source_dependence as sd
from xl.analysis import translation
from xl.core.tensors import batches_by_length
from xl.models import tokenizer
from xl.training import lab, objectives

pytestmark = pytest.mark.usefixtures("one_thread")


def test_random_sources_never_keep_their_own():
    for seed in range(5):
        other = sd.random_sources(7, np.random.default_rng(seed))
        assert sorted(other) == list(range(7)) and (other != np.arange(7)).all()


def test_same_length_sources_are_the_nearest_other_length():
    lengths = [3, 10, 4, 11, 30, 29]
    other = sd.same_length_sources(lengths, np.random.default_rng(0))
    assert list(other) == [2, 3, 0, 1, 5, 4]


def _gate_inputs(gaps, margins, half_width=0.0):
    """A dependence and a quality table of models a, b, c (a: two directions) with these point gaps and chrF
    margins, each interval `half_width` either side of its point."""
    models, src, tgt = ["a", "a", "b", "c"], ["de", "en", "de", "de"], ["en", "de", "en", "en"]
    gaps, margins = np.asarray(gaps, float), np.asarray(margins, float)
    dep = pd.DataFrame({"model": models, "src": src, "tgt": tgt, "gap_same_length": gaps,
                        "gap_low": gaps - half_width, "gap_high": gaps + half_width})
    quality = pd.DataFrame({"model": models, "src": src, "tgt": tgt, "chrf": 17.0 + margins, "baseline": 17.0,
                            "margin_low": margins - 10 * half_width, "margin_high": margins + 10 * half_width})
    return dep, quality


def test_gate_needs_both_the_gap_and_the_chrf_margin_in_every_direction():
    out = sd.gate(*_gate_inputs([2.0, 0.6, 0.1, 3.0], [13.0, 8.0, 23.0, 1.0])).set_index("model")
    assert out.passes_gate.to_dict() == {"a": True, "b": False, "c": False}  # b: no gap; c: chrF margin 1 < 2
    assert out.loc["a", "min_gap"] == 0.6 and out.loc["a", "directions"] == 2
    assert not out.narrow.any()  # intervals of no width: every decision is clear
    why = {r.model: sd.shortfalls(r) for r in out.reset_index().itertuples()}
    assert why["a"] == [] and len(why["b"]) == 1 and len(why["c"]) == 1
    assert "0.10 nats" in why["b"][0] and "by only 1.0" in why["c"][0]  # each names what it missed, only that
    text = sd.verdict(out.reset_index())
    assert "**c** fails the gate (chrF beats the baseline by only 1.0 in its weakest direction)" in text
    assert "narrowly" not in text
    below = out.reset_index().assign(min_margin=-2.1).iloc[2]  # worse than source-blind: said so, not "by only -2.1"
    assert sd.shortfalls(below) == ["chrF falls 2.1 below the baseline"]
    # just short of a bar: as many decimals as it takes to be below it, not "only 0.50" of 0.5
    near = out.reset_index().assign(min_gap=0.4968, min_margin=1.96).iloc[0]
    assert sd.shortfalls(near) == ["a same-length wrong source costs only 0.497 nats per piece",
                                   "chrF beats the baseline by only 1.96"]


def test_a_gate_decision_is_narrow_where_a_bar_lies_inside_the_intervals():
    # intervals +-0.15 nats, +-1.5 chrF: a's weakest gap 0.6 [0.45, 0.75] straddles 0.5; b's 0.1 and c's 3.0
    # [2.85, 3.15] do not, but c's chrF margin 1.0 [-0.5, 2.5] straddles 2
    out = sd.gate(*_gate_inputs([2.0, 0.6, 0.1, 3.0], [13.0, 8.0, 23.0, 1.0], half_width=0.15)).set_index("model")
    assert out.passes_gate.to_dict() == {"a": True, "b": False, "c": False}  # the points decide, as before
    assert out.narrow.to_dict() == {"a": True, "b": False, "c": True}
    assert out.loc["a", "gap_low"] == pytest.approx(0.45) and out.loc["c", "margin_high"] == pytest.approx(2.5)
    assert sd.narrow_passes(out.reset_index()) == {"a"} and sd.failed(out.reset_index()) == {"b", "c"}
    text = sd.verdict(out.reset_index())
    assert ("It passes narrowly: the lower ends of the 95% intervals over the held-out sentences fall below the "
            "bars (a same-length wrong source 0.45 nats), so another sample") in text  # only the measure below
    assert "It fails narrowly: the upper ends of the 95% intervals clear the bars (a same-length wrong source " \
           "3.15 nats, chrF 2.5 over the baseline)" in text
    assert text.count("narrowly") == 2  # b fails clearly
    assert sd.narrow_passes(out.reset_index().drop(columns="narrow")) == set()  # a table kept before intervals
    below = out.reset_index().assign(margin_low=-0.34).iloc[0]  # a lower end under the baseline itself
    assert "(a same-length wrong source 0.45 nats, chrF 0.3 below the baseline)" in sd.narrowly(below)


@pytest.fixture(scope="module")
def mtok(cfg):
    return tokenizer.mbart_tokenizer(cfg)


@pytest.fixture(scope="module")
def pairs(cfg):
    """Short English training verses (the copy task's sources and targets) and held-out ones."""
    en = training.parallel_train(cfg).en
    en = en[en.str.split().str.len().between(3, 12)].reset_index(drop=True)
    return en.iloc[:-40].tolist(), en.iloc[-40:].tolist()


def _trained(cfg, mtok, sources, targets, tmp_path):
    """A small lab encoder-decoder trained to map `sources` (as 'de') to `targets` (as 'en'). Width 64:
    at the smoke preset's 32 a copy is learnt only after ~350 steps (a sudden drop of the loss)."""
    torch.manual_seed(0)
    wider = {**cfg, "model_dim": 64, "model_heads": 4, "model_ffn": 128}
    model = lab.MBartForConditionalGeneration(lab.mbart_config(wider, mtok))
    task = objectives.TranslationTask(mtok, pd.DataFrame({"de": sources, "en": targets}), [("de", "en")],
                                      steps=300, batch_size=16, max_length=32, seed=0)
    model, _ = training.fit(model, task, 300, lr=3e-3, warmup=0.1, seed=0, digest="x",
                            checkpoint=tmp_path / "ck.pt", log_every=100)
    return model.eval()


@pytest.mark.slow
def test_a_copying_model_passes_and_a_source_blind_one_fails(cfg, mtok, pairs, tmp_path):
    train, held_out = pairs
    shuffled = list(np.random.default_rng(0).permutation(train))  # sources that say nothing about targets
    copier = _trained(cfg, mtok, train, train, tmp_path)
    blind = _trained(cfg, mtok, shuffled, train, tmp_path / "blind")
    reads = sd.direction_row(copier, mtok, held_out, held_out, "de", "en", max_length=32)
    ignores = sd.direction_row(blind, mtok, held_out, held_out, "de", "en", max_length=32)
    assert reads["gap_same_length"] >= sd.MIN_GAP and reads["loss_random"] > reads["loss_true"] + sd.MIN_GAP
    assert abs(ignores["gap_same_length"]) < 0.2 < sd.MIN_GAP
    # the intervals over the 40 held-out pairs hold the mean and keep each model on its side of the bar
    assert sd.MIN_GAP < reads["gap_low"] < reads["gap_same_length"] < reads["gap_high"]
    assert ignores["gap_low"] < ignores["gap_same_length"] < ignores["gap_high"] < sd.MIN_GAP


def test_piece_losses_match_the_models_own_loss_without_the_language_code(cfg, mtok):
    torch.manual_seed(0)
    model = lab.MBartForConditionalGeneration(lab.mbart_config(cfg, mtok)).eval()
    src, tgt = ["In the beginning God created the heaven."], ["Am Anfang schuf Gott Himmel und Erde."]
    ours = sd.piece_losses(model, mtok, src, tgt, "en", "de", max_length=32)
    mtok.src_lang, mtok.tgt_lang = "en_XX", "de_DE"
    enc = mtok(src, text_target=tgt, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], labels=enc["labels"]).logits[0]
    labels = enc["labels"][0]
    # position 0 predicts the language code, forced when translating: not counted
    reference = F.cross_entropy(logits[1:], labels[1:]).item()
    assert labels[0] == mtok.convert_tokens_to_ids("de_DE")
    np.testing.assert_allclose(ours, [reference], rtol=1e-5)


def test_piece_losses_come_back_in_the_callers_order_whatever_the_batches(cfg, mtok):
    """Pairs are batched by length: each loss must still land at its own pair's position."""
    torch.manual_seed(0)
    model = lab.MBartForConditionalGeneration(lab.mbart_config(cfg, mtok)).eval()
    src = ["And God said, Let there be light: and there was light.", "Amen.", "Jesus wept.",
           "In the beginning God created the heaven and the earth.", "Rejoice evermore."]
    tgt = ["Und Gott sprach: Es werde Licht! und es ward Licht.", "Amen.", "Und Jesus gingen die Augen über.",
           "Am Anfang schuf Gott Himmel und Erde.", "Seid allezeit fröhlich."]
    batched = sd.piece_losses(model, mtok, src, tgt, "en", "de", batch_size=2, max_length=32)
    one_by_one = [sd.piece_losses(model, mtok, [s], [t], "en", "de", max_length=32)[0] for s, t in zip(src, tgt)]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5)
    assert len(set(np.round(batched, 4))) == len(src)  # distinct values: a misplaced loss would show


def test_batches_by_length_cover_every_index_once_shortest_first():
    lengths = [5, 1, 9, 1, 3, 7, 2]
    batches = batches_by_length(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths) and flat[:2].tolist() == [1, 3]  # ties keep their order
    assert batches_by_length([], 4) == []


def test_a_directions_row_is_computed_once_per_model_and_sentences(cfg, mtok, monkeypatch):
    torch.manual_seed(0)
    model = lab.MBartForConditionalGeneration(lab.mbart_config(cfg, mtok)).eval()
    identity = translation.model_identity(model, mtok)
    src, tgt = ["Jesus wept.", "Rejoice evermore.", "Amen."], ["Und Jesus weinte.", "Seid allezeit fröhlich.", "Amen."]
    first = sd.cached_direction_row(model, mtok, identity, src, tgt, "en", "de", max_length=32)
    assert first == sd.direction_row(model, mtok, src, tgt, "en", "de", max_length=32)
    assert first["gap_low"] <= first["gap_same_length"] <= first["gap_high"]
    computed = []
    monkeypatch.setattr(sd, "direction_row", lambda *args: computed.append(args) or first)
    assert sd.cached_direction_row(model, mtok, identity, src, tgt, "en", "de", max_length=32) == first
    assert not computed  # read back, the same row
    sd.cached_direction_row(model, mtok, identity, src[:2], tgt[:2], "en", "de", max_length=32)
    sd.cached_direction_row(model, mtok, "another model", src, tgt, "en", "de", max_length=32)
    assert len(computed) == 2  # other sentences, another model: computed

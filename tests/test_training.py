"""Lab models: objectives, the training loop (determinism, resume), saving and reuse, CP from a base folder."""
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import sacrebleu
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

from xl import training
from xl.analysis import source_dependence, translation
from xl.core import hub, paths, presets
from xl.core.errors import XLError
from xl.data import languages
from xl.models import registry, tokenizer
from xl.training import continued, lab, objectives

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mtok(cfg):
    return tokenizer.mbart_tokenizer(cfg)


@pytest.fixture(scope="module")
def trained(cfg):
    """All smoke lab models (the session's temporary XL_CACHE, see conftest)."""
    return training.train_lab_models(cfg, write=False)


def code_id(tok, lang):
    return tok.convert_tokens_to_ids(languages.code(lang, "mbart"))


# ---------------------------------------------------------------- objectives

def test_span_infilling_masks_35_percent_in_collapsed_spans():
    rng = np.random.default_rng(0)
    mask = 9999
    removed = total = spans = 0
    for n in rng.integers(5, 90, size=300):
        ids = list(range(10, 10 + n))
        out = objectives.span_infill(ids, mask, rng)
        kept = [t for t in out if t != mask]
        assert kept == [t for t in ids if t in set(kept)]          # order preserved, nothing invented
        assert all(not (a == b == mask) for a, b in zip(out, out[1:]))  # each span is one <mask>
        removed += n - len(kept)
        total += n
        spans += out.count(mask)
        assert n - len(kept) == round(0.35 * n)
    assert removed / total == pytest.approx(0.35, abs=0.01)
    assert removed / spans == pytest.approx(3.5, abs=0.6)             # Poisson(3.5) span lengths


def test_denoising_batch_keeps_language_code(cfg, mtok):
    texts = ["In the beginning God created the heaven and the earth.", "Im Anfang schuf Gott Himmel und Erde."]
    task = objectives.MonolingualTask("dae", mtok, texts, ["en", "de"], steps=3, batch_size=2,
                                      max_length=32, seed=0)
    for step in range(3):
        b = task.batch(step)
        for src, tgt in zip(b["input_ids"], b["labels"]):
            assert src[0] == tgt[0] and src[0] in (code_id(mtok, "en"), code_id(mtok, "de"))
            assert mtok.mask_token_id in src.tolist()
            assert tgt[tgt != objectives.IGNORE][-1] == mtok.eos_token_id
            # the target is the clean verse in its own language
            lang = "en" if src[0] == code_id(mtok, "en") else "de"
            clean = mtok(texts[0 if lang == "en" else 1], add_special_tokens=False)["input_ids"]
            assert tgt[1:1 + len(clean)].tolist() == clean
    b1, b2 = task.batch(1), task.batch(1)
    assert torch.equal(b1["input_ids"], b2["input_ids"])                # a batch depends on its step only


def test_translation_batches_follow_directions(cfg, mtok):
    par = training.parallel_train(cfg).head(50)
    en = code_id(mtok, "en")
    for kind in ("m2o", "o2m", "m2m"):
        task = objectives.TranslationTask(mtok, par, objectives.directions(kind, cfg["languages"]), steps=8,
                                          batch_size=8, max_length=32, seed=0)
        src = torch.cat([task.batch(s)["input_ids"][:, 0] for s in range(8)])
        tgt = torch.cat([task.batch(s)["labels"][:, 0] for s in range(8)])
        if kind == "m2o":
            assert (tgt == en).all() and (src != en).all()
        elif kind == "o2m":
            assert (src == en).all() and (tgt != en).all()
        else:
            assert (src != tgt).all() and len(set(zip(src.tolist(), tgt.tolist()))) > 6
    # the target of a German -> English pair is the English verse
    task = objectives.TranslationTask(mtok, par, [("de", "en")], steps=1, batch_size=1, max_length=32, seed=0)
    b, (_, _, row) = task.batch(0), task.examples[task.batches[0][0]]
    english = mtok(par.en[row], add_special_tokens=False)["input_ids"][:30]
    assert b["labels"][0, 1:-1].tolist() == english


def test_directions():
    assert objectives.directions("m2o", ["en", "de", "zh"]) == [("de", "en"), ("zh", "en")]
    assert objectives.directions("o2m", ["en", "de", "zh"]) == [("en", "de"), ("en", "zh")]
    assert len(objectives.directions("m2m", ["en", "de", "zh"])) == 6
    assert objectives.directions("en-m2m", ["en", "de", "zh"]) == [("de", "en"), ("zh", "en"), ("en", "de"), ("en", "zh")]
    with pytest.raises(XLError):
        objectives.directions("x2y", ["en"])


# ---------------------------------------------------------------- loop

class FixedTask:
    def __init__(self, batch, fail_at=None):
        self.b, self.fail_at = batch, fail_at

    def batch(self, step):
        if step == self.fail_at:
            raise KeyboardInterrupt("killed")
        return self.b


def tiny_mbart(cfg, tok, seed=0):
    torch.manual_seed(seed)
    return training.MBartForConditionalGeneration(training.mbart_config(cfg, tok))


def fixed_batch(cfg, mtok):
    par = training.parallel_train(cfg).head(40)
    return objectives.TranslationTask(mtok, par, [("de", "en")], steps=1, batch_size=8, max_length=32,
                                      seed=0).batch(0)


def test_loss_decreases(cfg, mtok, tmp_path):
    model, log = training.fit(tiny_mbart(cfg, mtok), FixedTask(fixed_batch(cfg, mtok)), 20, lr=3e-3, warmup=0.1,
                              seed=0, digest="x", checkpoint=tmp_path / "ck.pt", log_every=5)
    assert [s for s, _ in log] == [5, 10, 15, 20]
    assert log[-1][1] < log[0][1] - 0.5


def test_mlm_mask_predicts_the_given_fraction_split_80_10_10():
    ids = torch.randint(10, 1000, (200, 100))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    inputs, labels = objectives.mlm_mask(ids, special, mask_id=5, vocab=(10, 1000),
                                         generator=torch.Generator().manual_seed(0), prob=0.4)
    chosen = labels != objectives.IGNORE
    assert chosen.float().mean().item() == pytest.approx(0.4 * 99 / 100, abs=0.01)
    assert not chosen[:, 0].any() and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    shown_as_mask = (inputs[chosen] == 5).float().mean().item()
    unchanged = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert shown_as_mask == pytest.approx(0.8, abs=0.02) and unchanged == pytest.approx(0.1, abs=0.02)


def _losses_and_grads(model, batch, views):
    """(loss, gradients) of `batch` through each of `views` of `model`."""
    out = []
    for view in views:
        model.zero_grad()
        loss = view(**batch).loss
        loss.backward()
        out.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    return out


def test_masked_positions_only_has_the_loss_and_gradients_of_the_full_head(cfg):
    tok = tokenizer.xlmr_tokenizer(cfg)
    torch.manual_seed(0)
    model = training.XLMRobertaForMaskedLM(training.xlmr_config(cfg, tok))
    texts, text_langs = training.monolingual(cfg)
    batch = objectives.MonolingualTask("mlm", tok, texts[:64], text_langs[:64], steps=1, batch_size=8,
                                       max_length=32, seed=0).batch(0)
    view = training.at_labels(model)
    assert isinstance(view, training.MaskedPositionsOnly) and training.unwrap(view) is model
    (full, full_grads), (masked, masked_grads) = _losses_and_grads(model, batch, [model, view])
    assert masked == pytest.approx(full, rel=1e-5) and full > 1
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full_grads, masked_grads, strict=True))


def test_target_positions_only_has_the_loss_and_gradients_of_the_full_head(cfg, mtok):
    model = tiny_mbart(cfg, mtok)
    par = training.parallel_train(cfg).head(40)
    batch = objectives.TranslationTask(mtok, par, [("de", "en"), ("en", "zh")], steps=2, batch_size=8,
                                       max_length=32, seed=0).batch(1)
    assert (batch["labels"] == objectives.IGNORE).any()  # padding the view leaves out
    view = training.at_labels(model)
    assert isinstance(view, training.TargetPositionsOnly) and training.unwrap(view) is model
    (full, full_grads), (targets, target_grads) = _losses_and_grads(model, batch, [model, view])
    assert targets == pytest.approx(full, rel=1e-5) and full > 1
    assert len(target_grads) == len(full_grads)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full_grads, target_grads, strict=True))


def test_at_labels_leaves_other_models_as_they_are():
    other = torch.nn.Linear(2, 2)
    assert training.at_labels(other) is other and training.unwrap(other) is other


@pytest.mark.fault
def test_resume_from_checkpoint_continues_at_saved_step(cfg, mtok, tmp_path):
    batch = fixed_batch(cfg, mtok)
    # the checkpoint at step 3 falls between log entries (2, 4, 6): step 3's loss must reach the one at 4
    common = dict(lr=3e-3, warmup=0.1, seed=0, digest="d", checkpoint_every=3, log_every=2)
    reference, ref_log = training.fit(tiny_mbart(cfg, mtok), FixedTask(batch), 6,
                                      checkpoint=tmp_path / "a.pt", **common)
    ck = tmp_path / "b.pt"
    with pytest.raises(KeyboardInterrupt):
        training.fit(tiny_mbart(cfg, mtok), FixedTask(batch, fail_at=4), 6, checkpoint=ck, **common)
    assert torch.load(ck, weights_only=False)["step"] == 3
    seen = []

    class Recording(FixedTask):
        def batch(self, step):
            seen.append(step)
            return super().batch(step)

    resumed, log = training.fit(tiny_mbart(cfg, mtok, seed=1), Recording(batch), 6, checkpoint=ck, **common)
    assert seen == [3, 4, 5]
    np.testing.assert_allclose(log, ref_log, rtol=1e-6)
    for (k, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k               # same weights as without the kill


# ---------------------------------------------------------------- lab models

def test_smoke_lab_models_train_fast(trained, cfg):
    assert list(trained.model) == list(registry.LAB_MODELS)
    for name in registry.LAB_MODELS:
        info = training.marker(paths.model_dir("smoke", name))
        assert info["digest"] == training.digest_of(name, cfg)
        assert len(info["log"]) > 0
        assert not training.checkpoint_path(paths.model_dir("smoke", name)).exists()
    assert trained.seconds.sum() < 40


def test_the_equal_compute_control_denoises_as_long_as_the_cp_models_translate(trained, cfg):
    control, cp = (training.marker(paths.model_dir("smoke", n)) for n in ("lab-dae-cont", "lab-m2m"))
    assert (control["steps"], control["batch_size"]) == (cp["steps"], cp["batch_size"]) == (cfg["train_steps"]["cp"],
                                                                                            cfg["train_mt_batch"])
    assert control["objective"] == "dae-cont" and registry.family("lab-dae-cont") == "LM"
    base = AutoModelForSeq2SeqLM.from_pretrained(paths.model_dir("smoke", "lab-dae"))
    after = AutoModelForSeq2SeqLM.from_pretrained(paths.model_dir("smoke", "lab-dae-cont"))
    moved = [(a - b).abs().max().item() for a, b in zip(base.parameters(), after.parameters())]
    assert 0 < max(moved) < 0.05  # continued from lab-dae (10 Adam steps of lr 1e-3 move a weight ~0.01)


def test_saved_models_load_like_hub_models(trained, cfg, mtok):
    enc = mtok(["Im Anfang schuf Gott Himmel und Erde."], return_tensors="pt")
    folder = paths.model_dir("smoke", "lab-m2o")
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.src_lang = "de_DE"
    assert tok("Im Anfang schuf Gott Himmel und Erde.")["input_ids"] == [code_id(mtok, "de")] + \
        mtok("Im Anfang schuf Gott Himmel und Erde.", add_special_tokens=False)["input_ids"] + [mtok.eos_token_id]
    # save it again and load it back: identical outputs
    training.save(model, tok, folder.parent / "copy", {"digest": "copy"})
    again = AutoModel.from_pretrained(folder.parent / "copy").eval()
    with torch.no_grad():
        a = model.model.encoder(**enc).last_hidden_state
        b = again.encoder(**enc).last_hidden_state
    assert torch.equal(a, b)
    mlm = AutoModelForMaskedLM.from_pretrained(paths.model_dir("smoke", "lab-mlm"))
    xtok = AutoTokenizer.from_pretrained(paths.model_dir("smoke", "lab-mlm"))
    assert xtok("In the beginning")["input_ids"] == tokenizer.xlmr_tokenizer(cfg)("In the beginning")["input_ids"]
    assert mlm.config.vocab_size == len(xtok)


def test_saved_model_is_reused_and_retrained_when_parameters_change(trained, cfg, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(lab, "fit", boom)  # where lab_model and continue_pretraining look it up
    monkeypatch.setattr(continued, "fit", boom)
    for name in registry.LAB_MODELS:
        assert training.lab_model(name, cfg) == paths.model_dir("smoke", name)
    changed = {**cfg, "train_steps": {**cfg["train_steps"], "dae": cfg["train_steps"]["dae"] + 1}}
    assert training.digest_of("lab-m2m", changed) != training.digest_of("lab-m2m", cfg)  # CP follows its base
    assert training.digest_of("lab-mlm", changed) == training.digest_of("lab-mlm", cfg)
    with pytest.raises(AssertionError, match="trained again"):
        training.lab_model("lab-dae", changed)


def test_translation_languages_restrict_the_translation_schedule_only(trained, cfg, monkeypatch):
    """mt_languages: the MT and CP models and their control train on those languages' verses and directions,
    and are scored there; the LM models and the analyses keep every language."""
    fewer = presets.config("smoke", mt_languages=["en", "de"])
    assert training.translation_languages(cfg) == cfg["languages"]
    assert training.translation_languages(fewer) == ["en", "de"]
    assert list(training.parallel_train(fewer).columns) == ["en", "de"]
    assert len(training.parallel_train(fewer)) >= len(training.parallel_train(cfg))  # fewer languages to share
    for name in ["lab-m2o", "lab-mt", "lab-dae-cont"]:
        assert training.digest_of(name, fewer) != training.digest_of(name, cfg), name
    for name in ["lab-mlm", "lab-dae"]:
        assert training.digest_of(name, fewer) == training.digest_of(name, cfg), name
    assert translation.pairs_of("lab-m2o", fewer) == [("de", "en")]
    assert translation.pairs_of("lab-mt", fewer) == [("de", "en"), ("en", "de")]
    assert set(translation.pairs_of("lab-m2o", cfg)) == {("de", "en"), ("ru", "en"), ("zh", "en")}
    seen = {}
    monkeypatch.setattr(lab, "TranslationTask", lambda tok, corpus, dirs, **k: seen.update(dirs=dirs, cols=list(corpus)))
    lab._new_model("mt", "m2m", fewer, dict(steps=1, batch_size=1, max_length=8, seed=0))
    assert seen == {"dirs": [("en", "de"), ("de", "en")], "cols": ["en", "de"]}
    seen = _continuing_task(monkeypatch, "lab-o2m", fewer)
    assert (seen["dirs"], seen["cols"]) == ([("en", "de")], ["en", "de"])


def _continuing_task(monkeypatch, name: str, cfg: dict) -> dict:
    """What `lab_model(name, cfg)` hands TranslationTask to continue the saved smoke lab-dae (whose digest
    these tests leave unchanged): directions, corpus columns, batch size; nothing is trained."""
    seen = {}

    class Seen(Exception):
        pass

    def record(tok, corpus, dirs, batch_size, **k):
        seen.update(dirs=dirs, cols=list(corpus), batch_size=batch_size)
        raise Seen  # what continuing would train on is all these tests need

    monkeypatch.setattr(continued, "TranslationTask", record)
    with pytest.raises(Seen):
        training.lab_model(name, cfg)
    return seen


def test_train_mt_batch_sets_the_translation_schedule_batch_only(trained, cfg, monkeypatch):
    """train_mt_batch: the MT and CP models and their control train on batches of that size; the language
    models keep train_batch, and their digests whatever the translation schedule's batch and rate."""
    halved = {**cfg, "train_mt_batch": cfg["train_batch"] // 2}
    assert [lab.batch_of(o, halved) for o in ("mlm", "dae", "cp", "mt", "dae-cont")] == [8, 8, 4, 4, 4]
    for changed in (halved, {**cfg, "train_mt_lr": 3 * cfg["train_mt_lr"]}):
        for name in ["lab-m2m", "lab-mt", "lab-dae-cont"]:
            assert training.digest_of(name, changed) != training.digest_of(name, cfg), name
        for name in ["lab-mlm", "lab-dae"]:
            assert training.digest_of(name, changed) == training.digest_of(name, cfg), name
    slower = {**cfg, "train_lr": cfg["train_lr"] / 2}  # the language models', so the continued models' base's
    moved = [n for n in registry.LAB_MODELS if training.digest_of(n, slower) != training.digest_of(n, cfg)]
    assert moved == [n for n in registry.LAB_MODELS if n != "lab-mt"]  # lab-mt: translation from scratch
    assert _continuing_task(monkeypatch, "lab-m2o", halved)["batch_size"] == 4
    assert training.marker(paths.model_dir("smoke", "lab-mlm"))["batch_size"] == cfg["train_batch"]


def test_mt_quality_table(trained, cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("XL_RESULTS", str(tmp_path))
    q = translation.mt_quality(cfg, ["lab-m2o", "lab-o2m"])
    assert set(zip(q.src, q.tgt)) <= {(s, "en") for s in cfg["languages"]} | {("en", t) for t in cfg["languages"]}
    assert (q[q.model == "lab-m2o"].tgt == "en").all() and (q[q.model == "lab-o2m"].src == "en").all()
    assert (tmp_path / "smoke" / "mt_quality.csv").is_file()
    assert list(pd.read_csv(tmp_path / "smoke" / "mt_quality.csv").columns)[:4] == ["model", "src", "tgt", "chrf"]

    def boom(*args, **kwargs):
        raise AssertionError("translated again")

    monkeypatch.setattr(translation, "translate", boom)  # a re-run reads every translation from the cache
    pd.testing.assert_frame_equal(translation.mt_quality(cfg, ["lab-m2o", "lab-o2m"], write=False), q)
    with pytest.raises(AssertionError, match="translated again"):  # other decoding: not in the cache
        translation.mt_quality(cfg, ["lab-m2o"], write=False, no_repeat_ngram_size=0)


@pytest.mark.slow
def test_translation_scores_are_the_same_from_worker_processes(trained, cfg):
    """chrF and the gate score one model per worker process (train_workers): the rows do not change."""
    models = ["lab-m2o", "lab-o2m"]
    two = {**cfg, "train_workers": 2}
    pd.testing.assert_frame_equal(translation.mt_quality(two, models, write=False),
                                  translation.mt_quality(cfg, models, write=False))
    pd.testing.assert_frame_equal(source_dependence.table(two, models, write=False),
                                  source_dependence.table(cfg, models, write=False))


def test_xl_train_prints_chrf_and_the_gate(trained, cfg, capsys, monkeypatch, tmp_path):
    from xl.book import cli
    monkeypatch.setenv("XL_RESULTS", str(tmp_path))
    cli._print_translation_checks(cfg, ["lab-m2o", "lab-o2m"])
    out = capsys.readouterr().out
    gated = source_dependence.gate(source_dependence.table(cfg, ["lab-m2o", "lab-o2m"], write=False),
                                   translation.mt_quality(cfg, ["lab-m2o", "lab-o2m"], write=False))
    assert "passes_gate" in out and "min_gap" in out
    for row in gated.itertuples():
        assert f"{row.model} " in out and f"{row.min_gap:.2f}" in out
    assert source_dependence.verdict(gated).replace("*", "")[:40] in out


# ---------------------------------------------------------------- paper-scale CP path

def test_continue_pretraining_from_a_local_base_folder(cfg, mtok, tmp_path):
    base = tmp_path / "tiny-mbart"
    training.save(tiny_mbart(cfg, mtok), mtok, base, {"digest": "tiny"})
    corpus = pd.DataFrame({"en": ["In the beginning.", "And God said.", "Let there be light.", "It was good."],
                           "de": ["Im Anfang.", "Und Gott sprach.", None, "Es war gut."],
                           "zh": ["起初。", None, "要有光。", "是好的。"]})
    out = tmp_path / "tiny-m2o"
    folder = training.continue_pretraining(base, corpus, "m2o", out, steps=3, batch_size=4, max_length=32,
                                           lr=1e-3, languages=["en", "de", "zh"])
    assert folder == out and training.marker(out)["steps"] == 3
    model, tok = translation.load(str(out), cfg)
    assert translation.translate(model, tok, ["Im Anfang."], "de", "en", max_length=8)[0] is not None


@pytest.mark.fault
def test_continue_pretraining_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reachable.cache_clear()
    start = time.perf_counter()
    with pytest.raises(XLError, match="facebook/mbart-large-50"):
        training.continue_pretraining("facebook/mbart-large-50", pd.DataFrame({"en": ["a"], "de": ["b"]}), "m2o",
                                      tmp_path / "out", steps=1, batch_size=1)
    with pytest.raises(XLError, match="opus-100"):
        training.hub_parallel("Helsinki-NLP/opus-100", ["en", "de"])
    assert time.perf_counter() - start < 5
    hub.reachable.cache_clear()


def test_translation_counts_only_where_it_beats_the_source_blind_baseline():
    quality = pd.DataFrame({"model": ["a", "a", "b", "b"], "src": ["de", "fr", "en", "en"],
                            "tgt": ["en", "en", "de", "fr"], "chrf": [22.0, 17.5, 15.0, 30.0],
                            "baseline": [17.0, 17.0, 18.0, 17.0]})
    table = translation.against_baseline(quality)
    assert table.loc["a"].tolist() == [2, 1, 19.8, 2.8]  # 17.5 is within the 1-point margin
    assert table.loc["b", "beat_baseline"] == 1 and table.loc["b", "gap"] == 5.0
    assert "a in 1 of 2" in translation.verdict(quality) and "nowhere" not in translation.verdict(quality)
    assert "a beats the baseline nowhere" in translation.verdict(quality.assign(chrf=10.0).iloc[:2])
    three = pd.concat([quality.assign(model=m, chrf=30.0) for m in "cde"] + [quality.assign(chrf=10.0)])
    assert "Only c, d and e translate in every direction they were trained on. a and b beat the baseline nowhere" \
        in translation.verdict(three)
    one = three[~three.model.isin(["d", "e"])]
    assert "Only c translates in every direction it was trained on." in translation.verdict(one)


def test_more_steps_on_a_gpu_only_when_the_preset_says_so(monkeypatch):
    cfg = presets.config("smoke")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lab.steps_of("lab-m2o", cfg) == cfg["train_steps"]["cp"]  # default: a GPU trains as a CPU does
    more = {**cfg, "train_steps_on_gpu": {"cp": 50}}  # the other objectives: train_steps
    assert lab.steps_of("lab-m2o", more) == 50 and lab.steps_of("lab-mlm", more) == cfg["train_steps"]["mlm"]
    assert lab.digest_of("lab-m2o", more) != lab.digest_of("lab-m2o", cfg)  # a different model, cached apart
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lab.steps_of("lab-m2o", more) == cfg["train_steps"]["cp"]


def test_longer_training_is_said_only_where_the_mt_model_sees_more_pairs():
    def summary(mt_steps, mt_batch=16):
        return pd.DataFrame({"model": ["lab-mlm", "lab-m2m", "lab-mt"], "steps": [1200, 1200, mt_steps],
                             "batch_size": [32, 16, mt_batch]})
    said = training.longer_training(summary(4000))
    assert "`lab-mt` trains for 4,000 steps of 16 pairs, the continued models for 1,200 of 16" in said
    assert "3.3 times their verse pairs (64,000)" in said
    assert training.longer_training(summary(2400, 8)) == ""  # as many pairs: nothing to say
    assert training.longer_training(summary(1200)) == ""
    assert training.longer_training(summary(4000).iloc[:2]) == ""  # no lab-mt in this run


def test_workers_start_each_model_when_its_base_is_done(monkeypatch):
    """lab-dae's continuations start as soon as it ends, while lab-mlm (no base) still trains."""
    cfg = {**presets.config("smoke"), "train_workers": 2}
    events = []
    seconds = {"lab-mlm": 0.6, "lab-dae": 0.1}

    def train(name, _cfg):
        events.append(("start", name))
        time.sleep(seconds.get(name, 0.05))
        events.append(("end", name))

    monkeypatch.setattr(lab, "_train_alone", train)
    monkeypatch.setattr(lab, "is_trained", lambda *a: False)
    names = ["lab-mlm", "lab-m2o", "lab-dae", "lab-dae-cont"]
    lab._train_in_workers(names, cfg, executor=ThreadPoolExecutor)
    assert {n for _, n in events} == set(names) and len(events) == 8
    at = {event: i for i, event in enumerate(events)}
    assert at[("end", "lab-dae")] < at[("start", "lab-m2o")] < at[("end", "lab-mlm")]  # no barrier after the bases
    assert at[("end", "lab-dae")] < at[("start", "lab-dae-cont")]


# ---------------------------------------------------------------- short verses first (the translation schedule)

def test_short_pairs_keeps_the_verses_that_fit(mtok):
    corpus = pd.DataFrame({"en": ["In the beginning", "a " * 40, None], "de": ["Am Anfang", "Und", "Gott"]})
    short = objectives.short_pairs(corpus, mtok, 12)
    lengths = {lang: [len(x) + 2 for x in mtok([str(t) for t in corpus[lang]], add_special_tokens=False)["input_ids"]]
               for lang in corpus}
    assert lengths["en"][0] <= 12 < lengths["en"][1]
    assert short.en[0] == "In the beginning" and short.en[1:].isna().all()  # too long; missing stays missing
    assert short.de.tolist() == corpus.de.tolist()
    with pytest.raises(XLError, match="no sentence pair"):  # no en-de pair with both sides short
        objectives.TranslationTask(mtok, objectives.short_pairs(corpus, mtok, 3), [("en", "de")], steps=1,
                                   batch_size=2, max_length=32, seed=0)


def assert_short_then_plain(task, plain, pieces: int):
    """Every side of `task`'s short batches fits in `pieces` (the code, the verse, </s>); its later batches are
    the plain schedule's."""
    for step in range(len(task.short)):
        b = task.batch(step)
        assert (b["attention_mask"].sum(1) <= pieces).all(), step
        assert ((b["labels"] != objectives.IGNORE).sum(1) <= pieces).all(), step
    for step in range(len(task.short), len(task)):
        ours, theirs = task.batch(step), plain.batch(step)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs), step


def test_lab_mt_reads_short_verses_first_then_the_plain_schedule(cfg, mtok):
    common = dict(steps=10, batch_size=4, max_length=cfg["model_max_length"], seed=0)
    _, tok, task = lab._new_model("mt", "m2m", {**cfg, "train_mt_short_first": 20}, common)
    assert isinstance(task, objectives.ShortFirst) and len(task) == 10 and len(task.short) == 5
    _, _, plain = lab._new_model("mt", "m2m", {**cfg, "train_mt_short_first": None}, common)
    assert isinstance(plain, objectives.TranslationTask)
    assert_short_then_plain(task, plain, 20)
    assert max(plain.batch(s)["attention_mask"].sum(1).max() for s in range(5)) > 20  # the plain schedule's are not
    for name in registry.LAB_MODELS:  # the translation schedule's models, not the language models
        changed = lab.digest_of(name, {**cfg, "train_mt_short_first": 20}) != lab.digest_of(name, cfg)
        assert changed == (name in ("lab-mt", "lab-m2m", "lab-m2o", "lab-o2m", "lab-dae-cont")), name


class Captured(Exception):
    pass


def test_continued_models_and_their_control_read_short_verses_first(trained, cfg, monkeypatch):
    """lab-m2m (xl.training.continue_pretraining) and its equal-compute control lab-dae-cont start as lab-mt
    does: the first half of their steps on verses that fit in train_mt_short_first pieces, then the plain
    schedule's batches. Their base (lab-dae) is trained already: `fit` is reached at once."""
    tasks = {}

    def capture(model, task, *a, **k):
        raise Captured(task)

    monkeypatch.setattr(lab, "fit", capture)
    monkeypatch.setattr(continued, "fit", capture)
    for name in ("lab-m2m", "lab-dae-cont"):
        for pieces in (20, None):
            with pytest.raises(Captured) as caught:
                training.lab_model(name, {**cfg, "train_mt_short_first": pieces}, force=True)
            tasks[name, pieces] = caught.value.args[0]
    for name in ("lab-m2m", "lab-dae-cont"):
        task, plain = tasks[name, 20], tasks[name, None]
        assert isinstance(task, objectives.ShortFirst) and not isinstance(plain, objectives.ShortFirst)
        half = len(task.short)
        assert len(task) == len(plain) == cfg["train_steps"]["cp"] and half == len(task) // 2
        assert_short_then_plain(task, plain, 20)
        assert max(plain.batch(s)["labels"].ne(objectives.IGNORE).sum(1).max() for s in range(half)) > 20


def test_the_chrf_margin_interval_resamples_sacrebleus_own_statistics():
    refs = ["And God said, Let there be light: and there was light.", "Jesus wept.", "Rejoice evermore.",
            "In the beginning was the Word.", "Pray without ceasing.", "The LORD is my shepherd; I shall not want.",
            "Blessed are the meek: for they shall inherit the earth.", "God is love."]
    good = [r.replace("light", "lite").replace("shall", "shal") for r in refs]  # near copies
    blind = refs[1:] + refs[:1]  # another sentence for each: the source-blind baseline
    # the statistics of all sentences summed give sacrebleu's corpus chrF (an independent computation)
    metric = sacrebleu.CHRF()
    stats = translation._chrf_statistics(metric, good, refs)
    assert stats.shape[0] == len(refs)
    assert metric._compute_score_from_stats(list(stats.sum(0))).score == pytest.approx(translation.chrf(good, refs))
    margin = translation.chrf(good, refs) - translation.chrf(blind, refs)
    low, high = translation.margin_interval(good, blind, refs, n_boot=200, seed=0)
    assert 0 < low < margin < high  # near copies beat the baseline in every resample
    assert translation.margin_interval(blind, blind, refs, n_boot=50) == (0.0, 0.0)  # paired: no difference at all
    assert translation.margin_interval(good, blind, refs, n_boot=200, seed=0) == (low, high)  # seeded
    # half as many sentences: a wider interval
    low4, high4 = translation.margin_interval(good[:4], blind[:4], refs[:4], n_boot=200, seed=0)
    assert high4 - low4 > high - low

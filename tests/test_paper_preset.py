"""The paper preset, offline: every chapter of the book through the real runner, at preset `paper`,
on local stand-ins for what it normally takes from the Hugging Face Hub.

* the paper's models as tiny random models, one folder per model, named after the last part of
  its hub id (xl.models.registry reads labels and families from that): BERT (mBERT), XLM-R, mBART-50, two
  mBART-50 MMT models (m2m, m2o: the base's weights scaled up, as continued MT training does) and
  an M2M100 model with NLLB's tokenizer and language codes (NLLB 600M);
* a FLORES-200 release folder (`<dir>/<split>/<nllb_code>.<split>`) of Bible verses;
* an XGLUE release sample (xl.data.xglue.write_sample), three tasks: a classification, a pair and a
  tagging one.
Also: the hub is never asked (HF_HUB_OFFLINE), and what needs it fails fast with a clear message.
"""
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import save_tiny

import xl
from xl.analysis import translation
from xl.book import runner
from xl.core import hub
from xl.core.errors import XLError
from xl.models.registry import PAPER_MODELS
from xl.data import corpus, languages as langs, xglue
from xl.models import encoder, registry, tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

LANGUAGES = ["en", "de", "fr", "zh"]
TASKS = ["NC", "PAWS-X", "NER"]
SCALE = {"mBART m2m": 1.05, "mBART m2o": 1.10}  # continued "MT training": the base's weights, scaled up
LABELS = ["mBERT", "XLM-R", "mBART", "NLLB 600M", "mBART m2m", "mBART m2o"]
CHAPTERS = ["corpus", "models", "similarity", "weights", "transfer", "conclusions"]


def _folder_name(label: str) -> str:
    return PAPER_MODELS[label].rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """{label: model folder}, the FLORES-200 folder and the XGLUE folder."""
    root = tmp_path_factory.mktemp("paper")
    bible = corpus.parallel(corpus.bible_frame(LANGUAGES, books=[43]), LANGUAGES).head(40)
    flores = root / "flores200_dataset"
    for split, rows in (("dev", bible.iloc[:20]), ("devtest", bible.iloc[20:])):
        (flores / split).mkdir(parents=True)
        for lang in LANGUAGES:
            (flores / split / f"{langs.code(lang, 'nllb')}.{split}").write_text("\n".join(rows[lang]) + "\n")
    texts = [t for lang in LANGUAGES for t in bible[lang]]
    models = root / "models"
    folders = {
        "mBERT": save_tiny("bert", models / _folder_name("mBERT"), texts=texts),
        "XLM-R": save_tiny("xlmr", models / _folder_name("XLM-R")),
        "mBART": save_tiny("mbart", models / _folder_name("mBART")),
        "NLLB 600M": save_tiny("m2m100", models / _folder_name("NLLB 600M"),
                               nllb_codes=[c for c in langs.table().nllb if c]),
    }
    from transformers import AutoTokenizer, MBartForConditionalGeneration
    for label, factor in SCALE.items():
        model = MBartForConditionalGeneration.from_pretrained(folders["mBART"])
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(factor)
        folders[label] = models / _folder_name(label)
        model.save_pretrained(folders[label])
        AutoTokenizer.from_pretrained(folders["mBART"]).save_pretrained(folders[label])
    xglue_dir = xglue.write_sample(root / "xglue_full_dataset", n=8)
    return {"models": folders, "flores": flores, "xglue": xglue_dir}


@pytest.fixture
def offline(monkeypatch):
    """No hub for this process and the notebooks' kernels (they inherit the environment)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reachable.cache_clear()
    yield
    hub.reachable.cache_clear()


def test_local_folders_named_after_hub_ids_are_the_paper_models(stand_ins):
    for label, folder in stand_ins["models"].items():
        assert registry.label(str(folder)) == label and registry.family(str(folder)) == registry.MODELS[label].family
    assert registry.directions(str(stand_ins["models"]["mBART m2o"])) == "m2o"
    assert registry.directions(str(stand_ins["models"]["mBART"])) is None
    assert registry.label("/somewhere/my-model") == "/somewhere/my-model" and registry.family("/somewhere/my-model") == "?"
    assert registry.label("someone/mbart-large-50") == "someone/mbart-large-50"  # another hub repository


def test_translation_uses_each_model_s_language_codes(stand_ins):
    cfg = xl.config("paper", languages=LANGUAGES, flores_dir=str(stand_ins["flores"]))
    for label, prefix in (("NLLB 600M", "deu_Latn"), ("mBART m2m", "de_DE")):
        model, tok = translation.load(str(stand_ins["models"][label]), cfg, device="cpu")
        out = translation.translate(model, tok, ["Jesus weinte."], "de", "en", max_length=16)
        assert len(out) == 1 and isinstance(out[0], str)
        assert tok.convert_ids_to_tokens(tok("Jesus")["input_ids"])[0] == prefix
    model, tok = translation.load(str(stand_ins["models"]["mBART m2o"]), cfg, device="cpu")
    assert translation.pairs_of(str(stand_ins["models"]["mBART m2o"]), cfg, tok) == [
        ("de", "en"), ("fr", "en"), ("zh", "en")]
    held = translation.held_out_sample(cfg, n=5)
    assert list(held.columns) == LANGUAGES and len(held) == 5


def test_paper_languages_are_those_every_paper_model_encodes(stand_ins):
    """Family averages run over one language set: el and bg (XNLI's, NLLB has them) go for every model."""
    folders = [str(stand_ins["models"][label]) for label in LABELS]
    paper = xl.config("paper")["languages"]
    assert encoder.common_languages(folders, paper + ["el", "bg"]) == paper
    nllb = str(stand_ins["models"]["NLLB 600M"])
    assert encoder.common_languages([nllb, folders[0]], ["en", "el", "bg"]) == ["en", "el", "bg"]
    without_mbart = [f for f, label in zip(folders, LABELS) if not label.startswith("mBART")]
    assert encoder.common_languages(without_mbart, ["en", "el", "bg"]) == ["en", "el", "bg"]


def test_final_norm_reading_of_the_paper_encoder_decoders(stand_ins):
    """mBART and NLLB: final_norm=True ends with the model's own last_hidden_state, the rest as by default."""
    for label in ("mBART m2o", "NLLB 600M"):
        enc = encoder.load_encoder(str(stand_ins["models"][label]), device="cpu")
        texts = ["Jesus wept.", "In the beginning was the Word."]
        raw, normed = (enc.encode(texts, "de", cache=False, final_norm=f) for f in (False, True))
        batch = enc.tokenize(texts, "de")
        with torch.inference_mode():
            own = enc.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = enc.pool_mask(batch)
        pooled = ((own * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy()
        np.testing.assert_allclose(normed[-1], pooled, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(raw[:-1], normed[:-1])
        assert np.abs(raw[-1] - normed[-1]).max() > 1e-3, label


def test_hub_models_fail_fast_offline(offline):
    cfg = xl.config("paper")
    start = time.monotonic()
    with pytest.raises(XLError, match="huggingface-cli download facebook/nllb-200-distilled-600M"):
        translation.load(PAPER_MODELS["NLLB 600M"], cfg)
    with pytest.raises(XLError, match="Hugging Face Hub"):
        tokenizer.model_tokenizers(cfg)
    with pytest.raises(XLError, match="Hugging Face Hub"):
        corpus.held_out(cfg)
    assert time.monotonic() - start < 10


@pytest.mark.slow
def test_every_chapter_runs_at_the_paper_preset(stand_ins, book_root, offline, monkeypatch):
    params = {"models": [str(stand_ins["models"][label]) for label in LABELS], "languages": LANGUAGES,
              "flores_dir": str(stand_ins["flores"]), "xglue_dir": str(stand_ins["xglue"]),
              "analysis_verses": 16, "mt_eval_verses": 4, "model_max_length": 32,
              "transfer_tasks": TASKS, "transfer_seeds": [0], "transfer_epochs": 1, "transfer_train_size": 8,
              "transfer_dev_size": 8, "transfer_eval_size": 8, "transfer_batch_size": 8, "transfer_max_length": 32}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the notebooks' kernels: one torch thread, as here
    start = time.perf_counter()
    assert runner.toc_notebooks() == CHAPTERS
    for name in CHAPTERS:
        done = runner.run(name, "paper", params)
        assert done.status == "ran", name
        print(f"{name}: {done.seconds:.1f}s")
    print(f"paper preset, {len(CHAPTERS)} chapters: {time.perf_counter() - start:.0f}s")
    results = book_root / "results" / "paper"

    def table(name):
        return pd.read_csv(results / f"{name}.csv", keep_default_na=False)

    assert all(runner.executed_path("paper", name).is_file() for name in CHAPTERS)
    assert not (results / "training.csv").exists() and not (results / "lab_models.csv").exists()

    corpus_table = table("corpus")  # each language of the preset, once per model's own tokenizer
    assert sorted(corpus_table.tokenizer.unique()) == sorted(LABELS)
    assert sorted(corpus_table.lang.unique()) == sorted(LANGUAGES)
    assert len(corpus_table) == len(LABELS) * len(LANGUAGES) and (corpus_table.sentences == 40).all()
    assert (corpus_table.pieces_per_word > 0).all()

    quality = table("mt_quality")  # the translation models, in their trained directions, on 4 devtest sentences
    assert list(quality.columns) == ["model", "src", "tgt", "chrf", "baseline", "margin_low", "margin_high", "verses"]
    assert (quality.margin_low <= quality.margin_high).all()
    assert set(quality.model) == {"mBART m2m", "mBART m2o", "NLLB 600M"}
    assert (quality[quality.model == "mBART m2o"].tgt == "en").all()
    nllb, m2m = (quality[quality.model == m] for m in ("NLLB 600M", "mBART m2m"))
    assert len(nllb) == 7 and len(m2m) == 6  # mBART-50's m2m learned English-centric pairs: no de-fr
    assert ((m2m.src == "en") | (m2m.tgt == "en")).all()
    assert (quality.verses == 4).all() and quality.chrf.between(0, 100).all()

    sim = table("similarity")
    assert list(dict.fromkeys(sim.model)) == LABELS
    assert set(sim.layer) == {0, 1, 2} and {"linear_cka", "retrieval"} <= set(sim.metric)
    assert set(sim.lang_a) == set(LANGUAGES)
    assert set(table("separability").model) == set(LABELS)
    assert set(table("model_similarity").model_a) | set(table("model_similarity").model_b) == set(LABELS)

    svd = table("svd")  # mBART and the models continued from it, encoder layers 1-2
    assert set(svd.model) == {"mBART", "mBART m2m", "mBART m2o"} and set(svd.layer) == {1, 2}
    norms = svd.pivot_table(index=["layer", "matrix"], columns="model", values="sigma_norm")
    for label, factor in SCALE.items():
        np.testing.assert_allclose(norms[label] / norms["mBART"], factor, rtol=1e-4)

    transfer = table("transfer")  # every model on every task, one seed, English and other languages
    assert list(dict.fromkeys(transfer.model)) == LABELS and list(dict.fromkeys(transfer.task)) == TASKS
    assert set(transfer.seed) == {0} and transfer.score.between(0, 1).all()
    per_model = transfer.groupby(["model", "task"]).lang.nunique().unstack()
    assert (per_model["PAWS-X"] == 4).all()  # en de es fr
    assert per_model.loc["mBERT", "NC"] == len(xglue.languages("NC"))

    gate = table("gate")  # random stand-ins do not translate: each fails, and no finding is tested
    assert set(gate.model) == {"mBART m2m", "mBART m2o", "NLLB 600M"} and not gate.passes_gate.any()
    assert set(table("source_dependence").model) == set(gate.model)
    verdicts = table("conclusions")
    paper = verdicts[verdicts.preset == "paper"]
    assert len(paper) == 4 and set(paper.verdict) == {"not tested"}, paper

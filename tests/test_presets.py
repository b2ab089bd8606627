"""The presets: each one yields exactly the configuration it yielded when they were three full dicts
(literal copies below, keys in their order), and every value a preset holds passes its own checks."""
import pytest

from xl.core import presets
from xl.core.errors import XLError

PAIRS = ["de-en", "fr-en", "es-en", "ru-en", "zh-en", "hi-en", "en-de", "en-fr", "en-es", "en-ru", "en-zh", "en-hi",
         "de-fr", "es-ru"]
LAB_MODELS = ["lab-mlm", "lab-dae", "lab-m2m", "lab-m2o", "lab-o2m", "lab-mt", "lab-dae-cont"]

SMOKE = dict(
    description="seconds, for tests: 4 languages, 3 books, tiny models", corpus="bible",
    languages=["en", "de", "ru", "zh"], books=[1, 19, 43], vocab_size=2000, tokenizer_verses_per_language=2000,
    analysis_verses=64, bootstrap_replicates=20, flores_dir=None, models=LAB_MODELS, seed=0,
    model_dim=32, model_layers=2, model_decoder_layers=1, model_ffn=64, model_heads=2, model_max_length=32,
    train_batch=8, train_mt_batch=8, train_lr=0.001, train_mt_lr=0.001, train_warmup=0.1, train_steps={"mlm": 10, "dae": 10, "cp": 10, "mt": 10}, train_mt_short_first=32,
    train_steps_on_gpu=None,
    train_checkpoint_every=5, train_log_every=2, train_workers=1, mt_languages=None, mt_eval_verses=8, mt_eval_pairs=PAIRS,
    transfer_tasks=["genre", "xref", "retrieval"], transfer_seeds=[0], transfer_train_size=64,
    transfer_dev_size=32, transfer_eval_size=32, transfer_epochs=1, transfer_lr=0.001, transfer_batch_size=16,
    transfer_max_length=64, transfer_pair_head="match", transfer_head_norm=True, xglue_dir=None, preset="smoke")
LAB = dict(
    description="a laptop CPU, offline: 10 languages of the Bible corpus, small models trained here",
    corpus="bible", languages=["en", "de", "fr", "es", "ru", "ar", "hi", "tr", "vi", "zh"], books=None,
    vocab_size=8000, tokenizer_verses_per_language=12000, analysis_verses=1000, bootstrap_replicates=200, flores_dir=None,
    models=LAB_MODELS, seed=0,
    model_dim=128, model_layers=4, model_decoder_layers=2, model_ffn=512, model_heads=4, model_max_length=96,
    train_batch=32, train_mt_batch=16, train_lr=0.001, train_mt_lr=0.002, train_warmup=0.06, train_steps={"mlm": 1200, "dae": 800, "cp": 1000, "mt": 4000}, train_mt_short_first=32,
    train_steps_on_gpu=None,
    train_checkpoint_every=200, train_log_every=10, train_workers=2, mt_languages=["en", "de", "fr"], mt_eval_verses=300, mt_eval_pairs=PAIRS,
    transfer_tasks=["genre", "xref", "retrieval"], transfer_seeds=[0, 1, 2], transfer_train_size=400,
    transfer_dev_size=150, transfer_eval_size=400, transfer_epochs=3, transfer_lr=0.001, transfer_batch_size=8,
    transfer_max_length=64, transfer_pair_head="match", transfer_head_norm=True, xglue_dir=None, preset="lab")
PAPER = dict(
    description="a GPU with internet (Colab): the paper's Hugging Face models, FLORES-200 and XGLUE",
    corpus="flores", languages=["en", "de", "fr", "es", "ru", "ar", "hi", "tr", "vi", "zh", "sw", "th", "ur"],
    books=None, vocab_size=None, tokenizer_verses_per_language=None, analysis_verses=1000, bootstrap_replicates=200, flores_dir=None,
    models=["bert-base-multilingual-cased", "xlm-roberta-base", "facebook/mbart-large-50",
            "facebook/nllb-200-distilled-600M", "facebook/mbart-large-50-many-to-many-mmt",
            "facebook/mbart-large-50-many-to-one-mmt", "facebook/mbart-large-50-one-to-many-mmt"], seed=0,
    model_dim=None, model_layers=None, model_decoder_layers=None, model_ffn=None, model_heads=None,
    model_max_length=128, train_batch=16, train_mt_batch=16, train_lr=3e-05, train_mt_lr=3e-05, train_warmup=0.1, train_steps={"cp": 2000}, train_mt_short_first=None,
    train_steps_on_gpu=None,
    train_checkpoint_every=500, train_log_every=50, train_workers=1, mt_languages=None, mt_eval_verses=200, mt_eval_pairs=PAIRS,
    transfer_tasks=["NC", "XNLI", "PAWS-X", "QAM", "QADSM", "WPR", "NER", "POS"], transfer_seeds=[0, 1, 2],
    transfer_train_size=None, transfer_dev_size=None, transfer_eval_size=None, transfer_epochs=3,
    transfer_lr=2e-05, transfer_batch_size=32, transfer_max_length=128, transfer_pair_head="cross",
    transfer_head_norm=False, xglue_dir=None, preset="paper")
BEFORE = {"smoke": SMOKE, "lab": LAB, "paper": PAPER}


@pytest.mark.parametrize("name", list(BEFORE))
def test_each_preset_yields_the_same_configuration_as_before(name):
    cfg = presets.config(name)
    assert cfg == BEFORE[name]
    assert list(cfg) == list(BEFORE[name])  # key order too
    assert [type(v) for v in cfg.values()] == [type(v) for v in BEFORE[name].values()]  # 0.001, not 1e-3 as int


def test_presets_table_and_default():
    assert list(presets.PRESETS) == ["smoke", "lab", "paper"]
    assert presets.config() == LAB
    for name, cfg in presets.PRESETS.items():
        assert cfg == {k: v for k, v in BEFORE[name].items() if k != "preset"}
    table = presets.table()
    assert list(table.columns) == ["smoke", "lab", "paper"] and list(table.index) == list(LAB)[:-1]
    assert table.loc["model_dim", "smoke"] == 32 and table.loc["transfer_pair_head", "paper"] == "cross"
    assert presets.LAB_LANGUAGES == LAB["languages"]


def test_configurations_are_copies():
    presets.config("smoke")["languages"].append("fr")
    presets.config("smoke")["train_steps"]["mlm"] = 0
    assert presets.config("smoke") == SMOKE


def test_every_preset_value_passes_its_checks():
    for name in BEFORE:
        cfg = presets.config(name)
        for key, value in cfg.items():
            if key != "preset":
                presets.check(key, value, cfg)


def test_every_key_is_declared_once_with_a_meaning():
    assert list(presets.KEYS) == list(LAB)[:-1]
    for name, delta in presets.DELTAS.items():
        assert set(delta) <= set(presets.KEYS), name
        assert all(delta[k] != presets.KEYS[k].default for k in delta), f"{name} repeats a lab value"
    assert all(spec.doc for spec in presets.KEYS.values())
    for key, spec in presets.KEYS.items():
        values = [p[key] for p in presets.PRESETS.values()]
        assert all(isinstance(v, spec.kind) for v in values if v is not None), key
        assert bool(spec.none) == (None in values), f"{key}: None allowed exactly where a preset uses it"


def test_overrides_are_checked_and_none_sets_none_where_a_key_allows_it():
    cfg = presets.config("smoke", analysis_verses=10, model_dim=36, model_heads=3, train_lr=1)
    assert (cfg["analysis_verses"], cfg["model_dim"], cfg["model_heads"], cfg["train_lr"]) == (10, 36, 3, 1)
    # `-p mt_languages=null`: every language translates (the lab's default narrows them)
    assert presets.config("lab", mt_languages=None)["mt_languages"] is None
    assert presets.config("lab", train_steps_on_gpu=None)["train_steps_on_gpu"] is None
    with pytest.raises(XLError, match=r"parameter 'analysis_verses' must be an int, got None"):
        presets.config("smoke", analysis_verses=None)
    assert presets.config("paper", transfer_train_size=100)["transfer_train_size"] == 100
    # a dict changes the entries it names only (`-p 'train_steps={cp: 1800}'`), checked as a whole
    assert presets.config("lab", train_steps={"cp": 1800})["train_steps"] == {"mlm": 1200, "dae": 800, "cp": 1800,
                                                                              "mt": 4000}
    assert presets.config("lab", train_steps_on_gpu={"mt": 6000})["train_steps_on_gpu"] == {"mt": 6000}
    with pytest.raises(XLError, match="train_steps"):
        presets.config("lab", train_steps={"cp": 0})
    with pytest.raises(XLError, match="unknown parameter 'colour' for preset 'smoke'; known: description"):
        presets.config("smoke", colour="red")
    with pytest.raises(XLError, match="'huge'; choose one of: smoke, lab, paper"):
        presets.config("huge")
    with pytest.raises(XLError, match="unknown preset 'smok'; did you mean 'smoke'\\? choose one of"):
        presets.config("smok")


def test_translation_languages_must_include_the_pivot():
    assert presets.config("smoke", mt_languages=["en", "de"])["mt_languages"] == ["en", "de"]
    with pytest.raises(XLError, match="mt_languages=\\['de', 'fr'\\] must include 'en'"):
        presets.config("smoke", mt_languages=["de", "fr"])
    with pytest.raises(XLError, match="a language code of data/languages.csv, got 'xx'"):
        presets.config("smoke", mt_languages=["en", "xx"])

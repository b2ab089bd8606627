"""Fine-tuning and zero-shot evaluation on tiny random transformers (seconds, CPU)."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import MBartConfig, XLMRobertaConfig, XLMRobertaModel
from transformers.models.mbart.modeling_mbart import MBartEncoder

import xl
from xl import transfer
from xl.core.errors import XLError
from xl.data import tasks as tasklib
from xl.data.tasks import Task
from xl.models import tokenizer as lab_tokenizer
from xl.models.encoder import Encoder
from xl.transfer import finetuning, retrieval

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS_A, WORDS_B = [], []  # two sets of words that are one piece each in the smoke vocabulary (_words)
FAST = transfer.FinetuneParams(epochs=4, lr=3e-3, batch_size=16, max_length=32)


@pytest.fixture(scope="module", autouse=True)
def cfg():
    cfg = xl.config("smoke")
    _words(cfg)
    return cfg


def _words(cfg):
    """Whole English words that the tokenizer keeps as one piece, split into two classes."""
    if WORDS_A:
        return
    tok = lab_tokenizer.xlmr_tokenizer(cfg)
    words = sorted(p[1:] for p in tok.get_vocab() if p.startswith("\u2581") and p[1:].isascii()
                   and p[1:].isalpha() and len(p) >= 4 and tok.tokenize(p[1:]) == [p])
    assert len(words) >= 16, words
    WORDS_A.extend(words[0:16:2])
    WORDS_B.extend(words[1:16:2])


def _xlmr(cfg, seed=0, name="tiny-xlmr"):
    tok = lab_tokenizer.xlmr_tokenizer(cfg)
    torch.manual_seed(seed)
    model = XLMRobertaModel(XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=130, pad_token_id=tok.pad_token_id))
    return Encoder(name, model, tok, "cpu", {"test": name, "seed": seed})


def _mbart(cfg, seed=0):
    tok = lab_tokenizer.mbart_tokenizer(cfg)
    torch.manual_seed(seed)
    model = MBartEncoder(MBartConfig(
        vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=130,
        pad_token_id=tok.pad_token_id))
    return Encoder("tiny-mbart", model, tok, "cpu", {"test": "tiny-mbart", "seed": seed})


@pytest.fixture(scope="module")
def xlmr(cfg):
    return _xlmr(cfg)


@pytest.fixture(scope="module")
def lab(cfg):
    return tasklib.lab_tasks(cfg)


def _toy_classification(n=240, seed=0):
    """Label 1 if the sentence is made of number words, 0 if of animal words: learnable from tokens."""
    rng = np.random.default_rng(seed)

    def frame(m):
        labels = rng.integers(0, 2, m)
        texts = [" ".join(rng.choice(WORDS_B if y else WORDS_A, 5)) for y in labels]
        return pd.DataFrame({"text": texts, "label": labels})

    return Task("toy", "classification", "accuracy", ["animals", "numbers"], frame(n), frame(48),
                {"en": frame(64), "de": frame(64)})


def _toy_tagging(n=160, seed=0):
    rng = np.random.default_rng(seed)

    def frame(m):
        rows = []
        for _ in range(m):
            tags = list(rng.integers(0, 2, 6))
            rows.append(([str(rng.choice(WORDS_B if t else WORDS_A)) for t in tags], [int(t) for t in tags]))
        return pd.DataFrame(rows, columns=["words", "tags"])

    return Task("toytag", "tagging", "accuracy", ["animal", "number"], frame(n), frame(32),
                {"en": frame(48), "de": frame(48)})


def test_finetune_lab_tasks_one_row_per_language(xlmr, lab, cfg):
    df = transfer.evaluate(xlmr, lab, seeds=[0], params=transfer.FinetuneParams.from_config(cfg), progress=False,
                           cache=False)
    main = transfer.main_rows(df)
    assert list(df.columns) == ["model", "task", "lang", "seed", "metric", "layer", "score"]
    for name in lab:
        part = main[main.task == name]
        assert sorted(part.lang) == sorted(cfg["languages"]) and part.layer.isna().all()
        assert part.score.between(0, 1).all()
    layers = transfer.layer_rows(df)
    assert len(layers) == len(cfg["languages"]) * (xlmr.num_layers + 1) and set(layers.metric) == {"acc@1"}
    last = layers[layers.layer == xlmr.num_layers].set_index("lang").score
    assert main[main.task == "retrieval"].set_index("lang").score.equals(last)  # the headline is the last layer


def test_encoder_decoder_with_pooled_head(cfg, lab):
    enc = _mbart(cfg)
    params = transfer.FinetuneParams.from_config(cfg)
    result = transfer.finetune(enc, lab["xref"], 0, params, cache=False, progress=False)
    assert set(result["scores"]) == set(cfg["languages"])
    assert all(0 <= v <= 1 for v in result["scores"].values())


def test_learnable_task_reaches_high_accuracy(cfg):
    enc = _xlmr(cfg, seed=1, name="toy")
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    result = transfer.finetune(enc, _toy_classification(), 0, FAST, cache=False, progress=False)
    assert result["scores"]["en"] > 0.9 and result["scores"]["de"] > 0.9
    assert max(result["dev"]) > 0.9 and 1 <= result["best_epoch"] <= FAST.epochs
    # the caller's encoder is left as it was
    assert all(torch.equal(before[k], v) for k, v in enc.model.state_dict().items())


def test_token_tagging_learns(cfg):
    enc = _xlmr(cfg, seed=2, name="toytag")
    result = transfer.finetune(enc, _toy_tagging(), 0, FAST, cache=False, progress=False)
    assert result["scores"]["en"] > 0.9


@pytest.mark.parametrize("head", ["cross", "match"])
def test_ranking_runs(cfg, head):
    rng = np.random.default_rng(0)

    def frame(m):
        label = rng.integers(0, 3, m)
        return pd.DataFrame({"text": [f"query {i // 4}" for i in range(m)],
                             "text_b": [" ".join(rng.choice(WORDS_B if y else WORDS_A, 4)) for y in label],
                             "label": label, "group": [i // 4 for i in range(m)]})

    task = Task("rank", "ranking", "ndcg", ["bad", "fair", "good"], frame(64), frame(16), {"en": frame(16)})
    params = transfer.FinetuneParams(epochs=1, lr=1e-3, max_length=32, pair_head=head)
    result = transfer.finetune(_xlmr(cfg, 3, "rank"), task, 0, params, cache=False, progress=False)
    assert 0 < result["scores"]["en"] <= 1


def test_deterministic_per_seed(cfg, lab):
    enc = _xlmr(cfg, seed=4, name="det")
    params = transfer.FinetuneParams.from_config(cfg)
    a = transfer.finetune(enc, lab["genre"], 7, params, cache=False, progress=False)
    b = transfer.finetune(enc, lab["genre"], 7, params, cache=False, progress=False)
    assert a["scores"] == b["scores"] and a["dev"] == b["dev"]


def test_cached_results_are_reused(cfg, lab, monkeypatch):
    enc = _xlmr(cfg, seed=5, name="cache")
    params = transfer.FinetuneParams.from_config(cfg)
    first = transfer.finetune(enc, lab["genre"], 0, params, progress=False)
    assert not first["cached"]

    def boom(*args, **kwargs):
        raise AssertionError("fine-tuning ran again instead of reading the cache")

    monkeypatch.setattr(finetuning, "_finetune", boom)
    again = transfer.finetune(enc, lab["genre"], 0, params, progress=False)
    assert again["cached"] and again["scores"] == first["scores"]
    # another seed, other parameters or other weights are not cache hits
    with pytest.raises(AssertionError, match="ran again"):
        transfer.finetune(enc, lab["genre"], 1, params, progress=False)
    other = transfer.FinetuneParams(epochs=2, lr=1e-3, max_length=64)
    with pytest.raises(AssertionError, match="ran again"):
        transfer.finetune(enc, lab["genre"], 0, other, progress=False)
    with torch.no_grad():
        next(enc.model.parameters()).add_(1.0)
    with pytest.raises(AssertionError, match="ran again"):
        transfer.finetune(enc, lab["genre"], 0, params, progress=False)


def test_retrieval_identical_texts_is_perfect(xlmr):
    texts = [" ".join(np.random.default_rng(i).choice(WORDS_A + WORDS_B, 6)) for i in range(20)]
    df = pd.DataFrame({"id": range(20), "query": texts, "target": texts})
    task = Task("ret", "retrieval", "acc@1", [], None, None, {"en": df})
    layers = transfer.retrieve(xlmr, task, cache=False)
    assert layers["en"][-1] == 1.0 and len(layers["en"]) == xlmr.num_layers + 1
    assert task.chance()["en"] == pytest.approx(0.05)


def test_beside_overlap_puts_the_word_overlap_baseline_beside_the_models():
    pairs = pd.DataFrame({"text": ["a b c", "a b c"], "text_b": ["c b a", "x y z"], "label": [1, 0]})
    task = Task("xref", "pair", "accuracy", ["no", "yes"], pairs, pairs, {"en": pairs, "de": pairs})
    genre = Task("genre", "classification", "accuracy", ["x", "y"], pairs, pairs, {"en": pairs})
    df = pd.DataFrame([(m, "xref", lang, 0, "accuracy", v) for m, v in (("m1", 0.5), ("m2", 0.9))
                       for lang in ("en", "de")], columns=["model", "task", "lang", "seed", "metric", "score"])
    table = transfer.beside_overlap(df, {"xref": task, "genre": genre})
    assert list(table.columns) == ["en", "de"] and len(table) == 3  # genre is not a pair task
    assert table.loc[("xref", "word overlap (no model)"), "de"] == 100.0
    assert table.loc[("xref", "best model"), "en"] == pytest.approx(90.0)
    assert table.loc[("xref", "mean of models"), "en"] == pytest.approx(70.0)


@pytest.mark.fault
def test_unknown_language_and_bad_parameters(xlmr, lab):
    with pytest.raises(XLError, match="no test set"):
        transfer.finetune(xlmr, lab["genre"], 0, languages=["en", "fr"], cache=False, progress=False)
    with pytest.raises(XLError, match="not fine-tuned"):
        transfer.finetune(xlmr, lab["retrieval"], 0, cache=False, progress=False)
    with pytest.raises(XLError):
        transfer.FinetuneParams(epochs=0)


def test_tables():
    rows = []
    for model in ["lab-mlm", "lab-o2m"]:
        for task in ["genre", "xref"]:
            for lang in ["en", "de", "zh"]:
                for seed in [0, 1]:
                    base = 0.8 if model == "lab-mlm" else 0.5
                    rows.append((model, task, lang, seed, "accuracy", base + (0.1 if lang == "en" else 0) + seed / 100))
    df = pd.DataFrame(rows, columns=["model", "task", "lang", "seed", "metric", "score"])
    t1 = transfer.table1(df)
    assert t1.loc["lab-mlm", "genre"] == pytest.approx(80.5)  # non-English only, mean over seeds
    assert transfer.seed_spread(df).loc["lab-mlm", "genre"] == pytest.approx(np.std([0.80, 0.81], ddof=1) * 100)
    side = transfer.beside_paper(t1)
    assert side.loc["lab-o2m", (transfer.PAPER, "NC")] == 65.4
    chance = pd.DataFrame([(t, lang, "accuracy", 0.5, 100) for t in ["genre", "xref"] for lang in ["en", "de", "zh"]],
                          columns=["task", "lang", "metric", "chance", "n"])
    verdict = transfer.agreement(df, chance)  # MT 0.3 below LM, normalised: 0.6 of the way to a perfect score
    assert verdict["verdict"] == "agrees" and verdict["difference"] == pytest.approx(-0.6)
    assert "agrees" in verdict["sentence"]
    untested = transfer.agreement(df, chance, failed={"lab-o2m"})  # the only MT/CP model did not learn to translate
    assert untested["agrees"] is None and "not tested" in untested["sentence"] and untested["MT"] != untested["MT"]
    sim = pd.DataFrame({"model": ["lab-mlm"] * 2 + ["lab-o2m"] * 2, "layer": 2, "metric": "cka",
                        "lang_a": "en", "lang_b": ["de", "zh"] * 2, "value": [0.9, 0.7, 0.4, 0.3]})
    sep = pd.DataFrame({"model": ["lab-mlm", "lab-o2m"], "layer": 2, "metric": "probe", "value": [0.6, 0.9]})
    rel = transfer.relate(df, sim, sep)
    assert len(rel["by_language"]) == 8 and len(rel["by_model"]) == 4
    assert (rel["correlations"].query("against == 'similarity'").pearson > 0).all()


@pytest.mark.fault
def test_languages_without_a_code_are_skipped_with_a_warning(cfg, lab):
    enc = _mbart(cfg)  # mBART-50 codes: none for Greek
    task = lab["genre"]
    greek = Task("genre", task.kind, task.metric, task.labels, task.train, task.dev,
                 {"en": task.test["en"], "el": task.test["de"]})
    with pytest.warns(UserWarning, match="no language code"):
        df = transfer.evaluate(enc, {"genre": greek}, seeds=[0], params=transfer.FinetuneParams.from_config(cfg),
                               cache=False, progress=False)
    assert list(df.lang) == ["en"]


@pytest.mark.slow
def test_run_same_rows_with_workers_and_from_cache(cfg, tmp_path, monkeypatch):
    """The preset-level runner: model folders, worker processes, then everything from the cache."""
    folder = tmp_path / "tiny"
    enc = _xlmr(cfg, seed=6, name="run")
    enc.model.save_pretrained(folder)
    enc.tokenizer.save_pretrained(folder)
    small = {**cfg, "transfer_tasks": ["genre", "retrieval"], "transfer_seeds": [0, 1]}
    serial = transfer.run(small, models=[str(folder)], cache=False, write=False, progress=False, workers=1)
    parallel = transfer.run(small, models=[str(folder)], write=False, progress=False, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert set(serial.seed[serial.task == "genre"]) == {0, 1} and len(transfer.main_rows(serial)) == 3 * 4

    def boom(*args, **kwargs):
        raise AssertionError("ran again")

    monkeypatch.setattr(finetuning, "_finetune", boom)
    monkeypatch.setattr(retrieval, "_retrieve", boom)
    again = transfer.run(small, models=[str(folder)], write=False, progress=False)
    pd.testing.assert_frame_equal(again, parallel)


def test_match_head_learns_word_overlap(cfg):
    """Pairs that share their words vs pairs that do not: the match head learns it fast (a tiny
    joined-sequence model needs far more data to learn matching across the separator)."""
    rng = np.random.default_rng(0)
    words = WORDS_A + WORDS_B

    def frame(m):
        rows = []
        for i in range(m):
            a = list(rng.choice(words, 4, replace=False))
            same = i % 2
            b = list(rng.permutation(a)) if same else list(rng.choice([w for w in words if w not in a], 4))
            rows.append((" ".join(a), " ".join(b), same))
        return pd.DataFrame(rows, columns=["text", "text_b", "label"])

    task = Task("overlap", "pair", "accuracy", ["different", "same"], frame(320), frame(48), {"en": frame(64)})
    params = transfer.FinetuneParams(epochs=5, lr=3e-3, batch_size=16, max_length=32, pair_head="match")
    result = transfer.finetune(_xlmr(cfg, 7, "pairs-match"), task, 0, params, cache=False, progress=False)
    assert result["scores"]["en"] > 0.8


def _reference_match(states, mask):
    """MatchHead's similarity at initialisation (uniform layer mix and token weights), in numpy."""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    h = unit(np.mean([unit(s) for s in states], axis=0))
    n = len(h) // 2
    out = []
    for i in range(n):
        a, b = h[i][mask[i] > 0], h[n + i][mask[n + i] > 0]
        sim = a @ b.T
        out.append((sim.max(1).mean() + sim.max(0).mean()) / 2)
    return np.array(out)


def test_match_head_similarity_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(6, 5, 8)).astype(np.float32) for _ in range(3)]
    mask = np.ones((6, 5), np.float32)
    mask[0, 3:] = mask[4, 1:] = 0  # padding on both sides of a pair
    head = transfer.MatchHead(8, 3, 2, dropout=0.0).eval()
    got = head.similarity([torch.from_numpy(s) for s in states], torch.from_numpy(mask)).detach().numpy()
    np.testing.assert_allclose(got, _reference_match(states, mask), rtol=1e-5)
    same = [np.concatenate([s[:3], s[:3]]) for s in states]  # each pair: a text and itself
    got = head.similarity([torch.from_numpy(s) for s in same], torch.from_numpy(np.concatenate([mask[:3]] * 2)))
    np.testing.assert_allclose(got.detach().numpy(), 1.0, rtol=1e-5)
    ranking = transfer.MatchHead(8, 3, 5, dropout=0.0).eval()  # relevance labels 0-4: one logit each
    assert ranking([torch.from_numpy(s) for s in states], torch.from_numpy(mask)).shape == (3, 5)


def test_joined_pair_head_learns(cfg):
    """The joined-sequence (cross) head reads both sides: label = the second side is made of number words."""
    rng = np.random.default_rng(1)

    def frame(m):
        labels = rng.integers(0, 2, m)
        return pd.DataFrame({"text": [" ".join(rng.choice(WORDS_A + WORDS_B, 4)) for _ in labels],
                             "text_b": [" ".join(rng.choice(WORDS_B if y else WORDS_A, 4)) for y in labels],
                             "label": labels})

    task = Task("second", "pair", "accuracy", ["a", "b"], frame(240), frame(48), {"en": frame(64)})
    result = transfer.finetune(_xlmr(cfg, 8, "cross"), task, 0, FAST, cache=False, progress=False)
    assert result["scores"]["en"] > 0.85


@pytest.mark.parametrize("preset", list(xl.PRESETS))
def test_presets_define_valid_transfer_settings(preset):
    from xl.data import xglue
    c = xl.config(preset)
    params = transfer.FinetuneParams.from_config(c)
    assert params.epochs >= 1 and len(c["transfer_seeds"]) >= 1
    known = tasklib.BUILDERS if c["corpus"] == "bible" else xglue.SPECS
    assert set(c["transfer_tasks"]) <= set(known)
    if preset == "lab":
        assert len(c["transfer_seeds"]) >= 3


def test_above_chance_is_a_one_sided_binomial_test_over_the_test_examples():
    from math import comb

    pairs = pd.DataFrame({"text": ["a"] * 150, "text_b": ["b"] * 150, "label": [0, 1] * 75})
    task = Task("t", "pair", "accuracy", ["no", "yes"], pairs, pairs, {"en": pairs, "de": pairs})
    results = pd.DataFrame([("m", "t", "en", seed, "accuracy", None, score)
                            for seed, score in enumerate([0.56, 0.58, 0.60])]
                           + [("weak", "t", "en", 0, "accuracy", None, 0.52), ("m", "t", "de", 0, "accuracy", None, 0.9)],
                           columns=transfer.COLUMNS)
    table = transfer.above_chance(results, {"t": task}).set_index(["model", "lang"])
    assert sorted(table.index) == [("m", "de"), ("m", "en"), ("weak", "en")]  # every test language
    assert (table.chance == 0.5).all() and (table.n == 150).all()
    tail = sum(comb(150, k) for k in range(87, 151)) / 2 ** 150  # 0.58 of 150: 87 right
    assert table.loc[("m", "en"), "p"] == pytest.approx(tail, rel=1e-6)
    assert table.loc[("m", "en"), "ci_low"] < 0.58 < table.loc[("m", "en"), "ci_high"]
    assert not table.loc[("m", "en"), "clearly"] and not table.loc[("weak", "en"), "clearly"]  # p = 0.03 and 0.34
    assert table.loc[("m", "de"), "clearly"]
    assert transfer.above_chance(results, {"t": task}, alpha=0.1).set_index("model").loc["m"].clearly.all()
    english = transfer.above_chance(results, transfer.chance_table({"t": task}), langs="en")  # from tables alone
    assert list(english.lang) == ["en", "en"]
    assert transfer.above_chance_sentence(table.reset_index()).startswith("Not clearly above chance")
    assert "t in 2 of 3 model-language results (m en: 0.580 vs 0.500, p = 0.03; weak en: 0.520 vs 0.500, p = 0.34)" \
        in transfer.above_chance_sentence(table.reset_index())


def test_match_predictions_encode_each_sentence_once_and_equal_batch_logits(cfg):
    """The match head's evaluation encodes each distinct sentence once (blocks of pairs, batches by length);
    its logits are those of the model on the stacked pairs, with repeated and differently long sentences."""
    rng = np.random.default_rng(1)
    words = WORDS_A + WORDS_B
    verses = [" ".join(rng.choice(words, int(rng.integers(1, 9)))) for _ in range(12)]
    pairs = pd.DataFrame({"text": [verses[i % 6] for i in range(20)], "text_b": [verses[6 + i % 5] for i in range(20)]})
    encoder = _xlmr(cfg, 3, "match-eval")
    params = transfer.FinetuneParams(max_length=32, pair_head="match", eval_batch_size=3)
    model = finetuning.TaskModel(encoder, 2, False, 0.0, match=True).eval()
    torch.nn.init.normal_(model.head.token_weight.weight)  # tokens weigh differently: padding would show
    calls = []
    encode = model.encoder_states
    model.encoder_states = lambda batch: calls.append(len(batch["input_ids"])) or encode(batch)
    with torch.inference_mode():
        got = finetuning._match_logits(model, encoder, pairs, "en", params, block=2)
        expected = [model.head(encode(batch), model.pool_mask(batch)) for batch in
                    (encoder.tokenize(list(pairs.text[i:i + 3]) + list(pairs.text_b[i:i + 3]), "en", max_length=32)
                     for i in range(0, len(pairs), 3))]
    torch.testing.assert_close(got, torch.cat(expected), rtol=1e-4, atol=1e-5)
    blocks = [pairs.iloc[i:i + 6] for i in range(0, len(pairs), 6)]
    assert sum(calls) == sum(len(set(b.text) | set(b.text_b)) for b in blocks) < 2 * len(pairs)

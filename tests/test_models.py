"""xl.models on tiny random models of each architecture, saved with lab tokenizers and loaded by path
(the tiny models and their tokenizers: tests/conftest.py)."""
import shutil
import time

import numpy as np
import pytest
import torch
from conftest import TINY_ARCHS, TINY_H, TINY_LAYERS, TINY_TEXTS, save_tiny

import xl
from xl.core import hub, paths
from xl.core.errors import XLError
from xl.models import encoder

TEXTS = TINY_TEXTS
H, LAYERS = TINY_H, TINY_LAYERS
ARCHS = TINY_ARCHS
ENCODER_CLASS = {"bert": "BertModel", "xlmr": "XLMRobertaModel", "mbart": "MBartEncoder", "m2m100": "M2M100Encoder"}
_save = save_tiny


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {arch: _save(arch, tmp_path_factory.mktemp(arch)) for arch in ARCHS}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def encoders(folders):
    return {arch: encoder.load_encoder(str(folder), device="cpu") for arch, folder in folders.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_shape_and_pooled_values_match_a_manual_masked_mean(encoders, arch):
    enc = encoders[arch]
    assert type(enc.model).__name__ == ENCODER_CLASS[arch]
    assert (enc.num_layers, enc.hidden_size) == (LAYERS, H)
    assert enc.lang_scheme == {"mbart": "mbart", "m2m100": "nllb"}.get(arch)
    reps = enc.encode(TEXTS, "en", cache=False)
    assert reps.shape == (LAYERS + 1, len(TEXTS), H) and reps.dtype == np.float32
    # One sentence, no padding: every layout here is <s>/[CLS]/lang-code, pieces, </s>/[SEP].
    batch = enc.tokenize(TEXTS[:1], "en")
    with torch.inference_mode():
        states = enc.model(**{k: batch[k] for k in ("input_ids", "attention_mask")},
                           output_hidden_states=True).hidden_states
        if arch in ("mbart", "m2m100"):
            # The last layer by hand, without the final layer norm that transformers applied to states[-1].
            last = enc.model.layers[-1](states[-2], None)
            last = last[0] if isinstance(last, tuple) else last
            assert not np.allclose(reps[-1, 0], states[-1][0, 1:-1].mean(0).numpy(), atol=1e-3)
            states = states[:-1] + (last,)
    manual = np.stack([h[0, 1:-1].mean(0).numpy() for h in states])
    np.testing.assert_allclose(reps[:, 0], manual, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_independent_of_batch_size_and_sentence_order(encoders, arch):
    enc = encoders[arch]
    whole = enc.encode(TEXTS, "de", batch_size=64, cache=False)
    one_by_one = np.concatenate([enc.encode([t], "de", cache=False) for t in TEXTS], axis=1)
    perm = [3, 0, 5, 1, 4, 2]
    shuffled = enc.encode([TEXTS[i] for i in perm], "de", batch_size=2, cache=False)
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole[:, perm], shuffled, rtol=1e-4, atol=1e-5)
    assert not np.allclose(whole[:, 0], whole[:, 1])  # sentences do differ


@pytest.mark.parametrize("arch", ARCHS)
def test_pool_mask_keeps_only_real_tokens(encoders, arch):
    enc = encoders[arch]
    texts = ["Jesus wept.", TEXTS[0]]
    batch = enc.tokenize(texts, "de")
    mask = enc.pool_mask(batch)
    plain = enc.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert mask.dtype == torch.float32
    assert mask.sum(1).tolist() == [len(p) for p in plain]
    for row, pieces in enumerate(plain):  # the kept ids are exactly the sentence's pieces
        assert batch["input_ids"][row][mask[row].bool()].tolist() == pieces
    if enc.lang_scheme:
        code = xl.data.languages.code("de", enc.lang_scheme)
        assert batch["input_ids"][0, 0].item() == enc.tokenizer.convert_tokens_to_ids(code)
    assert mask[0, batch["attention_mask"][0] == 0].sum() == 0  # padding of the short sentence


def test_language_code_changes_the_representation(encoders):
    enc = encoders["mbart"]
    assert not np.allclose(enc.encode(TEXTS, "en", cache=False), enc.encode(TEXTS, "de", cache=False))


def test_cache_hit_reuses_the_array_without_running_the_model(encoders, monkeypatch):
    enc = encoders["xlmr"]
    first = enc.encode(TEXTS, "en")
    assert len(list(paths.cache_dir("reps").glob("*.npy"))) == 1

    def broken(*args, **kwargs):
        raise AssertionError("model ran on a cache hit")

    monkeypatch.setattr(enc.model, "forward", broken)
    np.testing.assert_array_equal(enc.encode(TEXTS, "en"), first)
    with pytest.raises(AssertionError, match="model ran"):
        enc.encode(TEXTS[:3], "en")  # other texts: a miss
    with pytest.raises(AssertionError, match="model ran"):
        enc.encode(TEXTS, "en", cache=False)


def test_cache_key_follows_the_model_folder(folders, tmp_path):
    a = encoder.load_encoder(str(folders["bert"]), device="cpu")
    other = _save("bert", tmp_path / "other")  # same architecture, other weights file
    b = encoder.load_encoder(str(other), device="cpu")
    assert a.fingerprint != b.fingerprint
    assert a._cache_key(TEXTS, "en", 256) != b._cache_key(TEXTS, "en", 256)
    assert a._cache_key(TEXTS, "en", 256) != a._cache_key(TEXTS, "de", 256)


@pytest.mark.fault
def test_out_of_memory_halves_the_batch_and_continues(encoders, monkeypatch, capsys):
    enc = encoders["mbart"]
    expected = enc.encode(TEXTS, "en", cache=False)
    forward = enc.model.forward

    def small_memory(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("tiny device")
        return forward(*args, **kwargs)

    monkeypatch.setattr(enc.model, "forward", small_memory)
    np.testing.assert_allclose(enc.encode(TEXTS, "en", batch_size=8, cache=False), expected, rtol=1e-4, atol=1e-5)
    out = capsys.readouterr().out
    assert "batch size halved to 4" in out and "batch size halved to 2" in out


@pytest.mark.fault
def test_unknown_languages_raise(encoders):
    with pytest.raises(XLError, match="'el'"):
        encoders["mbart"].encode(TEXTS, "el")  # Greek has no mBART-50 code
    with pytest.raises(XLError, match="fra_Latn"):
        encoders["m2m100"].tokenize(TEXTS, "fr")  # this tokenizer lacks French
    with pytest.raises(XLError, match="unknown language"):
        encoders["xlmr"].encode(TEXTS, "xx")


@pytest.mark.fault
def test_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "weights.txt").write_text("not a model")
    with pytest.raises(XLError, match="no config.json"):
        encoder.load_encoder(str(tmp_path))
    with pytest.raises(XLError, match="no such model folder"):
        encoder.load_encoder(str(tmp_path / "missing"))


@pytest.mark.fault
def test_hub_id_offline_fails_fast_with_download_hint(monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda: False)
    start = time.monotonic()
    with pytest.raises(XLError, match="huggingface-cli download xl-tests/no-such-model"):
        encoder.load_encoder("xl-tests/no-such-model")
    assert time.monotonic() - start < 5


@pytest.mark.fault
def test_lab_names_resolve_to_the_preset_model_folder(folders):
    with pytest.raises(XLError, match="xl run models --preset smoke"):
        encoder.load_encoder("lab-mlm", preset="smoke")
    shutil.copytree(folders["xlmr"], paths.model_dir("smoke", "lab-mlm"))
    enc = encoder.load_encoder("lab-mlm", preset="smoke", device="cpu")
    assert enc.name == "lab-mlm" and type(enc.model).__name__ == "XLMRobertaModel"
    with pytest.raises(XLError, match="unknown preset"):
        encoder.load_encoder("lab-mlm", preset="nope")


def test_long_inputs_are_cut_to_the_position_embeddings(tmp_path):
    """A tokenizer without a length limit must not push a model past its position embeddings."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    import xl
    from xl.models import encoder, tokenizer
    tok = tokenizer.xlmr_tokenizer(xl.config("smoke"))
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=12, pad_token_id=tok.pad_token_id)
    XLMRobertaModel(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = encoder.load_encoder(str(tmp_path))
    assert enc.max_length == 12 - (tok.pad_token_id + 1)
    reps = enc.encode(["In the beginning God created the heavens and the earth. " * 5], "en", cache=False)
    assert reps.shape == (2, 1, 16) and np.isfinite(reps).all()


# ---------------------------------------------------------------- final layer norm (pre-LN encoders)

def _one_sentence_reference(enc, text, lang):
    """(raw last layer, the model's own last_hidden_state), each mean-pooled over the real tokens of one
    unpadded sentence (layout: lang-code or <s>, pieces, </s>); the raw stream caught going into the final norm."""
    seen = []
    hook = enc.model.layer_norm.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    try:
        with torch.inference_mode():
            enc.tokenizer.src_lang = xl.data.languages.code(lang, enc.lang_scheme)
            ids = torch.tensor([enc.tokenizer(text)["input_ids"]])
            own = enc.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    finally:
        hook.remove()
    assert len(seen) == 1
    return seen[0][0, 1:-1].mean(0).numpy(), own[0, 1:-1].mean(0).numpy()


@pytest.mark.parametrize("arch", ["mbart", "m2m100"])
def test_final_norm_changes_only_the_last_layer_of_pre_ln_encoders(encoders, arch):
    enc = encoders[arch]
    assert enc.has_final_norm
    raw = enc.encode(TEXTS, "de", batch_size=4, cache=False)
    normed = enc.encode(TEXTS, "de", batch_size=4, cache=False, final_norm=True)
    reference = [_one_sentence_reference(enc, text, "de") for text in TEXTS]
    np.testing.assert_allclose(raw[-1], np.stack([r for r, _ in reference]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(normed[-1], np.stack([n for _, n in reference]), rtol=1e-4, atol=1e-5)
    assert np.abs(raw[-1] - normed[-1]).max() > 1e-3  # the two readings differ, far beyond the tolerance
    np.testing.assert_array_equal(raw[:-1], normed[:-1])


@pytest.mark.parametrize("arch", ["bert", "xlmr"])
def test_final_norm_changes_nothing_for_post_ln_encoders(encoders, arch):
    enc = encoders[arch]
    assert not enc.has_final_norm
    np.testing.assert_array_equal(enc.encode(TEXTS, "en", cache=False, final_norm=True),
                                  enc.encode(TEXTS, "en", cache=False))
    assert enc._cache_key(TEXTS, "en", 256, final_norm=True) == enc._cache_key(TEXTS, "en", 256)


@pytest.mark.parametrize("first", [False, True])
def test_final_norm_is_cached_apart_and_default_keys_are_unchanged(encoders, monkeypatch, first):
    enc = encoders["mbart"]
    old_key = xl.core.io.digest(encoder.CACHE_VERSION, enc.fingerprint, "en", 256, "fp32", TEXTS)
    assert enc._cache_key(TEXTS, "en", 256) == old_key  # existing caches stay valid
    assert enc._cache_key(TEXTS, "en", 256, final_norm=True) != old_key
    expected = {f: enc.encode(TEXTS, "en", cache=False, final_norm=f) for f in (False, True)}
    np.testing.assert_array_equal(enc.encode(TEXTS, "en", final_norm=first), expected[first])
    assert len(list(paths.cache_dir("reps").glob("*.npy"))) == 2  # one forward pass stored both readings

    def broken(*args, **kwargs):
        raise AssertionError("model ran on a cache hit")

    monkeypatch.setattr(enc.model, "forward", broken)
    for final_norm in (not first, first):
        np.testing.assert_array_equal(enc.encode(TEXTS, "en", final_norm=final_norm), expected[final_norm])
    assert not np.allclose(expected[False][-1], expected[True][-1])


# ---------------------------------------------------------------- languages every model can encode

LANGS = ["en", "de", "fr", "el", "bg", "zh"]  # tiny NLLB codes: eng deu rus zho; mBART-50: no el, bg


def test_readable_languages_agree_with_what_encode_accepts(folders, encoders):
    for arch, enc in encoders.items():
        accepted = []
        for lang in LANGS:
            try:
                enc.tokenize(["a"], lang)
                accepted.append(lang)
            except XLError:
                pass
        assert encoder.readable_languages(str(folders[arch]), LANGS) == accepted, arch
        assert encoder.readable_languages(enc, LANGS) == accepted, arch
    assert encoder.readable_languages(str(folders["mbart"]), LANGS) == ["en", "de", "fr", "zh"]
    assert encoder.readable_languages(str(folders["m2m100"]), LANGS) == ["en", "de", "zh"]


def test_common_languages_drop_what_any_model_lacks_for_every_model(folders, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded")

    monkeypatch.setattr(encoder, "AutoModel", type("NoModel", (), {"from_pretrained": no_weights}))
    bert, mbart, m2m = (str(folders[a]) for a in ("bert", "mbart", "m2m100"))
    assert encoder.common_languages([bert], LANGS) == LANGS
    assert encoder.common_languages([bert, mbart], LANGS) == ["en", "de", "fr", "zh"]
    assert encoder.common_languages([bert, mbart, m2m], LANGS) == ["en", "de", "zh"]
    assert encoder.common_languages([m2m, bert], ["zh", "en"]) == ["zh", "en"]  # the caller's order
    # lab models, trained or not: lab-mlm has no codes, the others mBART-50's
    assert encoder.common_languages(["lab-mlm"], LANGS, preset="smoke") == LANGS
    assert encoder.common_languages(["lab-mlm", "lab-m2o"], LANGS, preset="smoke") == ["en", "de", "fr", "zh"]
    with pytest.raises(XLError, match="every model"):
        encoder.common_languages([mbart], ["el", "bg"])
    with pytest.raises(XLError, match="unknown language"):
        encoder.common_languages([bert], ["en", "xx"])

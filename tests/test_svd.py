import copy

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2Model, M2M100Config,
                          M2M100ForConditionalGeneration, MBartConfig, MBartForConditionalGeneration,
                          XLMRobertaConfig, XLMRobertaModel)

from xl.analysis import svd
from xl.core import hub
from xl.core.errors import XLError

H, FFN = 32, 64
TINY = dict(vocab_size=64, max_position_embeddings=64)


def tiny_bert():
    return BertForMaskedLM(BertConfig(hidden_size=H, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=FFN, **TINY))


def tiny_xlmr():
    return XLMRobertaModel(XLMRobertaConfig(hidden_size=H, num_hidden_layers=3, num_attention_heads=2,
                                            intermediate_size=FFN, **TINY))


def _seq2seq(config_cls, ffn=FFN):
    return config_cls(d_model=H, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=ffn, decoder_ffn_dim=FFN, **TINY)


def tiny_mbart():
    return MBartForConditionalGeneration(_seq2seq(MBartConfig))


def tiny_m2m100():
    return M2M100ForConditionalGeneration(_seq2seq(M2M100Config))


def bert_weights(model, layer, name):
    block = model.base_model.encoder.layer[layer - 1]
    return {"K": block.attention.self.key, "Q": block.attention.self.query, "V": block.attention.self.value,
            "Out": block.attention.output.dense, "FC up": block.intermediate.dense,
            "FC down": block.output.dense}[name].weight


def seq2seq_weights(model, layer, name):
    block = model.model.encoder.layers[layer - 1]
    return {"K": block.self_attn.k_proj, "Q": block.self_attn.q_proj, "V": block.self_attn.v_proj,
            "Out": block.self_attn.out_proj, "FC up": block.fc1, "FC down": block.fc2}[name].weight


@pytest.fixture(scope="module", autouse=True)
def seeded():
    torch.manual_seed(0)


# ---- singular values ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 7), (12, 5), (5, 12)])
def test_singular_values_match_numpy(shape):
    w = np.random.default_rng(1).normal(size=shape)
    s = svd.singular_values(torch.tensor(w, dtype=torch.float32))
    assert s.dtype == np.float64 and s.shape == (min(shape),)
    assert np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(s, np.linalg.svd(w.astype(np.float32).astype(np.float64), compute_uv=False),
                               rtol=1e-10)


def test_norm_of_singular_values_is_frobenius_norm():
    w = np.random.default_rng(2).normal(size=(20, 9))
    assert np.linalg.norm(svd.singular_values(w)) == pytest.approx(np.sqrt((w ** 2).sum()), rel=1e-12)


def test_falls_back_when_default_driver_does_not_converge(monkeypatch):
    w = np.random.default_rng(3).normal(size=(10, 6))
    calls = []

    def fails(*args, **kwargs):
        calls.append("svdvals")
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    used_scipy = []
    real_scipy = svd.scipy.linalg.svd
    monkeypatch.setattr(torch.linalg, "svdvals", fails)
    monkeypatch.setattr(svd.scipy.linalg, "svd", lambda *a, **k: used_scipy.append(k) or real_scipy(*a, **k))
    s = svd.singular_values(w)
    assert calls == ["svdvals"] and used_scipy[0]["lapack_driver"] == "gesvd"
    np.testing.assert_allclose(s, np.linalg.svd(w, compute_uv=False), rtol=1e-10)


@pytest.mark.fault
def test_every_driver_failing_is_a_clear_error(monkeypatch):
    def fails(w):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(svd, "DRIVERS", [fails, fails])
    with pytest.raises(XLError, match="did not converge"):
        svd.singular_values(np.eye(3))


@pytest.mark.fault
def test_singular_values_reject_bad_input():
    with pytest.raises(XLError, match="matrix"):
        svd.singular_values(np.ones(3))
    with pytest.raises(XLError, match="NaN"):
        svd.singular_values(np.array([[1.0, np.nan], [0.0, 1.0]]))


# ---- matrices of each architecture ---------------------------------------------------------------

@pytest.mark.parametrize("build,reference,n_layers", [
    (tiny_bert, bert_weights, 2), (tiny_xlmr, bert_weights, 3),
    (tiny_mbart, seq2seq_weights, 3), (tiny_m2m100, seq2seq_weights, 3),
])
def test_encoder_matrices_loaded_from_folder(tmp_path, build, reference, n_layers):
    model = build()
    model.save_pretrained(tmp_path)
    mats = svd.encoder_matrices(str(tmp_path))
    assert list(mats) == [(n, m) for n in range(1, n_layers + 1) for m in svd.MATRICES]
    expected = {"K": (H, H), "Q": (H, H), "V": (H, H), "Out": (H, H), "FC up": (FFN, H), "FC down": (H, FFN)}
    for (layer, name), w in mats.items():
        assert tuple(w.shape) == expected[name]
        assert torch.equal(w, reference(model, layer, name).detach()), (layer, name)
    # Q and K of one layer are distinct random matrices: a mix-up would not pass the checks above.
    assert not torch.equal(mats[(1, "K")], mats[(1, "Q")])


def test_mbart_uses_encoder_not_decoder():
    model = tiny_mbart()
    mats = svd.encoder_matrices(model)
    assert mats[(1, "K")].data_ptr() == model.model.encoder.layers[0].self_attn.k_proj.weight.data_ptr()
    assert mats[(1, "FC down")].data_ptr() == model.model.encoder.layers[0].fc2.weight.data_ptr()
    decoder_ptrs = {p.data_ptr() for p in model.model.decoder.parameters()}
    assert not decoder_ptrs & {w.data_ptr() for w in mats.values()}
    assert len(svd.encoder_matrices(model.get_encoder())) == 3 * 6


@pytest.mark.fault
def test_unsupported_architecture_names_the_class():
    gpt2 = GPT2Model(GPT2Config(n_embd=H, n_layer=1, n_head=2, vocab_size=64, n_positions=64))
    with pytest.raises(XLError, match="GPT2Model"):
        svd.encoder_matrices(gpt2)
    with pytest.raises(XLError, match="Linear"):
        svd.encoder_matrices(torch.nn.Linear(3, 3))


@pytest.mark.fault
def test_missing_layer_is_an_error():
    with pytest.raises(XLError, match="layers 1..2"):
        svd.encoder_matrices(tiny_bert(), layer=3)


# ---- spectra and the table ----------------------------------------------------------------------

def test_spectra_long_form():
    model = tiny_xlmr()
    df = svd.spectra(model, layer=2)
    assert list(df.columns) == ["layer", "matrix", "index", "sigma"]
    assert set(df.layer) == {2} and list(dict.fromkeys(df.matrix)) == svd.MATRICES
    assert len(df) == 6 * H  # each matrix has min(rows, cols) = 32 singular values
    fc = df[df.matrix == "FC up"]
    assert list(fc["index"]) == list(range(1, H + 1))
    w = model.encoder.layer[1].intermediate.dense.weight.detach().double().numpy()
    np.testing.assert_allclose(fc.sigma, np.linalg.svd(w, compute_uv=False), rtol=1e-10)


def test_svd_table_norms_distances_and_scaling():
    base = tiny_mbart()
    c = 4.0  # a power of two, so scaling the float32 weights is exact
    scaled = copy.deepcopy(base)
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(c)
    other = tiny_mbart()
    df = svd.svd_table({"base": base, "scaled": scaled, "other": other, "again": base}, base="base")
    assert list(df.columns) == ["model", "layer", "matrix", "sigma_norm", "d"]
    assert len(df) == 4 * 3 * 6 and sorted(df.layer.unique()) == [1, 2, 3]
    b, s = df[df.model == "base"].reset_index(), df[df.model == "scaled"].reset_index()
    assert b.d.isna().all()
    # ||sigma|| is the Frobenius norm of the weight.
    frob = [seq2seq_weights(base, n, m).detach().double().norm().item() for n, m in zip(b.layer, b.matrix)]
    np.testing.assert_allclose(b.sigma_norm, frob, rtol=1e-10)
    # Scaling W by c scales every singular value by c, so d = (c - 1) ||sigma||.
    np.testing.assert_allclose(s.sigma_norm, c * b.sigma_norm, rtol=1e-10)
    np.testing.assert_allclose(s.d, (c - 1) * b.sigma_norm, rtol=1e-10)
    # A model against itself is at distance 0; another model is not.
    assert (df[df.model == "again"].d.abs() < 1e-12).all()
    o = df[df.model == "other"].reset_index()

    def sv(model, n, m):
        return np.linalg.svd(seq2seq_weights(model, n, m).detach().double().numpy(), compute_uv=False)

    expected = [np.linalg.norm(sv(other, n, m) - sv(base, n, m)) for n, m in zip(o.layer, o.matrix)]
    np.testing.assert_allclose(o.d, expected, rtol=1e-10)
    assert (o.d > 1e-6).all()
    # Triangle inequality: d >= | ||sigma_model|| - ||sigma_base|| |.
    assert (o.d >= (o.sigma_norm - b.sigma_norm).abs() - 1e-12).all()


@pytest.mark.fault
def test_svd_table_one_layer_and_errors():
    a, b = tiny_mbart(), tiny_mbart()
    df = svd.svd_table({"a": a, "b": b}, base="a", layer=3)
    assert set(df.layer) == {3} and len(df) == 12
    with pytest.raises(XLError, match="base model 'z'"):
        svd.svd_table({"a": a}, base="z")
    wider = MBartForConditionalGeneration(_seq2seq(MBartConfig, ffn=2 * FFN))
    with pytest.raises(XLError, match="differ in shape"):
        svd.svd_table({"a": a, "wide": wider}, base="a", layer=1)
    with pytest.raises(XLError, match="different encoder layers"):
        svd.svd_table({"a": a, "bert": tiny_bert()}, base="a")


def test_table2_layout_matches_long_table():
    a, b = tiny_m2m100(), tiny_m2m100()
    df = svd.svd_table({"a": a, "b": b}, base="a")
    wide = svd.table2_layout(df, layer=2)
    assert list(wide.index) == ["a", "b"]
    assert list(wide.columns) == [(m, stat) for m in svd.MATRICES for stat in (svd.NORM, svd.DIST)]
    row = df[(df.model == "b") & (df.layer == 2) & (df.matrix == "FC up")].iloc[0]
    assert wide.loc["b", ("FC up", svd.NORM)] == row.sigma_norm
    assert wide.loc["b", ("FC up", svd.DIST)] == row.d
    assert pd.isna(wide.loc["a", ("K", svd.DIST)])
    with pytest.raises(XLError, match="layer 9"):
        svd.table2_layout(df, layer=9)


def test_paper_table2_layout_and_triangle_inequality():
    paper = svd.paper_table2()
    raw = pd.read_csv(svd.data_file("paper_table2_svd.csv"))
    assert list(paper.index) == ["mBART", "mBART m2m", "mBART m2o", "mBART o2m"]
    assert paper.loc["mBART o2m", ("FC up", svd.NORM)] == 116.17
    assert paper.loc["mBART m2m", ("K", svd.DIST)] == 4.23
    assert paper.shape == (4, 12) and paper.loc["mBART"].xs(svd.DIST, level=1).isna().all()
    base = raw[raw.model == "mBART"].set_index("matrix").sigma_norm
    cp = raw[raw.model != "mBART"]
    gap = (cp.sigma_norm.to_numpy() - base.loc[cp.matrix].to_numpy())
    # The paper's numbers are rounded to 0.01 (two of them per difference).
    assert (cp.d.to_numpy() >= np.abs(gap) - 0.02).all()


@pytest.mark.fault
def test_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda: False)
    with pytest.raises(XLError, match="'no-such-org/no-such-model'.*Hugging Face Hub"):
        svd.encoder_matrices("no-such-org/no-such-model")

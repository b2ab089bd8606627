import copy
from pathlib import Path

import jupytext
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel, MBartConfig, MBartForConditionalGeneration

from xl.analysis import bootstrap, svd
from xl.analysis import weight_change as wc
from xl.core.errors import XLError
from xl.training import lab

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parent.parent
H, FFN = 32, 64


def tiny_mbart(ffn=FFN, layers=2):
    return MBartForConditionalGeneration(MBartConfig(
        vocab_size=64, max_position_embeddings=64, d_model=H, encoder_layers=layers, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=ffn, decoder_ffn_dim=FFN))


def numpy_measures(W, R):
    """The change measures written out in numpy, independently of the library."""
    D = W - R
    s = np.linalg.svd(D, compute_uv=False)
    p = s / s.sum()
    return {"change_norm": np.sqrt((D ** 2).sum()), "relative_change": np.sqrt((D ** 2).sum() / (R ** 2).sum()),
            "cosine": (W * R).sum() / np.sqrt((W ** 2).sum() * (R ** 2).sum()),
            "sigma_norm_change": np.sqrt((W ** 2).sum() / (R ** 2).sum()) - 1,
            "change_top_sigma": s.max(), "change_effective_rank": np.exp(-np.sum(p * np.log(p)))}


# ---- one matrix ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 6), (9, 4)])
def test_compare_matches_numpy(shape):
    rng = np.random.default_rng(0)
    R = rng.normal(size=shape)
    W = 1.1 * R + 0.3 * rng.normal(size=shape)
    measures, sigma = wc.compare(torch.tensor(W), torch.tensor(R))
    for key, expected in numpy_measures(W, R).items():
        assert measures[key] == pytest.approx(expected, rel=1e-10), key
    np.testing.assert_allclose(sigma, np.linalg.svd(W - R, compute_uv=False), rtol=1e-10)
    assert 0 < measures["cosine"] < 1 and 1 < measures["change_effective_rank"] < min(shape)


def test_effective_rank_of_known_spectra():
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    V, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    s = np.array([4.0, 2.0, 1.0, 1.0, 0.0])
    D = U[:, :5] @ np.diag(s) @ V.T  # a change with exactly this spectrum
    R = np.eye(8, 5)  # any reference: the change is D
    measures, _ = wc.compare(D + R, R)
    p = np.array([4, 2, 1, 1]) / 8
    assert measures["change_effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert measures["change_top_sigma"] == pytest.approx(4.0, rel=1e-12)
    assert wc.effective_rank([3.0, 0, 0]) == pytest.approx(1.0)  # rank one
    assert wc.effective_rank(np.ones(7)) == pytest.approx(7.0)  # flat spectrum: the full rank
    assert np.isnan(wc.effective_rank(np.zeros(4)))


def test_scaling_and_self_comparison():
    R = np.random.default_rng(2).normal(size=(7, 5))
    c = 1.5
    scaled, _ = wc.compare(c * R, R)
    assert scaled["sigma_norm_change"] == pytest.approx(c - 1, rel=1e-12)
    assert scaled["relative_change"] == pytest.approx(c - 1, rel=1e-12)
    assert scaled["cosine"] == pytest.approx(1.0, rel=1e-12)
    assert scaled["change_effective_rank"] == pytest.approx(wc.effective_rank(np.linalg.svd(R, compute_uv=False)))
    same, sigma = wc.compare(R, R)
    assert same["change_norm"] == 0 and same["relative_change"] == 0 and same["sigma_norm_change"] == 0
    assert same["cosine"] == pytest.approx(1.0) and not sigma.any() and np.isnan(same["change_effective_rank"])


@pytest.mark.fault
def test_compare_rejects_bad_input():
    with pytest.raises(XLError, match="shapes"):
        wc.compare(np.ones((3, 4)), np.ones((4, 3)))
    with pytest.raises(XLError, match="zero"):
        wc.compare(np.ones((3, 3)), np.zeros((3, 3)))
    with pytest.raises(XLError, match="NaN"):
        wc.compare(np.full((2, 2), np.nan), np.ones((2, 2)))


def test_init_norm():
    rng = np.random.default_rng(3)
    d = 128
    drawn = np.linalg.norm(rng.normal(scale=d ** -0.5, size=(d, d)))
    assert wc.init_norm((d, d), d ** -0.5) == pytest.approx(np.sqrt(d))
    assert drawn == pytest.approx(wc.init_norm((d, d), d ** -0.5), rel=0.02)
    assert wc.init_std(tiny_mbart()) == MBartConfig().init_std


# ---- whole encoders --------------------------------------------------------------------------------

def test_change_tables_of_encoders():
    torch.manual_seed(0)
    base, other = tiny_mbart(), tiny_mbart()
    scaled = copy.deepcopy(base)
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(4.0)  # exact in float32
    table, spectra = wc.change_tables({"base": base, "scaled": scaled, "other": other, "unrefd": other},
                                      {"base": ("itself", base), "scaled": ("base base", base), "other": base})
    assert list(table.columns) == wc.COLUMNS and len(table) == 3 * 2 * 6
    assert list(dict.fromkeys(table.model)) == ["base", "scaled", "other"]  # no reference: left out
    assert set(table[table.model == "other"].reference) == {"init"}  # not in the registry: not continued
    same, four = table[table.model == "base"], table[table.model == "scaled"]
    assert (same.change_norm == 0).all() and same.change_effective_rank.isna().all()
    np.testing.assert_allclose(four.sigma_norm_change, 3.0, rtol=1e-6)
    np.testing.assert_allclose(four.cosine, 1.0, rtol=1e-6)
    mats, refs = svd.encoder_matrices(other), svd.encoder_matrices(base)
    for row in table[table.model == "other"].itertuples():
        W, R = (m[(row.layer, row.matrix)].double().numpy() for m in (mats, refs))
        expected = numpy_measures(W, R)
        for key in ("change_norm", "relative_change", "cosine", "sigma_norm_change", "change_effective_rank"):
            assert getattr(row, key) == pytest.approx(expected[key], rel=1e-9), (row.layer, row.matrix, key)
        got = spectra.query("model == 'other' and layer == @row.layer and matrix == @row.matrix").sigma
        np.testing.assert_allclose(got, np.linalg.svd(W - R, compute_uv=False), rtol=1e-9, atol=1e-12)
    assert wc.change_table({"a": other}, {"a": base}, layer=2).layer.unique().tolist() == [2]


def test_reference_names_from_the_registry():
    assert wc.reference_name("lab-m2o") == "base lab-dae"
    assert wc.reference_name("lab-dae-cont") == "base lab-dae"
    assert wc.reference_name("mBART o2m") == "base mBART"
    assert wc.reference_name("lab-mt") == "init"


@pytest.mark.fault
def test_change_tables_reject_bad_input():
    a = tiny_mbart()
    with pytest.raises(XLError, match="unknown models"):
        wc.change_tables({"a": a}, {"b": a})
    with pytest.raises(XLError, match="shapes"):
        wc.change_tables({"a": a}, {"a": tiny_mbart(ffn=2 * FFN)})
    with pytest.raises(XLError, match="different encoder layers"):
        wc.change_tables({"a": a}, {"a": tiny_mbart(layers=3)})
    bert = BertModel(BertConfig(vocab_size=64, hidden_size=H, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=FFN))
    with pytest.raises(XLError, match="BertModel"):  # same shapes, another architecture
        wc.change_tables({"a": a}, {"a": bert})


def test_references_of_the_lab(monkeypatch, cfg):
    made = []
    monkeypatch.setattr(wc, "lab_model", lambda name, cfg: Path(f"/models/{name}"))
    monkeypatch.setattr(lab, "initial_model", lambda name, cfg: made.append(name) or f"init of {name}")
    refs = wc.references({**cfg, "models": ["lab-mlm", "lab-m2o", "lab-mt", "lab-dae-cont"]})
    assert refs == {"lab-mlm": ("init", "init of lab-mlm"), "lab-m2o": ("base lab-dae", "/models/lab-dae"),
                    "lab-mt": ("init", "init of lab-mt"), "lab-dae-cont": ("base lab-dae", "/models/lab-dae")}
    assert made == ["lab-mlm", "lab-mt"]
    paper = wc.references({**cfg, "models": ["./models/mbart-large-50", "facebook/mbart-large-50-one-to-many-mmt",
                                             "facebook/nllb-200-distilled-600M"]})
    assert paper == {"mBART o2m": ("base mBART", "./models/mbart-large-50")}  # the preset's own copy of the base


# ---- the initial weights of a lab model --------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["lab-mlm", "lab-dae", "lab-mt"])
def test_initial_model_is_what_training_starts_from(monkeypatch, cfg, name):
    class Started(Exception):
        pass

    seen = {}

    def fit(model, *args, **kwargs):
        inner = lab.unwrap(model)
        seen.update({k: v.clone() for k, v in inner.state_dict().items()})
        raise Started

    monkeypatch.setattr(lab, "fit", fit)
    with pytest.raises(Started):
        lab.lab_model(name, cfg, force=True)
    torch.manual_seed(123)  # the rebuild seeds itself: the state before it does not matter
    rebuilt = lab.initial_model(name, cfg).state_dict()
    assert rebuilt.keys() == seen.keys()
    assert all(torch.equal(rebuilt[k], seen[k]) for k in seen)
    other = lab.initial_model(name, {**cfg, "seed": cfg["seed"] + 1}).state_dict()
    assert not all(torch.equal(other[k], seen[k]) for k in seen)  # the comparison can fail


@pytest.mark.fault
def test_initial_model_only_for_models_trained_from_scratch(cfg):
    with pytest.raises(XLError, match="starts from lab-dae"):
        lab.initial_model("lab-m2o", cfg)
    with pytest.raises(XLError, match="unknown lab model"):
        lab.initial_model("lab-xyz", cfg)


# ---- estimates for the verdict ----------------------------------------------------------------------

def svd_rows(norms: dict) -> pd.DataFrame:
    """A synthetic svd_table: model -> ||sigma|| per (layer, matrix) unit, 2 layers x 6 matrices."""
    units = [(n, m) for n in (1, 2) for m in svd.MATRICES]
    return pd.DataFrame([{"model": model, "layer": n, "matrix": m, "sigma_norm": v, "d": np.nan}
                         for model, values in norms.items() for (n, m), v in zip(units, values)])


def test_scaling_estimates_against_the_control():
    rng = np.random.default_rng(4)
    base = rng.uniform(10, 20, 12)
    norms = {"lab-dae": base, "lab-m2o": base * rng.uniform(1.0, 1.1, 12),
             "lab-dae-cont": base * rng.uniform(0.95, 1.05, 12), "lab-mt": rng.uniform(10, 20, 12)}
    est, reps = wc.scaling_estimates(svd_rows(norms), "lab-dae", n_boot=50, seed=3)
    assert list(est.index) == ["lab-dae-cont", "lab-m2o"]  # lab-mt does not continue lab-dae; the base is not needed
    for model in est.index:
        relative = norms[model] / base - 1
        assert est[model] == pytest.approx(relative.mean(), rel=1e-12)
        # the units are sorted (layer, matrix) in the table: resample that order
        order = svd_rows({model: relative}).sort_values(["layer", "matrix"]).sigma_norm.to_numpy()
        idx = bootstrap.resamples(12, 50, 3)
        np.testing.assert_allclose(reps[model], order[idx].mean(axis=1), rtol=1e-12)
    assert reps.shape == (50, 2)


def test_scaling_estimates_without_a_control_use_the_base():
    base = np.linspace(10, 20, 12)
    est, reps = wc.scaling_estimates(svd_rows({"mBART": base, "mBART o2m": 1.25 * base}), "mBART", n_boot=20)
    assert est.to_dict() == pytest.approx({"mBART": 0.0, "mBART o2m": 0.25})
    assert (reps["mBART"] == 0).all() and np.allclose(reps["mBART o2m"], 0.25)


@pytest.mark.fault
def test_scaling_estimates_reject_bad_input():
    base = np.linspace(10, 20, 12)
    with pytest.raises(XLError, match="base 'lab-dae'"):
        wc.scaling_estimates(svd_rows({"lab-m2o": base}), "lab-dae")
    short = svd_rows({"lab-dae": base, "lab-m2o": base}).iloc[:-1]
    with pytest.raises(XLError, match="lack"):
        wc.scaling_estimates(short, "lab-dae")
    with pytest.raises(XLError, match="unknown change measure"):
        wc.change_estimates(pd.DataFrame(columns=wc.COLUMNS), "size")


def test_change_estimates_pair_the_units():
    torch.manual_seed(1)
    a, b, base = tiny_mbart(), tiny_mbart(), tiny_mbart()
    table = wc.change_table({"a": a, "b": b}, {"a": base, "b": base})
    est, reps = wc.change_estimates(table, n_boot=30, seed=0)
    assert est.to_dict() == pytest.approx(table.groupby("model").relative_change.mean().to_dict())
    assert reps.shape == (30, 2) and reps.std().gt(0).all()
    with pytest.raises(XLError, match="same"):
        wc.change_estimates(table.iloc[1:])


# ---- the chapter's method cell of the change measure ------------------------------------------------

def test_change_method_cell_numpy_and_library_agree():
    cells = [c for c in jupytext.read(REPO / "notebooks" / "weights.md").cells
             if c.cell_type == "code" and "method-change" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    ns = {}
    exec(compile(cells[0].source, "weights.md:method-change", "exec"), ns)
    ours, library = np.asarray(ns["ours"], float), np.asarray(ns["library"], float)
    assert ours.shape == library.shape and np.allclose(ours, library, rtol=1e-9, atol=0)
    assert 0 < ours[0] and 1 < ours[-1]  # a real change, spread over more than one direction

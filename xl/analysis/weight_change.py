"""How far training moved each encoder matrix: the change W - W_ref, not the norm of W.

In the lab, ||sigma|| = ||W||_F is mostly set by initialisation: a d x d matrix drawn with std
d^-1/2 has ||W||_F close to sqrt(d) (11.3 for d = 128), and a few hundred steps change that
by a fraction of a percent while the matrix turns away from where it started. So each matrix
is compared with its reference W_ref, the same layer and role of:
- the base model, for a model continued from it (the CP models, lab-dae-cont, mBART's MT models);
- the model's own initial weights, for a lab model trained from scratch (`lab.initial_model`).

Per matrix: ||W - W_ref||_F, the relative change ||W - W_ref||_F / ||W_ref||_F, the cosine between
vec(W) and vec(W_ref), the relative change of the norm (||W|| - ||W_ref||) / ||W_ref|| (the paper's
measure, relative), and the spectrum of W - W_ref: its largest singular value and its effective
rank exp(H(p)), p_i = sigma_i / sum_j sigma_j (Roy & Vetterli 2007): 1 for a rank-one change, the
number of singular values for a change spread evenly over all of them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from xl.analysis import bootstrap, svd
from xl.core.errors import XLError
from xl.models import registry
from xl.training import lab, lab_model

COLUMNS = ["model", "reference", "layer", "matrix", "sigma_norm", "ref_sigma_norm", "change_norm",
           "relative_change", "cosine", "sigma_norm_change", "change_top_sigma", "change_effective_rank"]
INIT = "init"


def effective_rank(sigma) -> float:
    """Roy & Vetterli's effective rank exp(-sum p log p), p = sigma / sum(sigma); NaN for a zero matrix."""
    s = np.asarray(sigma, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return float("nan")
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def init_norm(shape, std: float) -> float:
    """The Frobenius norm a matrix of `shape` with i.i.d. entries of std `std` has (to within a few
    percent of 1/sqrt(entries)): std * sqrt(rows * cols)."""
    rows, cols = shape
    return float(std * np.sqrt(rows * cols))


def init_std(model) -> float:
    """The std a model's weights were initialised with, from its config (mBART: init_std; BERT, XLM-R:
    initializer_range)."""
    config = svd.load(model).config
    for key in ("init_std", "initializer_range"):
        if getattr(config, key, None) is not None:
            return float(getattr(config, key))
    raise XLError(f"the config of {type(config).__name__} names no initialisation std")


def init_norms(model, layer: int | None = None) -> pd.DataFrame:
    """What a freshly initialised copy of `model` would have: layer, matrix, shape, init_std and
    random_init_norm (`init_norm` of each encoder matrix's shape with the std of the model's config)."""
    std = init_std(model)
    return pd.DataFrame([{"layer": n, "matrix": m, "shape": "x".join(map(str, w.shape)), "init_std": std,
                          "random_init_norm": init_norm(tuple(w.shape), std)}
                         for (n, m), w in svd.encoder_matrices(model, layer).items()])


def reference_name(label: str) -> str:
    """'base <label>' for a model continued from a base, 'init' otherwise."""
    entry = registry.spec(label)
    return f"base {entry.base}" if entry and entry.base else INIT


def compare(W, W_ref) -> tuple[dict, np.ndarray]:
    """The change measures of one matrix against its reference, and the singular values of W - W_ref."""
    w = torch.as_tensor(W).detach().to(torch.float64)
    ref = torch.as_tensor(W_ref).detach().to(torch.float64)
    if w.shape != ref.shape:
        raise XLError(f"cannot compare matrices of shapes {tuple(w.shape)} and {tuple(ref.shape)}")
    sigma = svd.singular_values(w - ref)
    norm, ref_norm, change = (float(torch.linalg.norm(m)) for m in (w, ref, w - ref))
    if ref_norm == 0:
        raise XLError("the reference matrix is zero: a relative change is undefined")
    cosine = float((w * ref).sum()) / (norm * ref_norm) if norm else float("nan")
    return {"sigma_norm": norm, "ref_sigma_norm": ref_norm, "change_norm": change,
            "relative_change": change / ref_norm, "cosine": cosine,
            "sigma_norm_change": (norm - ref_norm) / ref_norm, "change_top_sigma": float(sigma[0]),
            "change_effective_rank": effective_rank(sigma)}, sigma


def _reference(value) -> tuple[str | None, object]:
    """A refs value: a model/folder, or (name, model/folder) naming the reference explicitly."""
    return value if isinstance(value, tuple) else (None, value)


def _base(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "base_model", model)


def change_tables(models: dict, refs: dict, layer: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, spectra) of W - W_ref for every model of `refs`.

    models: label -> loaded model, folder or hub id; refs: label -> its reference (model, folder or hub
    id; or a pair (name, reference) to set the `reference` column, else 'base X' / 'init' from the
    registry). Models without a reference are left out. table: COLUMNS; spectra: model, layer, matrix,
    index, sigma (the singular values of W - W_ref, for widgets.svd_explorer).
    """
    unknown = [label for label in refs if label not in models]
    if unknown:
        raise XLError(f"references given for unknown models {unknown}; models: {list(models)}")
    rows, spectra = [], []
    for label, value in refs.items():
        name, ref = _reference(value)
        name = name or reference_name(label)
        model, ref = svd.load(models[label]), svd.load(ref)
        if type(_base(model)) is not type(_base(ref)):
            raise XLError(f"{label!r} is a {type(_base(model)).__name__} but its reference ({name}) a "
                          f"{type(_base(ref)).__name__}: a change is measured within one architecture")
        mats, ref_mats = svd.encoder_matrices(model, layer), svd.encoder_matrices(ref, layer)
        if mats.keys() != ref_mats.keys():
            raise XLError(f"{label!r} and its reference ({name}) have different encoder layers")
        for (n, matrix), w in mats.items():
            try:
                measures, sigma = compare(w, ref_mats[(n, matrix)])
            except XLError as err:
                raise XLError(f"{label!r}, layer {n} {matrix} against {name}: {err}") from None
            rows.append({"model": label, "reference": name, "layer": n, "matrix": matrix, **measures})
            spectra.append(pd.DataFrame({"model": label, "layer": n, "matrix": matrix,
                                         "index": np.arange(1, len(sigma) + 1), "sigma": sigma}))
    spectra_df = (pd.concat(spectra, ignore_index=True) if spectra else
                  pd.DataFrame(columns=["model", "layer", "matrix", "index", "sigma"]))
    return pd.DataFrame(rows, columns=COLUMNS), spectra_df


def change_table(models: dict, refs: dict, layer: int | None = None) -> pd.DataFrame:
    """The table of `change_tables` (one row per model, layer and matrix)."""
    return change_tables(models, refs, layer)[0]


def sources(cfg: dict) -> dict:
    """label -> folder (lab models, trained or reused) or hub id/folder (paper models) of the preset's models."""
    return {registry.label(n): str(lab_model(n, cfg)) if registry.is_lab(n) else n for n in cfg["models"]}


def references(cfg: dict) -> dict:
    """label -> (reference name, reference) of the preset's models that have one: the base of a model
    continued from it (its folder for a lab base; for a paper base the preset's own copy if listed, else
    its hub id), the initial network of a lab model trained from scratch. Paper models trained from
    scratch (no init to compare) have none."""
    listed = {registry.label(n): n for n in cfg["models"]}
    out = {}
    for label in listed:
        entry = registry.spec(label)
        if entry is None:
            continue
        if entry.base:
            base = (lab_model(entry.base, cfg) if registry.is_lab(entry.base) else
                    listed.get(entry.base, registry.PAPER_MODELS[entry.base]))
            out[label] = (f"base {entry.base}", str(base))
        elif entry.is_lab:
            out[label] = (INIT, lab.initial_model(label, cfg))
    return out


# ---- per-model estimates with a bootstrap over the (layer, matrix) units --------------------------

def _unit_estimates(per_unit: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.Series, pd.DataFrame]:
    """per_unit: rows (layer, matrix) units, columns models. The mean over units per model, and the means
    over the same resampled units for every model (rows replicate, columns model)."""
    values = per_unit.to_numpy(dtype=float)
    idx = bootstrap.resamples(len(per_unit), n_boot, seed)
    replicates = pd.DataFrame(values[idx].mean(axis=1), columns=per_unit.columns)
    replicates.index.name = "replicate"
    return per_unit.mean(), replicates


def continued_from(base: str, labels) -> list[str]:
    """The labels among `labels` of models the registry says continue `base`."""
    base = registry.label(base)
    return [m for m in labels if registry.spec(m) and registry.spec(m).base == base]


def scaling_estimates(svd_table: pd.DataFrame, base: str, n_boot: int = bootstrap.N_BOOT,
                      seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """The paper's scaling finding as one number per model: the mean over (layer, matrix) units of
    (||sigma|| - ||sigma_base||) / ||sigma_base||, for every model continued from `base`.

    The LM side is the LM-family models continued from the base without MT (lab-dae-cont, the
    equal-compute control) if the table has any, else the base itself (change 0). Returns (estimate
    per model, replicates: rows replicate, columns model), the replicates resampling the units (the
    same resamples for every model), for xl.analysis.verdict.decide.
    """
    if base not in set(svd_table.model):
        raise XLError(f"base {base!r} is not in the SVD table; models: {list(dict.fromkeys(svd_table.model))}")
    wide = svd_table.pivot(index=["layer", "matrix"], columns="model", values="sigma_norm")
    continued = continued_from(base, [m for m in wide.columns if m != base])
    controls = [m for m in continued if registry.family(m) == "LM"]
    kept = continued if controls else [base] + continued
    missing = wide[kept].isna().any()
    if missing.any():
        raise XLError(f"{list(missing[missing].index)} lack (layer, matrix) units the base {base!r} has")
    relative = wide[kept].div(wide[base], axis=0) - 1
    return _unit_estimates(relative, n_boot, seed)


def change_estimates(table: pd.DataFrame, measure: str = "relative_change", n_boot: int = bootstrap.N_BOOT,
                     seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """A column of a change table as one number per model (mean over (layer, matrix) units), with
    replicates resampling the units (the same resamples for every model)."""
    if measure not in COLUMNS[4:]:
        raise XLError(f"unknown change measure {measure!r}; choose one of {COLUMNS[4:]}")
    per_unit = table.groupby(["layer", "matrix"]).model.nunique()
    if (per_unit != table.model.nunique()).any():
        raise XLError("the models of the change table do not share the same (layer, matrix) units")
    wide = table.pivot(index=["layer", "matrix"], columns="model", values=measure)
    return _unit_estimates(wide[list(dict.fromkeys(table.model))], n_boot, seed)

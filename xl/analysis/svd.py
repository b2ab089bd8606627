"""Singular values of encoder weight matrices (the paper's Table 2).

For each encoder layer we take K, Q, V, the attention output (Out) and the two
feed-forward matrices (FC up, FC down). `||sigma||` is the L2 norm of the
singular values (= the Frobenius norm of W); `d` is the L2 distance between a
model's sorted singular values and the base model's, same layer and matrix.
Layers are numbered from 1, as in the paper ("12th layer" = layer 12).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from transformers import (AutoModel, BertModel, M2M100Model, MBartModel, PreTrainedModel,
                          XLMRobertaModel)
from transformers.models.m2m_100.modeling_m2m_100 import M2M100Encoder
from transformers.models.mbart.modeling_mbart import MBartEncoder

from xl.core.errors import XLError
from xl.core.paths import data_file
from xl.models.encoder import locate, quiet_transformers

MATRICES = ["K", "Q", "V", "Out", "FC up", "FC down"]
NORM, DIST = "||sigma||", "d"

# Module paths inside one encoder layer, per layer layout.
BERT_LAYER = {"K": "attention.self.key", "Q": "attention.self.query", "V": "attention.self.value",
              "Out": "attention.output.dense", "FC up": "intermediate.dense", "FC down": "output.dense"}
BART_LAYER = {"K": "self_attn.k_proj", "Q": "self_attn.q_proj", "V": "self_attn.v_proj",
              "Out": "self_attn.out_proj", "FC up": "fc1", "FC down": "fc2"}

# (base-model classes, how to reach the encoder layers, layer layout). Task heads
# (ForMaskedLM, ForConditionalGeneration...) are reduced to their base model first.
ARCHITECTURES = [
    ((BertModel, XLMRobertaModel), lambda m: m.encoder.layer, BERT_LAYER),
    ((MBartModel, M2M100Model), lambda m: m.encoder.layers, BART_LAYER),  # encoder only, as the paper
    ((MBartEncoder, M2M100Encoder), lambda m: m.layers, BART_LAYER),
]


def load(model_or_path) -> torch.nn.Module:
    """A loaded model as is; a lab name, folder or hub id through AutoModel (located as every model is)."""
    if isinstance(model_or_path, torch.nn.Module):
        return model_or_path
    quiet_transformers()
    source, _, local_only = locate(str(model_or_path))
    return AutoModel.from_pretrained(source, local_files_only=local_only)


def _layers(model: torch.nn.Module):
    base = model.base_model if isinstance(model, PreTrainedModel) else model
    for classes, get_layers, layout in ARCHITECTURES:
        if isinstance(base, classes):
            return list(get_layers(base)), layout
    supported = ", ".join(c.__name__ for classes, _, _ in ARCHITECTURES for c in classes)
    raise XLError(f"SVD analysis does not support {type(model).__name__} (base {type(base).__name__}); "
                  f"supported: {supported} and their task heads")


def encoder_matrices(model, layer: int | None = None) -> dict[tuple[int, str], torch.Tensor]:
    """{(layer, matrix): weight} for every encoder layer (1-based) or just `layer`, in paper order."""
    layers, layout = _layers(load(model))
    numbers = range(1, len(layers) + 1) if layer is None else [_check_layer(layer, len(layers), model)]
    return {(n, name): layers[n - 1].get_submodule(layout[name]).weight.detach()
            for n in numbers for name in MATRICES}


def _check_layer(layer, n_layers, model) -> int:
    if not 1 <= int(layer) <= n_layers:
        label = type(model).__name__ if isinstance(model, torch.nn.Module) else str(model)
        raise XLError(f"layer {layer} does not exist: {label} has encoder layers 1..{n_layers}")
    return int(layer)


def _torch_svdvals(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(w)


def _torch_gesvd(w: torch.Tensor) -> torch.Tensor:
    # Only CUDA lets us choose the driver; gesvd is slower than the default but converges more often.
    if w.device.type != "cuda":
        raise RuntimeError("the gesvd driver of torch needs CUDA")
    return torch.linalg.svd(w, full_matrices=False, driver="gesvd").S


def _scipy_gesvd(w: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(scipy.linalg.svd(w.cpu().numpy(), compute_uv=False, lapack_driver="gesvd"))


# Tried in order: the first that converges wins.
DRIVERS = [_torch_svdvals, _torch_gesvd, _scipy_gesvd]


def singular_values(W) -> np.ndarray:
    """Singular values of a matrix, float64, sorted descending; falls back on other SVD drivers."""
    w = torch.as_tensor(W).detach().to(torch.float64)
    if w.ndim != 2:
        raise XLError(f"singular_values needs a matrix, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise XLError("the matrix has NaN or infinite entries: the checkpoint is probably corrupt")
    errors = []
    for driver in DRIVERS:
        try:
            s = driver(w).cpu().numpy().astype(np.float64)
        except (RuntimeError, np.linalg.LinAlgError, ValueError) as e:
            errors.append(f"{driver.__name__}: {e}")
            continue
        return np.sort(s)[::-1].copy()
    raise XLError("SVD did not converge with any driver: " + "; ".join(errors))


def _spectra(model, layer) -> dict[tuple[int, str], tuple[tuple[int, int], np.ndarray]]:
    """{(layer, matrix): (shape, singular values)}, loading the model only for this call."""
    return {key: (tuple(w.shape), singular_values(w)) for key, w in encoder_matrices(model, layer).items()}


def spectra(model, layer: int | None = None) -> pd.DataFrame:
    """Singular values of every encoder matrix: columns layer, matrix, index (1 = largest), sigma."""
    return pd.concat([pd.DataFrame({"layer": n, "matrix": name, "index": np.arange(1, len(s) + 1), "sigma": s})
                      for (n, name), (_, s) in _spectra(model, layer).items()], ignore_index=True)


def svd_table(models: dict, base: str, layer: int | None = None) -> pd.DataFrame:
    """Table 2 in long form: model, layer, matrix, sigma_norm, d (NaN for the base itself).

    models: label -> loaded model, folder or hub id (loaded one at a time).
    """
    if base not in models:
        raise XLError(f"base model {base!r} is not among the models: {list(models)}")
    ref = _spectra(models[base], layer)
    rows = []
    for label, model in models.items():
        spec = ref if label == base else _spectra(model, layer)
        if spec.keys() != ref.keys():
            raise XLError(f"{label!r} and base {base!r} have different encoder layers: "
                          f"{_n_layers(spec)} vs {_n_layers(ref)}")
        for (n, name), (shape, s) in spec.items():
            ref_shape, ref_s = ref[(n, name)]
            if shape != ref_shape:
                raise XLError(f"{name} of layer {n} is {shape} in {label!r} but {ref_shape} in base "
                              f"{base!r}: the matrices differ in shape")
            d = np.nan if label == base else float(np.linalg.norm(s - ref_s))
            rows.append({"model": label, "layer": n, "matrix": name, "sigma_norm": float(np.linalg.norm(s)), "d": d})
    return pd.DataFrame(rows)


def _n_layers(spec) -> int:
    return len({n for n, _ in spec})


def table2_layout(df: pd.DataFrame, layer: int) -> pd.DataFrame:
    """One layer of an svd_table as the paper's Table 2: rows models, columns (matrix, ||sigma|| / d)."""
    part = df[df.layer == layer]
    if part.empty:
        raise XLError(f"no rows for layer {layer}; layers present: {sorted(df.layer.unique().tolist())}")
    models = list(dict.fromkeys(part.model))
    wide = part.pivot(index="model", columns="matrix", values=["sigma_norm", "d"])
    wide = wide.rename(columns={"sigma_norm": NORM, "d": DIST}, level=0).swaplevel(axis=1)
    columns = pd.MultiIndex.from_product([[m for m in MATRICES if m in set(part.matrix)], [NORM, DIST]])
    out = wide.reindex(index=models, columns=columns)
    out.index.name, out.columns.names = "model", ["matrix", ""]
    return out


def paper_table2() -> pd.DataFrame:
    """The paper's Table 2 (12th encoder layer, base mBART) in the layout of `table2_layout`."""
    df = pd.read_csv(data_file("paper_table2_svd.csv"))
    return table2_layout(df.assign(layer=12), 12)

"""Representations of every model of a preset on the same aligned sentences, and the tables
the similarity chapter is made of (language x language, model x model, separability)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from xl import training
from xl.analysis import separability, similarity, svd
from xl.core.errors import XLError
from xl.data import corpus
from xl.models import registry
from xl.models.encoder import Encoder, load_encoder

LANGUAGE_METRICS = ["linear_cka", "linear_cka_debiased", "retrieval"]


def sentences(cfg: dict) -> pd.DataFrame:
    """`analysis_verses` aligned sentences (rows) in every language of the preset (columns).

    Bible: held-out (test-split) verses, a seeded sample; paper preset: FLORES-200 devtest.
    """
    n = cfg["analysis_verses"]
    if cfg["corpus"] == "bible":
        wide = corpus.parallel(corpus.bible_frame(cfg["languages"], books=cfg["books"]), cfg["languages"], split="test")
        return wide.sample(min(n, len(wide)), random_state=cfg["seed"]).sort_index()
    return corpus.load_flores(cfg["languages"], local_dir=cfg["flores_dir"]).head(n)


def encoder(name: str, cfg: dict) -> Encoder:
    """Load a model's encoder; lab models are trained first if they are not yet (cached)."""
    if registry.is_lab(name):
        training.lab_model(name, cfg)
    return load_encoder(name, preset=cfg["preset"])


def representations(name: str, cfg: dict, sents: pd.DataFrame) -> np.ndarray:
    """(layers + 1, languages, sentences, hidden) mean-pooled representations (cached on disk)."""
    enc = encoder(name, cfg)
    return np.stack([enc.encode(sents[lang].tolist(), lang) for lang in sents.columns], axis=1)


def all_representations(cfg: dict, sents: pd.DataFrame, names=None) -> dict[str, np.ndarray]:
    names = list(names or cfg["models"])
    return {registry.label(n): representations(n, cfg, sents) for n in tqdm(names, desc="representations")}


def shuffled(reps: np.ndarray, seed: int) -> np.ndarray:
    """Each language's sentences in its own random order: pairs become unrelated sentences."""
    rng = np.random.default_rng(seed)
    return np.stack([reps[:, i, rng.permutation(reps.shape[2])] for i in range(reps.shape[1])], axis=1)


def language_similarity(reps_by_model: dict, langs, seed: int = 0) -> pd.DataFrame:
    """Tidy (model, layer, metric, lang_a, lang_b, value); `linear_cka_shuffled` is the unrelated baseline."""
    frames = []
    for model, reps in reps_by_model.items():
        layers = range(reps.shape[0])
        for metric in LANGUAGE_METRICS:
            frames.append(similarity.to_frame(similarity.language_matrix(reps, metric), layers, langs, metric, model))
        base = similarity.language_matrix(shuffled(reps, seed), "linear_cka")
        frames.append(similarity.to_frame(base, layers, langs, "linear_cka_shuffled", model))
    return pd.concat(frames, ignore_index=True)


def model_similarity(reps_by_model: dict, langs, metric: str = "linear_cka") -> pd.DataFrame:
    """Tidy (model_a, model_b, lang, layer_a, layer_b, metric, value) for every pair of models."""
    rows = []
    names = list(reps_by_model)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for k, lang in enumerate(langs):
                m = similarity.model_matrix(reps_by_model[a][:, k], reps_by_model[b][:, k], metric)
                la, lb = np.indices(m.shape)
                rows.append(pd.DataFrame({"model_a": a, "model_b": b, "lang": lang, "layer_a": la.ravel(),
                                          "layer_b": lb.ravel(), "metric": metric, "value": m.ravel()}))
    if not rows:
        raise XLError("model similarity needs at least two models")
    return pd.concat(rows, ignore_index=True)


def separability_table(reps_by_model: dict, langs, seed: int = 0) -> pd.DataFrame:
    return pd.concat([separability.separability_frame(r, langs, m, seed) for m, r in reps_by_model.items()],
                     ignore_index=True)


def cross_language_mean(sim: pd.DataFrame) -> pd.DataFrame:
    """Mean over language pairs (a != b) per model, layer and metric: one number per curve point."""
    off = sim[sim.lang_a != sim.lang_b]
    out = off.groupby(["model", "layer", "metric"], sort=False).value.mean().reset_index()
    out["family"] = out.model.map(registry.family)
    return out


def mbart_models(cfg: dict) -> dict[str, str]:
    """{label: folder or hub id} of the preset's models of mBART's architecture: the base encoder-decoder,
    the models continued from it, and lab-mt (trained from scratch in the same shape) (SVD)."""
    names = [n for n in cfg["models"] if registry.spec(n) and registry.spec(n).arch == "mbart"]
    out = {}
    for name in names:
        if registry.is_lab(name):
            out[registry.label(name)] = str(training.lab_model(name, cfg))
        else:
            out[registry.label(name)] = name
    return out


def spectra_table(family: dict[str, str]) -> "pd.DataFrame":
    """Singular values of every encoder matrix of every model: model, layer, matrix, index, sigma."""
    return pd.concat([svd.spectra(path).assign(model=label) for label, path in family.items()], ignore_index=True)

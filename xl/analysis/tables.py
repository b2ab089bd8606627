"""Representations of every model of a preset on the same aligned sentences, and the tables
the similarity chapter is made of (language x language, model x model, separability)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from xl import training
from xl.analysis import bootstrap, length, separability, similarity, svd
from xl.core.errors import XLError
from xl.data import corpus
from xl.models import registry
from xl.models.encoder import Encoder, common_languages, load_encoder

LANGUAGE_METRICS = ["linear_cka", "linear_cka_debiased", "retrieval"]
FINAL_NORM = True  # the last layer as the transfer heads read it: after mBART/NLLB's final layer norm


def sentences(cfg: dict) -> pd.DataFrame:
    """`analysis_verses` aligned sentences (rows) in every language of the preset (columns).

    Bible: held-out (test-split) verses, a seeded sample; paper preset: FLORES-200 devtest. Only the
    languages every model of the preset can encode, so that every model is averaged over the same
    languages (mBART-50 has no el or bg: with it, they go for every model).
    """
    n = cfg["analysis_verses"]
    languages = common_languages(cfg["models"], cfg["languages"], cfg["preset"])
    if cfg["corpus"] == "bible":
        wide = corpus.parallel(corpus.bible_frame(languages, books=cfg["books"]), languages, split="test")
        return wide.sample(min(n, len(wide)), random_state=cfg["seed"]).sort_index()
    return corpus.load_flores(languages, local_dir=cfg["flores_dir"]).head(n)


def encoder(name: str, cfg: dict) -> Encoder:
    """Load a model's encoder; lab models are trained first if they are not yet (cached)."""
    if registry.is_lab(name):
        training.lab_model(name, cfg)
    return load_encoder(name, preset=cfg["preset"])


def representations(name: str, cfg: dict, sents: pd.DataFrame, final_norm: bool = FINAL_NORM) -> np.ndarray:
    """(layers + 1, languages, sentences, hidden) mean-pooled representations (cached on disk); by
    default the last layer after the final layer norm of encoder-decoders (FINAL_NORM), as the
    transfer heads read it; final_norm=False: the raw residual stream there too."""
    enc = encoder(name, cfg)
    return np.stack([enc.encode(sents[lang].tolist(), lang, final_norm=final_norm) for lang in sents.columns],
                    axis=1)


def all_representations(cfg: dict, sents: pd.DataFrame, names=None, final_norm: bool = FINAL_NORM
                        ) -> dict[str, np.ndarray]:
    names = list(names or cfg["models"])
    return {registry.label(n): representations(n, cfg, sents, final_norm) for n in tqdm(names, desc="representations")}


def has_final_norm(name: str, cfg: dict) -> bool:
    """Whether a model's encoder ends in a layer norm of its own (mBART, NLLB: pre-LN), which the last
    layer can be read before or after."""
    return encoder(name, cfg).has_final_norm


def lengths(name: str, cfg: dict, sents: pd.DataFrame, batch_size: int = 256) -> np.ndarray:
    """(languages, sentences) pieces of each sentence in the model's own tokenizer that its mean pool
    averages (no special or language-code tokens, truncated as `Encoder.encode` truncates); no forward pass."""
    enc = encoder(name, cfg)
    out = np.zeros((len(sents.columns), len(sents)), dtype=np.int64)
    for i, lang in enumerate(sents.columns):
        texts = [str(t) for t in sents[lang]]
        for start in range(0, len(texts), batch_size):
            batch = enc.tokenize(texts[start:start + batch_size], lang)
            out[i, start:start + batch_size] = enc.pool_mask(batch).sum(1).cpu().numpy()
    return np.maximum(out, 1)  # the pool divides by at least 1 too: an empty sentence counts as one piece


def all_lengths(cfg: dict, sents: pd.DataFrame, names=None) -> dict[str, np.ndarray]:
    names = list(names or cfg["models"])
    return {registry.label(n): lengths(n, cfg, sents) for n in tqdm(names, desc="lengths")}


def shuffled(reps: np.ndarray, seed: int) -> np.ndarray:
    """Each language's sentences in its own random order: pairs become unrelated sentences."""
    rng = np.random.default_rng(seed)
    return np.stack([reps[:, i, rng.permutation(reps.shape[2])] for i in range(reps.shape[1])], axis=1)


def _log_lengths(reps: np.ndarray, lengths) -> torch.Tensor:
    """Validated log lengths (langs, n) of the sentences behind reps (layers, langs, n, d)."""
    return length.log_lengths(lengths, reps.shape[1:3], "lengths (langs, n)")


def length_shuffled(reps: np.ndarray, lengths: np.ndarray, seed: int) -> np.ndarray:
    """Each language's sentences re-paired with unrelated ones of similar length: orders drawn within
    buckets of the sentences' mean log length over languages (`length.length_matched_orders`)."""
    logs = _log_lengths(reps, lengths)
    orders = length.length_matched_orders(logs.mean(0), reps.shape[1], seed)
    return np.stack([reps[:, i, order] for i, order in enumerate(orders)], axis=1)


def length_controlled(reps: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(layers, langs, langs) linear CKA of every language pair after regressing each language's
    representations on its log lengths (langs, n); one layer at a time in float64."""
    logs = _log_lengths(reps, lengths)
    return np.concatenate([similarity.language_matrix(length.residualise(r, logs)[None]) for r in reps])


def _length_r2_frame(reps: np.ndarray, lengths: np.ndarray, langs, model: str) -> pd.DataFrame:
    r2 = np.array([[length.length_r2(x, n) for x, n in zip(layer, lengths)] for layer in reps])
    layer, lang = (g.ravel() for g in np.indices(r2.shape))
    langs = np.asarray(list(langs), dtype=object)
    return pd.DataFrame({"model": model, "layer": layer, "metric": "length_r2", "lang_a": langs[lang],
                         "lang_b": langs[lang], "value": r2.ravel()})


def _length_frames(reps: np.ndarray, lengths: np.ndarray, langs, model: str, seed: int) -> list[pd.DataFrame]:
    layers = range(reps.shape[0])
    return [similarity.to_frame(length_controlled(reps, lengths), layers, langs, "linear_cka_length_controlled", model),
            similarity.to_frame(similarity.language_matrix(length_shuffled(reps, lengths, seed)), layers, langs,
                                "linear_cka_length_shuffled", model),
            _length_r2_frame(reps, lengths, langs, model)]


def language_similarity(reps_by_model: dict, langs, seed: int = 0, lengths: dict | None = None) -> pd.DataFrame:
    """Tidy (model, layer, metric, lang_a, lang_b, value); `linear_cka_shuffled` is the unrelated baseline.

    With `lengths` ({model: (langs, n) pieces}) also `linear_cka_length_controlled` (CKA of what log
    length does not explain), `linear_cka_length_shuffled` (unrelated sentences of similar length) and
    `length_r2` (rows lang_a == lang_b: share of the variance explained by log length)."""
    frames = []
    for model, reps in reps_by_model.items():
        layers = range(reps.shape[0])
        for metric in LANGUAGE_METRICS:
            frames.append(similarity.to_frame(similarity.language_matrix(reps, metric), layers, langs, metric, model))
        base = similarity.language_matrix(shuffled(reps, seed), "linear_cka")
        frames.append(similarity.to_frame(base, layers, langs, "linear_cka_shuffled", model))
        if lengths is not None:
            if model not in lengths:
                raise XLError(f"no sentence lengths for model {model!r}; lengths has: {', '.join(lengths)}")
            frames += _length_frames(reps, lengths[model], langs, model, seed)
    return pd.concat(frames, ignore_index=True)


def off_diagonal_mean(m: np.ndarray) -> float:
    """Mean of a square (langs, langs) matrix over pairs of different languages."""
    g = len(m)
    return float((m.sum() - np.trace(m)) / (g * (g - 1)))


def _last_layer_grams(reps: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """(langs, n, n) Grams of the last layer, residualised on all sentences first: the resample's own
    regression removes the same span again, and the Grams lose the large mean offsets."""
    R = length.residualise(reps[-1], _log_lengths(reps, lengths))
    return R @ R.mT


def alignment_replicates(reps_by_model: dict, lengths_by_model: dict, n_boot: int = bootstrap.N_BOOT,
                         seed: int = 0) -> pd.DataFrame:
    """Mean length-controlled linear CKA over language pairs a != b at each model's last layer, on
    bootstrap resamples of the sentences (the same for every model): rows replicates, columns models.
    Each resample is centred and regressed on its own rows: its distinct sentences weighted by their
    counts (`length.length_controlled_gram_cka`)."""
    n = next(iter(reps_by_model.values())).shape[2]
    picks = [np.unique(i, return_counts=True) for i in bootstrap.resamples(n, n_boot, seed)]
    cells = [torch.as_tensor(rows[:, None] * n + rows).flatten() for rows, _ in picks]  # K[rows][:, rows], flat
    out = {}
    for model, reps in reps_by_model.items():
        lens = np.asarray(lengths_by_model[model])
        flat = _last_layer_grams(reps, lens).flatten(1)
        out[model] = [off_diagonal_mean(length.length_controlled_gram_cka(
            flat[:, cell].view(-1, len(rows), len(rows)), lens[:, rows], counts))
            for cell, (rows, counts) in zip(cells, picks)]
    return pd.DataFrame(out).rename_axis("replicate")


def alignment_estimate(reps_by_model: dict, lengths_by_model: dict) -> pd.Series:
    """The same on all sentences: model -> mean length-controlled linear CKA at the last layer."""
    return pd.Series({model: off_diagonal_mean(length.length_controlled_gram_cka(
        _last_layer_grams(reps, lengths_by_model[model]), lengths_by_model[model]))
        for model, reps in reps_by_model.items()})


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


def without_length(reps: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(layers, langs, n, d) representations, float64, with what log length explains within each
    language regressed out (`length.residualise`, per layer and language) and each language's mean
    kept: the language offsets are what separability measures, the length variation is not."""
    logs = _log_lengths(reps, lengths)
    return np.stack([(length.residualise(layer, logs) + torch.as_tensor(layer, dtype=torch.float64)
                      .mean(-2, keepdim=True)).numpy() for layer in reps])


def separability_table(reps_by_model: dict, langs, seed: int = 0, lengths: dict | None = None) -> pd.DataFrame:
    """Tidy (model, layer, metric, value) of `separability.separability_frame`; with `lengths` also the
    centred measures after regressing out log length (metrics prefixed `length_controlled_`): a
    translation shares its sentence's length, which makes translations look close whatever they mean."""
    frames = [separability.separability_frame(r, langs, m, seed) for m, r in reps_by_model.items()]
    for model, reps in (reps_by_model.items() if lengths is not None else ()):
        controlled = separability.centred_gap(without_length(reps, lengths[model]))
        frames.append(pd.DataFrame([{"model": model, "layer": layer, "metric": f"length_controlled_{name}",
                                     "value": float(v)} for name, values in controlled.items()
                                    for layer, v in enumerate(values)]))
    return pd.concat(frames, ignore_index=True)


def separability_replicates(reps_by_model: dict, lengths_by_model: dict, n_boot: int = bootstrap.N_BOOT,
                            seed: int = 0) -> pd.DataFrame:
    """`separability.HEADLINE` at each model's last layer after regressing out log length (on all
    sentences), on bootstrap resamples of the sentences: rows replicates, columns models."""
    last = {m: without_length(r[-1:], lengths_by_model[m]) for m, r in reps_by_model.items()}
    return separability.replicates(last, separability.HEADLINE, n_boot, seed)


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

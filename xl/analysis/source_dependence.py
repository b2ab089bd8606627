"""Does a translation model read its source? The source-dependence gate.

A decoder can lower its loss without reading the source: it learns the target language (a language
model) and, through cross-attention, only the *length* of the source (to time `</s>`). Such a model
passes for a translation model by its training loss while its encoder learned nothing about meaning.
So for each trained direction we compare the teacher-forced loss per target piece (the target
language code aside: it is forced when translating) with

* the true source,
* a random other source (`loss_random`), and
* another source of (nearly) the same length in pieces (`loss_same_length`).

`gap_same_length` = loss_same_length - loss_true, in nats per target piece: what the meaning of the
source is worth to the decoder once its length is known. A working translation model loses several
nats when its source is swapped; a source-blind one loses about nothing.

A model **passes** the gate when, in every direction it is scored on, `gap_same_length >= MIN_GAP`
and its chrF beats the source-blind baseline (`xl.analysis.translation.mt_quality`) by at least
`MIN_CHRF_MARGIN` points. Later chapters treat a model that fails as "not tested" rather than as a
translation model.

Both measures are means over a sample of held-out sentences, so each has a 95% bootstrap interval (the
sentences resampled). A gate decision is **narrow** when the bars lie inside those intervals: judged on
the intervals' lower ends it would fail, on their upper ends pass (or the reverse for a model that fails),
so another sample of as many sentences could turn it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from xl.analysis import bootstrap, translation
from xl.core import io, memo, presets, workers
from xl.core.results import Store
from xl.core.tensors import batches_by_length
from xl.data import languages as langs
from xl.models import registry
from xl.training.objectives import IGNORE

MIN_GAP = 0.5  # nats per target piece
MIN_CHRF_MARGIN = 2.0  # chrF points over the source-blind baseline
CACHE_VERSION = "source-dependence-v2"  # rows are kept in the translation cache ("mt"); v2: the gap's interval
COLUMNS = ["model", "src", "tgt", "loss_true", "loss_random", "loss_same_length", "gap_same_length", "gap_low",
           "gap_high", "verses"]


def _decoder_inputs(model, labels: torch.Tensor) -> dict:
    """What the model feeds its decoder given `labels`, without the loss it would compute from them
    (unused here) when it says how (mBART); else the labels themselves."""
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    return {"decoder_input_ids": prepare(labels=labels)} if prepare else {"labels": labels}


@torch.no_grad()
def piece_losses(model, tok, sources, targets, src: str, tgt: str, batch_size: int = 32,
                 max_length: int = 128) -> np.ndarray:
    """Teacher-forced loss per target piece (nats), one value per (source, target) pair; the target's
    language code is not counted (it is forced when translating)."""
    scheme = langs.scheme(tok)
    tok.src_lang, tok.tgt_lang = langs.code(src, scheme), langs.code(tgt, scheme)
    sources, targets = list(sources), list(targets)
    out = np.zeros(len(sources))
    # each pair's loss is the same in any batch: batch pairs of similar length (in characters)
    for idx in batches_by_length([len(s) + len(t) for s, t in zip(sources, targets)], batch_size):
        enc = tok([sources[j] for j in idx], text_target=[targets[j] for j in idx], padding=True,
                  truncation=True, max_length=max_length, return_tensors="pt").to(model.device)
        labels = enc["labels"].masked_fill(enc["labels"] == tok.pad_token_id, IGNORE)
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       **_decoder_inputs(model, labels)).logits
        # flat (pieces, vocabulary) logits: cross-entropy over the transposed batch is 2.5x slower
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                               reduction="none").view(labels.shape)
        counted = labels != IGNORE
        counted[:, 0] = False
        out[idx] = ((loss * counted).sum(1) / counted.sum(1).clamp(min=1)).cpu().numpy()
    return out


def random_sources(n: int, rng: np.random.Generator) -> np.ndarray:
    """For each sentence the index of another one: a random permutation shifted by one, so no
    sentence keeps its own source."""
    order = rng.permutation(n)
    other = np.empty(n, dtype=int)
    other[order] = np.roll(order, -1)
    return other


def same_length_sources(lengths, rng: np.random.Generator) -> np.ndarray:
    """For each sentence the index of another one whose length is closest (ties broken at random)."""
    lengths = np.asarray(lengths, dtype=float)
    distance = np.abs(lengths[:, None] - lengths[None, :]) + rng.random((len(lengths),) * 2) * 0.5
    np.fill_diagonal(distance, np.inf)
    return distance.argmin(1)


def direction_row(model, tok, sources, targets, src: str, tgt: str, seed: int = 0,
                  max_length: int = 128, n_boot: int = bootstrap.N_BOOT) -> dict:
    """Mean losses with the true, a random and a same-length source for one direction, and the 95%
    interval of the same-length gap over `n_boot` resamples of the sentence pairs."""
    sources, targets = [str(s) for s in sources], [str(t) for t in targets]
    if len(sources) < 2:
        raise ValueError("source dependence needs at least two sentence pairs")
    tok.src_lang = langs.code(src, langs.scheme(tok))
    lengths = [len(x) for x in tok(sources, truncation=True, max_length=max_length)["input_ids"]]
    rng = np.random.default_rng(seed)
    swaps = {"random": random_sources(len(sources), rng), "same_length": same_length_sources(lengths, rng)}
    loss = {"true": piece_losses(model, tok, sources, targets, src, tgt, max_length=max_length)}
    for name, other in swaps.items():
        loss[name] = piece_losses(model, tok, [sources[j] for j in other], targets, src, tgt, max_length=max_length)
    gaps = loss["same_length"] - loss["true"]  # per sentence pair
    low, high = bootstrap.interval(gaps[bootstrap.resamples(len(gaps), n_boot, seed)].mean(1))
    return {"src": src, "tgt": tgt, "loss_true": float(loss["true"].mean()),
            "loss_random": float(loss["random"].mean()), "loss_same_length": float(loss["same_length"].mean()),
            "gap_same_length": float(gaps.mean()), "gap_low": low, "gap_high": high, "verses": len(sources)}


def gate(dependence: pd.DataFrame, quality: pd.DataFrame, min_gap: float = MIN_GAP,
         min_margin: float = MIN_CHRF_MARGIN) -> pd.DataFrame:
    """Per model: its weakest direction's gap and chrF margin, whether it passes the gate, the lowest
    and highest ends of those measures' 95% intervals over its directions, and whether the decision
    is `narrow` (the lowest ends would fail it and the highest pass it)."""
    both = dependence.merge(quality[["model", "src", "tgt", "chrf", "baseline", "margin_low", "margin_high"]],
                            on=["model", "src", "tgt"])
    both = both.assign(margin=both.chrf - both.baseline)
    out = both.groupby("model", sort=False).agg(
        directions=("src", "size"), min_gap=("gap_same_length", "min"), min_margin=("margin", "min"),
        gap_low=("gap_low", "min"), gap_high=("gap_high", "min"), margin_low=("margin_low", "min"),
        margin_high=("margin_high", "min")).reset_index()

    def passes(gap, margin):
        return (gap >= min_gap) & (margin >= min_margin)

    out.insert(4, "passes_gate", passes(out.min_gap, out.min_margin))
    out["narrow"] = passes(out.gap_low, out.margin_low) != passes(out.gap_high, out.margin_high)
    return out


def table(cfg: dict | str = "lab", models=None, write: bool = True) -> pd.DataFrame:
    """`source_dependence.csv`: a row per direction each translation model (default: the preset's) is
    scored on (`xl.analysis.translation.pairs_of`), on the held-out sentences that chrF uses."""
    cfg = presets.config(cfg) if isinstance(cfg, str) else cfg
    models = list(models) if models is not None else translation.translation_models(cfg)
    # one model per worker process (`train_workers` of them, as the models are trained)
    test = translation.held_out_sample(cfg)  # once, not per model
    rows = workers.map_in_processes(model_rows, models, cfg["train_workers"], cfg, test)
    df = pd.DataFrame([row for per_model in rows for row in per_model], columns=COLUMNS)
    if write:
        Store(cfg["preset"]).write("source_dependence", df)
    return df


def model_rows(name: str, cfg: dict, test: pd.DataFrame) -> list[dict]:
    """The rows of one translation model on the held-out sentences `test`: one per direction it is scored on."""
    model, tok = translation.load(name, cfg)
    identity = translation.model_identity(model, tok)  # once per model, not per direction
    return [{"model": registry.label(name),
             **cached_direction_row(model, tok, identity, test[src], test[tgt], src, tgt, seed=cfg["seed"],
                                    max_length=cfg["model_max_length"], n_boot=cfg["bootstrap_replicates"])}
            for src, tgt in translation.pairs_of(name, cfg, tok)]


def cached_direction_row(model, tok, identity: str, sources, targets, src: str, tgt: str, seed: int = 0,
                         max_length: int = 128, n_boot: int = bootstrap.N_BOOT) -> dict:
    """`direction_row`, read from or written to the translation cache; `identity`: the model's
    `xl.analysis.translation.model_identity`."""
    sources, targets = [str(s) for s in sources], [str(t) for t in targets]
    key = io.digest(CACHE_VERSION, identity, src, tgt, sources, targets, seed, max_length, n_boot)
    return memo.memo("mt", key, lambda: direction_row(model, tok, sources, targets, src, tgt, seed, max_length,
                                                      n_boot))


def verdict(gated: pd.DataFrame) -> str:
    """One sentence per model: passes or fails the gate, on what, and whether narrowly."""
    if gated.empty:
        return "This preset has no translation model to check."
    parts = []
    for r in gated.itertuples():
        if r.passes_gate:
            parts.append(f"**{r.model}** reads its source (in its weakest direction, a same-length wrong source "
                         f"costs {r.min_gap:.2f} nats per piece and chrF beats the baseline by {r.min_margin:.1f})."
                         + narrowly(r))
        else:
            parts.append(f"**{r.model}** fails the gate ({'; '.join(shortfalls(r))} in its weakest "
                         "direction): later chapters treat it as *not tested*, not as a translation model."
                         + narrowly(r))
    return " ".join(parts)


def narrowly(r) -> str:
    """For a row of a gate table whose decision is narrow, what its intervals' ends say; else ""."""
    if not r.narrow:
        return ""
    if r.passes_gate:
        ends = []
        if r.gap_low < MIN_GAP:
            ends.append(f"a same-length wrong source {r.gap_low:.2f} nats")
        if r.margin_low < MIN_CHRF_MARGIN:
            ends.append(f"chrF {_against_baseline(r.margin_low)}")
        return (f" It passes narrowly: the lower ends of the 95% intervals over the held-out sentences fall below "
                f"the bars ({', '.join(ends)}), so another sample of as many sentences could fail it.")
    return (f" It fails narrowly: the upper ends of the 95% intervals clear the bars (a same-length wrong "
            f"source {r.gap_high:.2f} nats, chrF {_against_baseline(r.margin_high)}), so another sample of "
            f"as many sentences could pass it.")


def _against_baseline(margin: float) -> str:
    return f"{margin:.1f} over the baseline" if margin >= 0 else f"{-margin:.1f} below the baseline"


def _below(value: float, bar: float, digits: int) -> str:
    """`value` (< `bar`) with `digits` decimals, more where rounding would reach the bar (0.497 of 0.5)."""
    while round(value, digits) >= bar and digits < 6:
        digits += 1
    return f"{value:.{digits}f}"


def shortfalls(r) -> list[str]:
    """What a row of a gate table misses: the gap, the chrF margin, both, or nothing (it passes)."""
    why = []
    if r.min_gap < MIN_GAP:
        why.append(f"a same-length wrong source costs only {_below(r.min_gap, MIN_GAP, 2)} nats per piece")
    if r.min_margin < 0:
        why.append(f"chrF falls {-r.min_margin:.1f} below the baseline")
    elif r.min_margin < MIN_CHRF_MARGIN:
        why.append(f"chrF beats the baseline by only {_below(r.min_margin, MIN_CHRF_MARGIN, 1)}")
    return why


def failed(gated: pd.DataFrame) -> set[str]:
    """The models of a gate table that fail it."""
    return set(gated.model[~gated.passes_gate.astype(bool)])


def narrow_passes(gated: pd.DataFrame) -> set[str]:
    """The models of a gate table that pass it narrowly (a table from before `narrow` was kept: none)."""
    if "narrow" not in gated:
        return set()
    return set(gated.model[gated.passes_gate.astype(bool) & gated.narrow.astype(bool)])


def gate_in(preset: str) -> pd.DataFrame:
    """The gate table of a preset's results (gate.csv of the models chapter); without one, no model."""
    store = Store(preset)
    return store.read("gate") if store.exists("gate") else pd.DataFrame(columns=["model", "passes_gate"])


def failed_in(preset: str) -> set[str]:
    """The models that fail the gate in a preset's results, if any."""
    return failed(gate_in(preset))


NOT_TESTED = ("not tested: no MT or CP model of this run passes the source-dependence gate of the models "
              "chapter, so none stands for the translation objective")

"""Tables of transfer results: the headline rows (`layer` column), per-seed summaries, Table 1's
layout raw and chance-normalised, the word-overlap baseline beside the scores, the paper's table
beside ours, and the verdict on the paper's claim (`transfer_estimates` -> `xl.analysis.verdict`)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from xl.analysis import bootstrap, verdict
from xl.analysis.source_dependence import NOT_TESTED
from xl.core import paths
from xl.core.errors import XLError
from xl.data import overlap
from xl.models import registry
from xl.transfer import chance as chancelib

PAPER = "paper (XGLUE, Table 1)"


def with_layer(df: pd.DataFrame) -> pd.DataFrame:
    """Transfer rows with a `layer` column (the encoder layer a retrieval row was scored at; missing
    for a task's headline score). Tables written before the column existed packed the layer into
    the metric name ("acc@1 layer 3"): those rows are converted, so old tables read the same."""
    if "layer" in df.columns:
        return df
    if "metric" not in df.columns:
        raise XLError(f"transfer rows need a metric column, got columns {list(df.columns)}")
    parts = df.metric.astype(str).str.extract(r"^(.*) layer (\d+)$")
    out = df.assign(metric=parts[0].fillna(df.metric), layer=pd.to_numeric(parts[1]).astype("Int64"))
    columns = [c for c in df.columns if c != "score"] + ["layer"] + (["score"] if "score" in df.columns else [])
    return out[[c for c in dict.fromkeys(columns) if c in out.columns]]


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Only each task's headline score: the rows without a layer (drops the per-layer retrieval rows)."""
    out = with_layer(df)
    return out[out.layer.isna()]


def layer_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Only the per-layer retrieval rows (layer 0: embeddings)."""
    out = with_layer(df)
    return out[out.layer.notna()]


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds, per model, task and language."""
    g = main_rows(df).groupby(["model", "task", "lang", "metric"], sort=False).score
    return g.agg(mean="mean", std="std", seeds="count").reset_index().fillna({"std": 0.0})


def table1(df: pd.DataFrame, source_lang: str = "en", scale: float = 100.0) -> pd.DataFrame:
    """Table 1's layout: models x tasks, mean over seeds then over the non-English languages (x100)."""
    s = summary(df)
    s = s[s.lang != source_lang]
    wide = s.groupby(["model", "task"], sort=False)["mean"].mean().unstack("task") * scale
    return wide.reindex(index=list(dict.fromkeys(s.model)), columns=list(dict.fromkeys(s.task)))


def seed_spread(df: pd.DataFrame, source_lang: str = "en", scale: float = 100.0) -> pd.DataFrame:
    """Standard deviation across seeds of the non-English average (models x tasks)."""
    m = main_rows(df)
    m = m[m.lang != source_lang]
    per_seed = m.groupby(["model", "task", "seed"], sort=False).score.mean()
    wide = per_seed.groupby(["model", "task"], sort=False).std().unstack("task") * scale
    return wide.reindex(index=list(dict.fromkeys(m.model)), columns=list(dict.fromkeys(m.task))).fillna(0.0)


def beside_overlap(df: pd.DataFrame, tasks: dict) -> pd.DataFrame:
    """Two-label pair tasks, per test language (x100): the model-free word-overlap baseline
    (`xl.data.overlap.overlap_baseline`) beside the best and the mean model score (means over seeds)."""
    s = summary(df)
    rows = {}
    for name, task in tasks.items():
        if not overlap.is_binary_pair(task) or name not in set(s.task):
            continue
        scores = s[s.task == name].groupby("lang")["mean"]
        rows[(name, "word overlap (no model)")] = pd.Series(overlap.overlap_baseline(task))
        rows[(name, "best model")] = scores.max()
        rows[(name, "mean of models")] = scores.mean()
    languages = list(dict.fromkeys(lang for task in tasks.values() for lang in task.languages))
    table = pd.DataFrame(rows).T
    return table.reindex(columns=[lang for lang in languages if lang in table.columns]) * 100


def above_chance(df: pd.DataFrame, chance, langs=None, alpha: float = 0.01) -> pd.DataFrame:
    """Per model, task and test language, is the score (mean over seeds) clearly above chance?
    A one-sided binomial test over the n test examples (`xl.transfer.chance.binomial_tests`);
    chance: {name: Task} or a chance_table() frame (with n); langs: default every language."""
    return chancelib.binomial_tests(summary(df), chance, langs, alpha)


def normalised_table1(df: pd.DataFrame, chance, source_lang: str = "en", scale: float = 100.0) -> pd.DataFrame:
    """table1() of chance-normalised scores ((score - chance) / (1 - chance), x100): 0 is chance, 100 perfect."""
    s = chancelib.normalise(summary(df), chance, column="mean")
    s = s[s.lang != source_lang]
    wide = s.groupby(["model", "task"], sort=False).normalised.mean().unstack("task") * scale
    return wide.reindex(index=list(dict.fromkeys(s.model)), columns=list(dict.fromkeys(s.task)))


def transfer_estimates(df: pd.DataFrame, chance, n_boot: int = bootstrap.N_BOOT, seed: int = 0, at_floor=(),
                       source_lang: str = "en") -> tuple[pd.Series, pd.DataFrame]:
    """Each model's zero-shot transfer, and its bootstrap replicates, for `xl.analysis.verdict.decide`.

    The estimate: per model, the chance-normalised score averaged over seeds, then over the
    non-English test languages of a task, then over the tasks not `at_floor` (each task counts
    the same; raw scores averaged over tasks with chance at 14.7%, 50% and 0.25% mean nothing).
    Replicates (rows) x models (columns): each resamples the seeds with replacement (the same
    resample for every model, per task) and the test examples: for a proportion metric,
    resampling n examples with replacement gives hits ~ Binomial(n, p), drawn per model, task,
    language and seed. The draws are independent across models, which ignores that every model
    is scored on the same test examples, so the interval of a difference between models is
    conservative (wider than a paired bootstrap's). Other metrics (nDCG, F1): seeds only.
    chance: {name: Task} or a chance_table() frame with n.
    """
    if n_boot < 1:
        raise XLError(f"n_boot must be at least 1, got {n_boot}")
    missing = {"model", "task", "lang", "seed", "metric", "score"} - set(df.columns)
    if missing:
        raise XLError(f"transfer rows lack columns {sorted(missing)}: pass transfer.csv's rows")
    rows = main_rows(df)
    rows = rows[(rows.lang != source_lang) & ~rows.task.isin(list(at_floor))]
    if rows.empty:
        raise XLError(f"no zero-shot results left (languages other than {source_lang!r}, tasks not at floor)")
    rows = chancelib.with_chance(rows, chance)
    shares = rows[rows.metric.isin(chancelib.PROPORTIONS)]
    if len(shares) and ("n" not in rows.columns or rows.n.isna().any()):
        raise XLError("the chance table has no test-set size n: rebuild it with transfer.chance_table(tasks)")
    if not shares.score.between(0, 1).all():
        raise XLError(f"proportion scores lie in [0, 1], got {shares.score.min()} to {shares.score.max()}")
    models = list(dict.fromkeys(rows.model))
    rng = np.random.default_rng(seed)
    per_task = [_task_estimates(g, models, n_boot, rng) for _, g in rows.groupby("task", sort=False)]
    estimate = _nanmean(np.stack([e for e, _ in per_task]), axis=0)
    replicates = _nanmean(np.stack([r for _, r in per_task]), axis=0)
    return (pd.Series(estimate, index=models, name="normalised transfer"),
            pd.DataFrame(replicates, columns=models).rename_axis(index="replicate", columns="model"))


def _task_estimates(g: pd.DataFrame, models: list, n_boot: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """One task: (models,) estimate and (n_boot, models) replicates of its normalised score."""
    if g.metric.nunique() != 1 or g.duplicated(["model", "lang", "seed"]).any():
        raise XLError(f"task {g.task.iloc[0]!r} has several metrics or repeated (model, language, seed) rows")
    langs, seeds = list(dict.fromkeys(g.lang)), sorted(set(g.seed))
    cube = (g.set_index(["model", "lang", "seed"]).score
            .reindex(pd.MultiIndex.from_product([models, langs, seeds])).to_numpy().reshape(len(models), len(langs), len(seeds)))
    per_lang = g.drop_duplicates("lang").set_index("lang").reindex(langs)
    chance = per_lang.chance.to_numpy(float)[:, None]  # (langs, 1): broadcasts over models and seeds
    estimate = _nanmean(chancelib.normalised(_nanmean(cube, axis=-1), chance[:, 0]), axis=-1)
    draws = np.broadcast_to(cube, (n_boot, *cube.shape))
    if g.metric.iloc[0] in chancelib.PROPORTIONS:
        n = per_lang.n.to_numpy(float)[:, None]
        hits = rng.binomial(np.broadcast_to(n, draws.shape).astype(int), np.nan_to_num(draws))
        draws = np.where(np.isnan(draws), np.nan, hits / n)
    picks = (bootstrap.resamples(len(seeds), n_boot, int(rng.integers(2 ** 31))) if len(seeds) > 1
             else np.zeros((n_boot, 1), dtype=int))
    resampled = np.take_along_axis(draws, picks[:, None, None, :], axis=-1)
    replicates = _nanmean(chancelib.normalised(_nanmean(resampled, axis=-1), chance[:, 0]), axis=-1)
    return estimate, replicates


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without the warning for all-NaN slices (a model without a language or task: NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 (XGLUE, averages over languages), models x tasks."""
    return pd.read_csv(paths.data_file("paper_table1_transfer.csv")).set_index("model")


def beside_paper(ours: pd.DataFrame) -> pd.DataFrame:
    """Our table next to the paper's rows: lab models are matched to their paper analogue."""
    paper = paper_table1()
    rows = []
    for model in ours.index:
        analogue = registry.paper_analogue(model)
        row = {("ours", t): ours.loc[model, t] for t in ours.columns}
        if analogue in paper.index:
            row.update({(PAPER, t): paper.loc[analogue, t] for t in paper.columns if t != "family"})
        row[(PAPER, "row")] = analogue if analogue in paper.index else ""
        rows.append(pd.Series(row, name=model))
    out = pd.DataFrame(rows)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def agreement(df: pd.DataFrame, chance, failed=(), at_floor=(), n_boot: int = bootstrap.N_BOOT, seed: int = 0,
              source_lang: str = "en") -> dict:
    """Does this run agree with the paper (MT-trained models transfer worse than LM-trained ones)?

    The verdict is `xl.analysis.verdict.decide` on transfer_estimates() (paper_sign -1): the MT
    minus LM family difference of the chance-normalised score with its 95% bootstrap interval
    over seeds and test examples. failed: models that fail the source-dependence gate (left out);
    at_floor: tasks left out (chance.at_floor); if every task is at floor, `not tested`.
    Returns decide()'s dict plus the family means (LM, MT), `agrees` (True, False, or None when
    inconclusive or not tested), the tasks used, the Spearman correlation of the per-model
    estimates with the paper's Table 1 averages (matched rows), the per-model estimate and
    bootstrap replicates (for the evidence table) and a plain sentence.
    """
    zero_shot = main_rows(df)
    zero_shot = zero_shot[zero_shot.lang != source_lang]
    tasks = [t for t in dict.fromkeys(zero_shot.task) if t not in set(at_floor)]
    estimate = transfer_estimates(df, chance, n_boot, seed, at_floor, source_lang) if tasks else (None, None)
    if tasks:
        result = verdict.decide(*estimate, paper_sign=-1, failed=failed)
    else:
        result = verdict.decide(pd.Series(dtype=float), None, paper_sign=-1, failed=failed, at_floor=True)
    values = estimate[0] if tasks else pd.Series(dtype=float)
    kept = values.drop(index=[m for m in failed if m in values.index])
    sides = kept.index.map(verdict.side)
    out = {**result, "LM": float(kept[sides == "LM"].mean()), "MT": float(kept[sides == "MT"].mean()),
           "agrees": {"agrees": True, "disagrees": False}.get(result["verdict"]), "tasks": tasks,
           "at_floor": [t for t in dict.fromkeys(zero_shot.task) if t in set(at_floor)],
           "spearman": _spearman_with_paper(values), "estimate": values,
           "replicates": estimate[1] if tasks else None}
    out["sentence"] = _agreement_sentence(out, failed)
    return out


def _spearman_with_paper(values: pd.Series) -> float:
    paper = paper_table1()
    paper_avg = paper.drop(columns="family").mean(axis=1)
    matched = [m for m in values.index if registry.paper_analogue(m) in paper.index]
    if len(matched) < 3:
        return float("nan")
    return float(spearmanr([values[m] for m in matched], [paper_avg[registry.paper_analogue(m)] for m in matched])[0])


def _agreement_sentence(out: dict, failed) -> str:
    if out["verdict"] == "not tested" and not out["tasks"]:
        return (f"Every task is at floor here ({', '.join(map(str, out['at_floor']))}: most models not clearly "
                f"above chance), so transfer is not tested.")
    floor = (f" Left out as at floor (most models not clearly above chance): {', '.join(map(str, out['at_floor']))}."
             if out["at_floor"] else "")
    if out["verdict"] == "not tested":
        why = (f"{NOT_TESTED} ({', '.join(sorted(failed))} fail)" if out["n_models_lm"] and failed
               else "not tested: a model family is missing")
        return (f"Transfer over {', '.join(map(str, out['tasks']))} is {why}. LM-trained models reach a "
                f"chance-normalised score of {out['LM']:.3f} (0 is chance, 1 a perfect score).{floor}")
    sentence = verdict.sentence(out, f"Zero-shot transfer over {', '.join(map(str, out['tasks']))} "
                                     "(chance-normalised score, non-English languages)")
    meaning = {"agrees": "MT-trained models transfer worse, as in the paper",
               "disagrees": "MT-trained models transfer better, against the paper",
               "inconclusive": "the interval contains 0: this run neither confirms nor contradicts the paper"}
    sentence = sentence[:-1] + f" ({meaning[out['verdict']]})."
    if not math.isnan(out["spearman"]):
        sentence += f" Rank correlation of the model averages with the paper's Table 1: {out['spearman']:+.2f}."
    return sentence + floor

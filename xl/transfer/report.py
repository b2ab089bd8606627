"""Tables of transfer results: per-seed summaries, Table 1's layout, chance levels and the
word-overlap baseline beside the scores, the paper's table beside ours, and the verdict on the paper's claim."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import binomtest, spearmanr

from xl.analysis.source_dependence import NOT_TESTED
from xl.core import paths
from xl.data import overlap
from xl.data import tasks as tasklib
from xl.models import registry

PAPER = "paper (XGLUE, Table 1)"


def chance_table(tasks: dict) -> pd.DataFrame:
    rows = [(name, lang, task.metric, value) for name, task in tasks.items() for lang, value in task.chance().items()]
    return pd.DataFrame(rows, columns=["task", "lang", "metric", "chance"])


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Only each task's headline metric (drops the per-layer retrieval rows)."""
    return df[~df.metric.str.contains(" layer ")]


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


PROPORTIONS = ("accuracy", "acc@1")  # metrics that are a share of the test examples


def above_chance(df: pd.DataFrame, tasks: dict, lang: str = "en", alpha: float = 0.01) -> pd.DataFrame:
    """Per model and task, the score in `lang` (mean over seeds) beside its chance level, with
    the 95% Wilson interval of a proportion over the n test examples and a one-sided binomial
    test against chance: `clearly` above chance when p < alpha (NaN for metrics that are not
    a proportion, such as nDCG or F1)."""
    s = summary(df)
    s = s[(s.lang == lang) & s.task.isin(list(tasks))]
    chance = {name: tasklib.chance_level(task, task.test[lang]) for name, task in tasks.items() if lang in task.test}
    rows = []
    for r in s.itertuples():
        n = len(tasks[r.task].test[lang])
        low = high = p = float("nan")
        clearly = None
        if r.metric in PROPORTIONS:
            hits = int(round(r.mean * n))
            low, high = binomtest(hits, n, chance[r.task]).proportion_ci(0.95, method="wilson")
            p = binomtest(hits, n, chance[r.task], alternative="greater").pvalue
            clearly = bool(p < alpha)
        rows.append((r.model, r.task, r.mean, chance[r.task], n, low, high, p, clearly))
    return pd.DataFrame(rows, columns=["model", "task", "score", "chance", "n", "ci_low", "ci_high", "p", "clearly"])


def above_chance_sentence(table: pd.DataFrame, alpha: float = 0.01) -> str:
    """One sentence from an above_chance() table: which results are not clearly above chance."""
    weak = table[table.clearly == False]  # noqa: E712 - None (not a proportion) is not weak
    if weak.empty:
        return f"Every model is clearly above chance (p < {alpha:g}) on every task whose metric is a proportion."
    return f"Not clearly above chance (one-sided binomial test, p >= {alpha:g}): " + "; ".join(
        f"{r.model} on {r.task} ({r.score:.3f} vs {r.chance:.3f}, p = {r.p:.2g})" for r in weak.itertuples()) + "."


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


def agreement(ours: pd.DataFrame, spread: pd.DataFrame | None = None, chance: pd.Series | None = None,
              failed=()) -> dict:
    """Does this run agree with the paper (LM-trained models transfer better than MT-trained ones)?

    ours: a table1() frame (its columns are the tasks compared); spread: seed_spread() of the
    same runs (a gap smaller than the mean spread is called inconclusive); chance: chance level
    per task on the same scale (tasks where models stay within 2 points of it are named); failed: models
    that fail the source-dependence gate, left out of the MT side (xl.analysis.source_dependence).
    Returns the family means, their gap, the Spearman correlation of our per-model averages
    with the paper's (matched rows), and a plain sentence.
    """
    paper = paper_table1()
    avg = ours.mean(axis=1)
    fam = {m: registry.family(m) for m in ours.index}
    lm = [avg[m] for m in ours.index if fam[m] == "LM"]
    failed = set(failed)
    mt = [avg[m] for m in ours.index if fam[m] in ("MT", "CP") and m not in failed]
    lm_mean = float(np.mean(lm)) if lm else float("nan")
    mt_mean = float(np.mean(mt)) if mt else float("nan")
    matched = [m for m in ours.index if registry.paper_analogue(m) in paper.index]
    paper_avg = paper.drop(columns="family").mean(axis=1)
    rho = float("nan")
    if len(matched) >= 3:
        rho = float(spearmanr([avg[m] for m in matched], [paper_avg[registry.paper_analogue(m)] for m in matched])[0])
    noise = float(spread.reindex(index=ours.index, columns=ours.columns).stack().mean()) if spread is not None else 0.0
    at_chance = []
    if chance is not None:
        at_chance = [t for t in ours.columns if t in chance.index and ours[t].mean() - chance[t] < 2.0]
    out = {"LM": lm_mean, "MT": mt_mean, "gap": lm_mean - mt_mean, "spread": noise, "spearman": rho,
           "at_chance": at_chance, "agrees": None}
    if lm and not mt and failed:
        out["sentence"] = f"LM-trained models score {lm_mean:.1f}; the comparison with the paper is {NOT_TESTED}."
        return out
    if not (lm and mt):
        out["sentence"] = "Not enough model families at this scale to compare with the paper."
        return out
    tasks_text = ", ".join(map(str, ours.columns))
    sentence = (f"Averaged over non-English languages and {tasks_text}, LM-trained models score {lm_mean:.1f} "
                f"and MT-trained ones (translation from scratch or continued with it) {mt_mean:.1f}: ")
    if at_chance and len(at_chance) == len(ours.columns):
        sentence += ("every task is within 2 points of chance at this scale, so it neither confirms nor "
                     "contradicts the paper")
    elif abs(lm_mean - mt_mean) <= noise:
        sentence += (f"the gap ({lm_mean - mt_mean:+.1f}) is within the spread across seeds ({noise:.1f}), so this "
                     f"run neither confirms nor contradicts the paper")
    else:
        out["agrees"] = bool(lm_mean > mt_mean)
        sentence += (f"this run {'agrees' if out['agrees'] else 'does not agree'} with the paper, where "
                     f"LM-trained models transfer better")
    if not math.isnan(rho):
        sentence += f" (rank correlation of the model averages with the paper's: {rho:+.2f})"
    sentence += "."
    if at_chance and len(at_chance) < len(ours.columns):
        sentence += f" Caution: models stay within 2 points of chance on {', '.join(map(str, at_chance))}."
    out["sentence"] = sentence
    return out

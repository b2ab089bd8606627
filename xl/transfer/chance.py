"""Chance levels: the table of chance and test-set sizes, scores normalised by chance, and which
results (and which tasks) are clearly above chance.

Everything here works from tables alone (transfer.csv and transfer_chance.csv), so that later
chapters need no task objects. Chance is the best score of a constant prediction
(`xl.data.tasks.chance_level`); n is the number of test examples of a task in a language.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from xl.core.errors import XLError
from xl.data import tasks as tasklib

# metrics that are a share of the test examples (for tagging accuracy, a share of tokens: its n
# counts sentences, fewer than the tokens, so a binomial over n is conservative there)
PROPORTIONS = ("accuracy", "acc@1")
CHANCE_COLUMNS = ["task", "lang", "metric", "chance", "n"]


def chance_table(tasks: dict) -> pd.DataFrame:
    """Rows task, lang, metric, chance, n (test examples) for {name: Task}."""
    rows = [(name, lang, task.metric, tasklib.chance_level(task, df), len(df))
            for name, task in tasks.items() for lang, df in task.test.items()]
    return pd.DataFrame(rows, columns=CHANCE_COLUMNS)


def as_chance_table(chance) -> pd.DataFrame:
    """A chance table from {name: Task} or a chance_table() frame, checked."""
    table = chance_table(chance) if isinstance(chance, dict) else chance
    if not isinstance(table, pd.DataFrame) or not {"task", "lang", "chance"} <= set(table.columns):
        raise XLError("chance is {name: Task} or a chance table with columns task, lang, chance "
                      "(and n): transfer.chance_table(tasks) or results table transfer_chance")
    if table.duplicated(["task", "lang"]).any():
        raise XLError("the chance table has more than one row for a (task, language)")
    if not table.chance.between(0, 1, inclusive="left").all():
        raise XLError(f"chance levels lie in [0, 1), got {sorted(set(table.chance))}")
    return table


def with_chance(rows: pd.DataFrame, chance) -> pd.DataFrame:
    """`rows` (with task and lang) joined with their chance level (and n, when the table has it)."""
    table = as_chance_table(chance)
    keep = [c for c in ("task", "lang", "chance", "n") if c in table.columns]
    merged = rows.merge(table[keep], on=["task", "lang"], how="left", validate="many_to_one")
    missing = merged[merged.chance.isna()][["task", "lang"]].drop_duplicates()
    if len(missing):
        pairs = ", ".join(f"{t}/{lang}" for t, lang in missing.itertuples(index=False))
        raise XLError(f"no chance level for {pairs}: build the chance table from the same tasks")
    return merged


def normalised(score, chance):
    """(score - chance) / (1 - chance): 0 at chance, 1 at a perfect score, negative below chance."""
    return (np.asarray(score, dtype=float) - chance) / (1.0 - np.asarray(chance, dtype=float))


def normalise(rows: pd.DataFrame, chance, column: str = "score") -> pd.DataFrame:
    """`rows` with chance, n and `normalised` (the chance-normalised `column`) added."""
    out = with_chance(rows, chance)
    out["normalised"] = normalised(out[column], out.chance)
    return out


def binomial_tests(summary: pd.DataFrame, chance, langs=None, alpha: float = 0.01) -> pd.DataFrame:
    """Per model, task and test language: the score (mean over seeds) beside its chance level, the
    95% Wilson interval of a proportion over the n test examples, and a one-sided binomial test
    against chance, `clearly` above when p < alpha (None for metrics that are not a proportion,
    such as nDCG or F1).

    summary: report.summary() rows (model, task, lang, metric, mean); chance: {name: Task} or a
    chance table with n; langs: the languages to test (default: every one).
    """
    if not 0 < alpha < 1:
        raise XLError(f"alpha is a probability in (0, 1), got {alpha}")
    table = as_chance_table(chance)
    s = summary[summary.task.isin(set(table.task))]
    if langs is not None:
        s = s[s.lang.isin([langs] if isinstance(langs, str) else list(langs))]
    if "n" not in table.columns:
        raise XLError("the chance table has no column n (test examples): rebuild it with transfer.chance_table")
    s = with_chance(s, table)
    rows = [(r.model, r.task, r.lang, r.mean, r.chance, int(r.n), *_binomial(r.mean, r.n, r.chance, r.metric, alpha))
            for r in s.itertuples()]
    return pd.DataFrame(rows, columns=["model", "task", "lang", "score", "chance", "n", "ci_low", "ci_high", "p",
                                       "clearly"])


def _binomial(score, n, chance, metric, alpha) -> tuple:
    if metric not in PROPORTIONS:
        return float("nan"), float("nan"), float("nan"), None
    hits, n = int(round(score * n)), int(n)
    low, high = binomtest(hits, n, chance).proportion_ci(0.95, method="wilson")
    p = binomtest(hits, n, chance, alternative="greater").pvalue
    return low, high, p, bool(p < alpha)


def above_chance_sentence(table: pd.DataFrame, alpha: float = 0.01) -> str:
    """One sentence from a binomial_tests() table: how many results are not clearly above chance."""
    tested = table[table.clearly.notna()]
    weak = tested[tested.clearly == False]  # noqa: E712 - None (not a proportion) is not weak
    if weak.empty:
        return f"Every model is clearly above chance (p < {alpha:g}) on every task whose metric is a proportion."
    parts = []
    for task, g in weak.groupby("task", sort=False):
        examples = "; ".join(f"{r.model} {r.lang}: {r.score:.3f} vs {r.chance:.3f}, p = {r.p:.2g}"
                             for r in g.head(3).itertuples())
        parts.append(f"{task} in {len(g)} of {len(tested[tested.task == task])} model-language results "
                     f"({'e.g. ' if len(g) > 3 else ''}{examples})")
    return f"Not clearly above chance (one-sided binomial test, p >= {alpha:g}): " + ". ".join(parts) + "."


def at_floor(table: pd.DataFrame, source_lang: str = "en") -> list:
    """Tasks at floor: for more than half of the models, the non-English results are not clearly
    above chance. A model counts as clearly above chance on a task when more than half of its
    non-English test languages are (binomial_tests()'s `clearly`). Metrics that are not a proportion
    (nDCG, F1) have no binomial test and are never at floor. Every model of the table counts (the
    floor is the task's, whichever models fail the source-dependence gate)."""
    above = _models_above(table, source_lang)
    if above is None:
        return []
    return [task for task, models in above.groupby(level="task", sort=False) if _task_at_floor(models)]


def _task_at_floor(models_above: pd.Series) -> bool:
    """The floor rule, on one task's models (clearly above chance or not): more than half are not."""
    return (~models_above).mean() > 0.5


def _models_above(table: pd.DataFrame, source_lang: str) -> pd.Series | None:
    """(task, model) -> clearly above chance in more than half of the non-English languages; None
    when no result has a binomial test."""
    counts = _languages_above(table, source_lang)
    return None if counts is None else _more_than_half(counts)


def _more_than_half(counts: pd.DataFrame) -> pd.Series:
    return counts["sum"] > counts["count"] / 2


def _languages_above(table: pd.DataFrame, source_lang: str) -> pd.DataFrame | None:
    """(task, model) -> sum (non-English languages clearly above chance) and count (those tested)."""
    zero_shot = table[(table.lang != source_lang) & table.clearly.notna()]
    if zero_shot.empty:
        return None
    clearly = zero_shot.assign(clearly=zero_shot.clearly.astype(bool))
    return clearly.groupby(["task", "model"], sort=False).clearly.agg(["sum", "count"])


def floor_sentence(table: pd.DataFrame, floor: list, source_lang: str = "en", alpha: float = 0.01) -> str:
    """Which tasks are at floor, with the share of models above chance on each task, in words."""
    above = _models_above(table, source_lang)
    if above is None:
        return "No task has a proportion metric, so none can be tested against chance."
    counts = above.groupby(level="task", sort=False).agg(["sum", "count"])
    parts = [f"{task} ({int(c['sum'])} of {int(c['count'])} models)" for task, c in counts.iterrows()]
    text = (f"Models clearly above chance (p < {alpha:g}) in more than half of the non-English languages, per task: "
            + ", ".join(parts) + ". ")
    kept = [t for t in counts.index if t not in floor]
    if not floor:
        text += "No task is at floor: every task enters the transfer verdict."
    else:
        text += (f"At floor (more than half of the models not clearly above chance), and left out of the "
                 f"transfer verdict: {', '.join(map(str, floor))}"
                 + (f"; the verdict rests on {', '.join(map(str, kept))}." if kept else
                    "; that is every task, so transfer is not tested here."))
    return text + _narrow_sentence(table, source_lang)


def narrow_floor(table: pd.DataFrame, source_lang: str = "en") -> pd.DataFrame:
    """The tasks whose floor decision one model would turn (a verdict resting on such a task is fragile):
    rows task, at_floor, model (the one nearest to turning it: the weakest above chance, or the strongest
    of the others), above (its non-English languages clearly above chance) and languages (tested)."""
    languages = _languages_above(table, source_lang)
    rows = []
    if languages is not None:
        share = languages["sum"] / languages["count"]  # (task, model) -> share of languages above chance
        for task, above in _more_than_half(languages).groupby(level="task", sort=False):
            above, floor = above.droplevel("task"), _task_at_floor(above)
            side = share[task][above != floor]  # at floor: the models below chance; else those above
            if side.empty:
                continue
            model = side.idxmax() if floor else side.idxmin()
            turned = above.copy()
            turned[model] = floor  # the nearest model crosses to the other side
            if _task_at_floor(turned) != floor:
                rows.append((task, floor, model, *languages.loc[(task, model)]))
    return pd.DataFrame(rows, columns=["task", "at_floor", "model", "above", "languages"]).astype(
        {"at_floor": bool, "above": int, "languages": int})  # typed when empty too: a boolean mask stays one


def _narrow_sentence(table: pd.DataFrame, source_lang: str) -> str:
    parts = [(f"with one model more above chance, {r.task} would no longer be at floor (the strongest of the others"
              if r.at_floor else f"with one model fewer above chance, {r.task} would be at floor (the weakest")
             + f", {r.model}, is clearly above chance in {r.above} of its {r.languages} non-English languages)"
             for r in narrow_floor(table, source_lang).itertuples()]
    return (" The decision is narrow: " + "; ".join(parts) + ".") if parts else ""

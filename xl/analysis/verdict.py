"""One rule for every finding of the paper: the MT-family minus LM-family difference of a measure,
with a 95% bootstrap interval, and a verdict read off the interval.

- `agrees` / `disagrees`: the interval lies wholly on the side the paper reports / the other side;
- `inconclusive`: the interval contains 0;
- `not tested`: a family has no model left (models that fail the source-dependence gate are
  left out: a model that did not learn to translate cannot stand for the MT objective), or the
  measure is at floor (a transfer task no model does clearly better than chance).

MT and CP models are pooled as the MT family, as the paper pools them against the LMs.
Replicates come from `xl.analysis.bootstrap`: every model measured on the same resamples,
so the family difference is computed replicate by replicate (a paired bootstrap); the interval
is the basic bootstrap interval, which corrects the shift resampling itself gives CKA.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from xl.analysis import bootstrap
from xl.core.errors import XLError
from xl.models import registry

VERDICTS = ("agrees", "disagrees", "inconclusive", "not tested")
COLUMNS = ["difference", "ci_low", "ci_high", "n_models_lm", "n_models_mt", "verdict"]


def side(model: str) -> str:
    """'LM' or 'MT' (MT and CP pooled)."""
    return "LM" if registry.family(model) == "LM" else "MT"


def difference(values: pd.Series) -> float:
    """Mean over the MT family's models minus mean over the LM family's (NaN if one is empty)."""
    sides = values.index.map(side)
    lm, mt = values[sides == "LM"], values[sides == "MT"]
    return float(mt.mean() - lm.mean()) if len(lm) and len(mt) else float("nan")


def decide(estimate: pd.Series, replicates: pd.DataFrame | None, paper_sign: int, failed=(),
           at_floor: bool = False) -> dict:
    """The verdict on one finding.

    estimate: the measure per model on all the data (index: model labels);
    replicates: the same measure per bootstrap replicate (rows) and model (columns), or None
    (no interval: the verdict is then `inconclusive` unless a family is missing);
    paper_sign: +1 if the paper finds the measure larger for MT than for LM models, -1 if smaller;
    failed: models that fail the source-dependence gate (left out); at_floor: the measure cannot
    tell models apart here (verdict `not tested`).
    """
    if paper_sign not in (1, -1):
        raise XLError(f"paper_sign is +1 or -1, got {paper_sign}")
    kept = estimate.drop(index=[m for m in failed if m in estimate.index]).dropna()
    sides = kept.index.map(side)
    out = {"difference": difference(kept), "ci_low": np.nan, "ci_high": np.nan,
           "n_models_lm": int((sides == "LM").sum()), "n_models_mt": int((sides == "MT").sum())}
    if at_floor or not (out["n_models_lm"] and out["n_models_mt"]):
        return {**out, "verdict": "not tested"}
    if replicates is not None:
        diffs = replicates[list(kept.index)].apply(difference, axis=1)
        out["ci_low"], out["ci_high"] = bootstrap.basic_interval(out["difference"], diffs)
    low, high = out["ci_low"], out["ci_high"]
    if np.isnan(low) or low <= 0 <= high:
        return {**out, "verdict": "inconclusive"}
    return {**out, "verdict": "agrees" if np.sign(low) == paper_sign else "disagrees"}


def sentence(result: dict, measure: str) -> str:
    """One plain sentence of a decide() result."""
    if result["verdict"] == "not tested":
        return f"{measure}: not tested (an LM or MT family has no model that can stand for it here)."
    ci = ("" if np.isnan(result["ci_low"]) else
          f", 95% interval [{result['ci_low']:+.3g}, {result['ci_high']:+.3g}]")
    return (f"{measure}: MT minus LM family = {result['difference']:+.3g}{ci} "
            f"({result['n_models_mt']} MT vs {result['n_models_lm']} LM models): {result['verdict']}.")


# ---------------------------------------------------------------- evidence tables

ESTIMATE = -1  # the `replicate` of the row measured on all the data
EVIDENCE_COLUMNS = ["finding", "measure", "at_floor", "model", "replicate", "value"]


def evidence(finding: str, measure: str, estimate: pd.Series, replicates: pd.DataFrame | None,
             at_floor: bool = False) -> pd.DataFrame:
    """One finding's measure as a long table a chapter writes and the conclusions read: one row per
    model for the estimate (replicate -1) and one per model and bootstrap replicate. A measure at
    floor keeps one row with no model, so that the conclusions can say why it is not tested."""
    rows = [(finding, measure, at_floor, model, ESTIMATE, float(v)) for model, v in estimate.items()]
    if replicates is not None:
        rows += [(finding, measure, at_floor, model, int(r), float(v))
                 for r, row in replicates.iterrows() for model, v in row.items()]
    if not rows:
        rows = [(finding, measure, at_floor, None, ESTIMATE, np.nan)]
    return pd.DataFrame(rows, columns=EVIDENCE_COLUMNS)


def from_evidence(table: pd.DataFrame, finding: str) -> tuple[pd.Series, pd.DataFrame | None, str, bool]:
    """(estimate, replicates or None, measure, at_floor) of one finding in an evidence table."""
    part = table[table.finding == finding]
    if part.empty:
        raise XLError(f"no evidence for {finding!r}; findings present: {sorted(set(table.finding))}")
    part = part.assign(at_floor=part.at_floor.astype(bool))
    rows = part.dropna(subset=["model"])
    est = rows[rows.replicate == ESTIMATE].set_index("model").value
    boot = rows[rows.replicate != ESTIMATE].pivot(index="replicate", columns="model", values="value")
    return est, (boot if len(boot) else None), str(part.measure.iloc[0]), bool(part.at_floor.any())

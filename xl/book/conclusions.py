"""The paper's findings, checked against this book's own results tables.

Every verdict is computed from results/<preset>/*.csv; nothing here is written by hand
except what the paper says. A finding is 'agrees' when our numbers point the same way as
the paper's, 'disagrees' when they point the other way, 'inconclusive' when the two groups
differ by less than `TOLERANCE` of the larger value (the paper's effects are larger: its CP
models' singular values are 4-25% above mBART's), 'not run' when a table is missing, and
'not tested' when no MT or CP model of the run passes the source-dependence gate (gate.csv,
xl.analysis.source_dependence): a model that did not learn to translate cannot stand for the
MT objective. Models that fail the gate are left out of every finding.
"""
from __future__ import annotations

import pandas as pd

from xl.analysis import source_dependence
from xl.core import paths
from xl.core.presets import PRESETS
from xl.core.results import Store
from xl.models import registry

FINDINGS = {
    "alignment": "MT (continued) training does not make representations more aligned across languages "
                 "than LM training.",
    "separability": "MT-trained models are more separable by language than LM-trained ones.",
    "scaling": "Continued MT training scales the weights up (larger singular values than the base).",
    "transfer": "MT and CP models transfer worse zero-shot than LM models.",
}


def _last_layer(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.layer == df.groupby("model").layer.transform("max")]


class NotTested(Exception):
    """A finding has no model left on one side."""


def _by_family(values: pd.Series) -> pd.Series:
    """Mean over the models of each family; MT and CP are pooled as 'MT/CP'."""
    families = values.index.map(lambda m: "LM" if registry.family(m) == "LM" else "MT/CP")
    means = values.groupby(families).mean()
    if not {"LM", "MT/CP"} <= set(means.index):
        raise NotTested
    return means


TOLERANCE = 0.02


def _verdict(finding: str, lm: float, mt: float, agrees: bool, measure: str) -> dict:
    close = abs(mt - lm) <= TOLERANCE * max(abs(lm), abs(mt))
    return {"finding": finding, "paper": FINDINGS[finding], "measure": measure, "LM": lm, "MT/CP": mt,
            "verdict": "inconclusive" if close else "agrees" if agrees else "disagrees"}


def alignment(sim: pd.DataFrame) -> dict:
    cka = _last_layer(sim[(sim.metric == "linear_cka") & (sim.lang_a != sim.lang_b)])
    fam = _by_family(cka.groupby("model").value.mean())
    return _verdict("alignment", fam["LM"], fam["MT/CP"], fam["MT/CP"] <= fam["LM"],
                    "cross-language linear CKA, last layer")


def separability(sep: pd.DataFrame) -> dict:
    gap = _last_layer(sep[sep.metric == "same_minus_translation"])
    fam = _by_family(gap.set_index("model").value)
    return _verdict("separability", fam["LM"], fam["MT/CP"], fam["MT/CP"] > fam["LM"],
                    "same-language minus translation similarity, last layer")


def scaling(svd: pd.DataFrame) -> dict:
    last = svd[svd.layer == svd.layer.max()]
    norms = last.groupby("model").sigma_norm.mean()
    base = registry.base_of(norms.index)
    cp = [m for m in norms.index if registry.family(m) == "CP"]
    if base is None or not cp:
        raise NotTested
    return _verdict("scaling", norms[base], norms[cp].mean(), norms[cp].mean() > norms[base],
                    f"mean ||sigma|| of the last layer's matrices ({base} vs CP models)")


def transfer(tr: pd.DataFrame) -> dict:
    zero_shot = tr[tr.lang != "en"]
    per_model = zero_shot.groupby(["model", "task"]).score.mean().groupby("model").mean()
    fam = _by_family(per_model)
    return _verdict("transfer", fam["LM"], fam["MT/CP"], fam["MT/CP"] < fam["LM"],
                    "zero-shot score averaged over tasks and non-English languages")


CHECKS = {"alignment": ("similarity", alignment), "separability": ("separability", separability),
          "scaling": ("svd", scaling), "transfer": ("transfer", transfer)}


def verdicts(preset: str) -> pd.DataFrame:
    """One row per finding for one preset's results."""
    store = Store(preset)
    failed = source_dependence.failed_in(preset)
    rows = []
    for finding, (table, check) in CHECKS.items():
        if not store.exists(table):
            rows.append({"finding": finding, "paper": FINDINGS[finding], "verdict": "not run"})
            continue
        df = store.read(table)
        try:
            rows.append(check(df[~df.model.isin(failed)]))
        except NotTested:
            rows.append({"finding": finding, "paper": FINDINGS[finding], "verdict": "not tested",
                         "measure": f"no MT/CP model passes the source-dependence gate ({', '.join(sorted(failed))} fail)"})
    return pd.DataFrame(rows).assign(preset=preset)


def scales_run() -> list[str]:
    """The presets that have results on this machine, in the order smoke, lab, paper."""
    base = paths.results_dir("lab").parent
    return [p for p in PRESETS if (base / p).is_dir() and any((base / p).glob("*.csv"))]

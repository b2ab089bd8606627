"""Transfer scores against the other chapters' measurements: cross-lingual similarity per language,
separability per model, and their correlations."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from xl.transfer.report import summary

# reference curves and interval bounds of the similarity chapter, not measurements
BASELINE_SUFFIXES = ("_shuffled", "_chance", "_ci_low", "_ci_high")


def relate(transfer: pd.DataFrame, similarity: pd.DataFrame | None = None,
           separability: pd.DataFrame | None = None, source_lang: str = "en", layer: str = "last") -> dict:
    """Transfer score against cross-lingual similarity (per model and language) and separability (per model).

    similarity: rows model, layer, metric, lang_a, lang_b, value (similarity chapter);
    separability: rows model, layer, metric, value. Each model's `layer` ("last" = its
    deepest layer, or a number) is used, as the heads read the last layer. Returns
    {"by_language": frame model, task, lang, metric, similarity, score;
     "by_model": frame model, task, metric, separability, score; "correlations": frame}.
    """
    s = summary(transfer)
    s = s[s.lang != source_lang]
    out = {"by_language": pd.DataFrame(), "by_model": pd.DataFrame()}

    def pick_layer(frame):
        if layer == "last":
            deepest = frame.groupby("model").layer.transform("max")
            return frame[frame.layer == deepest]
        return frame[frame.layer == int(layer)]

    if similarity is not None and len(similarity):
        sim = pick_layer(similarity[~similarity.metric.str.endswith(BASELINE_SUFFIXES)])
        pairs = sim[(sim.lang_a == source_lang) | (sim.lang_b == source_lang)].copy()
        pairs["lang"] = np.where(pairs.lang_a == source_lang, pairs.lang_b, pairs.lang_a)
        pairs = pairs[pairs.lang != source_lang].groupby(["model", "metric", "lang"], as_index=False).value.mean()
        merged = s.merge(pairs.rename(columns={"metric": "similarity_metric", "value": "similarity"}),
                         on=["model", "lang"])
        out["by_language"] = merged.rename(columns={"mean": "score"})
    if separability is not None and len(separability):
        measured = separability[~separability.metric.str.endswith(BASELINE_SUFFIXES)]
        sep = pick_layer(measured).groupby(["model", "metric"], as_index=False).value.mean()
        per_model = s.groupby(["model", "task"], as_index=False)["mean"].mean()
        merged = per_model.merge(sep.rename(columns={"metric": "separability_metric", "value": "separability"}),
                                 on="model")
        out["by_model"] = merged.rename(columns={"mean": "score"})
    rows = []
    for kind, frame, x, metric_col in (("similarity", out["by_language"], "similarity", "similarity_metric"),
                                       ("separability", out["by_model"], "separability", "separability_metric")):
        if frame.empty:
            continue
        for (task, metric), g in frame.groupby(["task", metric_col]):
            if len(g) >= 3 and g[x].nunique() > 1 and g.score.nunique() > 1:
                rows.append((kind, metric, task, len(g), float(pearsonr(g[x], g.score)[0]),
                             float(spearmanr(g[x], g.score)[0])))
    out["correlations"] = pd.DataFrame(rows, columns=["against", "metric", "task", "n", "pearson", "spearman"])
    return out

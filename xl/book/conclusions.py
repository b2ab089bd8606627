"""The paper's findings, checked against this book's own results tables.

Every verdict is computed from results/<preset>/*.csv; nothing here is written by hand except
what the paper says. Each chapter writes the evidence for its findings (`xl.analysis.verdict.evidence`:
a measure per model on all the data and on bootstrap resamples); every finding is decided by
the one rule of `xl.analysis.verdict.decide`: the MT-family minus LM-family difference and its
95% interval give 'agrees', 'disagrees' or 'inconclusive' (the interval contains 0); 'not tested'
when a family has no model left (models that fail the source-dependence gate of the models
chapter are left out: a model that did not learn to translate cannot stand for the MT
objective) or the measure is at floor; 'not run' when a chapter's evidence table is missing.
Two sensitivities beside each verdict: the same rule counting the models that fail the gate as MT models
(`_ignoring_gate`), and leaving out the models that pass it only narrowly as well (`_strict_gate`).
"""
from __future__ import annotations

import pandas as pd

from xl.analysis import source_dependence, verdict
from xl.core import paths
from xl.core.presets import PRESETS
from xl.core.results import Store
from xl.core.text import listed

FINDINGS = {
    "alignment": "MT (continued) training does not make representations more aligned across languages "
                 "than LM training.",
    "separability": "MT-trained models are more separable by language than LM-trained ones.",
    "scaling": "Continued MT training scales the weights up (larger singular values than the base).",
    "transfer": "MT and CP models transfer worse zero-shot than LM models.",
}
# The sign of MT minus LM that the paper reports, per finding.
PAPER_SIGN = {"alignment": -1, "separability": 1, "scaling": 1, "transfer": -1}
# The chapter table that holds each finding's evidence.
EVIDENCE = {"alignment": "similarity_evidence", "separability": "similarity_evidence",
            "scaling": "svd_evidence", "transfer": "transfer_evidence"}
IGNORING_GATE, STRICT_GATE, UNGATED = "_ignoring_gate", "_strict_gate", ("difference", "ci_low", "ci_high", "verdict")
# How the conclusions sentence (`at_scale`) says each verdict.
SAID = {"agrees": "agrees with the paper on", "disagrees": "disagrees on",
        "inconclusive": "cannot tell the families apart (the interval contains 0) on", "not tested": "does not test",
        "not run": "has not run"}
COLUMNS = ["finding", "paper", "measure", "LM", "MT/CP", *verdict.COLUMNS,
           *(k + suffix for suffix in (IGNORING_GATE, STRICT_GATE) for k in UNGATED)]


def decide(finding: str, evidence: pd.DataFrame, failed=(), narrow=()) -> dict:
    """One row of the conclusions table from a chapter's evidence table; `failed`: the models that fail
    the gate, `narrow`: those that pass it narrowly."""
    estimate, replicates, measure, at_floor = verdict.from_evidence(evidence, finding)
    kept = estimate.drop(index=[m for m in failed if m in estimate.index])
    sides = kept.groupby(kept.index.map(verdict.side)).mean()
    result = verdict.decide(estimate, replicates, PAPER_SIGN[finding], failed=failed, at_floor=at_floor)
    if result["verdict"] == "not tested" and not at_floor and failed:
        measure += f"; no MT/CP model passes the source-dependence gate ({', '.join(sorted(failed))} fail)"
    # what the same rule says when the models that fail the gate count as MT models anyway
    ungated = verdict.decide(estimate, replicates, PAPER_SIGN[finding], at_floor=at_floor)
    # and when the models that pass it narrowly are left out too
    strict = verdict.decide(estimate, replicates, PAPER_SIGN[finding], failed={*failed, *narrow},
                            at_floor=at_floor) if narrow else result
    return {"finding": finding, "paper": FINDINGS[finding], "measure": measure,
            "LM": sides.get("LM"), "MT/CP": sides.get("MT"), **result,
            **{f"{key}{IGNORING_GATE}": ungated[key] for key in UNGATED},
            **{f"{key}{STRICT_GATE}": strict[key] for key in UNGATED}}


def verdicts(preset: str) -> pd.DataFrame:
    """One row per finding for one preset's results."""
    store = Store(preset)
    gate = source_dependence.gate_in(preset)
    failed, narrow = source_dependence.failed(gate), source_dependence.narrow_passes(gate)
    rows, tables = [], {}
    for finding, table in EVIDENCE.items():
        if table not in tables:
            tables[table] = store.read(table) if store.exists(table) else None
        evidence = tables[table]
        if evidence is not None and finding in set(evidence.finding):
            rows.append(decide(finding, evidence, failed, narrow))
        else:
            rows.append({"finding": finding, "paper": FINDINGS[finding], "verdict": "not run"})
    return pd.DataFrame(rows).reindex(columns=COLUMNS).assign(preset=preset)


def at_scale(run: pd.DataFrame, preset: str) -> str:
    """One sentence: how a preset's verdicts (`verdicts`, indexed by finding) side with the paper."""
    said = {v: list(run.index[run.verdict == v]) for v in SAID}
    agree = said.pop("agrees")
    parts = [f"agrees with the paper on {len(agree)} of {len(run)} findings" + (f" ({listed(agree)})" if agree else "")]
    parts += [f"{SAID[kind]} {listed(findings)}" for kind, findings in said.items() if findings]
    return f"**At the {preset} scale**, this run " + "; ".join(parts) + "."


def did_not_work(table: pd.DataFrame, preset: str) -> str:
    """'What did not work' at `preset`, as markdown bullets read from its tables (`table`: the `verdicts`
    of one or more presets): the MT models that fail the gate, the measures at floor, what the gate
    changes, the findings left undecided."""
    run = table[table.preset == preset].set_index("finding")
    gate = source_dependence.gate_in(preset)
    failing = gate[~gate.passes_gate.astype(bool)]
    lines = [_failing_gate(failing, gate)] if len(failing) else []
    lines += [f"- **{finding}**: {measure}." for finding, measure in run.measure.dropna().items()
              if "at floor" in measure]
    lines += _gate_changes(run) if len(failing) else []
    narrow = sorted(source_dependence.narrow_passes(gate))
    lines += [_narrow_changes(run, narrow, gate)] if narrow else []
    untested = list(run.index[run.verdict == "not tested"])
    if untested:
        lines.append(f"- Findings left undecided at this scale: {listed(untested)}.")
    return "\n".join(lines) if lines else "Every measure of this run could be decided."


def _failing_gate(failing: pd.DataFrame, gate: pd.DataFrame) -> str:
    passing = gate.model[gate.passes_gate.astype(bool)]
    why = "; ".join(f"{r.model}: {' and '.join(source_dependence.shortfalls(r))}" for r in failing.itertuples())
    return (f"- **MT models that fail the gate.** {len(failing)} of {len(gate)} models trained with MT fail the "
            f"models chapter's source-dependence gate, which asks that a same-length wrong source cost at least "
            f"{source_dependence.MIN_GAP} nats per piece and that chrF beat the source-blind baseline by "
            f"{source_dependence.MIN_CHRF_MARGIN:.0f} points in every direction ({why}, in the weakest direction). "
            + (f"They are left out of every finding: the MT/CP side of the verdicts above is {listed(list(passing))} "
               f"alone." if len(passing) else "Every finding that needs them is *not tested*, not decided."))


def _gate_changes(run: pd.DataFrame) -> list[str]:
    """A bullet on the verdicts that counting the models that fail the gate as MT models would change."""
    changed = run[run.verdict_ignoring_gate.notna() & (run.verdict != run.verdict_ignoring_gate)]
    if changed.empty:
        return ["- **What the gate changes.** Counting the models that fail it as MT models anyway would not "
                "change any verdict (the differences with them are in the table above)."]
    return ["- **What the gate changes.** Counting the models that fail it as MT models anyway (as a book "
            "without the gate would), the same rule would say: "
            + "; ".join(f"{f} *{v}*" for f, v in changed.verdict_ignoring_gate.items())
            + ". Those verdicts count models that did not learn to translate as evidence about the MT "
            "objective; they are shown so that the reader sees what the gate changes."]


def _narrow_changes(run: pd.DataFrame, narrow: list[str], gate: pd.DataFrame) -> str:
    """A bullet on the models that pass the gate narrowly and the verdicts that leaving them out would change."""
    one = len(narrow) == 1
    clear = [m for m in gate.model[gate.passes_gate.astype(bool)] if m not in narrow]
    side = f"the MT/CP side then {listed(clear)} alone" if clear else "no MT/CP model left"
    said = (f"- **Narrow passes.** {listed(narrow)} pass{'es' if one else ''} the gate only narrowly: the bars lie "
            f"inside the 95% intervals of {'its' if one else 'their'} measures over the held-out sentences. "
            f"Leaving {'it' if one else 'them'} out as well ({side})")
    column = "verdict" + STRICT_GATE
    changed = run[run[column].notna() & (run.verdict != run[column])]
    if changed.empty:
        return said + " would not change any verdict."
    return (said + ", the same rule would say: " + "; ".join(f"{f} *{v}*" for f, v in changed[column].items())
            + ": those verdicts rest on a model whose translation the sample of sentences cannot vouch for.")


def scales_run() -> list[str]:
    """The presets that have results on this machine, in the order smoke, lab, paper."""
    base = paths.results_dir("lab").parent
    return [p for p in PRESETS if (base / p).is_dir() and any((base / p).glob("*.csv"))]

"""The metrics of the transfer tasks: accuracy, span F1 (CoNLL), token accuracy, nDCG (XGLUE's WPR)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import ndcg_score

from xl.core.errors import XLError


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise XLError(f"accuracy: {len(y_true)} labels but {len(y_pred)} predictions")
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def spans(tags) -> set[tuple[str, int, int]]:
    """Entity spans (type, start, end exclusive) of a BIO/IOB tag sequence, as conlleval and seqeval read it.

    A span starts at B-X, or at I-X after O or after a tag of another type; it ends
    before O, B-*, or a tag of another type.
    """
    out, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        tag = str(tag)
        prefix, _, label = tag.partition("-") if tag not in ("O", "") else ("O", "", "")
        ends = start is not None and (prefix in ("O", "B") or label != kind)
        if ends:
            out.add((kind, start, i))
            start, kind = None, None
        if prefix in ("B", "I") and start is None:
            start, kind = i, label
    return out


def span_f1(true_seqs, pred_seqs) -> float:
    """Micro F1 over exact entity spans (seqeval's default, CoNLL evaluation)."""
    if len(true_seqs) != len(pred_seqs):
        raise XLError(f"span_f1: {len(true_seqs)} gold sequences but {len(pred_seqs)} predicted")
    n_true = n_pred = n_hit = 0
    for t, p in zip(true_seqs, pred_seqs):
        if len(t) != len(p):
            raise XLError(f"span_f1: a sentence has {len(t)} gold tags but {len(p)} predicted")
        st, sp = spans(t), spans(p)
        n_true, n_pred, n_hit = n_true + len(st), n_pred + len(sp), n_hit + len(st & sp)
    if n_hit == 0:
        return 0.0
    precision, recall = n_hit / n_pred, n_hit / n_true
    return 2 * precision * recall / (precision + recall)


def token_accuracy(true_seqs, pred_seqs) -> float:
    t = [x for s in true_seqs for x in s]
    p = [x for s in pred_seqs for x in s]
    return accuracy(t, p)


def ndcg(groups, labels, scores) -> float:
    """Mean over queries of nDCG (all candidates, gain = relevance label, log2 discount), as XGLUE's WPR.

    Queries with fewer than two candidates are skipped (as XGLUE's evaluation);
    tied scores share their gains (sklearn's ndcg_score).
    """
    frame = pd.DataFrame({"group": list(groups), "label": np.asarray(labels, dtype=float),
                          "score": np.asarray(scores, dtype=float)})
    values = [ndcg_score(g.label.to_numpy()[None], g.score.to_numpy()[None])
              for _, g in frame.groupby("group", sort=False) if len(g) >= 2]
    return float(np.mean(values)) if values else float("nan")

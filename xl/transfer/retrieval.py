"""Retrieval tasks: no fine-tuning, cosine nearest neighbour of mean-pooled representations at every layer."""
from __future__ import annotations

import numpy as np

from xl.core import io, memo, tensors
from xl.core.errors import XLError
from xl.data import tasks as tasklib
from xl.transfer.finetuning import CACHE, CACHE_VERSION, _threads, model_fingerprint


def retrieve(encoder, task, *, cache: bool = True, languages=None, max_length: int = 256) -> dict:
    """Accuracy@1 of English -> language retrieval, at every layer (0 = embeddings): {lang: [acc per layer]}."""
    if task.kind != "retrieval":
        raise XLError(f"task {task.name!r} is a {task.kind} task, not retrieval")
    languages = list(languages if languages is not None else task.languages)

    def compute() -> dict:
        with _threads(encoder):
            return {"layers": _retrieve(encoder, task, languages, max_length)}

    key = _retrieval_key(encoder, task, languages, max_length)
    return memo.memo(CACHE, key, compute, enabled=cache)["layers"]


def _retrieval_key(encoder, task, languages, limit) -> str:
    # final-norm: the last layer read as the fine-tuned heads read it (Encoder.encode)
    return io.digest(CACHE_VERSION, "retrieval", model_fingerprint(encoder), task.fingerprint(), sorted(languages),
                     limit, "final-norm")


def _retrieve(encoder, task, languages, max_length) -> dict:
    out = {}
    queries = None
    for lang in languages:
        df = task.test[lang]
        if queries is None:
            queries = _unit(encoder.encode(df["query"].tolist(), task.source_lang, max_length=max_length,
                                           final_norm=True))
        targets = _unit(encoder.encode(df["target"].tolist(), lang, max_length=max_length, final_norm=True))
        sims = np.einsum("lqh,lth->lqt", queries, targets)
        out[lang] = [tasklib.score(task, df, s.argmax(-1)) for s in sims]
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return tensors.unit(x.astype(np.float32))

"""A model-free reference for two-label pair tasks: the word overlap of the two texts, thresholded."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from xl.core.errors import XLError
from xl.data import languages as langs
from xl.data.metrics import accuracy
from xl.data.tasks import Task, score

# Scripts written without spaces between words: the overlap baseline compares their characters.
UNSPACED_SCRIPTS = {"Han", "Japanese", "Thai"}


def overlap_units(text: str, lang: str) -> set[str]:
    """The lower-cased words of a text, or its characters in a script written without spaces."""
    units = re.findall(r"\w+", str(text).lower())
    if langs.table().script.get(lang) in UNSPACED_SCRIPTS:  # unknown languages: words
        units = [c for unit in units for c in unit]
    return set(units)


def overlap(df: pd.DataFrame, lang: str) -> np.ndarray:
    """Jaccard overlap of the two texts of each pair (`overlap_units`)."""
    sets = [(overlap_units(a, lang), overlap_units(b, lang)) for a, b in zip(df.text, df.text_b)]
    return np.array([len(a & b) / max(1, len(a | b)) for a, b in sets])


def is_binary_pair(task: Task) -> bool:
    """A pair task with two labels (what `overlap_baseline` reads)."""
    return task.kind == "pair" and len(task.labels) == 2


def overlap_baseline(task: Task, languages=None) -> dict[str, float]:
    """A model-free reference for a two-label pair task, per test language: predict the second
    label when the pair's overlap reaches the threshold that scores best on the English
    training pairs (the threshold, like a fine-tuned head, crosses languages zero-shot)."""
    if not is_binary_pair(task):
        raise XLError(f"the overlap baseline needs a two-label pair task; {task.name!r} is a {task.kind} task "
                      f"with {len(task.labels)} labels")
    train = overlap(task.train, task.source_lang)
    labels = task.train.label.to_numpy()
    best = max(np.unique(train), key=lambda t: accuracy(labels, (train >= t).astype(int)))
    languages = list(languages if languages is not None else task.languages)
    return {lang: score(task, task.test[lang], (overlap(task.test[lang], lang) >= best).astype(int))
            for lang in languages}

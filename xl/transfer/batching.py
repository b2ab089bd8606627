"""Model inputs of task examples: joined pairs, the match head's stacked sides, tagged words between
the model's special tokens; the evaluation order; the longest input a model reads."""
from __future__ import annotations

import numpy as np
import pandas as pd

from xl.core import tensors
from xl.transfer.params import FinetuneParams


def _join(encoder, a, b) -> list[str]:
    """A sentence pair as one text, the two sides separated by the tokenizer's separator token."""
    tok = encoder.tokenizer
    sep = tok.sep_token or tok.eos_token
    return [f"{x} {sep} {y}" for x, y in zip(a, b)]


def _texts(encoder, df: pd.DataFrame) -> list[str]:
    if "text_b" in df:
        return _join(encoder, df.text.astype(str), df.text_b.astype(str))
    return df.text.astype(str).tolist()


def _model_inputs(batch) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _specials(encoder, lang: str) -> tuple[list[int], list[int]]:
    """The model's special tokens before and after the text (language code, <s>, </s>...) for `lang`."""
    batch = encoder.tokenize(["a"], lang)
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    real = encoder.pool_mask(batch)[0][batch["attention_mask"][0].bool()].tolist()
    where = [i for i, r in enumerate(real) if r > 0]
    if not where:
        return ids, []
    return ids[:where[0]], ids[where[-1] + 1:]


class _TagBatcher:
    """Word-level tagging inputs: sub-words of each word between the model's special tokens."""

    def __init__(self, encoder, lang: str, max_length: int):
        self.encoder, self.max_length = encoder, max_length
        self.prefix, self.suffix = _specials(encoder, lang)

    def __call__(self, words_list, tags_list=None):
        tok = self.encoder.tokenizer
        room = self.max_length - len(self.prefix) - len(self.suffix)
        enc = tok([list(map(str, w)) for w in words_list], is_split_into_words=True, add_special_tokens=False)
        rows, labels, firsts = [], [], []
        for i in range(len(words_list)):
            ids, word_ids = enc["input_ids"][i][:room], enc.word_ids(i)[:room]
            first, seen = [], set()
            for pos, w in enumerate(word_ids):
                if w is not None and w not in seen:
                    seen.add(w)
                    first.append((w, pos + len(self.prefix)))
            rows.append(self.prefix + ids + self.suffix)
            firsts.append(first)
            if tags_list is not None:
                lab = [-100] * len(rows[-1])
                for w, pos in first:
                    lab[pos] = int(tags_list[i][w])
                labels.append(lab)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        device = self.encoder.device
        batch = {"input_ids": tensors.pad(rows, pad_id).to(device),
                 "attention_mask": tensors.pad([[1] * len(r) for r in rows], 0).to(device)}
        if tags_list is not None:
            batch["labels"] = tensors.pad(labels, -100).to(device)
        return batch, firsts


def _match(task, params: FinetuneParams) -> bool:
    """Does this task read pairs with the MatchHead (else: one joined sequence)?"""
    return params.pair_head == "match" and task.kind in ("pair", "ranking")


def _inputs(encoder, task, df: pd.DataFrame, lang: str, params: FinetuneParams) -> tuple:
    """Model inputs of sentence or pair examples (match head: the two sides stacked in one batch)."""
    if _match(task, params):
        texts = df.text.astype(str).tolist() + df.text_b.astype(str).tolist()
        return (encoder.tokenize(texts, lang, max_length=params.max_length),)
    return (encoder.tokenize(_texts(encoder, df), lang, max_length=params.max_length),)


def _order(df: pd.DataFrame, task) -> np.ndarray:
    """Evaluation order: by length, so batches pad little."""
    if task.kind == "tagging":
        lengths = df.words.map(lambda w: sum(len(str(x)) + 1 for x in w)).to_numpy()
    else:
        lengths = df.text.astype(str).str.len().to_numpy() + (df.text_b.astype(str).str.len().to_numpy()
                                                              if "text_b" in df else 0)
    return np.argsort(-lengths, kind="stable")


def max_length(encoder, requested: int) -> int:
    """`requested`, clipped to what the tokenizer and the model's position embeddings allow."""
    limit = int(requested)
    tokenizer_limit = getattr(encoder.tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < 1_000_000:
        limit = min(limit, int(tokenizer_limit))
    positions = tensors.max_positions(getattr(encoder.model, "config", None))
    if positions:
        limit = min(limit, int(positions))
    return limit

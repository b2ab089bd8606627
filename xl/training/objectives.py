"""The training objectives of the lab models, as batches of token ids.

* masked LM (XLM-R, mBERT): `MLM_MASK` (40%) of the pieces are predicted, 80% of them
  shown as `<mask>`, 10% as a random piece, 10% unchanged;
* denoising (mBART): span infilling, ~35% of the pieces removed in spans whose
  lengths follow Poisson(3.5), each span replaced by a single `<mask>`; source
  and target are `<lang_code> pieces </s>` as in mBART-50;
* translation (NLLB, mBART-50 MMT): source `<src_code> pieces </s>`, target
  `<tgt_code> pieces </s>`, for the directions of a model (`directions`).

Everything random is drawn from generators seeded by (seed, step), so a batch
depends only on its step: training is deterministic and resumes exactly.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch

from xl.core.errors import XLError
from xl.core.tensors import pad
from xl.data import languages as langs
from xl.models.registry import DIRECTIONS

IGNORE = -100
# XLM-R and mBERT predict 15% of the pieces. Trained for a minute, the lab masked LM stays near
# unigram loss with 15% (6.9 after 1,200 steps); with 40% it reaches 5.8 and retrieves an English
# verse's paraphrase 80% of the time instead of 29% (Wettig et al. 2023, "Should You Mask 15%
# in Masked Language Modeling?", also find 40% better).
MLM_MASK = 0.4


def rng_at(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on (seed, keys): the same batch at the same step, always."""
    return np.random.default_rng([seed, *keys])


# ---------------------------------------------------------------- noising

def span_infill(ids, mask_id: int, rng: np.random.Generator, ratio: float = 0.35, poisson: float = 3.5) -> list[int]:
    """mBART/BART text infilling: remove round(ratio * n) pieces in spans of Poisson lengths,
    each span becomes one `mask_id`. Spans never touch (an unmasked piece separates them),
    so the number of masks is the number of spans."""
    ids = list(ids)
    n = len(ids)
    n_mask = int(round(ratio * n))
    if n_mask == 0:
        return ids
    lengths = []
    while sum(lengths) < n_mask:
        lengths.append(max(1, int(rng.poisson(poisson))))
    lengths[-1] -= sum(lengths) - n_mask          # still >= 1: the sum before it was < n_mask
    n_keep = n - n_mask
    if len(lengths) > n_keep + 1:                 # too many spans to separate: merge the surplus
        lengths = lengths[: n_keep] + [sum(lengths[n_keep:])]
    # the kept pieces leave n_keep + 1 gaps; each span goes into a different gap
    gaps = set(rng.choice(n_keep + 1, size=len(lengths), replace=False).tolist())
    out, pos, spans = [], 0, iter(lengths)
    for gap in range(n_keep + 1):
        if gap in gaps:
            out.append(mask_id)
            pos += next(spans)
        if gap < n_keep:
            out.append(ids[pos])
            pos += 1
    return out


def mlm_mask(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab: tuple[int, int],
             generator: torch.Generator, prob: float = MLM_MASK):
    """BERT masking (80/10/10) of a fraction `prob` of a padded batch: returns (inputs, labels);
    `special` marks pieces never masked."""
    labels = input_ids.clone()
    chosen = (torch.rand(input_ids.shape, generator=generator) < prob) & ~special
    # at least one prediction per sequence keeps the loss defined on very short verses
    none = ~chosen.any(1)
    if none.any():
        scores = torch.rand(input_ids.shape, generator=generator).masked_fill(special, -1.0)
        first = scores.argmax(1)
        chosen[none, first[none]] = True
    labels[~chosen] = IGNORE
    inputs = input_ids.clone()
    r = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (r < 0.8)] = mask_id
    swap = chosen & (r >= 0.8) & (r < 0.9)
    inputs[swap] = torch.randint(vocab[0], vocab[1], (int(swap.sum()),), generator=generator)
    return inputs, labels


# ---------------------------------------------------------------- directions

def directions(kind: str, languages, pivot: str = "en") -> list[tuple[str, str]]:
    """Translation directions of a model: 'm2m' (all ordered pairs), 'en-m2m' (into and out of English),
    'm2o' (into English), 'o2m' (from English)."""
    languages = list(languages)
    if kind not in DIRECTIONS:
        raise XLError(f"unknown translation directions {kind!r}; choose one of {list(DIRECTIONS)}")
    if kind != "m2m" and pivot not in languages:
        raise XLError(f"{kind} needs {pivot!r} among the languages, got {languages}")
    if kind == "m2m":
        return [(s, t) for s, t in itertools.permutations(languages, 2)]
    others = [lang for lang in languages if lang != pivot]
    into, out_of = [(s, pivot) for s in others], [(pivot, t) for t in others]
    return {"m2o": into, "o2m": out_of, "en-m2m": into + out_of}[kind]


# ---------------------------------------------------------------- batching

def length_batches(lengths, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
    """Split examples 0..n-1 (already in random order) into batches of similar length: sort
    each pool of `pool` batches by length, cut it into batches, shuffle the batches."""
    lengths = np.asarray(lengths)
    batches = []
    chunk = batch_size * pool
    for start in range(0, len(lengths), chunk):
        idx = np.arange(start, min(start + chunk, len(lengths)))
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches += [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


class Tokenized:
    """Token ids (no special tokens, truncated to leave room for a code and </s>) of the texts
    a schedule needs, tokenized once."""

    def __init__(self, tokenizer, texts: list[str], max_length: int):
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []
        self.ids = [x[: max_length - 2] for x in ids]

    def __getitem__(self, i: int) -> list[int]:
        return self.ids[i]

    def __len__(self):
        return len(self.ids)


class MonolingualTask:
    """Denoising ('dae') or masked LM ('mlm') batches over monolingual verses (`texts`, `langs`
    aligned lists), `steps` batches of `batch_size` verses drawn without replacement while they last."""

    def __init__(self, objective: str, tokenizer, texts, text_langs, steps: int, batch_size: int,
                 max_length: int, seed: int):
        if objective not in ("dae", "mlm"):
            raise XLError(f"unknown monolingual objective {objective!r}")
        self.objective, self.tok, self.seed = objective, tokenizer, seed
        rng = rng_at(seed, 1)
        need = steps * batch_size
        order = np.concatenate([rng.permutation(len(texts)) for _ in range(-(-need // len(texts)))])[:need]
        self.langs = [text_langs[i] for i in order]
        self.data = Tokenized(tokenizer, [texts[i] for i in order], max_length)
        self.batches = length_batches([len(x) for x in self.data.ids], batch_size, rng)
        self.codes = {lang: tokenizer.convert_tokens_to_ids(langs.code(lang, "mbart"))
                      for lang in set(self.langs)} if objective == "dae" else {}

    def __len__(self):
        return len(self.batches)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        rows = self.batches[step]
        tok = self.tok
        if self.objective == "dae":
            rng = rng_at(self.seed, 2, step)
            src, tgt = [], []
            for i in rows:
                code = self.codes[self.langs[i]]
                src.append([code] + span_infill(self.data[i], tok.mask_token_id, rng) + [tok.eos_token_id])
                tgt.append([code] + self.data[i] + [tok.eos_token_id])
            labels = pad(tgt, IGNORE)
            input_ids = pad(src, tok.pad_token_id)
            return {"input_ids": input_ids, "attention_mask": (input_ids != tok.pad_token_id).long(),
                    "labels": labels}
        seqs = [[tok.bos_token_id] + self.data[i] + [tok.eos_token_id] for i in rows]
        input_ids = pad(seqs, tok.pad_token_id)
        special = torch.isin(input_ids, torch.tensor(tok.all_special_ids))
        gen = torch.Generator().manual_seed(int(rng_at(self.seed, 3, step).integers(2**62)))
        # random replacements are ordinary pieces: after <s> <pad> </s> <unk>, before <mask> (XLM-R layout)
        first_piece = 1 + max(tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id)
        inputs, labels = mlm_mask(input_ids, special, tok.mask_token_id, (first_piece, tok.mask_token_id), gen)
        return {"input_ids": inputs, "attention_mask": (input_ids != tok.pad_token_id).long(), "labels": labels}


class TranslationTask:
    """Translation batches: each example is a direction drawn uniformly from `dirs`, then a row of
    `corpus` (one column per language, aligned rows, NaN where a language is missing) that has both."""

    def __init__(self, tokenizer, corpus: pd.DataFrame, dirs, steps: int, batch_size: int, max_length: int,
                 seed: int):
        self.tok = tokenizer
        rows_of = {}
        for s, t in dirs:
            if s not in corpus or t not in corpus:
                raise XLError(f"the parallel corpus has no {s if s not in corpus else t!r} column "
                              f"(columns: {list(corpus.columns)})")
            ok = np.flatnonzero(corpus[s].notna().to_numpy() & corpus[t].notna().to_numpy())
            if len(ok):
                rows_of[(s, t)] = ok
        if not rows_of:
            raise XLError(f"the parallel corpus has no sentence pair for any of the directions {dirs}")
        self.dirs = list(rows_of)
        rng = rng_at(seed, 4)
        need = steps * batch_size
        pick = rng.integers(len(self.dirs), size=need)
        self.examples = []          # (src lang, tgt lang, row)
        for d in pick:
            s, t = self.dirs[d]
            self.examples.append((s, t, int(rows_of[(s, t)][rng.integers(len(rows_of[(s, t)]))])))
        # tokenize every (row, language) needed once
        needed = sorted({(r, s) for s, _, r in self.examples} | {(r, t) for _, t, r in self.examples})
        where = {key: i for i, key in enumerate(needed)}
        data = Tokenized(tokenizer, [str(corpus.iat[r, corpus.columns.get_loc(lang)]) for r, lang in needed],
                         max_length)
        self.src = [data[where[(r, s)]] for s, _, r in self.examples]
        self.tgt = [data[where[(r, t)]] for _, t, r in self.examples]
        self.codes = {lang: tokenizer.convert_tokens_to_ids(langs.code(lang, "mbart"))
                      for pair in self.dirs for lang in pair}
        self.batches = length_batches([len(a) + len(b) for a, b in zip(self.src, self.tgt)], batch_size, rng)

    def __len__(self):
        return len(self.batches)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        eos, padding = self.tok.eos_token_id, self.tok.pad_token_id
        rows = self.batches[step]
        src = [[self.codes[self.examples[i][0]]] + self.src[i] + [eos] for i in rows]
        tgt = [[self.codes[self.examples[i][1]]] + self.tgt[i] + [eos] for i in rows]
        input_ids = pad(src, padding)
        return {"input_ids": input_ids, "attention_mask": (input_ids != padding).long(), "labels": pad(tgt, IGNORE)}


def short_pairs(corpus: pd.DataFrame, tokenizer, pieces: int) -> pd.DataFrame:
    """`corpus` (one column per language, aligned rows) with NaN where a verse is longer than `pieces`
    (its language code and </s> included, before truncation): a direction then draws only rows whose
    two sides are short."""
    out = corpus.copy()
    for lang in corpus.columns:
        present = corpus[lang].notna().to_numpy()
        ids = tokenizer([str(t) for t in corpus[lang]], add_special_tokens=False)["input_ids"]
        fits = np.array([len(x) + 2 <= pieces for x in ids], dtype=bool)
        out[lang] = corpus[lang].where(present & fits)
    return out


class ShortFirst:
    """A schedule with short verses first: batches of `short` for its steps, then those of `full` from
    that step on (its first batches unused: later steps see the plain schedule's data)."""

    def __init__(self, short, full):
        if len(short) >= len(full):
            raise XLError(f"short verses first needs fewer short steps ({len(short)}) than steps ({len(full)})")
        self.short, self.full = short, full

    def __len__(self):
        return len(self.full)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        return self.short.batch(step) if step < len(self.short) else self.full.batch(step)


def short_first(make, corpus: pd.DataFrame, tokenizer, pieces: int | None, steps: int, seed: int):
    """`make(corpus, steps, seed)`, a task of `steps` batches; with `pieces`, a ShortFirst whose first half
    of the steps draws from `short_pairs(corpus, tokenizer, pieces)` (with seed + 1: other batches)."""
    full = make(corpus, steps, seed)
    if not pieces or steps < 2:
        return full
    return ShortFirst(make(short_pairs(corpus, tokenizer, pieces), steps // 2, seed + 1), full)

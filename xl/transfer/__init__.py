"""Zero-shot cross-lingual transfer: fine-tune on English, test on every language.

For every (model, task, seed): a fresh copy of the pretrained encoder gets a task
head and is fine-tuned on the task's English training set; after every epoch
it is scored on the English dev set and the best epoch is kept (selection uses
English only); that checkpoint is then scored on the test set of every
language. Seeds change the head's initialisation, dropout and the order of
the training examples; a seed gives the same scores every time on a machine.

Heads: every model, encoder-only or the encoder of an encoder-decoder, is read
the same way, from its last layer (`last_hidden_state`, final layer norm
included for mBART/NLLB, as a head on the encoder would see it), pooled by the
mean over real tokens (`Encoder.pool_mask`: no padding, special or
language-code tokens); only the lab's pair head reads every layer:
* classification: dropout and a linear layer on the pooled vector;
* pairs (and ranking), two heads (`Params.pair_head`):
  ``cross`` (XGLUE's, the paper preset's): the two texts joined by the
  tokenizer's separator token (`A </s> B`) into one sequence, the same for
  every model (mBART's tokenizer has no pair template; BERT's segment ids stay
  0), pooled, linear;
  ``match`` (the lab's, `MatchHead`): late interaction between the token
  states of the two texts, each encoded on its own: every token's best cosine
  match in the other text, averaged with learned token weights, on a learned
  mix of all layers. The lab models' cross-reference pairs are mostly told
  apart by the words they share (the word-overlap baseline,
  `tasks.overlap_baseline`, scores 0.68 in English), which a linear head on
  pooled vectors reads badly from tiny encoders: on 360 English test pairs
  (400 training pairs, seed 0) the match
  head scored 0.56-0.66 on the six lab models where a linear head on
  [u, v, |u - v|, u * v] of the pooled vectors scored 0.52-0.58 (the joined
  sequence: 0.50-0.54 on 150 pairs);
* ranking (WPR): pair classification over the relevance labels; candidates are
  ranked by the expected label under the head's softmax;
* token tagging: linear on every token, trained and read at each word's first
  sub-word; words are tokenized one by one (`is_split_into_words`) between the
  model's own special tokens; words cut by `max_length` get the most frequent
  training tag;
* retrieval: no fine-tuning and no seed: cosine nearest neighbour of mean-pooled
  representations (`Encoder.encode`), accuracy@1 at the last layer (metric
  ``acc@1``) and at every layer (``acc@1 layer N``, 0 = embeddings).
`Params.head_norm` standardises the pooled vector (BatchNorm) before the
classification head: the weakly trained lab models give sentence vectors that
all point nearly the same way (pairwise cosine above 0.99), which a plain
linear head reads badly; the lab presets use it, the paper preset not.

Optimisation: AdamW (weight decay 0.01), linear warm-up over the first 10% of
steps then linear decay, gradient clipping at 1, dropout 0.1 on the pooled
vector. Sizes, epochs, learning rate, batch, max length and heads come from
the preset (`transfer_*` keys). On CPU every fine-tuning runs on one thread, so
scores do not depend on the machine's core count; `run` spreads jobs over
worker processes instead.

Results of every (model, task, seed, parameters) are cached on disk
(`cache_dir("transfer")`, one JSON file, written atomically), keyed by the
model's fingerprint and weights checksum, the task's content fingerprint and
the parameters, so a re-run reuses them and any change re-runs only what it
touches.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from xl.core import io, paths
from xl.core.errors import XLError
from xl.core.results import Store
from xl.data import tasks as tasklib
from xl.models import registry

CACHE_VERSION = "transfer-v1"
PAPER = "paper (XGLUE, Table 1)"


@dataclasses.dataclass(frozen=True)
class Params:
    """Fine-tuning hyper-parameters (all of them enter the cache key, except eval_batch_size)."""
    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 32
    max_length: int = 128
    warmup: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    clip: float = 1.0
    pair_head: str = "cross"  # "cross": one joined sequence; "match": MatchHead on the two sides' tokens
    head_lr_scale: float = 1.0  # the new head's learning rate, relative to the encoder's
    head_norm: bool = False  # standardise the pooled vector before the head (BatchNorm, see TaskModel)
    eval_batch_size: int = 128

    @classmethod
    def from_config(cls, cfg: dict) -> "Params":
        return cls(epochs=int(cfg["transfer_epochs"]), lr=float(cfg["transfer_lr"]),
                   batch_size=int(cfg["transfer_batch_size"]), max_length=int(cfg["transfer_max_length"]),
                   pair_head=cfg.get("transfer_pair_head") or "cross",
                   head_norm=bool(cfg.get("transfer_head_norm", False)))

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 8 or not self.lr > 0:
            raise XLError(f"bad fine-tuning parameters {self}: epochs >= 1, batch >= 1, max_length >= 8, lr > 0")
        if self.pair_head not in ("cross", "match"):
            raise XLError(f"pair_head must be 'cross' or 'match', got {self.pair_head!r}")

    def key(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("eval_batch_size")
        return d


# ---------------------------------------------------------------- model identity and caching

def model_fingerprint(encoder) -> str:
    """The encoder's declared fingerprint (xl.models) plus a checksum of its current weights.

    BERT/XLM-R poolers are left out: no head here reads them, and a checkpoint saved
    without one gets a fresh random pooler at every load.
    """
    from xl.models.encoder import weights_checksum
    declared = getattr(encoder, "fingerprint", None) or {"name": getattr(encoder, "name", type(encoder.model).__name__)}
    return io.digest("model", declared, type(encoder.model).__name__, type(encoder.tokenizer).__name__,
                     len(encoder.tokenizer), weights_checksum(encoder.model, skip=["pooler."]))


def _cache_file(key: str):
    return paths.cache_dir("transfer") / f"{key}.json"


def _read_cache(key: str):
    return io.read_json(_cache_file(key), "transfer cache")


# ---------------------------------------------------------------- batches

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
        longest = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        batch = {"input_ids": input_ids.to(self.encoder.device), "attention_mask": mask.to(self.encoder.device)}
        if tags_list is not None:
            y = torch.full((len(rows), longest), -100, dtype=torch.long)
            for i, lab in enumerate(labels):
                y[i, :len(lab)] = torch.tensor(lab)
            batch["labels"] = y.to(self.encoder.device)
        return batch, firsts


# ---------------------------------------------------------------- model with head

class MatchHead(nn.Module):
    """Late interaction for sentence pairs (`pair_head="match"`, the lab's; see the module doc).

    Every token of one text is matched to its most similar token of the other (cosine), and
    the matches are averaged with learned token weights, both ways: BERTScore's recall and
    precision (Zhang et al. 2020) with weights learned instead of IDF, ColBERT's MaxSim
    (Khattab & Zaharia 2020). Token states are a learned softmax mix of every layer, each
    normalised (scalar mix, Peters et al. 2018). The similarity is standardised (batch
    statistics while training, running ones after) and read as the logit of the last label.
    """

    def __init__(self, hidden: int, n_states: int, n_labels: int, dropout: float):
        super().__init__()
        self.layer_mix = nn.Parameter(torch.zeros(n_states))  # uniform at the start
        self.token_weight = nn.Linear(hidden, 1)
        nn.init.zeros_(self.token_weight.weight)  # every token weighs the same at the start
        nn.init.zeros_(self.token_weight.bias)
        self.dropout = nn.Dropout(dropout)
        self.center = nn.BatchNorm1d(1, affine=False)
        self.head = nn.Linear(1, n_labels - 1)
        nn.init.ones_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def similarity(self, states, mask) -> torch.Tensor:
        """Mean of weighted recall and precision of the pairs (first half of the batch, second half)."""
        layers = torch.stack([nn.functional.normalize(s.float(), dim=-1) for s in states])
        h = (self.layer_mix.softmax(0)[:, None, None, None] * layers).sum(0)
        weight = nn.functional.softplus(self.token_weight(self.dropout(h)).squeeze(-1)) * mask
        ha, hb = nn.functional.normalize(h, dim=-1).chunk(2)
        (ma, mb), (wa, wb) = mask.bool().chunk(2), weight.chunk(2)
        sim = (ha @ hb.transpose(1, 2)).masked_fill(~(ma[:, :, None] & mb[:, None, :]), -2.0)  # below any cosine

        def weighted_mean(best, w):
            return (best * w).sum(1) / w.sum(1).clamp(min=1e-6)

        return (weighted_mean(sim.max(2).values, wa) + weighted_mean(sim.max(1).values, wb)) / 2

    def forward(self, states, mask) -> torch.Tensor:
        """Logits (pairs, labels): 0 for the first label, a linear function of the similarity for the others."""
        score = self.head(self.center(self.similarity(states, mask)[:, None]))
        return torch.cat([score.new_zeros(len(score), 1), score], -1)


class TaskModel(nn.Module):
    """Encoder + head: dropout and linear on the pooled vector (sentences, joined pairs) or on every
    token (tagging), or a `MatchHead` on the token states of the two sides of pairs."""

    def __init__(self, encoder, n_labels: int, per_token: bool, dropout: float, match: bool = False,
                 norm: bool = False):
        super().__init__()
        self.encoder_module = encoder.model
        self.pool_mask = encoder.pool_mask
        self.per_token = per_token
        self.match = match
        if match:
            self.head = MatchHead(encoder.hidden_size, encoder.num_layers + 1, n_labels, dropout)
            return
        # Standardising the pooled vector (batch statistics while training, running ones after) lets the
        # head read representations whose sentence vectors all point the same way (weakly trained models).
        self.norm = nn.BatchNorm1d(encoder.hidden_size) if norm and not per_token else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.hidden_size, n_labels)

    def forward(self, batch):
        """Logits: per token, per sentence, or per pair (match: first half of the batch, second half)."""
        out = self.encoder_module(**_model_inputs(batch), output_hidden_states=self.match)
        if self.match:
            return self.head(out.hidden_states, self.pool_mask(batch))
        h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.per_token:
            return self.head(self.dropout(h))
        mask = self.pool_mask(batch).to(h.dtype)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(self.dropout(self.norm(pooled.float())))


def _match(task, params) -> bool:
    """Does this task read pairs with the MatchHead (else: one joined sequence)?"""
    return params.pair_head == "match" and task.kind in ("pair", "ranking")


def _inputs(encoder, task, df: pd.DataFrame, lang: str, params) -> tuple:
    """Model inputs of sentence or pair examples (match head: the two sides stacked in one batch)."""
    if _match(task, params):
        texts = df.text.astype(str).tolist() + df.text_b.astype(str).tolist()
        return (encoder.tokenize(texts, lang, max_length=params.max_length),)
    return (encoder.tokenize(_texts(encoder, df), lang, max_length=params.max_length),)


def _autocast(encoder):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=encoder.device.type == "cuda")


def _order(df: pd.DataFrame, task) -> np.ndarray:
    """Evaluation order: by length, so batches pad little."""
    if task.kind == "tagging":
        lengths = df.words.map(lambda w: sum(len(str(x)) + 1 for x in w)).to_numpy()
    else:
        lengths = df.text.astype(str).str.len().to_numpy() + (df.text_b.astype(str).str.len().to_numpy()
                                                              if "text_b" in df else 0)
    return np.argsort(-lengths, kind="stable")


def predict(model: TaskModel, encoder, task, df: pd.DataFrame, lang: str, params: Params, fallback_tag: int = 0):
    """Predictions for `df` in `lang`: label ids, ranking scores, or tag-id lists (one per sentence)."""
    model.eval()
    order = _order(df, task)
    out = [None] * len(df)
    batcher = _TagBatcher(encoder, lang, params.max_length) if task.kind == "tagging" else None
    with torch.inference_mode(), _autocast(encoder):
        for start in range(0, len(df), params.eval_batch_size):
            idx = order[start:start + params.eval_batch_size]
            if task.kind == "tagging":
                words = [df.words.iloc[i] for i in idx]
                batch, firsts = batcher(words)
                logits = model(batch).float()
                best = logits.argmax(-1).cpu().numpy()
                for row, i in enumerate(idx):
                    tags = [fallback_tag] * len(words[row])
                    for w, pos in firsts[row]:
                        tags[w] = int(best[row, pos])
                    out[i] = tags
                continue
            logits = model(*_inputs(encoder, task, df.iloc[idx], lang, params)).float()
            if task.kind == "ranking":
                p = logits.softmax(-1)
                values = (p * torch.arange(p.shape[-1], device=p.device)).sum(-1).cpu().numpy()
            else:
                values = logits.argmax(-1).cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = values[row]
    return out if task.kind == "tagging" else np.asarray(out)


def _evaluate(model, encoder, task, df, lang, params, fallback_tag) -> float:
    return tasklib.score(task, df, predict(model, encoder, task, df, lang, params, fallback_tag))


def _train_batches(n: int, batch_size: int, rng: np.random.Generator):
    """A random order cut into batches; a last batch of one joins the one before (batch statistics)."""
    perm = rng.permutation(n)
    batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


def _loss(model, encoder, task, df, idx, lang, params, batcher):
    if task.kind == "tagging":
        batch, _ = batcher([df.words.iloc[i] for i in idx], [df.tags.iloc[i] for i in idx])
        logits = model(batch)
        return nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    y = torch.as_tensor(df.label.to_numpy()[idx].astype(np.int64), device=encoder.device)
    return nn.functional.cross_entropy(model(*_inputs(encoder, task, df.iloc[idx], lang, params)).float(), y)


def finetune(encoder, task, seed: int = 0, params: Params | None = None, *, cache: bool = True,
             progress: bool = True, languages=None) -> dict:
    """Fine-tune `encoder` on `task` (English), select the epoch on English dev, score every test language.

    Returns {"scores": {lang: score}, "dev": [dev score per epoch], "best_epoch": int,
    "seconds": float, "cached": bool}. The encoder's weights are restored afterwards.
    """
    params = params or Params()
    if not task.finetuned:
        raise XLError(f"task {task.name!r} ({task.kind}) is not fine-tuned: use xl.transfer.retrieve")
    languages = list(languages if languages is not None else task.languages)
    missing = [lang for lang in languages if lang not in task.test]
    if missing:
        raise XLError(f"task {task.name!r} has no test set for {missing}; it has {task.languages}")
    key = _finetune_key(encoder, task, seed, params, languages)
    if cache:
        hit = _read_cache(key)
        if hit is not None:
            return {**hit, "cached": True}
    with _threads(encoder):
        result = _finetune(encoder, task, int(seed), params, progress, languages)
    if cache:
        io.write_json(result, _cache_file(key))
    return {**result, "cached": False}


def max_length(encoder, requested: int) -> int:
    """`requested`, clipped to what the tokenizer and the model's position embeddings allow."""
    limit = int(requested)
    tokenizer_limit = getattr(encoder.tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < 1_000_000:
        limit = min(limit, int(tokenizer_limit))
    config = getattr(encoder.model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        if getattr(config, "model_type", "") in ("xlm-roberta", "roberta"):  # positions start after padding_idx
            positions -= (config.pad_token_id or 0) + 1
        limit = min(limit, int(positions))
    return limit


def _finetune_key(encoder, task, seed, params, languages) -> str:
    return io.digest(CACHE_VERSION, model_fingerprint(encoder), task.fingerprint(), int(seed), params.key(),
                     sorted(languages))


def _retrieval_key(encoder, task, languages, limit) -> str:
    return io.digest(CACHE_VERSION, "retrieval", model_fingerprint(encoder), task.fingerprint(), sorted(languages),
                     limit)


@contextlib.contextmanager
def _threads(encoder):
    """One CPU thread while fine-tuning on CPU: results do not depend on the machine's core count,
    and small models run as fast (parallelism comes from worker processes, see `run`)."""
    if encoder.device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _finetune(encoder, task, seed, params, progress, languages) -> dict:
    t0 = time.time()
    params = dataclasses.replace(params, max_length=max_length(encoder, params.max_length))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_labels = len(task.labels)
    original = {k: v.detach().to("cpu", copy=True) for k, v in encoder.model.state_dict().items()}
    model = TaskModel(encoder, n_labels, task.kind == "tagging", params.dropout, _match(task, params),
                      params.head_norm)
    model = model.to(encoder.device)
    train, dev = task.train.reset_index(drop=True), task.dev
    fallback_tag = 0
    if task.kind == "tagging":
        fallback_tag = int(pd.Series([t for s in train.tags for t in s]).mode().iloc[0])
    batcher = _TagBatcher(encoder, task.source_lang, params.max_length) if task.kind == "tagging" else None
    steps = params.epochs * math.ceil(len(train) / params.batch_size)
    groups = []
    for is_head in (False, True):
        named = [(n, p) for n, p in model.named_parameters() if n.startswith(("head.", "norm.")) == is_head]
        lr = params.lr * (params.head_lr_scale if is_head else 1.0)
        groups += [{"params": [p for n, p in named if p.ndim >= 2], "weight_decay": params.weight_decay, "lr": lr},
                   {"params": [p for n, p in named if p.ndim < 2], "weight_decay": 0.0, "lr": lr}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=params.lr)
    warm = max(1, int(params.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    dev_scores, best, best_state = [], -math.inf, None
    bar = tqdm(total=steps, desc=f"{task.name} seed {seed}", leave=False, disable=not progress)
    try:
        for epoch in range(params.epochs):
            model.train()
            for idx in _train_batches(len(train), params.batch_size, rng):
                with _autocast(encoder):
                    loss = _loss(model, encoder, task, train, idx, task.source_lang, params, batcher)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), params.clip)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if dev is not None and len(dev):
                value = _evaluate(model, encoder, task, dev, task.source_lang, params, fallback_tag)
            else:
                value = float(epoch)  # no dev set: the last epoch
            dev_scores.append(float(value))
            if value > best or best_state is None:
                best = value
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        bar.close()
        model.load_state_dict(best_state)
        scores = {lang: float(_evaluate(model, encoder, task, task.test[lang], lang, params, fallback_tag))
                  for lang in languages}
    finally:
        bar.close()
        encoder.model.load_state_dict(original)
        encoder.model.eval()
    return {"scores": scores, "dev": dev_scores, "best_epoch": int(np.argmax(dev_scores)) + 1,
            "seconds": round(time.time() - t0, 2), "metric": task.metric}


# ---------------------------------------------------------------- retrieval

def retrieve(encoder, task, *, cache: bool = True, languages=None, max_length: int = 256) -> dict:
    """Accuracy@1 of English -> language retrieval, at every layer (0 = embeddings): {lang: [acc per layer]}."""
    if task.kind != "retrieval":
        raise XLError(f"task {task.name!r} is a {task.kind} task, not retrieval")
    languages = list(languages if languages is not None else task.languages)
    key = _retrieval_key(encoder, task, languages, max_length)
    if cache:
        hit = _read_cache(key)
        if hit is not None:
            return hit["layers"]
    with _threads(encoder):
        out = _retrieve(encoder, task, languages, max_length)
    if cache:
        io.write_json({"layers": out}, _cache_file(key))
    return out


def _retrieve(encoder, task, languages, max_length) -> dict:
    out = {}
    queries = None
    for lang in languages:
        df = task.test[lang]
        if queries is None:
            queries = _normalise(encoder.encode(df["query"].tolist(), task.source_lang, max_length=max_length))
        targets = _normalise(encoder.encode(df["target"].tolist(), lang, max_length=max_length))
        sims = np.einsum("lqh,lth->lqt", queries, targets)
        out[lang] = [tasklib.score(task, df, s.argmax(-1)) for s in sims]
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8, None)


# ---------------------------------------------------------------- many models, tasks, seeds

def _rows(label, name, task, seed, result) -> list[tuple]:
    """Result rows in the task's language order (cached results come back with sorted keys)."""
    if not task.finetuned:
        rows = []
        for lang in [lang for lang in task.languages if lang in result]:
            values = result[lang]
            rows.append((label, name, lang, 0, task.metric, values[-1]))
            rows += [(label, name, lang, 0, f"{task.metric} layer {i}", v) for i, v in enumerate(values)]
        return rows
    scores = result["scores"]
    return [(label, name, lang, int(seed), task.metric, scores[lang]) for lang in task.languages if lang in scores]


def run_job(encoder, label: str, name: str, task, seed, params: Params, *, cache: bool = True,
            progress: bool = False, cached_only: bool = False, warn: bool = True):
    """Rows of one (model, task, seed) job: fine-tuning, or retrieval (seed ignored).

    cached_only: return None instead of computing when the result is not cached yet.
    """
    languages = supported_languages(encoder, task, label) if warn else _readable(encoder, task)[0]
    if not task.finetuned:
        limit = max_length(encoder, params.max_length)
        if cached_only and not _is_cached(_retrieval_key(encoder, task, languages, limit)):
            return None
        result = retrieve(encoder, task, cache=cache, max_length=limit, languages=languages)
    else:
        if cached_only and not _is_cached(_finetune_key(encoder, task, seed, params, languages)):
            return None
        result = finetune(encoder, task, seed, params, cache=cache, progress=progress, languages=languages)
    return _rows(label, name, task, seed, result)


def _is_cached(key: str) -> bool:
    return _read_cache(key) is not None


COLUMNS = ["model", "task", "lang", "seed", "metric", "score"]


def evaluate(encoder, tasks: dict, seeds=(0,), params: Params | None = None, *, model: str | None = None,
             cache: bool = True, progress: bool = True, bar=None) -> pd.DataFrame:
    """Rows model, task, lang, seed, metric, score for one encoder on `tasks` ({name: Task})."""
    params = params or Params()
    label = model or getattr(encoder, "name", type(encoder.model).__name__)
    rows = []
    for name, task in tasks.items():
        for seed in (seeds if task.finetuned else [0]):
            rows += run_job(encoder, label, name, task, seed, params, cache=cache, progress=progress)
            if bar is not None:
                bar.update(1 if task.finetuned else len(seeds))
                bar.set_postfix(model=label, task=name)
    return pd.DataFrame(rows, columns=COLUMNS)


def _readable(encoder, task) -> tuple[list[str], list[str]]:
    ok, skipped = [], []
    for lang in task.languages:
        try:
            encoder.tokenize(["a"], lang)
            ok.append(lang)
        except XLError:
            skipped.append(lang)
    return ok, skipped


def supported_languages(encoder, task, label: str = "the model") -> list[str]:
    """The task's test languages that the encoder can read (mBART-50 has no code for el, bg...), with a warning."""
    ok, skipped = _readable(encoder, task)
    if task.source_lang in skipped:
        raise XLError(f"{label} cannot read {task.source_lang!r}, the training language of task {task.name!r}")
    if skipped:
        warnings.warn(f"{label} has no language code for {skipped}: task {task.name} is not scored there")
    return ok


def build_tasks(cfg: dict, names=None) -> dict:
    """The preset's tasks: lab tasks from the Bible (smoke, lab) or XGLUE (paper)."""
    names = list(names if names is not None else cfg["transfer_tasks"])
    if cfg.get("corpus") == "bible":
        return tasklib.lab_tasks(cfg, names)
    from xl.data import xglue
    return xglue.tasks(cfg, names)


def model_label(name: str) -> str:
    """Row label of a model: lab names as they are, hub ids by the paper's row name (xl.models.registry.label)."""
    return registry.label(name)


def _encoder(name, preset, device, memo):
    from xl.models.encoder import load_encoder
    if name not in memo:
        memo[name] = load_encoder(name, preset=preset, device=device)
    return memo[name]


def _worker_main(folder) -> None:
    """A worker process of `run`: claims jobs one by one (an exclusive claim file each), writes their rows."""
    import os
    import pickle
    from pathlib import Path
    folder = Path(folder)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with open(folder / "input.pkl", "rb") as f:
        data = pickle.load(f)
    memo = {}
    for i, (name, task_name, seed) in enumerate(data["jobs"]):
        try:
            os.close(os.open(folder / f"{i}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        encoder = _encoder(name, data["preset"], data["device"], memo)
        rows = run_job(encoder, model_label(name), task_name, data["tasks"][task_name], seed, data["params"],
                       cache=data["cache"], warn=False)
        io.write_json(rows, folder / f"{i}.json")


def _run_workers(todo, tasks, params, preset, device, cache, workers, bar) -> dict:
    """Run `todo` jobs in `workers` fresh Python processes (no multiprocessing: works from scripts too)."""
    import os
    import pickle
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    results = {}
    with tempfile.TemporaryDirectory(prefix="xl-transfer-") as tmp:
        tmp = Path(tmp)
        with open(tmp / "input.pkl", "wb") as f:
            pickle.dump({"tasks": tasks, "jobs": todo, "params": params, "preset": preset,
                         "device": None if device is None else str(device), "cache": cache}, f)
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([package_parent] + [x for x in [env.get("PYTHONPATH")] if x])
        code = "import sys; from xl.transfer import _worker_main; _worker_main(sys.argv[1])"
        logs = [open(tmp / f"worker{k}.log", "wb") for k in range(workers)]
        procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT) for log in logs]
        try:
            while True:
                running = any(proc.poll() is None for proc in procs)
                for i, job in enumerate(todo):
                    path = tmp / f"{i}.json"
                    if job not in results and path.is_file():
                        results[job] = [tuple(row) for row in json.loads(path.read_text())]
                        bar.set_postfix(model=model_label(job[0]), task=job[1], seed=job[2])
                        bar.update(1)
                if not running:
                    break
                time.sleep(0.5)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            for log in logs:
                log.close()
        failed = [k for k, proc in enumerate(procs) if proc.returncode != 0]
        if failed or len(results) < len(todo):
            tail = (tmp / f"worker{failed[0] if failed else 0}.log").read_text(errors="replace")[-3000:]
            raise XLError(f"a transfer worker failed ({len(results)} of {len(todo)} jobs done); its log ends:\n{tail}")
    return results


def default_workers(work: int, device=None) -> int:
    """Worker processes for `run`: one per CPU core (at most 4) on CPU when there is enough work
    (training examples x epochs over all jobs, above 20,000) to pay for starting them; one on a GPU."""
    import os
    if (device is not None and torch.device(device).type != "cpu") or (device is None and torch.cuda.is_available()):
        return 1
    return max(1, min(os.cpu_count() or 1, 4)) if work > 20_000 else 1


def run(cfg: dict, models=None, task_names=None, seeds=None, *, cache: bool = True, progress: bool = True,
        write: bool = True, device=None, workers: int | None = None) -> pd.DataFrame:
    """The whole transfer evaluation of a preset; writes transfer.csv and transfer_chance.csv to its results.

    Jobs (model, task, seed) already in the cache are read in this process; the others run
    here (workers=1) or in `workers` fresh Python processes of one CPU thread each (default:
    one per core on CPU when there is enough work). Results do not depend on the number of
    workers.
    """
    models = list(models if models is not None else cfg["models"])
    seeds = [int(s) for s in (seeds if seeds is not None else cfg["transfer_seeds"])]
    tasks = build_tasks(cfg, task_names)
    params = Params.from_config(cfg)
    jobs = [(name, task_name, seed) for name in models for task_name, task in tasks.items()
            for seed in (seeds if task.finetuned else [0])]
    bar = tqdm(total=len(jobs), desc="transfer", disable=not progress)
    results, todo = {}, []
    for name in models:  # what the cache has; one model in memory at a time
        encoder = _encoder(name, cfg["preset"], device, {})
        for task_name, task in tasks.items():
            supported_languages(encoder, task, model_label(name))  # warns here, once
        for job in [j for j in jobs if j[0] == name] if cache else []:
            rows = run_job(encoder, model_label(name), job[1], tasks[job[1]], job[2], params, cached_only=True,
                           warn=False)
            if rows is not None:
                results[job] = rows
                bar.update(1)
        del encoder
    todo = [job for job in jobs if job not in results]
    if workers is None:
        workers = default_workers(sum(len(tasks[t].train) if tasks[t].finetuned else 0 for _, t, _ in todo)
                                  * params.epochs, device)
    if todo and workers == 1:
        for name in dict.fromkeys(job[0] for job in todo):
            encoder = _encoder(name, cfg["preset"], device, {})
            for job in [j for j in todo if j[0] == name]:
                bar.set_postfix(model=model_label(name), task=job[1], seed=job[2])
                results[job] = run_job(encoder, model_label(name), job[1], tasks[job[1]], job[2], params,
                                       cache=cache, progress=progress, warn=False)
                bar.update(1)
            del encoder
    elif todo:
        results.update(_run_workers(todo, tasks, params, cfg["preset"], device, cache, min(workers, len(todo)), bar))
    bar.close()
    df = pd.DataFrame([row for job in jobs for row in results[job]], columns=COLUMNS)
    if write:
        store = Store(cfg["preset"])
        store.write("transfer", df)
        store.write("transfer_chance", chance_table(tasks))
    return df


# ---------------------------------------------------------------- tables

def chance_table(tasks: dict) -> pd.DataFrame:
    rows = [(name, lang, task.metric, value) for name, task in tasks.items() for lang, value in task.chance().items()]
    return pd.DataFrame(rows, columns=["task", "lang", "metric", "chance"])


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Only each task's headline metric (drops the per-layer retrieval rows)."""
    return df[~df.metric.str.contains(" layer ")]


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds, per model, task and language."""
    g = main_rows(df).groupby(["model", "task", "lang", "metric"], sort=False).score
    return g.agg(mean="mean", std="std", seeds="count").reset_index().fillna({"std": 0.0})


def table1(df: pd.DataFrame, source_lang: str = "en", scale: float = 100.0) -> pd.DataFrame:
    """Table 1's layout: models x tasks, mean over seeds then over the non-English languages (x100)."""
    s = summary(df)
    s = s[s.lang != source_lang]
    wide = s.groupby(["model", "task"], sort=False)["mean"].mean().unstack("task") * scale
    return wide.reindex(index=list(dict.fromkeys(s.model)), columns=list(dict.fromkeys(s.task)))


def seed_spread(df: pd.DataFrame, source_lang: str = "en", scale: float = 100.0) -> pd.DataFrame:
    """Standard deviation across seeds of the non-English average (models x tasks)."""
    m = main_rows(df)
    m = m[m.lang != source_lang]
    per_seed = m.groupby(["model", "task", "seed"], sort=False).score.mean()
    wide = per_seed.groupby(["model", "task"], sort=False).std().unstack("task") * scale
    return wide.reindex(index=list(dict.fromkeys(m.model)), columns=list(dict.fromkeys(m.task))).fillna(0.0)


def beside_overlap(df: pd.DataFrame, tasks: dict) -> pd.DataFrame:
    """Two-label pair tasks, per test language (x100): the model-free word-overlap baseline
    (`tasks.overlap_baseline`) beside the best and the mean model score (means over seeds)."""
    s = summary(df)
    rows = {}
    for name, task in tasks.items():
        if not tasklib.is_binary_pair(task) or name not in set(s.task):
            continue
        scores = s[s.task == name].groupby("lang")["mean"]
        rows[(name, "word overlap (no model)")] = pd.Series(tasklib.overlap_baseline(task))
        rows[(name, "best model")] = scores.max()
        rows[(name, "mean of models")] = scores.mean()
    languages = list(dict.fromkeys(lang for task in tasks.values() for lang in task.languages))
    table = pd.DataFrame(rows).T
    return table.reindex(columns=[lang for lang in languages if lang in table.columns]) * 100


PROPORTIONS = ("accuracy", "acc@1")  # metrics that are a share of the test examples


def above_chance(df: pd.DataFrame, tasks: dict, lang: str = "en", alpha: float = 0.01) -> pd.DataFrame:
    """Per model and task, the score in `lang` (mean over seeds) beside its chance level, with
    the 95% Wilson interval of a proportion over the n test examples and a one-sided binomial
    test against chance: `clearly` above chance when p < alpha (NaN for metrics that are not
    a proportion, such as nDCG or F1)."""
    from scipy.stats import binomtest

    s = summary(df)
    s = s[(s.lang == lang) & s.task.isin(list(tasks))]
    chance = {name: tasklib.chance_level(task, task.test[lang]) for name, task in tasks.items() if lang in task.test}
    rows = []
    for r in s.itertuples():
        n = len(tasks[r.task].test[lang])
        low = high = p = float("nan")
        clearly = None
        if r.metric in PROPORTIONS:
            hits = int(round(r.mean * n))
            low, high = binomtest(hits, n, chance[r.task]).proportion_ci(0.95, method="wilson")
            p = binomtest(hits, n, chance[r.task], alternative="greater").pvalue
            clearly = bool(p < alpha)
        rows.append((r.model, r.task, r.mean, chance[r.task], n, low, high, p, clearly))
    return pd.DataFrame(rows, columns=["model", "task", "score", "chance", "n", "ci_low", "ci_high", "p", "clearly"])


def above_chance_sentence(table: pd.DataFrame, alpha: float = 0.01) -> str:
    """One sentence from an above_chance() table: which results are not clearly above chance."""
    weak = table[table.clearly == False]  # noqa: E712 - None (not a proportion) is not weak
    if weak.empty:
        return f"Every model is clearly above chance (p < {alpha:g}) on every task whose metric is a proportion."
    return f"Not clearly above chance (one-sided binomial test, p >= {alpha:g}): " + "; ".join(
        f"{r.model} on {r.task} ({r.score:.3f} vs {r.chance:.3f}, p = {r.p:.2g})" for r in weak.itertuples()) + "."


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 (XGLUE, averages over languages), models x tasks."""
    return pd.read_csv(paths.data_file("paper_table1_transfer.csv")).set_index("model")


def beside_paper(ours: pd.DataFrame) -> pd.DataFrame:
    """Our table next to the paper's rows: lab models are matched to their paper analogue."""
    paper = paper_table1()
    rows = []
    for model in ours.index:
        analogue = registry.paper_analogue(model)
        row = {("ours", t): ours.loc[model, t] for t in ours.columns}
        if analogue in paper.index:
            row.update({(PAPER, t): paper.loc[analogue, t] for t in paper.columns if t != "family"})
        row[(PAPER, "row")] = analogue if analogue in paper.index else ""
        rows.append(pd.Series(row, name=model))
    out = pd.DataFrame(rows)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def agreement(ours: pd.DataFrame, spread: pd.DataFrame | None = None, chance: pd.Series | None = None) -> dict:
    """Does this run agree with the paper (LM-trained models transfer better than MT-trained ones)?

    ours: a table1() frame (its columns are the tasks compared); spread: seed_spread() of the
    same runs (a gap smaller than the mean spread is called inconclusive); chance: chance level
    per task on the same scale (tasks where models stay within 2 points of it are named).
    Returns the family means, their gap, the Spearman correlation of our per-model averages
    with the paper's (matched rows), and a plain sentence.
    """
    from scipy.stats import spearmanr
    paper = paper_table1()
    avg = ours.mean(axis=1)
    fam = {m: registry.family(m) for m in ours.index}
    lm = [avg[m] for m in ours.index if fam[m] == "LM"]
    mt = [avg[m] for m in ours.index if fam[m] in ("MT", "CP")]
    lm_mean = float(np.mean(lm)) if lm else float("nan")
    mt_mean = float(np.mean(mt)) if mt else float("nan")
    matched = [m for m in ours.index if registry.paper_analogue(m) in paper.index]
    paper_avg = paper.drop(columns="family").mean(axis=1)
    rho = float("nan")
    if len(matched) >= 3:
        rho = float(spearmanr([avg[m] for m in matched], [paper_avg[registry.paper_analogue(m)] for m in matched])[0])
    noise = float(spread.reindex(index=ours.index, columns=ours.columns).stack().mean()) if spread is not None else 0.0
    at_chance = []
    if chance is not None:
        at_chance = [t for t in ours.columns if t in chance.index and ours[t].mean() - chance[t] < 2.0]
    out = {"LM": lm_mean, "MT": mt_mean, "gap": lm_mean - mt_mean, "spread": noise, "spearman": rho,
           "at_chance": at_chance, "agrees": None}
    if not (lm and mt):
        out["sentence"] = "Not enough model families at this scale to compare with the paper."
        return out
    tasks_text = ", ".join(map(str, ours.columns))
    sentence = (f"Averaged over non-English languages and {tasks_text}, LM-trained models score {lm_mean:.1f} "
                f"and MT-trained ones (translation from scratch or continued with it) {mt_mean:.1f}: ")
    if at_chance and len(at_chance) == len(ours.columns):
        sentence += ("every task is within 2 points of chance at this scale, so it neither confirms nor "
                     "contradicts the paper")
    elif abs(lm_mean - mt_mean) <= noise:
        sentence += (f"the gap ({lm_mean - mt_mean:+.1f}) is within the spread across seeds ({noise:.1f}), so this "
                     f"run neither confirms nor contradicts the paper")
    else:
        out["agrees"] = bool(lm_mean > mt_mean)
        sentence += (f"this run {'agrees' if out['agrees'] else 'does not agree'} with the paper, where "
                     f"LM-trained models transfer better")
    if not math.isnan(rho):
        sentence += f" (rank correlation of the model averages with the paper's: {rho:+.2f})"
    sentence += "."
    if at_chance and len(at_chance) < len(ours.columns):
        sentence += f" Caution: models stay within 2 points of chance on {', '.join(map(str, at_chance))}."
    out["sentence"] = sentence
    return out


BASELINE_SUFFIXES = ("_shuffled", "_chance")  # reference curves of the similarity chapter, not measurements


def relate(transfer: pd.DataFrame, similarity: pd.DataFrame | None = None,
           separability: pd.DataFrame | None = None, source_lang: str = "en", layer: str = "last") -> dict:
    """Transfer score against cross-lingual similarity (per model and language) and separability (per model).

    similarity: rows model, layer, metric, lang_a, lang_b, value (similarity chapter);
    separability: rows model, layer, metric, value. Each model's `layer` ("last" = its
    deepest layer, or a number) is used, as the heads read the last layer. Returns
    {"by_language": frame model, task, lang, metric, similarity, score;
     "by_model": frame model, task, metric, separability, score; "correlations": frame}.
    """
    from scipy.stats import pearsonr, spearmanr
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
        sep = pick_layer(separability[~separability.metric.str.endswith(BASELINE_SUFFIXES)]).groupby(["model", "metric"], as_index=False).value.mean()
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

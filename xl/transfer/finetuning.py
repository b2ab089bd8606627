"""Fine-tuning on English and scoring every language (`finetune`, `predict`), the training loop,
and what identifies a fine-tuning result in the cache (`model_fingerprint`, `_finetune_key`)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from xl.core import io, memo
from xl.core.errors import XLError
from xl.data import tasks as tasklib
from xl.models.encoder import weights_checksum
from xl.transfer.batching import _inputs, _match, _order, _TagBatcher, max_length
from xl.transfer.heads import TaskModel
from xl.transfer.params import FinetuneParams

CACHE = "transfer"  # results are files cache_dir("transfer")/<key>.json (xl.core.memo)
CACHE_VERSION = "transfer-v1"


def model_fingerprint(encoder) -> str:
    """The encoder's declared fingerprint (xl.models) plus a checksum of its current weights.

    BERT/XLM-R poolers are left out: no head here reads them, and a checkpoint saved
    without one gets a fresh random pooler at every load.
    """
    declared = getattr(encoder, "fingerprint", None) or {"name": getattr(encoder, "name", type(encoder.model).__name__)}
    return io.digest("model", declared, type(encoder.model).__name__, type(encoder.tokenizer).__name__,
                     len(encoder.tokenizer), weights_checksum(encoder.model, skip=["pooler."]))


def _finetune_key(encoder, task, seed, params, languages) -> str:
    return io.digest(CACHE_VERSION, model_fingerprint(encoder), task.fingerprint(), int(seed), params.key(),
                     sorted(languages))


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


def _autocast(encoder):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=encoder.device.type == "cuda")


def predict(model: TaskModel, encoder, task, df: pd.DataFrame, lang: str, params: FinetuneParams,
            fallback_tag: int = 0):
    """Predictions for `df` in `lang`: label ids, ranking scores, or tag-id lists (one per sentence)."""
    model.eval()
    if _match(task, params):
        with torch.inference_mode(), _autocast(encoder):
            return _values(task, _match_logits(model, encoder, df, lang, params))
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
            values = _values(task, model(*_inputs(encoder, task, df.iloc[idx], lang, params)).float())
            for row, i in enumerate(idx):
                out[i] = values[row]
    return out if task.kind == "tagging" else np.asarray(out)


def _values(task, logits: torch.Tensor) -> np.ndarray:
    """Label ids, or the expected label of a ranking task."""
    if task.kind == "ranking":
        p = logits.softmax(-1)
        return (p * torch.arange(p.shape[-1], device=p.device)).sum(-1).cpu().numpy()
    return logits.argmax(-1).cpu().numpy()


def _match_logits(model: TaskModel, encoder, df: pd.DataFrame, lang: str, params: FinetuneParams,
                  block: int = 4) -> torch.Tensor:
    """The match head's logits of every pair of `df`, as `model` gives them a batch of pairs, with each
    distinct sentence of a block of `block` batches encoded once, in batches of similar length (a verse
    is in several test pairs: xref pairs each positive with a negative of the same first verse). Blocks
    bound the token states kept (a large model's are big)."""
    size = block * params.eval_batch_size
    return torch.cat([_block_logits(model, encoder, df.iloc[i:i + size], lang, params)
                      for i in range(0, len(df), size)])


def _block_logits(model: TaskModel, encoder, df: pd.DataFrame, lang: str, params: FinetuneParams) -> torch.Tensor:
    a, b = df.text.astype(str).tolist(), df.text_b.astype(str).tolist()
    distinct = sorted(set(a) | set(b), key=len)
    states, masks = {}, {}  # sentence -> its token states (layers, pieces, d), its pool mask (pieces)
    for start in range(0, len(distinct), params.eval_batch_size):
        texts = distinct[start:start + params.eval_batch_size]
        batch = encoder.tokenize(texts, lang, max_length=params.max_length)
        hidden = torch.stack(model.encoder_states(batch))
        pool, kept = model.pool_mask(batch), batch["attention_mask"].bool()
        for i, text in enumerate(texts):
            states[text], masks[text] = hidden[:, i, kept[i]], pool[i, kept[i]]
    logits = []
    for start in range(0, len(df), params.eval_batch_size):
        sides = a[start:start + params.eval_batch_size] + b[start:start + params.eval_batch_size]
        hidden = _pad_pieces([states[t].transpose(0, 1) for t in sides]).permute(2, 0, 1, 3)
        logits.append(model.head(tuple(hidden), _pad_pieces([masks[t] for t in sides])).float())
    return torch.cat(logits)


def _pad_pieces(rows: list[torch.Tensor]) -> torch.Tensor:
    """Tensors (pieces, ...) zero-padded to the longest: (rows, pieces, ...)."""
    return nn.utils.rnn.pad_sequence(rows, batch_first=True)


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


def finetune(encoder, task, seed: int = 0, params: FinetuneParams | None = None, *, cache: bool = True,
             progress: bool = True, languages=None) -> dict:
    """Fine-tune `encoder` on `task` (English), select the epoch on English dev, score every test language.

    Returns {"scores": {lang: score}, "dev": [dev score per epoch], "best_epoch": int,
    "seconds": float, "cached": bool}. The encoder's weights are restored afterwards.
    """
    params = params or FinetuneParams()
    if not task.finetuned:
        raise XLError(f"task {task.name!r} ({task.kind}) is not fine-tuned: use xl.transfer.retrieve")
    languages = list(languages if languages is not None else task.languages)
    missing = [lang for lang in languages if lang not in task.test]
    if missing:
        raise XLError(f"task {task.name!r} has no test set for {missing}; it has {task.languages}")
    key = _finetune_key(encoder, task, seed, params, languages)
    if cache:
        hit = memo.read(CACHE, key)
        if hit is not None:
            return {**hit, "cached": True}
    with _threads(encoder):
        result = _finetune(encoder, task, int(seed), params, progress, languages)
    if cache:
        memo.write(CACHE, key, result)
    return {**result, "cached": False}


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

"""Small tensor helpers shared by training, encoders, similarity and transfer."""
from __future__ import annotations

import numpy as np
import torch


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """Token id lists as one (rows, longest) tensor, right-padded with `value`."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def batches_by_length(lengths, batch_size: int) -> list[np.ndarray]:
    """Indices 0..n-1 in batches of similar length (shortest first): padded to their longest, random
    batches cost up to twice the compute. The caller puts each batch's results back at its indices."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def max_positions(config) -> int | None:
    """The longest input a model's position embeddings allow (None: no limit); RoBERTa-style models
    start counting positions after the padding index."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit and getattr(config, "model_type", "") in ("xlm-roberta", "roberta"):
        limit -= (config.pad_token_id or 0) + 1
    return limit


def unit(x):
    """Rows scaled to unit Euclidean length (a zero row stays zero); torch tensor or numpy array."""
    if isinstance(x, np.ndarray):
        return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), np.finfo(x.dtype).tiny, None)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)

"""The fine-tuning hyper-parameters of a transfer run (`FinetuneParams`)."""
from __future__ import annotations

import dataclasses

from xl.core.errors import XLError


@dataclasses.dataclass(frozen=True)
class FinetuneParams:
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
    def from_config(cls, cfg: dict) -> "FinetuneParams":
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

"""Task heads on an encoder: `TaskModel` (linear on pooled vectors or on every token) and the lab's
`MatchHead` for sentence pairs (see the package doc)."""
from __future__ import annotations

import torch
from torch import nn

from xl.transfer.batching import _model_inputs


class MatchHead(nn.Module):
    """Late interaction for sentence pairs (`pair_head="match"`, the lab's; see the package doc).

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

    def encoder_states(self, batch) -> tuple[torch.Tensor, ...]:
        """The token states of every layer (embeddings first), as the match head reads them."""
        return self.encoder_module(**_model_inputs(batch), output_hidden_states=True).hidden_states

    def forward(self, batch):
        """Logits: per token, per sentence, or per pair (match: first half of the batch, second half)."""
        if self.match:
            return self.head(self.encoder_states(batch), self.pool_mask(batch))
        out = self.encoder_module(**_model_inputs(batch))
        h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.per_token:
            return self.head(self.dropout(h))
        mask = self.pool_mask(batch).to(h.dtype)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(self.dropout(self.norm(pooled.float())))

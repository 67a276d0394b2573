"""The email smart-reply student: hashed n-gram embeddings, masked mean pooling, a small MLP.

Designed for phones and browsers: one embedding gather, a mean and two matmuls, no attention, a static
input shape ``int64[batch, max_len]`` (0 = padding), so every target converts it whole.
"""

from __future__ import annotations

import torch
from torch import nn


class EmailStudent(nn.Module):
    """``ids: int64[B, L]`` → ``logits: float32[B, num_intents]``."""

    def __init__(
        self,
        num_buckets: int = 16384,
        dim: int = 64,
        hidden: int = 128,
        num_intents: int = 48,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_buckets, dim, padding_idx=0)
        self.norm = nn.LayerNorm(dim)
        self.hidden = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_intents)

    def pool(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids > 0).to(torch.float32).unsqueeze(-1)
        summed = (self.embed(ids) * mask).sum(dim=1)
        count = mask.sum(dim=1).clamp(min=1.0)
        return summed / count

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.act(self.hidden(self.norm(self.pool(ids))))
        return self.head(self.drop(h))

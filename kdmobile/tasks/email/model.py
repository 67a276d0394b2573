"""The email smart-reply student: hashed n-gram embeddings, gated mean pooling, a small MLP.

    python -c "from kdmobile.tasks.email.model import EmailStudent; import torch; print(EmailStudent(gated=True)(torch.ones(1, 8, dtype=torch.long)).shape)"

Designed for phones and browsers: an embedding gather, a mean and two matmuls, no attention, a static
input shape ``int64[batch, max_len]`` (0 = padding), so every target converts it whole.

With ``gated=True`` the mean is weighted by a *reading gate*: every feature id has a learned
non-negative "stop" score, and feature ``i`` is weighted by ``exp(-(sum of the scores before i))``.
Features such as ``wrote``, ``original message``, ``forwarded`` or ``sent from my`` learn large scores,
so what follows them (quoted threads, forwarded headers, signatures) fades out, the way the teacher's
attention mostly reads the new message; with all scores near 0 it is a plain mean. It costs one more
gather, a cumulative sum and an exponential: still attention-free and static-shape.
"""

from __future__ import annotations

import torch
from torch import nn


class EmailStudent(nn.Module):
    """``ids: int64[B, L]`` → ``logits: float32[B, num_intents]``.

    Args:
        num_buckets: hashed feature ids (the tokenizer's ``num_buckets``); id 0 is padding.
        dim: embedding width.
        hidden: width of the hidden layer.
        num_intents: classes.
        dropout: dropout before the head (training only).
        gated: weight the mean with the learned reading gate (see the module docstring).
        token_dropout: training only: drop each feature id with this probability (a regulariser that
            keeps the student from leaning on a few template words).
    """

    def __init__(
        self,
        num_buckets: int = 16384,
        dim: int = 64,
        hidden: int = 128,
        num_intents: int = 48,
        dropout: float = 0.1,
        gated: bool = False,
        token_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_buckets, dim, padding_idx=0)
        self.gate = nn.Embedding(num_buckets, 1) if gated else None
        if self.gate is not None:
            nn.init.constant_(self.gate.weight, -4.0)  # softplus(-4) ~ 0.018: starts close to a plain mean
        self.token_dropout = float(token_dropout)
        self.norm = nn.LayerNorm(dim)
        self.hidden = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_intents)

    def pool(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids > 0).to(torch.float32)
        if self.gate is not None:
            stop = nn.functional.softplus(self.gate(ids).squeeze(-1)) * mask
            weight = torch.exp(stop - torch.cumsum(stop, dim=1)) * mask  # exp(-sum of the scores before i)
        else:
            weight = mask
        summed = (self.embed(ids) * weight.unsqueeze(-1)).sum(dim=1)
        return summed / weight.sum(dim=1, keepdim=True).clamp(min=1e-6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training and self.token_dropout > 0:
            ids = ids * (torch.rand(ids.shape, device=ids.device) >= self.token_dropout).to(ids.dtype)
        h = self.act(self.hidden(self.norm(self.pool(ids))))
        return self.head(self.drop(h))

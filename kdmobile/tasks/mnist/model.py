"""Fully connected ReLU nets for MNIST (Hinton et al. 2015 §3): 784-1200-1200-10 and 784-800-800-10.

python -c "from kdmobile.tasks.mnist.model import MLP; print(MLP(hidden=[800, 800]))"
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``x: float32[B, 784]`` (pixels in [0, 1)) → ``logits: float32[B, num_classes]``.

    Args:
        in_dim: input features.
        hidden: widths of the hidden ReLU layers.
        num_classes: output classes.
        dropout_input: dropout on the input pixels (the paper's teacher: 0.2).
        dropout_hidden: dropout after each hidden layer (the paper's teacher: 0.5).
        max_norm: if > 0, ``after_step()`` rescales each hidden unit's incoming weight vector to at most
            this L2 norm (the max-norm constraint of Srivastava et al. 2014, used with dropout).
    """

    def __init__(
        self,
        in_dim: int = 784,
        hidden: Sequence[int] = (1200, 1200),
        num_classes: int = 10,
        dropout_input: float = 0.0,
        dropout_hidden: float = 0.0,
        max_norm: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout_input)] if dropout_input > 0 else []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout_hidden > 0:
                layers.append(nn.Dropout(dropout_hidden))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        self.max_norm = float(max_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))

    @torch.no_grad()
    def after_step(self) -> None:
        """Apply the max-norm constraint (called by the Distiller after every optimizer step)."""
        if self.max_norm <= 0:
            return
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for lin in linears[:-1]:
            norms = lin.weight.norm(dim=1, keepdim=True).clamp(min=self.max_norm)
            lin.weight.mul_(self.max_norm / norms)

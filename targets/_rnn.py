"""``nn.GRU`` written with basic ops (matmuls, sigmoid, tanh), for converters that cannot take ``aten.gru``.

    python -c "import torch; from targets._rnn import unroll_grus; m, names = unroll_grus(torch.nn.GRU(4, 8)); print(names)"

Used by TFLite full-integer int8: litert-torch 0.10's PT2E GRU annotator (``_annotate_gru_io_only``)
assumes a GRU called with an explicit initial state and both outputs used, and raises IndexError /
AssertionError otherwise (a classifier that keeps only the last state hits both). PyTorch's own
``aten.gru`` decomposition (what the Core ML target uses) does not help here: the decomposed nodes keep
the ``nn.GRU`` source metadata, so the annotator still picks them up and raises the same IndexError. A
module swap gives nodes of plain linears and gates, which quantize like any matmul. The copy computes
exactly ``nn.GRU``'s equations over the module's own weights, unrolled over the static number of time
steps (the input projections of all steps are one matmul; only the recurrence is sequential). Not a
target itself: discovery skips modules whose name starts with ``_``.
"""

from __future__ import annotations

import functools
from typing import Any


def has_gru(model: Any) -> bool:
    from torch import nn

    return any(isinstance(m, nn.GRU) for m in model.modules())


def unroll_grus(model: Any) -> tuple[Any, list[str]]:
    """A copy of ``model`` whose ``nn.GRU`` modules run as explicit matmuls and gates (same weights)."""
    import copy

    from torch import nn

    model = copy.deepcopy(model)
    if isinstance(model, nn.GRU):
        return _unrolled_gru_class()(model).eval(), [""]
    names = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.GRU):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, _unrolled_gru_class()(module))
            names.append(name)
    return model.eval(), names


@functools.cache
def _unrolled_gru_class() -> type:
    """``UnrolledGRU(gru)``: ``nn.GRU``'s forward (any layers, directions, ``batch_first``) in basic ops.

    Defined on first use so that importing this target does not import torch.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class UnrolledGRU(nn.Module):
        def __init__(self, gru: nn.GRU) -> None:
            super().__init__()
            self.gru = gru  # keeps the parameters (weight_ih_l0, ...) and the configuration

        def forward(
            self, x: torch.Tensor, h0: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            g = self.gru
            if not g.batch_first:
                x = x.transpose(0, 1)
            dirs = 2 if g.bidirectional else 1
            if h0 is None:
                h0 = x.new_zeros(g.num_layers * dirs, x.shape[0], g.hidden_size)
            steps = x.shape[1]
            finals = []
            for layer in range(g.num_layers):
                outs = []
                for d in range(dirs):
                    sfx = f"_l{layer}" + ("_reverse" if d else "")
                    w_hh = getattr(g, "weight_hh" + sfx)
                    b_hh = getattr(g, "bias_hh" + sfx) if g.bias else None
                    # the input projections of every step at once; only the recurrence is sequential
                    gi = F.linear(
                        x, getattr(g, "weight_ih" + sfx), getattr(g, "bias_ih" + sfx) if g.bias else None
                    )
                    h = h0[layer * dirs + d]
                    ys: list[torch.Tensor] = [h] * steps
                    for t in range(steps - 1, -1, -1) if d else range(steps):
                        i_r, i_z, i_n = gi[:, t].chunk(3, dim=-1)
                        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
                        r = torch.sigmoid(i_r + h_r)
                        z = torch.sigmoid(i_z + h_z)
                        n = torch.tanh(i_n + r * h_n)
                        h = (1 - z) * n + z * h
                        ys[t] = h
                    outs.append(torch.stack(ys, dim=1))
                    finals.append(h)
                x = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
            out = x if g.batch_first else x.transpose(0, 1)
            return out, torch.stack(finals, dim=0)

    return UnrolledGRU

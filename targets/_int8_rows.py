"""int8 embedding tables gathered as plain int8 rows and dequantized after the gather (``int8-rows``).

    kdmobile export build/email/student.safetensors --target executorch tflite --precision int8 -o build/export

The int8 variants of ExecuTorch and TFLite that come first for models with ``nn.Embedding`` tables. Every
table of two or more columns is stored as int8 (symmetric, zero point 0) with either **one scale for the
whole table** (``per_row=False``) or **one fp32 scale per row** (``per_row=True``, for tables one scale
cannot cover). The lookup is an ordinary gather on the int8 table, a copy of ``dim`` bytes per id, and the
dequantization runs after it on the gathered rows only:

- ``how="xnnpack"`` (ExecuTorch): ``quantized_decomposed::dequantize_per_tensor`` with scale 1 (or the
  table's scale), which XNNPACK takes as a vectorised int8 -> fp32 convert; per-row scales are gathered
  from an fp32 ``[rows, 1]`` table and multiplied in (an XNNPACK multiply).
- ``how="cast"`` (TFLite): ``GATHER`` on the int8 table, ``CAST`` to fp32, ``MUL`` by the scale (or by
  the gathered per-row scales): builtin float kernels, no hybrid kernel.

Why not the runtimes' own int8 lookups: ExecuTorch's ``quantized_decomposed::embedding_byte`` runs on the
portable quantized kernels, a scalar loop that dequantizes every element (2.3x the fp32 program's time
on the email student, measured by thread CPU time in one run); TFLite's dynamic-range lookup with hybrid
fully connected layers was 3.9x its fp32. Measured figures and commands: ``docs/compress.md``.

Tables one column wide stay fp32 (a per-row fp32 scale is as large as the row, and a one-column table
is typically a per-id scalar such as a gate, where one shared scale changes every product it enters),
and so do tables with ``max_norm`` (renormalised at lookup). The record says what was quantized and why.
"""

from __future__ import annotations

from typing import Any

QMAX = 127  # symmetric int8: [-127, 127], zero point 0


def linear_share(model: Any) -> float:
    """The share of ``model``'s parameters in ``nn.Linear`` weights (0 for a model without parameters)."""
    from torch import nn

    total = sum(int(p.numel()) for p in model.parameters())
    lin = sum(int(m.weight.numel()) for m in model.modules() if isinstance(m, nn.Linear))
    return lin / total if total else 0.0


def has_tables(model: Any) -> bool:
    """Whether ``model`` has a table the int8-rows variants would quantize (else they do not apply)."""
    from torch import nn

    return any(_quantizable(m) is None for m in model.modules() if isinstance(m, nn.Embedding))


def _quantizable(module: Any) -> str | None:
    """Why an ``nn.Embedding`` stays fp32, or None if it is quantized."""
    if module.max_norm is not None:
        return "max_norm renormalises rows at lookup"
    if module.weight.shape[1] < 2:
        return f"{module.weight.shape[1]} column: a per-id scalar (a per-row scale is as large as the row)"
    return None


def swap_tables(model: Any, build: Any) -> tuple[Any, dict[str, list[int]], dict[str, str]]:
    """A deep copy of ``model`` whose quantizable ``nn.Embedding`` tables are replaced by ``build(weight)``.

    Returns (copy in eval mode, ``{name: [rows, dim]}`` of the replaced tables, ``{name: why}`` of the kept).
    """
    import copy

    from torch import nn

    model = copy.deepcopy(model)
    quantized: dict[str, list[int]] = {}
    kept: dict[str, str] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Embedding):
            continue
        why = _quantizable(module)
        if why is not None:
            kept[name] = why
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, build(module.weight.detach()))
        quantized[name] = [int(n) for n in module.weight.shape]
    return model.eval(), quantized, kept


def quantize_table(weight: Any, per_row: bool) -> tuple[Any, Any]:
    """(int8 ``[rows, dim]``, fp32 scales ``[rows, 1]`` or ``[]``) of an fp32 table, symmetric, round-to-nearest.

    An all-zero row (or table) gets scale 1, so that it dequantizes to exact zeros.
    """
    import torch

    w = weight.detach().to(torch.float32)
    amax = w.abs().amax(dim=1, keepdim=True) if per_row else w.abs().amax()
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.clamp(torch.round(w / scale), -QMAX, QMAX).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def int8_row_embeddings(model: Any, *, per_row: bool, how: str) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` whose ``nn.Embedding`` tables gather int8 rows; returns (copy, record).

    Args:
        model: any module; it is deep-copied, the caller's is not touched.
        per_row: one scale per row (True) or per table (False).
        how: ``"xnnpack"`` (dequantize op) or ``"cast"`` (cast and multiply); see the module docstring.
    """
    model, quantized, kept = swap_tables(model, lambda weight: _rows_class()(weight, per_row, how))
    granularity = "per-row" if per_row else "per-tensor"
    record = {
        "scheme": f"int8 symmetric, zero point 0, one fp32 scale {'per row' if per_row else 'per table'}",
        "op": "gather of int8 rows, then "
        + ("XNNPACK dequantize (int8 -> fp32 convert)" if how == "xnnpack" else "CAST to fp32 and MUL")
        + (" times the gathered row scales" if per_row else ""),
        "quantized": quantized,
        "kept_fp32": kept,
        "flavour": f"+embedding-int8-rows-{granularity}",
    }
    return model.eval(), record


def _rows_class() -> type:
    """``Int8RowsEmbedding(weight, per_row, how)``; defined on first use so that importing is free."""
    global _ROWS_CLASS
    if _ROWS_CLASS is not None:
        return _ROWS_CLASS
    import torch
    from torch import nn

    if not hasattr(torch.ops.quantized_decomposed, "dequantize_per_tensor"):
        # Registers quantized_decomposed::* with torch (ExecuTorch's quant passes import the same library).
        import torch.ao.quantization.fx._decomposed  # noqa: F401

    class Int8RowsEmbedding(nn.Module):
        def __init__(self, weight: torch.Tensor, per_row: bool, how: str) -> None:
            super().__init__()
            if how not in ("xnnpack", "cast"):
                raise ValueError(f"how must be 'xnnpack' or 'cast', not {how!r}")
            q, scale = quantize_table(weight, per_row)
            self.register_buffer("qweight", q)
            self.per_row, self.how = per_row, how
            if per_row:
                self.register_buffer("scales", scale.reshape(-1, 1))
                self.scale = 1.0
            else:
                self.scales = None
                self.scale = float(scale)  # a constant of the graph, not a tensor input

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            rows = nn.functional.embedding(ids, self.qweight)  # int8 rows: a byte copy per id
            if self.how == "xnnpack":
                out = torch.ops.quantized_decomposed.dequantize_per_tensor.default(
                    rows, self.scale, 0, -QMAX - 1, QMAX, torch.int8
                )
            else:
                out = rows.to(torch.float32) * self.scale
            if self.scales is not None:
                out = out * nn.functional.embedding(ids, self.scales)
            return out

    _ROWS_CLASS = Int8RowsEmbedding
    return _ROWS_CLASS


_ROWS_CLASS: type | None = None

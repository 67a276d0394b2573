"""Distillation losses, registered by name in ``LOSSES`` and combined as a weighted sum from the config.

    python -c "from kdmobile.distill import LOSSES; print(LOSSES.names())"

Every loss is an ``nn.Module`` with ``forward(student_out, teacher_out, target) -> scalar``. Logit losses
receive logits ``[..., C]``; feature losses (``inputs = "features"``) receive the outputs of the modules
named by ``student_layer`` / ``teacher_layer``, captured by forward hooks. ``target`` holds integer
labels shaped like ``logits.shape[:-1]``; a negative label marks an unlabelled row (or a padded token),
which hard-label terms skip. ``setup(student_out, teacher_out, target)`` runs once on a probe batch before
training: it checks shapes (a clear ``UsageError`` when they cannot match) and creates any learned
projection, so the optimizer sees its parameters from the first step.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdmobile.errors import ConfigError, UsageError
from kdmobile.registry import Registry

LOSSES: Registry[type[DistillLoss]] = Registry("loss")


class DistillLoss(nn.Module):
    """Base class of every loss term.

    Class attributes:
        inputs: ``"logits"`` or ``"features"`` (hooked module outputs).
        needs_teacher: False for terms that only use labels (``ce``).
    """

    inputs: ClassVar[Literal["logits", "features"]] = "logits"
    needs_teacher: ClassVar[bool] = True
    student_layer: str = ""
    teacher_layer: str = ""

    def setup(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor | None, target: torch.Tensor
    ) -> None:
        """Check shapes on a probe batch; create learned parts. Raises ``UsageError`` on a mismatch."""

    def extra_repr(self) -> str:
        return ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "training"
        )


def _check_same_classes(name: str, s: torch.Tensor, t: torch.Tensor | None, what: str = "classes") -> None:
    if t is None:
        return
    if s.shape[-1] != t.shape[-1]:
        raise UsageError(
            f"loss {name!r}: the student has {s.shape[-1]} {what} but the teacher has {t.shape[-1]}; "
            f"logit distillation needs the same output space (map the labels, or use hidden_mse instead)"
        )
    if s.shape != t.shape:
        raise UsageError(f"loss {name!r}: student logits {tuple(s.shape)} vs teacher logits {tuple(t.shape)}")


def _hard_ce(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the labelled rows (target >= 0); an exact 0 (with a graph) if there are none."""
    flat = logits.reshape(-1, logits.shape[-1])
    y = target.reshape(-1).long()
    keep = y >= 0
    if not bool(keep.any()):
        return flat.sum() * 0.0
    return F.cross_entropy(flat[keep], y[keep], label_smoothing=label_smoothing)


@LOSSES.register("kd")
class KDLoss(DistillLoss):
    """Knowledge distillation of Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    ``L = alpha * CE(y, softmax(z_s)) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``

    The KL is summed over classes and averaged over rows (``batchmean``); the ``T^2`` factor keeps the
    soft term's gradients on the same scale as the hard term's when T changes (paper §2). CE is averaged
    over the labelled rows only (label >= 0); with none in the batch, it contributes 0.

    Args:
        temperature: T > 0.
        alpha: weight of the hard-label term, in [0, 1].
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def setup(self, student_out, teacher_out, target) -> None:
        _check_same_classes("kd", student_out, teacher_out)

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        t = self.temperature
        c = student_out.shape[-1]
        s_log = F.log_softmax(student_out.reshape(-1, c).float() / t, dim=-1)
        t_log = F.log_softmax(teacher_out.reshape(-1, c).float() / t, dim=-1)
        soft = F.kl_div(s_log, t_log, reduction="batchmean", log_target=True) * (t * t)
        if self.alpha == 0.0:
            return soft
        return self.alpha * _hard_ce(student_out.float(), target) + (1.0 - self.alpha) * soft


@LOSSES.register("ce")
class CELoss(DistillLoss):
    """Cross-entropy on hard labels, ``L = -mean_i log softmax(z_s)_{y_i}`` over rows with ``y_i >= 0``.

    Trains without a teacher (e.g. the "scratch" student of Hinton et al. 2015 §3).

    Args:
        label_smoothing: Szegedy et al. 2016 label smoothing, in [0, 1).
    """

    needs_teacher = False

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, student_out: torch.Tensor, teacher_out: Any, target: torch.Tensor) -> torch.Tensor:
        return _hard_ce(student_out.float(), target, self.label_smoothing)


@LOSSES.register("logit_mse")
class LogitMSELoss(DistillLoss):
    """Logit matching of Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?".

    ``L = mean_{i,c} (z_s[i, c] - z_t[i, c])^2`` (mean over every element).
    """

    def setup(self, student_out, teacher_out, target) -> None:
        _check_same_classes("logit_mse", student_out, teacher_out)

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return F.mse_loss(student_out.float(), teacher_out.float())


class _FeatureLoss(DistillLoss):
    inputs = "features"

    def __init__(self, student_layer: str, teacher_layer: str, index: int = 0) -> None:
        super().__init__()
        if not student_layer or not teacher_layer:
            raise ValueError("student_layer and teacher_layer name modules, e.g. 'encoder.layers.0'")
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.index = int(index)  # which element to take when a module returns a tuple


@LOSSES.register("hidden_mse")
class HiddenMSELoss(_FeatureLoss):
    """Hidden-state matching, FitNets (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets").

    ``L = mean (W h_s + b - h_t)^2`` over every element, where ``h_s`` and ``h_t`` are the outputs of the
    hooked modules (last dimension = width) and ``W, b`` is a learned ``nn.Linear(d_s, d_t)`` created at
    set-up when the widths differ (``projection="auto"``), trained together with the student.

    Args:
        student_layer: module path in the student (``dict(student.named_modules())`` key).
        teacher_layer: module path in the teacher.
        index: element to take when the module returns a tuple.
        projection: ``"auto"`` (only when widths differ), ``"always"`` or ``"none"``.
    """

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        index: int = 0,
        projection: Literal["auto", "always", "none"] = "auto",
    ) -> None:
        super().__init__(student_layer, teacher_layer, index)
        if projection not in ("auto", "always", "none"):
            raise ValueError(f"projection must be auto, always or none, got {projection!r}")
        self.projection = projection
        self.proj: nn.Linear | None = None

    def setup(self, student_out, teacher_out, target) -> None:
        ds, dt = student_out.shape[-1], teacher_out.shape[-1]
        if student_out.shape[:-1] != teacher_out.shape[:-1]:
            raise UsageError(
                f"loss 'hidden_mse': features of {self.student_layer!r} {tuple(student_out.shape)} and "
                f"{self.teacher_layer!r} {tuple(teacher_out.shape)} differ before the last (width) dimension"
            )
        if self.projection == "always" or (self.projection == "auto" and ds != dt):
            self.proj = nn.Linear(ds, dt).to(student_out.device)
        elif ds != dt:
            raise UsageError(
                f"loss 'hidden_mse': widths {ds} (student) and {dt} (teacher) differ and projection='none'"
            )

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        h = student_out.float()
        if self.proj is not None:
            h = self.proj(h)
        return F.mse_loss(h, teacher_out.float())


@LOSSES.register("attention")
class AttentionLoss(_FeatureLoss):
    """Attention-map transfer of TinyBERT (Jiao et al. 2020, "TinyBERT: Distilling BERT ...", eq. 7).

    ``L = 1/h * sum_i MSE(A_i^S, A_i^T)`` over the heads ``i`` of the hooked attention maps ``[B, h, L, L]``
    (here: the mean squared error over every element). As in TinyBERT, entries at or below ``-1e2``
    (masked scores before the softmax) are set to 0 first. If the head counts differ, both maps are
    averaged over heads before comparing (``head_mean``); sequence lengths must match.

    Args:
        student_layer: module whose output (or its ``index``-th element) is the attention map.
        teacher_layer: the same in the teacher.
        index: element to take when the module returns a tuple.
    """

    def setup(self, student_out, teacher_out, target) -> None:
        if student_out.dim() != 4 or teacher_out.dim() != 4:
            raise UsageError(
                f"loss 'attention': expects attention maps [B, heads, L, L], got student "
                f"{tuple(student_out.shape)} at {self.student_layer!r}, teacher {tuple(teacher_out.shape)} "
                f"at {self.teacher_layer!r} (set index= to pick the attention output of a tuple)"
            )
        if student_out.shape[-2:] != teacher_out.shape[-2:]:
            raise UsageError(
                f"loss 'attention': sequence lengths differ: {tuple(student_out.shape[-2:])} vs "
                f"{tuple(teacher_out.shape[-2:])}"
            )

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        s, t = student_out.float(), teacher_out.float()
        s = torch.where(s <= -1e2, torch.zeros_like(s), s)
        t = torch.where(t <= -1e2, torch.zeros_like(t), t)
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(dim=1), t.mean(dim=1)
        return F.mse_loss(s, t)


@LOSSES.register("token_kd")
class TokenKDLoss(DistillLoss):
    """Token-level distillation for causal language models (Kim & Rush 2016 word-level KD; Gu et al. 2024
    "MiniLLM" for the reverse KL).

    With ``p = softmax(z_t / T)`` and ``q = softmax(z_s / T)`` at each position of logits ``[B, T, V]``:

    - forward: ``L = T^2 * sum_{b,t} m_{bt} KL(p_{bt} || q_{bt}) / sum_{b,t} m_{bt}``
    - reverse: ``L = T^2 * sum_{b,t} m_{bt} KL(q_{bt} || p_{bt}) / sum_{b,t} m_{bt}``

    where ``m_{bt} = 1`` if ``target[b, t] >= 0`` (real token) and 0 for padding (negative label, e.g. -1
    or -100). Teacher and student must share the vocabulary: a different ``V`` is an error at set-up.

    Args:
        temperature: T > 0.
        direction: ``"forward"`` or ``"reverse"``.
    """

    def __init__(
        self, temperature: float = 1.0, direction: Literal["forward", "reverse"] = "forward"
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        self.temperature = float(temperature)
        self.direction = direction

    def setup(self, student_out, teacher_out, target) -> None:
        if student_out.shape[-1] != teacher_out.shape[-1]:
            raise UsageError(
                f"loss 'token_kd': teacher vocabulary has {teacher_out.shape[-1]} tokens but the student's has "
                f"{student_out.shape[-1]}; token-level KD needs the same tokenizer and vocabulary"
            )
        if student_out.dim() != 3 or student_out.shape != teacher_out.shape:
            raise UsageError(
                f"loss 'token_kd': expects logits [B, T, V] of equal shape, got student "
                f"{tuple(student_out.shape)} and teacher {tuple(teacher_out.shape)}"
            )
        if tuple(target.shape) != tuple(student_out.shape[:-1]):
            raise UsageError(
                f"loss 'token_kd': labels {tuple(target.shape)} must be shaped like the logits without the "
                f"vocabulary dimension {tuple(student_out.shape[:-1])} (negative = padding)"
            )

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        t = self.temperature
        s_log = F.log_softmax(student_out.float() / t, dim=-1)
        t_log = F.log_softmax(teacher_out.float() / t, dim=-1)
        if self.direction == "forward":
            per_token = (t_log.exp() * (t_log - s_log)).sum(-1)
        else:
            per_token = (s_log.exp() * (s_log - t_log)).sum(-1)
        mask = (target >= 0).to(per_token.dtype)
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0) * (t * t)


def build_losses(spec: dict[str, dict[str, Any]]) -> tuple[nn.ModuleDict, dict[str, float]]:
    """Build the loss terms of a config's ``loss`` table.

    Args:
        spec: term name -> settings; ``type`` (default: the term name) picks the registered loss,
            ``weight`` (default 1.0) its weight, the rest are the loss's keyword arguments.

    Returns:
        (terms, weights): an ``nn.ModuleDict`` in config order and the weight of each term.

    Raises:
        ConfigError: an unknown loss type or setting, or a bad value, naming ``loss.<term>.<key>``.
    """
    terms: dict[str, DistillLoss] = {}
    weights: dict[str, float] = {}
    if not spec:
        raise ConfigError("loss: at least one loss term is needed, e.g. loss = {kd = {temperature = 4.0}}")
    for name, settings in spec.items():
        settings = dict(settings or {})
        kind = settings.pop("type", name)
        if kind not in LOSSES:
            raise ConfigError(f"loss.{name}: unknown loss type {kind!r}; valid: {', '.join(LOSSES.names())}")
        weight = settings.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError(f"loss.{name}.weight: expected a number, got {weight!r}")
        cls = LOSSES.get(kind)
        params = {
            p: v
            for p, v in inspect.signature(cls.__init__).parameters.items()
            if p != "self" and v.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }
        valid = list(params)
        for key in settings:
            if key not in valid:
                raise ConfigError(
                    f"unknown config key 'loss.{name}.{key}' for loss {kind!r}; valid keys: "
                    f"{', '.join(['type', 'weight', *valid])}"
                )
        missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty]
        missing = [p for p in missing if p not in settings]
        if missing:
            raise ConfigError(
                f"loss.{name}: missing required setting(s) {', '.join(missing)} for loss {kind!r}"
            )
        try:
            terms[name] = cls(**settings)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"loss.{name}: {e}") from None
        weights[name] = float(weight)
    return nn.ModuleDict(terms), weights

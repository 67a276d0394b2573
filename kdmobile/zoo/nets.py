"""The zoo's own networks and wrappers (imported only when a zoo entry is built: it imports torch).

    python -c "import torch; from kdmobile.zoo.nets import MobileNetV3Small; print(MobileNetV3Small()(torch.randn(1, 3, 128, 128)).shape)"

- ``Logits``: a Hugging Face ``XxxForImageClassification`` returns a dataclass; exporters want a tensor.
- ``MobileNetV3Small``: Howard et al. 2019 (Table 2), hard-swish and squeeze-excite with hard-sigmoid.
- ``SentenceEncoder``: a BERT-style encoder with masked mean pooling at a STATIC sequence length (no
  trimming of padding by ``mask.sum()``, which makes the shape data-dependent and breaks ``torch.export``)
  and a zero-shot head (cosine similarity to fixed class embeddings).
- ``GRUClassifier``, ``KeywordSpotter`` (1-D convolutions over MFCC frames), ``MnistCNN``.
- ``realistic_init``: random weights with healthy activation scales (He init, BatchNorm statistics
  measured on sample inputs), so numerics comparisons of random-init models are not comparisons of zeros.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Logits(nn.Module):
    """``model(pixel_values=x).logits`` as a plain tensor-in, tensor-out module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = _divisible(channels / 4)
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(s))))


def _conv_bn(
    cin: int, cout: int, k: int, stride: int, groups: int, act: type[nn.Module] | None
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, act: type[nn.Module], stride: int):
        super().__init__()
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(_conv_bn(cin, exp, 1, 1, 1, act))
        layers.append(_conv_bn(exp, exp, k, stride, exp, act))
        if se:
            layers.append(SqueezeExcite(exp))
        layers.append(_conv_bn(exp, cout, 1, 1, 1, None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (kernel, expansion, out, squeeze-excite, activation, stride): MobileNetV3-Small, Howard et al. 2019 Table 2.
_V3_SMALL = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]


class MobileNetV3Small(nn.Module):
    """``pixel_values: float32[B, 3, H, W]`` → ``logits: float32[B, num_classes]``; ``width`` scales channels."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0, blocks: int = len(_V3_SMALL)) -> None:
        super().__init__()
        acts = {"RE": nn.ReLU, "HS": nn.Hardswish}
        c = _divisible(16 * width)
        layers: list[nn.Module] = [_conv_bn(3, c, 3, 2, 1, nn.Hardswish)]
        for k, exp, out, se, act, stride in _V3_SMALL[:blocks]:
            cout = _divisible(out * width)
            layers.append(InvertedResidual(c, k, _divisible(exp * width), cout, se, acts[act], stride))
            c = cout
        last = _divisible(576 * width)
        layers.append(_conv_bn(c, last, 1, 1, 1, nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(last, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, num_classes)
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).mean(dim=(2, 3)))


class SentenceEncoder(nn.Module):
    """``(input_ids, attention_mask): int64[B, L]`` → cosine similarities to ``class_embeddings`` ``[B, C]``.

    Masked mean pooling over all ``L`` positions (padding weighs 0): the shapes never depend on the data.
    """

    def __init__(self, encoder: nn.Module, class_embeddings: torch.Tensor, scale: float = 20.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("classes", F.normalize(class_embeddings.detach().float(), dim=-1))
        self.scale = float(scale)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        e = F.normalize(self.embed(input_ids, attention_mask), dim=-1)
        return self.scale * e @ self.classes.T


class GRUClassifier(nn.Module):
    """``ids: int64[B, L]`` (0 = padding, placed first) → ``logits[B, C]``: embedding, one GRU layer, its last state."""

    def __init__(self, vocab: int, num_classes: int, dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(self.embed(ids))
        return self.head(h[-1])


class KeywordSpotter(nn.Module):
    """``mfcc: float32[B, n_mfcc, frames]`` → ``logits[B, num_classes]``: 1-D convolutions over time."""

    def __init__(self, n_mfcc: int = 40, num_classes: int = 12, channels: int = 64, blocks: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv1d(n_mfcc, channels, 3, padding=1, bias=False),
            nn.BatchNorm1d(channels),
        ]
        layers.append(nn.ReLU())
        for i in range(blocks):
            d = 2**i
            layers += [
                nn.Conv1d(channels, channels, 3, padding=d, dilation=d, groups=channels, bias=False),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
                nn.Conv1d(channels, channels, 1, bias=False),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(mfcc).mean(dim=2))


class MnistCNN(nn.Module):
    """``x: float32[B, 1, 28, 28]`` → ``logits[B, 10]``: two conv + pool stages and a linear head."""

    def __init__(self, c1: int = 16, c2: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(c2 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@torch.no_grad()
def realistic_init(model: nn.Module, samples: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random weights with activations of a trained network's scale; returns ``model`` in eval mode.

    Hugging Face's default init (normal, std 0.02) with fresh BatchNorm statistics shrinks the activations
    layer after layer (a random MobileNetV2's logits were ~1e-21, EfficientNet's exactly 0), which makes
    fp16 underflow and int8 calibration meaningless. Here convolutions and linears get He-normal weights,
    BatchNorm gets random affine parameters, and its running statistics are measured on ``samples`` (one
    pass in training mode with a cumulative average), as a trained network's would be.
    """
    g = torch.Generator().manual_seed(seed)
    bns = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.01)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
            bns.append(m)
    if bns:
        model.train()
        for k in range(0, len(samples), 16):
            model(samples[k : k + 16])
        for m in bns:
            m.momentum = 0.1
    return model.eval()

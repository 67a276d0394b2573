"""Vision entries of the zoo: CNNs and vision transformers from ``transformers`` configs, a MobileNetV3-Small
written here, and two small MNIST models trained in-process on the real digits.

    python -c "from kdmobile.zoo import build; print(build('mobilenet_v2').summary())"

Resolution 128 x 128 px (64 px with ``small=True``) keeps the whole coverage matrix affordable on 2 cores.
Random-init models get ``realistic_init`` (He weights, BatchNorm statistics measured on the calibration
images), so their activations have a trained network's scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdmobile.zoo import ZOO, ZooModel, as_tensors, smooth_noise

RES, SMALL_RES = 128, 64


def _random_vision(
    module: Any, *, small: bool, notes: str, family: str, n_calibration: int, n_validation: int, seed: int
) -> ZooModel:
    """A random-init image model on seeded synthetic images at ``RES`` (``SMALL_RES``) px."""
    import torch

    from kdmobile.zoo.nets import realistic_init

    res = SMALL_RES if small else RES
    calib = smooth_noise(n_calibration, (3, res, res), seed + 1)
    val = smooth_noise(n_validation, (3, res, res), seed + 2)
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        realistic_init(module, torch.from_numpy(smooth_noise(64, (3, res, res), seed + 3)), seed)
    return ZooModel(
        "",
        module.eval(),
        as_tensors((val,)),
        (calib,),
        (val,),
        real=False,
        input_names=["pixel_values"],
        family=family,
        notes=f"{notes}, random init, {res} px",
    )


def _hf(cls_name: str, config_name: str, **config: Any) -> Any:
    import transformers

    from kdmobile.tasks.email.teacher import _quiet_transformers
    from kdmobile.zoo.nets import Logits

    _quiet_transformers()
    cfg = getattr(transformers, config_name)(**config)
    return Logits(getattr(transformers, cls_name)(cfg))


@ZOO.register("mobilenet_v2")
def mobilenet_v2(*, small: bool, **kw: Any) -> ZooModel:
    res = SMALL_RES if small else RES
    m = _hf(
        "MobileNetV2ForImageClassification",
        "MobileNetV2Config",
        image_size=res,
        depth_multiplier=0.5 if small else 1.0,
        num_labels=1000,
    )
    return _random_vision(
        m,
        small=small,
        notes=f"transformers MobileNetV2 (depth multiplier {0.5 if small else 1.0})",
        family="cnn",
        **kw,
    )


@ZOO.register("mobilenet_v3_small")
def mobilenet_v3_small(*, small: bool, **kw: Any) -> ZooModel:
    from kdmobile.zoo.nets import MobileNetV3Small

    m = MobileNetV3Small(width=0.5 if small else 1.0)
    return _random_vision(
        m,
        small=small,
        notes="MobileNetV3-Small (hard-swish, squeeze-excite), written in kdmobile.zoo.nets",
        family="cnn",
        **kw,
    )


@ZOO.register("efficientnet_b0")
def efficientnet_b0(*, small: bool, **kw: Any) -> ZooModel:
    res = SMALL_RES if small else RES
    m = _hf(
        "EfficientNetForImageClassification",
        "EfficientNetConfig",
        image_size=res,
        width_coefficient=0.5 if small else 1.0,
        depth_coefficient=0.5 if small else 1.0,
        hidden_dim=640 if small else 1280,  # transformers does not scale it with width_coefficient
        num_labels=1000,
    )
    return _random_vision(
        m,
        small=small,
        notes=f"transformers EfficientNet-B0 (width/depth {0.5 if small else 1.0}; SiLU, squeeze-excite)",
        family="cnn",
        **kw,
    )


@ZOO.register("resnet18")
def resnet18(*, small: bool, **kw: Any) -> ZooModel:
    widths = [32, 64, 128, 256] if small else [64, 128, 256, 512]
    m = _hf(
        "ResNetForImageClassification",
        "ResNetConfig",
        layer_type="basic",
        depths=[1, 1, 1, 1] if small else [2, 2, 2, 2],
        hidden_sizes=widths,
        embedding_size=widths[0],
        num_labels=1000,
    )
    return _random_vision(
        m,
        small=small,
        notes=f"transformers ResNet-18 (basic blocks {'1-1-1-1' if small else '2-2-2-2'})",
        family="cnn",
        **kw,
    )


@ZOO.register("mobilevit_xxs")
def mobilevit_xxs(*, small: bool, **kw: Any) -> ZooModel:
    res = SMALL_RES if small else RES
    m = _hf(
        "MobileViTForImageClassification",
        "MobileViTConfig",
        image_size=res,
        hidden_sizes=[64, 80, 96],
        neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320],
        expand_ratio=2.0,
        num_labels=1000,
    )
    return _random_vision(
        m,
        small=small,
        notes="transformers MobileViT with the XX-small widths (1.3 M params)",
        family="transformer",
        **kw,
    )


@ZOO.register("vit_tiny")
def vit_tiny(*, small: bool, **kw: Any) -> ZooModel:
    res = SMALL_RES if small else RES
    m = _hf(
        "ViTForImageClassification",
        "ViTConfig",
        image_size=res,
        patch_size=16,
        hidden_size=192,
        num_hidden_layers=2 if small else 12,
        num_attention_heads=3,
        intermediate_size=768,
        num_labels=1000,
    )
    layers = 2 if small else 12
    return _random_vision(
        m,
        small=small,
        notes=f"transformers ViT with DeiT-tiny widths (192-d, 3 heads, {layers} layers, patch 16)",
        family="transformer",
        **kw,
    )


# -- MNIST, trained in-process on the real digits ---------------------------------------------------------
def _train(model: Any, x: Any, y: Any, *, epochs: int, lr: float, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for s in range(0, len(y), 64):
            b = perm[s : s + 64]
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _mnist_entry(
    name: str,
    model: Any,
    image: bool,
    *,
    n_train: int,
    epochs: int,
    n_calibration: int,
    n_validation: int,
    seed: int,
    notes: str,
    family: str,
) -> ZooModel:
    import torch

    from kdmobile.tasks.mnist.data import split

    shape = (1, 28, 28) if image else (784,)
    x, y = split("train", subset=n_train)
    _train(model, x.reshape(-1, *shape), y, epochs=epochs, lr=2e-3, seed=seed)
    xv, yv = split("val")
    xt, yt = split("test")
    rng = np.random.default_rng(seed)
    vi = rng.permutation(len(yt))[:n_validation]
    ci = rng.permutation(len(yv))[:n_calibration]
    val = xt[vi].reshape(-1, *shape).numpy()
    calib = xv[ci].reshape(-1, *shape).numpy()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(val)).argmax(1).numpy() == yt[vi].numpy()).mean())
    return ZooModel(
        name,
        model,
        as_tensors((val,)),
        (calib,),
        (val,),
        real=True,
        labels=yt[vi].numpy(),
        input_names=["x"],
        family=family,
        notes=f"{notes}; {acc:.1%} on its {len(vi)} validation digits",
    )


@ZOO.register("mnist_cnn")
def mnist_cnn(*, small: bool, n_calibration: int, n_validation: int, seed: int) -> ZooModel:
    from kdmobile.zoo.nets import MnistCNN

    n_train = 4000 if small else 12000
    return _mnist_entry(
        "mnist_cnn",
        MnistCNN(),
        True,
        n_train=n_train,
        epochs=1,
        n_calibration=n_calibration,
        n_validation=n_validation,
        seed=seed,
        family="cnn",
        notes=f"2-conv CNN trained in-process on {n_train} real MNIST digits (1 epoch), real test digits",
    )


@ZOO.register("mnist_mlp")
def mnist_mlp(*, small: bool, n_calibration: int, n_validation: int, seed: int) -> ZooModel:
    from kdmobile.tasks.mnist.model import MLP

    n_train = 4000 if small else 20000
    return _mnist_entry(
        "mnist_mlp",
        MLP(hidden=(256, 256)),
        False,
        n_train=n_train,
        epochs=2,
        n_calibration=n_calibration,
        n_validation=n_validation,
        seed=seed,
        family="mlp",
        notes=f"784-256-256-10 MLP (kdmobile.tasks.mnist.model) trained in-process on {n_train} real digits",
    )

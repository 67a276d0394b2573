"""Audio entry of the zoo: a 1-D convolutional keyword spotter over MFCC frames (random init).

    python -c "from kdmobile.zoo import build; print(build('kws_conv1d').summary())"

Input ``mfcc: float32[1, 40, 98]``: 40 coefficients x 98 frames (1 s of audio at a 10 ms hop), 12 classes
(the Speech Commands layout: 10 words, silence, unknown). Depthwise-separable dilated 1-D convolutions,
BatchNorm and ReLU, global average over time. No real audio ships offline here, so the inputs are
synthetic (smooth over time) and the model is judged by SQNR.
"""

from __future__ import annotations

from kdmobile.zoo import ZOO, ZooModel, as_tensors, smooth_noise


@ZOO.register("kws_conv1d")
def kws_conv1d(*, small: bool, n_calibration: int, n_validation: int, seed: int) -> ZooModel:
    import torch

    from kdmobile.zoo.nets import KeywordSpotter, realistic_init

    shape = (40, 49 if small else 98)
    model = KeywordSpotter(channels=32 if small else 64, blocks=2 if small else 4)
    realistic_init(model, torch.from_numpy(smooth_noise(64, shape, seed + 3, scale=4)), seed)
    calib = smooth_noise(n_calibration, shape, seed + 1, scale=4)
    val = smooth_noise(n_validation, shape, seed + 2, scale=4)
    return ZooModel(
        "kws_conv1d",
        model,
        as_tensors((val,)),
        (calib,),
        (val,),
        real=False,
        input_names=["mfcc"],
        family="cnn",
        notes=f"1-D conv keyword spotter (depthwise-separable, dilated), random init, MFCC {shape[0]}x{shape[1]}",
    )

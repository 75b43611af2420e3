"""keras_application: a ``keras.applications`` model as Keras ships it, against its hand-written
torch twin (:mod:`conformance.zoo_models`), so that ImageNet weights can move to PyTorch and back.

The Keras side is ``keras.applications.<Arch>(weights=None, include_top=True, input_shape=...,
classes=...)``: randomly initialised, nothing downloaded; the suite then sets every weight from
its seed. ``arch`` picks the architecture; ``input_shape`` is torch's (C, H, W), at least 32x32
(Keras refuses smaller for all five). The model is used as a layer of the suite's wrapper model,
as a user would call it.

Weights are drawn for deep models (``Family.deep_init``, see :mod:`conformance.pair`): He-uniform
kernels, and BatchNorm statistics calibrated on seeded inputs, so that the output depends on the
input, and so on every layer's conversion, instead of on the biases and BatchNorm offsets alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Family, Param, Params, Tolerance, choice, integer, invalid, shape

KERAS_NAMES = {"vgg16": "VGG16", "resnet50": "ResNet50", "mobilenet_v2": "MobileNetV2",
               "densenet121": "DenseNet121", "efficientnet_b0": "EfficientNetB0"}

# The longest reduction in each model (the fan-in of its widest layer), for the tolerance.
_FAN_IN = {"vgg16": 3 * 3 * 512, "resnet50": 3 * 3 * 512, "mobilenet_v2": 1280, "densenet121": 3 * 3 * 128,
           "efficientnet_b0": 1280}
# Layers with weights on the longest path from input to output.
_DEPTH = {"vgg16": 16, "resnet50": 50, "mobilenet_v2": 53, "densenet121": 121, "efficientnet_b0": 82}


def _activation(p: Params) -> str | None:
    return None if p["classifier_activation"] == "none" else "softmax"


def _check(p: Params) -> None:
    channels, height, width = p["input_shape"]
    if min(height, width) < 32:
        raise invalid("input_shape", f"keras.applications needs at least 32x32 inputs, got {height}x{width}")


def _build_torch(p: Params) -> Any:
    from ..zoo_models import ARCHITECTURES
    channels, height, width = p["input_shape"]
    extra = {"input_size": (height, width)} if p["arch"] == "vgg16" else {}
    return ARCHITECTURES[p["arch"]](classes=p["classes"], classifier_activation=_activation(p),
                                    in_channels=channels, **extra)


def _build_keras(p: Params, x: Any) -> Any:
    import keras
    channels, height, width = p["input_shape"]
    build = getattr(keras.applications, KERAS_NAMES[p["arch"]])
    model = build(weights=None, include_top=True, input_shape=(height, width, channels), classes=p["classes"],
                  classifier_activation=_activation(p))
    return model(x)


def _inputs(p: Params, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
    """EfficientNet rescales by 1/255 inside the model, so it gets pixels in [0, 255]; the others
    expect preprocessed inputs (preprocess_input is outside the model) and get [-1, 1]."""
    high, low = (255.0, 0.0) if p["arch"] == "efficientnet_b0" else (1.0, -1.0)
    return (rng.uniform(low, high, size=(batch, *p["input_shape"])).astype(np.float32),)


def _tolerance(p: Params) -> Tolerance:
    """The whole-model policy of the other model families (``Tolerance.reduction``), with the
    reduction length taken as the widest layer's fan-in times the number of weighted layers in
    a row: each layer adds its own float32 rounding, and the two frameworks round differently in
    every one (oneDNN against torch's kernels, other summation orders). rtol stays 1e-4, so the
    allowed error grows with the outputs' size, and atol grows with the square root of the
    rounding events, not with the number of weights. Measured (logits of size 1 to 10): correct
    twins use at most 6% of it (ResNet50, 0.057), while a twin with symmetric stride-2 padding
    (MobileNetV2) or torchvision's stride placement (ResNet50) exceeds it 2,000 to 3,600 times."""
    return Tolerance.reduction(_FAN_IN[p["arch"]] * _DEPTH[p["arch"]])


FAMILIES = [Family(
    name="keras_application",
    torch_class="a keras.applications model's torch twin (conformance.zoo_models)",
    params={
        "arch": Param(choice(*KERAS_NAMES), abbrev=""),
        "classes": Param(integer(1), default=10, abbrev="c"),
        "classifier_activation": Param(choice("softmax", "none"), default="softmax", abbrev=""),
        "input_shape": Param(shape(rank=3), abbrev="in"),
    },
    build_torch=_build_torch, build_keras=_build_keras, check=_check, tolerance=_tolerance,
    channels_first=True, make_inputs=_inputs, deep_init=True, conditioned_gradients=True,
)]

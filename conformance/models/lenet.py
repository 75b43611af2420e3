"""LeNet-5, written once for PyTorch and once, independently, for Keras 3.

Both take a 32x32 single-channel image: ``(N, 1, 32, 32)`` for PyTorch, ``(N, 32, 32, 1)``
(channels-last) for Keras. The layers are the classic ones, with ReLU and max pooling::

    conv 5x5 -> 6, relu, maxpool 2     (6 x 28 x 28 -> 6 x 14 x 14)
    conv 5x5 -> 16, relu, maxpool 2    (16 x 10 x 10 -> 16 x 5 x 5)
    flatten (400), dense 120, relu, dense 84, relu, dense 10

:func:`naive_transfer` is the conversion recipe that is often copied around and is wrong for
this model; :func:`conformance.transfer_weights` is the correct one.

torch is imported by this module (``TorchLeNet5`` subclasses ``nn.Module``); Keras, and with
it TensorFlow, only when a Keras model is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

INPUT_SHAPE_TORCH = (1, 32, 32)
INPUT_SHAPE_KERAS = (32, 32, 1)
NUM_CLASSES = 10


class TorchLeNet5(nn.Module):
    """LeNet-5 in PyTorch: ``features`` (two conv/relu/pool blocks) then ``classifier``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),            # flattens (C, H, W) = (16, 5, 5), channel-major
            nn.Linear(400, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def keras_lenet5(functional: bool = False) -> Any:
    """LeNet-5 in Keras 3, channels-last input ``(32, 32, 1)``.

    A ``keras.Sequential`` by default; a functional ``keras.Model`` when ``functional`` is true.
    Both are built (they start from ``keras.Input``), so their weights exist at once.
    """
    import keras
    from keras import layers

    def stack() -> list[Any]:
        return [
            layers.Conv2D(6, 5, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(16, 5, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),   # flattens (H, W, C) = (5, 5, 16), channel-minor
            layers.Dense(120, activation="relu", name="fc1"),
            layers.Dense(84, activation="relu", name="fc2"),
            layers.Dense(NUM_CLASSES, name="fc3"),
        ]

    if not functional:
        return keras.Sequential([keras.Input(shape=INPUT_SHAPE_KERAS), *stack()], name="lenet5_sequential")
    inputs = keras.Input(shape=INPUT_SHAPE_KERAS, name="image")
    x = inputs
    for layer in stack():
        x = layer(x)
    return keras.Model(inputs, x, name="lenet5_functional")


def naive_transfer(torch_model: Any, keras_model: Any) -> None:
    """Copy torch weights into Keras the way many tutorials do. WRONG for LeNet-5; kept to show why.

    The recipe zips ``state_dict()`` values (skipping ``num_batches_tracked``) with
    ``keras_model.get_weights()`` in order, transposes 4-D arrays with ``(2, 3, 1, 0)``
    (``O I H W -> H W I O``) and 2-D arrays with ``.T`` (``O I -> I O``), asserts that every
    shape matches, and calls ``set_weights``.

    Every shape does match, so nothing complains, yet the first ``Linear`` after the
    ``Flatten`` gets its input rows in the wrong order. PyTorch flattens the ``16 x 5 x 5``
    feature map as ``(C, H, W)``: input feature ``c*25 + h*5 + w``. Keras flattens its
    channels-last map as ``(H, W, C)``: input feature ``h*80 + w*16 + c``. A plain ``.T`` keeps
    torch's ``(C H W)`` row order, so every Keras input feature is multiplied by the weight meant
    for another position and channel, and the outputs differ. The kernel needs the rule
    ``O (C H W) -> (H W C) O``, which :func:`conformance.transfer_weights` applies.
    """
    values = [tensor.detach().cpu().numpy() for name, tensor in torch_model.state_dict().items()
              if not name.endswith("num_batches_tracked")]
    targets = keras_model.get_weights()
    assert len(values) == len(targets), f"{len(values)} torch tensors, {len(targets)} keras weights"
    converted = []
    for value, target in zip(values, targets, strict=True):
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        elif value.ndim == 2:
            value = value.T
        assert value.shape == target.shape, f"shape {value.shape} != {target.shape}"
        converted.append(np.ascontiguousarray(value))
    keras_model.set_weights(converted)

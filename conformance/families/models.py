"""Whole-model cases: small networks built independently in both frameworks, transferred with
``transfer_weights`` (which pairs their layers by order) and compared end to end.

- ``residual_block``: a ResNet basic block, with a strided 1x1 projection shortcut;
- ``inverted_residual``: a MobileNet block: expand 1x1, depthwise 3x3, project 1x1, each with
  BatchNorm, hardswish between, and the skip connection when shapes allow;
- ``lstm_classifier``: embedding -> bidirectional LSTM -> the last time step -> dense;
- ``transformer_block``: post-norm self-attention and a GELU MLP, each with a residual and
  LayerNorm.

The family names are not torch classes. Each torch module registers its sub-modules in the order
its forward pass uses them, which is the order the Keras functional model lists its layers, so
the structural pairing lines up.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np

from .base import (
    Family,
    Param,
    Params,
    Tolerance,
    boolean,
    choice,
    integer,
    invalid,
    length_or_input_shape,
    optional,
    shape,
)
from .norm import keras_momentum


@cache
def _torch_modules() -> dict[str, Any]:
    """The torch model classes, defined on first use so that importing this module stays cheap."""
    import torch
    from torch import nn

    class ResidualBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                             if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + self.shortcut(x))

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
            super().__init__()
            hidden = cin * expand
            self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish())
            self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
                                           nn.BatchNorm2d(hidden), nn.Hardswish())
            self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.project(self.depthwise(self.expand(x)))
            return out + x if self.skip else out

    class LSTMClassifier(nn.Module):
        def __init__(self, vocab: int, embed: int, hidden: int, classes: int) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab, embed)
            self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
            self.head = nn.Linear(2 * hidden, classes)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(self.embedding(tokens))
            return self.head(out[:, -1, :])

    class TransformerBlock(nn.Module):
        def __init__(self, dim: int, heads: int, mlp: int, approximate: str) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm1 = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, mlp)
            self.gelu = nn.GELU(approximate=approximate)
            self.fc2 = nn.Linear(mlp, dim)
            self.norm2 = nn.LayerNorm(dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.norm1(x + self.attention(x, x, x, need_weights=False)[0])
            return self.norm2(x + self.fc2(self.gelu(self.fc1(x))))

    return {"residual_block": ResidualBlock, "inverted_residual": InvertedResidual,
            "lstm_classifier": LSTMClassifier, "transformer_block": TransformerBlock}


# torch's default BatchNorm momentum (0.1), mapped once (the torch blocks above use that default).
_BN_MOMENTUM = keras_momentum(0.1)


def _keras_residual(p: Params, x: Any) -> Any:
    import keras
    L = keras.layers
    cin, cout, stride = p["input_shape"][0], p["out_channels"], p["stride"]
    out = L.Conv2D(cout, 3, stride, use_bias=False)(L.ZeroPadding2D(1)(x))
    out = L.ReLU()(L.BatchNormalization(epsilon=1e-5, momentum=_BN_MOMENTUM)(out))
    out = L.Conv2D(cout, 3, 1, use_bias=False)(L.ZeroPadding2D(1)(out))
    out = L.BatchNormalization(epsilon=1e-5, momentum=_BN_MOMENTUM)(out)
    shortcut = x
    if stride != 1 or cin != cout:
        shortcut = L.Conv2D(cout, 1, stride, use_bias=False)(x)
        shortcut = L.BatchNormalization(epsilon=1e-5, momentum=_BN_MOMENTUM)(shortcut)
    return L.ReLU()(L.Add()([out, shortcut]))


def _keras_inverted(p: Params, x: Any) -> Any:
    import keras
    L = keras.layers
    cin, cout, stride = p["input_shape"][0], p["out_channels"], p["stride"]
    hidden = cin * p["expand"]
    out = L.Conv2D(hidden, 1, use_bias=False)(x)
    out = L.Activation("hard_silu")(L.BatchNormalization(epsilon=1e-5, momentum=_BN_MOMENTUM)(out))
    out = L.DepthwiseConv2D(3, stride, use_bias=False)(L.ZeroPadding2D(1)(out))
    out = L.Activation("hard_silu")(L.BatchNormalization(epsilon=1e-5, momentum=_BN_MOMENTUM)(out))
    out = L.Conv2D(cout, 1, use_bias=False)(out)
    out = L.BatchNormalization(epsilon=1e-5, momentum=_BN_MOMENTUM)(out)
    return L.Add()([out, x]) if stride == 1 and cin == cout else out


def _keras_lstm(p: Params, tokens: Any) -> Any:
    import keras
    L = keras.layers
    x = L.Embedding(p["vocab"], p["embed"])(tokens)
    x = L.Bidirectional(L.LSTM(p["hidden"], return_sequences=True))(x)
    return L.Dense(p["classes"])(x[:, -1, :])


def _keras_transformer(p: Params, x: Any) -> Any:
    import keras
    L = keras.layers
    dim, heads = p["input_shape"][-1], p["heads"]
    attended = L.MultiHeadAttention(heads, dim // heads)(x, x)
    x = L.LayerNormalization(epsilon=1e-5)(L.Add()([x, attended]))
    hidden = keras.ops.gelu(L.Dense(p["mlp"])(x), approximate=p["approximate"] == "tanh")
    return L.LayerNormalization(epsilon=1e-5)(L.Add()([x, L.Dense(dim)(hidden)]))


def _token_inputs(p: Params, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
    return (rng.integers(0, p["vocab"], size=(batch, p["length"])).astype(np.int64),)


def _check_block(p: Params) -> None:
    if len(p["input_shape"]) != 3:
        raise invalid("input_shape", "expected (C, H, W)")


def _check_transformer(p: Params) -> None:
    if len(p["input_shape"]) != 2:
        raise invalid("input_shape", "expected (L, E)")
    if p["input_shape"][-1] % p["heads"]:
        raise invalid("heads", f"heads={p['heads']} must divide the embedding size {p['input_shape'][-1]}")


def _whole(name: str, params: dict[str, Param], build_torch: Any, build_keras: Any, tolerance: Any,
           channels_first: bool, **extra: Any) -> Family:
    return Family(name=name, torch_class=f"{name} (a small model, not one torch class)", params=params,
                  build_torch=build_torch, build_keras=build_keras, tolerance=tolerance,
                  channels_first=channels_first, **extra)


FAMILIES = [
    _whole("residual_block",
           {"out_channels": Param(integer(1), abbrev="o"), "stride": Param(choice(1, 2), default=1, abbrev="s"),
            "input_shape": Param(shape(rank=3), abbrev="in")},
           lambda p: _torch_modules()["residual_block"](p["input_shape"][0], p["out_channels"], p["stride"]),
           _keras_residual, lambda p: Tolerance.reduction(9 * max(p["input_shape"][0], p["out_channels"]) * 4),
           True, check=_check_block),
    _whole("inverted_residual",
           {"out_channels": Param(integer(1), abbrev="o"), "expand": Param(integer(1), default=4, abbrev="e"),
            "stride": Param(choice(1, 2), default=1, abbrev="s"), "input_shape": Param(shape(rank=3), abbrev="in")},
           lambda p: _torch_modules()["inverted_residual"](p["input_shape"][0], p["out_channels"], p["expand"],
                                                           p["stride"]),
           _keras_inverted, lambda p: Tolerance.reduction(p["input_shape"][0] * p["expand"] * 4),
           True, check=_check_block),
    _whole("lstm_classifier",
           {"vocab": Param(integer(2), abbrev="v"), "embed": Param(integer(1), abbrev="e"),
            "hidden": Param(integer(1), abbrev="h"), "classes": Param(integer(1), abbrev="c"),
            "length": Param(optional(integer(1)), default=None, abbrev="len"),
            "input_shape": Param(optional(shape(rank=1)), default=None, abbrev=None)},   # or (length,)
           lambda p: _torch_modules()["lstm_classifier"](p["vocab"], p["embed"], p["hidden"], p["classes"]),
           _keras_lstm,
           lambda p: Tolerance.reduction((p["embed"] + p["hidden"]) * math.isqrt(p["length"]) ** 2 * 4),
           False, make_inputs=_token_inputs, check=lambda p: length_or_input_shape(p, "length", None)),
    _whole("transformer_block",
           {"heads": Param(integer(1), abbrev="h"), "mlp": Param(integer(1), abbrev="mlp"),
            "approximate": Param(choice("none", "tanh"), default="none", abbrev="gelu"),
            "causal": Param(boolean, default=False, abbrev=None),
            "input_shape": Param(shape(rank=2), abbrev="in")},
           lambda p: _torch_modules()["transformer_block"](p["input_shape"][-1], p["heads"], p["mlp"],
                                                           p["approximate"]),
           _keras_transformer, lambda p: Tolerance.reduction(4 * (p["input_shape"][-1] + p["mlp"])),
           False, check=_check_transformer),
]

"""flatten_linear: a convolution's feature map through a Flatten into a Linear, the LeNet head.

torch flattens a feature map in C,H,W order and Keras in H,W,C order, so the Dense kernel's rows
must be re-ordered, not only transposed: ``O (C H W) -> (H W C) O`` (pitfall 3). Without this
family no catalogue case had a Flatten before a Dense, and only ``tests/test_lenet.py`` would see a
transfer that leaves the rows in torch's order. Both kernels have the same shape either way, so
only the numbers can tell: the cases use non-square maps with channels != height != width, so that
every wrong axis order (not only torch's) moves rows.

The family name is not a torch class. The torch side is ``ConvNd -> [+ 1x1 ConvNd] -> Flatten ->
Linear`` (1-D, 2-D or 3-D by the rank of ``input_shape``); ``merge = "add"`` adds a square 1x1
convolution of the map to the map itself before the Flatten (a residual ``Add``), so that the
layout is followed through a merge. The Keras side is ``ZeroPaddingND -> ConvND -> [Add] ->
Flatten -> Dense``.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from .. import reference
from .base import Family, Param, Params, Tolerance, boolean, choice, integer, invalid, shape
from .conv import conv_output_length


def _dims(p: Params) -> int:
    return len(p["input_shape"]) - 1


def _map_shape(p: Params) -> tuple[int, ...]:
    """The feature map the Flatten reads, (C, *spatial), torch layout."""
    k, s, pad = p["kernel_size"], p["stride"], p["padding"]
    return (p["out_channels"], *(conv_output_length(n, k, s, 2 * pad, 1) for n in p["input_shape"][1:]))


def _features(p: Params) -> int:
    return math.prod(_map_shape(p))


def _check(p: Params) -> None:
    if not 2 <= len(p["input_shape"]) <= 4:
        raise invalid("input_shape", f"expected (C, L), (C, H, W) or (C, D, H, W), got {list(p['input_shape'])}")
    if any(n < 1 for n in _map_shape(p)[1:]):
        raise invalid("input_shape", f"spatial size {list(p['input_shape'][1:])} is too small for kernel "
                                     f"{p['kernel_size']} with padding {p['padding']}")


@cache
def _torch_class() -> type:
    import torch
    from torch import nn

    class ConvFlattenLinear(nn.Module):
        """conv -> (x + mix(x) when merging) -> flatten -> linear, registered in call order."""

        def __init__(self, p: Params) -> None:
            super().__init__()
            conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[_dims(p)]
            channels = p["out_channels"]
            self.conv = conv(p["input_shape"][0], channels, p["kernel_size"], stride=p["stride"],
                             padding=p["padding"], bias=p["bias"])
            self.mix = conv(channels, channels, 1, bias=p["bias"]) if p["merge"] == "add" else None
            self.flatten = nn.Flatten()
            self.linear = nn.Linear(_features(p), p["out_features"], bias=p["bias"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv(x)
            if self.mix is not None:
                x = x + self.mix(x)
            return self.linear(self.flatten(x))

    return ConvFlattenLinear


def _build_keras(p: Params, x: Any) -> Any:
    import keras
    n, layers = _dims(p), keras.layers
    if p["padding"]:
        x = getattr(layers, f"ZeroPadding{n}D")(p["padding"])(x)
    conv = getattr(layers, f"Conv{n}D")
    x = conv(p["out_channels"], p["kernel_size"], strides=p["stride"], use_bias=p["bias"])(x)
    if p["merge"] == "add":
        x = layers.Add()([x, conv(p["out_channels"], 1, use_bias=p["bias"])(x)])
    return layers.Dense(p["out_features"], use_bias=p["bias"])(layers.Flatten()(x))


def _reference(x: Any, w: Any, p: Params) -> Any:
    h = reference.conv(x, w["conv.weight"], w.get("conv.bias"), stride=p["stride"], padding=p["padding"])
    if p["merge"] == "add":
        h = h + reference.conv(h, w["mix.weight"], w.get("mix.bias"))
    return reference.linear(h.reshape(h.shape[0], -1), w["linear.weight"], w.get("linear.bias"))


def _tolerance(p: Params) -> Tolerance:
    # Each output sums F products of conv outputs, each a sum over C_in * k^n (and the 1x1 mix's C) terms.
    conv_fan_in = p["input_shape"][0] * p["kernel_size"] ** _dims(p) * (p["out_channels"] if p["merge"] == "add"
                                                                        else 1)
    return Tolerance.reduction(_features(p) * conv_fan_in)


FAMILIES = [Family(
    name="flatten_linear", torch_class="Sequential(ConvNd, [Add], Flatten, Linear) (a small model)",
    params={
        "out_channels": Param(integer(1), abbrev="c"),
        "kernel_size": Param(integer(1), abbrev="k"),
        "stride": Param(integer(1), default=1, abbrev="s"),
        "padding": Param(integer(0), default=0, abbrev="p"),
        "merge": Param(choice("none", "add"), default="none", abbrev=""),
        "out_features": Param(integer(1), abbrev="o"),
        "bias": Param(boolean, default=True, abbrev="bias"),
        "input_shape": Param(shape(min_rank=2), abbrev="in"),
    },
    build_torch=lambda p: _torch_class()(p), build_keras=_build_keras, check=_check, channels_first=True,
    reference=_reference, tolerance=_tolerance,
    weight_layouts={"conv.weight (2-D)": "O I H W -> H W I O", "mix.weight (2-D)": "O I H W -> H W I O",
                    "linear.weight (after a 2-D map)": "O (C H W) -> (H W C) O"},
)]

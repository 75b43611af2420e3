"""separable_conv1d/2d: a depthwise then a pointwise torch convolution against Keras ``SeparableConvND``.

PyTorch has no separable convolution class, so these family names are not torch classes: the
torch side is ``nn.Sequential(ConvNd(C, C*m, k, groups=C, ...), ConvNd(C*m, out, 1))``, the usual
way to write one, and the Keras side is one ``SeparableConvND(out, k, depth_multiplier=m)``. The
converter spans two torch modules and one Keras layer (``torch_span=2``).

Rules of correspondence, each checked by the catalogue:
- the depthwise kernel is ``(C M) 1 *S -> *S C M`` (channel-major, as for DepthwiseConvND) and the
  pointwise kernel ``O I *1 -> *1 I O``;
- stride, padding and dilation belong to the depthwise step; an int pad is ``ZeroPaddingND`` then
  ``"valid"`` (never ``"same"``, which pads at the end only);
- Keras has no depthwise bias. A torch depthwise bias ``b0`` passes through the pointwise step, so
  it folds into the Keras bias: ``bias = b1 + W1 @ b0``. The inverse is not unique; keras->torch
  puts the whole bias in ``b1`` and zeros in ``b0``, so keras->torch->keras reproduces the Keras
  bias exactly. A depthwise bias needs a pointwise bias to fold into.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import reference
from ..rules import Context, Converter, WeightRule, depthwise_layout, kernel_layout
from .base import Family, Param, Params, Tolerance, boolean, integer, ints, invalid, padding, shape
from .conv import conv_output_length, explicit_padding


def _params(n: int) -> dict[str, Param]:
    return {
        "in_channels": Param(integer(1), abbrev=None),
        "out_channels": Param(integer(1), abbrev="o"),
        "kernel_size": Param(ints(n, 1), abbrev="k"),
        "depth_multiplier": Param(integer(1), default=1, abbrev="m"),
        "stride": Param(ints(n, 1), default=(1,) * n, abbrev="s"),
        "padding": Param(padding(n), default=(0,) * n, abbrev="p"),
        "dilation": Param(ints(n, 1), default=(1,) * n, abbrev="d"),
        "bias": Param(boolean, default=True, abbrev="bias"),
        "depthwise_bias": Param(boolean, default=False, abbrev="dwb"),
        "input_shape": Param(shape(rank=n + 1), abbrev="in"),
    }


def _check(p: Params) -> None:
    c = p["in_channels"]
    if p["input_shape"][0] != c:
        raise invalid("input_shape", f"has {p['input_shape'][0]} channels but in_channels is {c}")
    if p["padding"] == "same" and any(s > 1 for s in p["stride"]):
        raise invalid("padding", "PyTorch does not support padding='same' with stride > 1; use an int pad")
    if p["depthwise_bias"] and not p["bias"]:
        raise invalid("depthwise_bias", "a depthwise bias folds into the pointwise bias, so it needs bias=true "
                                        "(Keras's SeparableConv has one bias, after the pointwise step)")
    pads = (0,) * len(p["kernel_size"]) if isinstance(p["padding"], str) else p["padding"]
    for length, k, s, pad, d in zip(p["input_shape"][1:], p["kernel_size"], p["stride"], pads, p["dilation"],
                                    strict=True):
        if p["padding"] != "same" and conv_output_length(length, k, s, 2 * pad, d) < 1:
            raise invalid("input_shape", f"spatial size {length} is too small for kernel {k} "
                                         f"with dilation {d} and padding {pad}")


def _build_torch(n: int) -> Any:
    def build(p: Params) -> Any:
        import torch
        cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d}[n]
        c, m = p["in_channels"], p["depth_multiplier"]
        return torch.nn.Sequential(
            cls(c, c * m, p["kernel_size"], stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
                groups=c, bias=p["depthwise_bias"]),
            cls(c * m, p["out_channels"], 1, bias=p["bias"]))
    return build


def _build_keras(n: int) -> Any:
    def build(p: Params, x: Any) -> Any:
        import keras
        layers = keras.layers
        x, pad = explicit_padding(x, p["padding"])
        cls = {1: layers.SeparableConv1D, 2: layers.SeparableConv2D}[n]
        return cls(p["out_channels"], p["kernel_size"], strides=p["stride"], padding=pad,
                   dilation_rate=p["dilation"], depth_multiplier=p["depth_multiplier"], use_bias=p["bias"])(x)
    return build


def _reference(x: Any, w: Any, p: Params) -> Any:
    depthwise = reference.conv(x, w["0.weight"], w.get("0.bias"), stride=p["stride"], padding=p["padding"],
                               dilation=p["dilation"], groups=p["in_channels"])
    return reference.conv(depthwise, w["1.weight"], w.get("1.bias"))


def _tolerance(p: Params) -> Tolerance:
    # Each output is a sum over C*m depthwise outputs, each a sum over prod(kernel) products.
    return Tolerance.reduction(math.prod(p["kernel_size"]) * p["in_channels"] * p["depth_multiplier"])


def _family(n: int) -> Family:
    return Family(
        name=f"separable_conv{n}d", torch_class=f"Sequential(Conv{n}d depthwise, Conv{n}d pointwise)",
        params=_params(n), channels_first=True, build_torch=_build_torch(n), build_keras=_build_keras(n),
        check=_check, reference=_reference, tolerance=_tolerance,
        weight_layouts={"0.weight": str(depthwise_layout(n)), "1.weight": str(kernel_layout(n))},
    )


FAMILIES = [_family(1), _family(2)]


# ---- weight rules


@dataclass(frozen=True)
class FoldedBias(WeightRule):
    """One torch bias of the pair <-> the single Keras bias, ``bias = b1 + W1 @ b0``.

    Two instances exist, one per torch bias (``0.bias`` depthwise, ``1.bias`` pointwise), since
    every torch tensor needs a rule. torch->keras both compute the same folded bias from the torch
    values read when the transfer is planned. keras->torch gives ``b1 = bias`` and ``b0 = 0``.
    """

    bijective = False

    pointwise_weight: np.ndarray | None = None      # W1 as (O, C*m)
    depthwise_bias: np.ndarray | None = None        # b0
    pointwise_bias: np.ndarray | None = None        # b1

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        assert self.pointwise_weight is not None and self.depthwise_bias is not None
        folded = self.pointwise_weight.astype(np.float64) @ self.depthwise_bias.astype(np.float64)
        return (np.asarray(self.pointwise_bias, np.float64) + folded).astype(array.dtype)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        if self.torch == "1.bias":
            return array
        assert self.depthwise_bias is not None
        return np.zeros(self.depthwise_bias.shape, dtype=array.dtype)

    def gradient_to_torch(self, keras_gradient: np.ndarray) -> np.ndarray:
        """The fold's adjoint: d/db1 = g, d/db0 = W1^T g (W1 as planned, the weights' values)."""
        if self.torch == "1.bias":
            return keras_gradient
        assert self.pointwise_weight is not None
        return (self.pointwise_weight.astype(np.float64).T @ keras_gradient.astype(np.float64)).astype(
            keras_gradient.dtype)

    def describe(self) -> str:
        return ("folded: bias = 1.bias + 1.weight @ 0.bias (Keras has no depthwise bias); "
                "keras->torch: 1.bias = bias, 0.bias = 0")


def _rules(modules: Any, layer: Any, context: Context) -> list[WeightRule]:
    depthwise, pointwise = modules
    n = depthwise.weight.ndim - 2
    multiplier = depthwise.out_channels // depthwise.in_channels
    rules = [WeightRule("0.weight", "depthwise_kernel", depthwise_layout(n), sizes={"M": multiplier},
                        note=f"depthwise, multiplier {multiplier}"),
             WeightRule("1.weight", "pointwise_kernel", kernel_layout(n), note="pointwise")]
    if depthwise.bias is None:
        return [*rules, WeightRule("1.bias", "bias", optional=True)]
    values = dict(pointwise_weight=pointwise.weight.detach().double().numpy().reshape(pointwise.out_channels, -1),
                  depthwise_bias=depthwise.bias.detach().double().numpy(),
                  pointwise_bias=pointwise.bias.detach().double().numpy())
    return [*rules, FoldedBias("0.bias", "bias", **values), FoldedBias("1.bias", "bias", **values)]


def _check_pair(modules: Any, layer: Any) -> str | None:
    depthwise, pointwise = modules
    c = depthwise.in_channels
    if depthwise.groups != c:
        return f"the first torch convolution has groups={depthwise.groups}, not depthwise (in_channels={c})"
    if (any(k != 1 for k in pointwise.kernel_size) or any(s != 1 for s in pointwise.stride)
            or pointwise.padding not in ((0,) * len(pointwise.kernel_size), "valid")
            or any(d != 1 for d in pointwise.dilation) or pointwise.groups != 1):
        return "the second torch convolution is not pointwise (kernel 1, stride 1, no padding, groups 1)"
    if pointwise.in_channels != depthwise.out_channels:
        return f"pointwise in_channels {pointwise.in_channels} != depthwise out_channels {depthwise.out_channels}"
    if depthwise.out_channels != c * layer.depth_multiplier:
        return f"out_channels {depthwise.out_channels} != in_channels {c} x depth_multiplier {layer.depth_multiplier}"
    if tuple(depthwise.dilation) != tuple(layer.dilation_rate):
        return f"dilation {tuple(depthwise.dilation)} vs dilation_rate {tuple(layer.dilation_rate)}"
    if tuple(depthwise.stride) != tuple(layer.strides):
        return f"stride {tuple(depthwise.stride)} vs strides {tuple(layer.strides)}"
    if depthwise.padding_mode != "zeros" or pointwise.padding_mode != "zeros":
        return f"padding_mode {depthwise.padding_mode!r}: Keras pads with zeros"
    if layer.data_format != "channels_last":
        return f"data_format {layer.data_format!r}: only channels_last layers are paired"
    if depthwise.bias is not None and (pointwise.bias is None or not layer.use_bias):
        return "the torch depthwise convolution has a bias but there is no pointwise/Keras bias to fold it into"
    return None


CONVERTERS = [
    Converter("separable conv", ("Conv1d", "Conv2d"), ("SeparableConv1D", "SeparableConv2D"), _rules, _check_pair,
              torch_span=2),
]

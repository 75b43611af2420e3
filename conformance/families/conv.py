"""conv1d, conv2d, conv3d: PyTorch ``nn.ConvNd`` against Keras ``ConvND`` / ``DepthwiseConvND``.

Rules of correspondence, each checked by the catalogue:
- kernels are ``O I *S`` in torch and ``*S I O`` in Keras; depthwise kernels ``(C M) 1 *S`` and ``*S C M``;
- an integer padding becomes explicit ``ZeroPaddingND`` then ``"valid"``. Keras's ``"same"`` puts
  the odd pixel at the end and depends on the stride, so it is never used for an int pad;
- Keras rejects stride > 1 with dilation > 1 on a plain convolution; the exact equivalent is a
  stride-1 convolution followed by subsampling (``MaxPoolingND(pool_size=1, strides=s)``).
"""

from __future__ import annotations

import math
from typing import Any

from .. import reference
from ..rules import Context, Converter, WeightRule, depthwise_layout, kernel_layout
from ..structure import Mismatch
from .base import Family, Param, Params, Tolerance, boolean, choice, integer, ints, invalid, padding, shape


def _params(n: int) -> dict[str, Param]:
    return {
        "in_channels": Param(integer(1), abbrev=None),
        "out_channels": Param(integer(1), abbrev="o"),
        "kernel_size": Param(ints(n, 1), abbrev="k"),
        "stride": Param(ints(n, 1), default=(1,) * n, abbrev="s"),
        "padding": Param(padding(n), default=(0,) * n, abbrev="p"),
        "dilation": Param(ints(n, 1), default=(1,) * n, abbrev="d"),
        "groups": Param(integer(1), default=1, abbrev="g"),
        "bias": Param(boolean, default=True, abbrev="bias"),
        "padding_mode": Param(choice("zeros"), default="zeros", abbrev=None),
        "input_shape": Param(shape(rank=n + 1), abbrev="in"),
    }


def _torch_padding(p: Params) -> Any:
    return p["padding"]


def conv_output_length(length: int, k: int, s: int, pad_total: int, d: int) -> int:
    return (length + pad_total - d * (k - 1) - 1) // s + 1


def _check(p: Params) -> None:
    c, o, g = p["in_channels"], p["out_channels"], p["groups"]
    if p["input_shape"][0] != c:
        raise invalid("input_shape", f"has {p['input_shape'][0]} channels but in_channels is {c}")
    if c % g or o % g:
        raise invalid("groups", f"groups={g} must divide in_channels={c} and out_channels={o}")
    if p["padding"] == "same" and any(s > 1 for s in p["stride"]):
        raise invalid("padding", "PyTorch does not support padding='same' with stride > 1; use an int pad")
    pads = (0,) * len(p["kernel_size"]) if isinstance(p["padding"], str) else p["padding"]
    for length, k, s, pad, d in zip(p["input_shape"][1:], p["kernel_size"], p["stride"], pads,
                                    p["dilation"], strict=True):
        if p["padding"] != "same" and conv_output_length(length, k, s, 2 * pad, d) < 1:
            raise invalid("input_shape", f"spatial size {length} is too small for kernel {k} "
                                         f"with dilation {d} and padding {pad}")


def _is_depthwise(p: Params) -> bool:
    return p["groups"] == p["in_channels"] and p["groups"] > 1


def _build_torch(n: int) -> Any:
    def build(p: Params) -> Any:
        import torch
        cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[n]
        return cls(p["in_channels"], p["out_channels"], p["kernel_size"], stride=p["stride"],
                   padding=_torch_padding(p), dilation=p["dilation"], groups=p["groups"], bias=p["bias"],
                   padding_mode=p["padding_mode"])
    return build


def explicit_padding(x: Any, padding: tuple[int, ...] | str) -> tuple[Any, str]:
    """torch's padding as Keras sees it: an int pad becomes ZeroPaddingND then "valid" (never "same",
    which puts the odd pixel at the end and depends on the stride); "same"/"valid" pass through."""
    if isinstance(padding, str):
        return x, padding
    if any(padding):
        import keras
        n = len(padding)
        zero_pad = {1: keras.layers.ZeroPadding1D, 2: keras.layers.ZeroPadding2D, 3: keras.layers.ZeroPadding3D}[n]
        x = zero_pad(padding[0] if n == 1 else padding)(x)
    return x, "valid"


def _build_keras(n: int) -> Any:
    def build(p: Params, x: Any) -> Any:
        import keras
        layers = keras.layers
        x, pad = explicit_padding(x, p["padding"])
        stride, dilation = p["stride"], p["dilation"]
        depthwise = _is_depthwise(p) and n < 3   # Keras has no DepthwiseConv3D: groups=C instead
        subsample = not depthwise and any(s > 1 for s in stride) and any(d > 1 for d in dilation)
        common = dict(kernel_size=p["kernel_size"], strides=(1,) * n if subsample else stride,
                      padding=pad, dilation_rate=dilation, use_bias=p["bias"])
        if depthwise:
            cls = {1: layers.DepthwiseConv1D, 2: layers.DepthwiseConv2D}[n]
            x = cls(depth_multiplier=p["out_channels"] // p["in_channels"], **common)(x)
        else:
            cls = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[n]
            x = cls(filters=p["out_channels"], groups=p["groups"], **common)(x)
        if subsample:
            pool = {1: layers.MaxPooling1D, 2: layers.MaxPooling2D, 3: layers.MaxPooling3D}[n]
            x = pool(pool_size=1, strides=stride)(x)
        return x
    return build


def _reference(x: Any, w: Any, p: Params) -> Any:
    return reference.conv(x, w["weight"], w.get("bias"), stride=p["stride"], padding=p["padding"],
                          dilation=p["dilation"], groups=p["groups"])


def _tolerance(p: Params) -> Tolerance:
    return Tolerance.reduction(p["in_channels"] // p["groups"] * math.prod(p["kernel_size"]))


def _family(n: int) -> Family:
    return Family(
        name=f"conv{n}d", torch_class=f"Conv{n}d", params=_params(n), channels_first=True,
        build_torch=_build_torch(n), build_keras=_build_keras(n), check=_check,
        reference=_reference, tolerance=_tolerance,
        weight_layouts={"weight": str(kernel_layout(n)), "weight (depthwise)": str(depthwise_layout(n))},
    )


FAMILIES = [_family(1), _family(2), _family(3)]


# ---- weight rules


def _bias(module: Any) -> list[WeightRule]:
    return [WeightRule("bias", "bias", optional=True)]


def _conv_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    n = module.weight.ndim - 2
    return [WeightRule("weight", "kernel", kernel_layout(n)), *_bias(module)]


def _depthwise_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    n = module.weight.ndim - 2
    multiplier = module.out_channels // module.in_channels
    return [WeightRule("weight", "kernel", depthwise_layout(n), sizes={"M": multiplier},
                       note=f"depth multiplier {multiplier}"), *_bias(module)]


def _check_conv(module: Any, layer: Any) -> Mismatch | str | None:
    if tuple(module.dilation) != tuple(layer.dilation_rate):
        return Mismatch(f"dilation {tuple(module.dilation)} vs dilation_rate {tuple(layer.dilation_rate)}",
                        f"set the torch layer's dilation={tuple(layer.dilation_rate)}",
                        f"build the Keras layer with dilation_rate={tuple(module.dilation)}")
    groups = getattr(layer, "groups", None)
    if groups is not None and module.groups != groups:
        return Mismatch(f"groups {module.groups} vs groups {groups}", f"set the torch layer's groups={groups}",
                        f"build the Keras layer with groups={module.groups}")
    return None


def _check_depthwise(module: Any, layer: Any) -> Mismatch | str | None:
    if module.groups != module.in_channels:
        return f"groups={module.groups} is not depthwise (in_channels={module.in_channels})"
    if module.out_channels != module.in_channels * layer.depth_multiplier:
        return (f"out_channels {module.out_channels} != in_channels {module.in_channels} "
                f"x depth_multiplier {layer.depth_multiplier}")
    return _check_conv(module, layer)


CONVERTERS = [
    Converter("conv", ("Conv1d", "Conv2d", "Conv3d"), ("Conv1D", "Conv2D", "Conv3D"),
              _conv_rules, _check_conv),
    Converter("depthwise conv", ("Conv1d", "Conv2d"), ("DepthwiseConv1D", "DepthwiseConv2D"),
              _depthwise_rules, _check_depthwise),
]

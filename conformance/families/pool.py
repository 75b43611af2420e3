"""Pooling: max_poolNd, avg_poolNd (adaptive pooling is in adaptive.py).

Keras pooling has no explicit padding, no ceil_mode, no count_include_pad and no dilation, so
the Keras side is assembled from standard layers and ``keras.ops`` (which save and load with
``safe_mode``):
- max pooling pads with -inf (zeros would win for negative inputs), and ceil_mode adds -inf
  padding at the end only;
- average pooling divides a zero-padded window sum by the count torch uses: padding included
  or not, and never the positions ceil_mode adds past the padding;
- dilated max pooling is the maximum of strided crops, one per kernel tap.

Max pooling's inputs are negative wherever a window can reach padding (``max_pool_inputs``):
with inputs uniform in [-1, 1], a window at the border holds a positive value often enough that
padding with zeros instead of -inf hid in most cases, so only the numbers of a few windows could
show it. Negative borders make every padded window decide between the pad value and the data.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from .. import reference
from .base import Family, Param, Params, Tolerance, boolean, choice, ints, invalid, optional, shape


def pool_output_length(length: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape."""
    span = d * (k - 1) + 1
    out = (length + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= length + p:
        out -= 1
    return out


class _Geometry:
    """Per-dimension pads and output sizes of one pooling configuration."""

    def __init__(self, p: Params, dilation: tuple[int, ...]) -> None:
        self.kernel, self.stride, self.pad = p["kernel_size"], p["stride"] or p["kernel_size"], p["padding"]
        self.dilation = dilation
        self.spatial = p["input_shape"][1:]
        self.out = tuple(pool_output_length(L, k, s, q, d, p["ceil_mode"]) for L, k, s, q, d in
                         zip(self.spatial, self.kernel, self.stride, self.pad, dilation, strict=True))
        # ceil_mode's extra end padding: enough for the last window to fit under "valid".
        self.extra = tuple(max(0, (o - 1) * s + d * (k - 1) + 1 - (L + 2 * q)) for L, k, s, q, d, o in
                           zip(self.spatial, self.kernel, self.stride, self.pad, dilation, self.out, strict=True))

    def pads(self, include_extra: bool = True) -> list[tuple[int, int]]:
        return [(0, 0), *((q, q + (e if include_extra else 0)) for q, e in zip(self.pad, self.extra,
                                                                                 strict=True)), (0, 0)]


def _check_pool(p: Params, dilation: tuple[int, ...]) -> None:
    if len(p["input_shape"]) == 4 and "count_include_pad" in p and any(
            k > L for L, k in zip(p["input_shape"][1:], p["kernel_size"], strict=True)):
        raise invalid("input_shape", "PyTorch's AvgPool3d refuses an input smaller than the kernel")
    for k, q in zip(p["kernel_size"], p["padding"], strict=True):
        if 2 * q > k:
            raise invalid("padding", f"padding {q} is more than half the kernel size {k}; PyTorch refuses it")
    geometry = _Geometry(p, dilation)
    if any(o < 1 for o in geometry.out):
        raise invalid("input_shape", f"spatial size {list(geometry.spatial)} gives an empty output "
                                     f"{list(geometry.out)} for kernel {list(geometry.kernel)}")


def max_pool_inputs(p: Params, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
    """Uniform [-1, 1], made negative within one window span of every border that has padding.

    A window that overlaps padding (``padding`` at both ends, ceil_mode's extra at the end) starts
    less than one span (``dilation * (kernel - 1) + 1``) from that border, so every real value it
    holds is negative, and a zero pad would win in every such window. The interior keeps both signs.
    """
    x = rng.uniform(-1.0, 1.0, size=(batch, *p["input_shape"]))
    g = _Geometry(p, p["dilation"])
    for axis, (length, k, q, e, d) in enumerate(zip(g.spatial, g.kernel, g.pad, g.extra, g.dilation, strict=True),
                                                start=2):
        span = d * (k - 1) + 1
        index: list[Any] = [slice(None)] * x.ndim
        if q:
            index[axis] = slice(0, min(span, length))
            x[tuple(index)] = -np.abs(x[tuple(index)])
        if q or e:
            index[axis] = slice(max(0, length - span), length)
            x[tuple(index)] = -np.abs(x[tuple(index)])
    return (x.astype(np.float32),)


def _keras(n: int, name: str) -> Any:
    import keras
    return getattr(keras.layers, name.replace("N", str(n)))


def _build_max_keras(n: int) -> Any:
    def build(p: Params, x: Any) -> Any:
        import keras
        g = _Geometry(p, p["dilation"])
        if any(q or e for q, e in zip(g.pad, g.extra, strict=True)):
            x = keras.ops.pad(x, g.pads(), constant_values=-math.inf)
        if all(d == 1 for d in g.dilation):
            return _keras(n, "MaxPoolingND")(pool_size=g.kernel, strides=g.stride, padding="valid")(x)
        padded = x.shape[1:-1]
        taps = []
        for offset in itertools.product(*(range(k) for k in g.kernel)):
            crops = [(o * d, size - (o * d + (out - 1) * s + 1)) for o, d, size, out, s in
                     zip(offset, g.dilation, padded, g.out, g.stride, strict=True)]
            tap = _keras(n, "CroppingND")(crops[0] if n == 1 else tuple(crops))(x)
            taps.append(_keras(n, "MaxPoolingND")(pool_size=1, strides=g.stride)(tap))
        return keras.layers.Maximum()(taps) if len(taps) > 1 else taps[0]
    return build


def _build_avg_keras(n: int) -> Any:
    def build(p: Params, x: Any) -> Any:
        import keras
        g = _Geometry(p, (1,) * n)
        pool = _keras(n, "AveragePoolingND")(pool_size=g.kernel, strides=g.stride, padding="valid")
        padded = any(g.pad)
        if not any(g.extra) and (p["count_include_pad"] or not padded):
            if padded:
                x = _keras(n, "ZeroPaddingND")(g.pad[0] if n == 1 else g.pad)(x)
            return pool(x)
        # Window sum over zero padding, divided by the count torch uses at each position.
        ones = keras.ops.ones_like(x)
        if p["count_include_pad"]:
            counted = keras.ops.pad(ones, g.pads(include_extra=False), constant_values=1.0)
            counted = keras.ops.pad(counted, [(0, 0), *((0, e) for e in g.extra), (0, 0)])
        else:
            counted = keras.ops.pad(ones, g.pads())
        return keras.ops.divide(pool(keras.ops.pad(x, g.pads())), pool(counted))
    return build


def _build_torch(cls_name: str, keys: tuple[str, ...]) -> Any:
    def build(p: Params) -> Any:
        import torch
        return getattr(torch.nn, cls_name)(**{k: p[k] for k in keys})
    return build


def _pool_params(n: int, kind: str) -> dict[str, Param]:
    params = {
        "kernel_size": Param(ints(n, 1), abbrev="k"),
        "stride": Param(optional(ints(n, 1)), default=None, abbrev="s"),
        "padding": Param(ints(n, 0), default=(0,) * n, abbrev="p"),
        "ceil_mode": Param(boolean, default=False, abbrev="ceil"),
    }
    if kind == "max":
        params["dilation"] = Param(ints(n, 1), default=(1,) * n, abbrev="d")
        params["return_indices"] = Param(choice(False), default=False, abbrev=None)
    else:
        params["count_include_pad"] = Param(boolean, default=True, abbrev="cip")
        params["divisor_override"] = Param(optional(choice()), default=None, abbrev=None)
    params["input_shape"] = Param(shape(rank=n + 1), abbrev="in")
    return params


def _max_family(n: int) -> Family:
    return Family(
        name=f"max_pool{n}d", torch_class=f"MaxPool{n}d", params=_pool_params(n, "max"), channels_first=True,
        build_torch=_build_torch(f"MaxPool{n}d", ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
        build_keras=_build_max_keras(n), check=lambda p: _check_pool(p, p["dilation"]),
        reference=lambda x, w, p: reference.max_pool(x, p["kernel_size"], p["stride"], p["padding"],
                                                     p["dilation"], p["ceil_mode"]),
        tolerance=lambda p: Tolerance.exact(), make_inputs=max_pool_inputs,
    )


def _avg_family(n: int) -> Family:
    return Family(
        name=f"avg_pool{n}d", torch_class=f"AvgPool{n}d", params=_pool_params(n, "avg"), channels_first=True,
        build_torch=_build_torch(f"AvgPool{n}d", ("kernel_size", "stride", "padding", "ceil_mode",
                                                  "count_include_pad")),
        build_keras=_build_avg_keras(n), check=lambda p: _check_pool(p, (1,) * n),
        reference=lambda x, w, p: reference.avg_pool(x, p["kernel_size"], p["stride"], p["padding"],
                                                     p["ceil_mode"], p["count_include_pad"]),
        tolerance=lambda p: Tolerance.reduction(math.prod(p["kernel_size"])),
    )


FAMILIES = [f(n) for n in (1, 2, 3) for f in (_max_family, _avg_family)]

"""adaptive_avg_pool1d/2d/3d, adaptive_max_pool1d/2d/3d: PyTorch's adaptive bins, for every output size.

Along an axis of length L with o outputs, torch's bin i runs from floor(i*L/o) to ceil((i+1)*L/o).
When o divides L the bins are disjoint and of one size, and a plain pooling layer with
k = s = L/o is the whole story. Otherwise they overlap and differ in size, and no Keras pooling
layer has such bins. Adaptive pooling is separable (a bin is a product of one interval per axis,
and a mean of equal-sized means is the mean), so the Keras side pools the axes that divide with one
pooling layer, then builds each remaining axis bin by bin: crop the bin, pool it to one position,
concatenate the bins. Only standard layers are used (Cropping, Pooling, Concatenate), so the model
saves and loads in safe mode.
"""

from __future__ import annotations

import math
from typing import Any

from .. import reference
from .base import Family, Param, Params, Tolerance, integer, shape


def adaptive_bins(length: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's bins along one axis: [floor(i*L/o), ceil((i+1)*L/o)) for i < o."""
    return [(i * length // out, -(-(i + 1) * length // out)) for i in range(out)]


def output_size(p: Params) -> tuple[int, ...]:
    """``None`` entries keep the input size, as in torch."""
    return tuple(L if o is None else o for L, o in zip(p["input_shape"][1:], p["output_size"], strict=True))


def _output_size_param(n: int) -> Any:
    def check(value: Any) -> tuple[int | None, ...]:
        values = value if isinstance(value, list | tuple) else [value] * n
        if len(values) != n:
            raise ValueError(f"expected an int or {n} values, got {value!r}")
        sizes = tuple(None if v is None or v == "none" else integer(1)(v) for v in values)
        if n == 1 and sizes == (None,):
            raise ValueError("AdaptivePool1d needs an int: PyTorch refuses None in 1-D at the first call")
        return sizes
    return check


def _layer(n: int, name: str) -> Any:
    import keras
    return getattr(keras.layers, name.replace("N", str(n)))


def _build_keras(n: int, kind: str) -> Any:
    pooling = "MaxPoolingND" if kind == "max" else "AveragePoolingND"

    def build(p: Params, x: Any) -> Any:
        spatial, out = p["input_shape"][1:], output_size(p)
        divides = [L % o == 0 for L, o in zip(spatial, out, strict=True)]
        k = tuple(L // o if d else 1 for L, o, d in zip(spatial, out, divides, strict=True))
        if all(divides):   # uniform, disjoint bins: one pooling layer
            return _layer(n, pooling)(pool_size=k, strides=k, padding="valid")(x)
        if any(size > 1 for size in k):
            x = _layer(n, pooling)(pool_size=k, strides=k, padding="valid")(x)
        for axis, (length, o, d) in enumerate(zip(spatial, out, divides, strict=True)):
            if not d:
                x = _bin_by_bin(n, pooling, x, axis, length, o)
        return x
    return build


def _bin_by_bin(n: int, pooling: str, x: Any, axis: int, length: int, out: int) -> Any:
    """Reduce spatial ``axis`` (0-based, batch and channels excluded) over torch's bins, one at a time."""
    import keras
    parts = []
    for start, end in adaptive_bins(length, out):
        crops = [(0, 0)] * n
        crops[axis] = (start, length - end)
        window = tuple(end - start if a == axis else 1 for a in range(n))
        crop = _layer(n, "CroppingND")(crops[0] if n == 1 else tuple(crops))(x)
        parts.append(_layer(n, pooling)(pool_size=window, strides=window, padding="valid")(crop))
    return keras.layers.Concatenate(axis=axis + 1)(parts) if len(parts) > 1 else parts[0]


def _family(n: int, kind: str) -> Family:
    ref = reference.adaptive_max_pool if kind == "max" else reference.adaptive_avg_pool

    def tolerance(p: Params) -> Tolerance:
        if kind == "max":
            return Tolerance.exact()
        widest = [math.ceil(L / o) + 1 for L, o in zip(p["input_shape"][1:], output_size(p), strict=True)]
        return Tolerance.reduction(math.prod(widest))

    cls = f"Adaptive{kind.capitalize()}Pool{n}d"

    def build_torch(p: Params) -> Any:
        import torch
        size = p["output_size"]
        return getattr(torch.nn, cls)(size if n > 1 else size[0])

    return Family(
        name=f"adaptive_{kind}_pool{n}d", torch_class=cls, channels_first=True,
        params={"output_size": Param(_output_size_param(n), abbrev="o"),
                "input_shape": Param(shape(rank=n + 1), abbrev="in")},
        build_torch=build_torch, build_keras=_build_keras(n, kind),
        reference=lambda x, w, p: ref(x, p["output_size"] if n > 1 else p["output_size"][0]),
        tolerance=tolerance,
    )


ALL_FAMILIES = [_family(n, kind) for n in (1, 2, 3) for kind in ("avg", "max")]

FAMILIES = ALL_FAMILIES

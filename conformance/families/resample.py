"""Shape and resampling layers: upsample, zero/reflection/replication padding, pixel_shuffle, dropout.

None has weights; what has to match is which input element (or which blend of elements) lands
at each output position. Rules, each checked by the catalogue on Keras 3.15 / TF 2.21:
- ``nn.Upsample`` picks source positions with float32 arithmetic (see ``torch/include/ATen/native/
  UpSample.h``). TensorFlow's resize agrees only where both use the same scale: bilinear with
  ``align_corners=False`` and nearest-exact, when torch's scale equals in/out (a ``size``, an
  integer factor, or ``recompute_scale_factor``). Then ``UpSampling2D``/``Resizing`` are used.
  Everything else (``nearest``'s floor(dst * scale) for non-integer ratios, ``align_corners=True``,
  a scale factor that does not divide, 1-D linear, trilinear, bicubic with A = -0.75 where TF uses
  -0.5) is built exactly from ``keras.ops.take`` with torch's indices and constant blend weights;
  both save and load with ``safe_mode=True``;
- torch's padding tuple is (left, right, top, bottom); Keras's is ((top, bottom), (left, right)).
  Negative pads crop. ``replicate`` is numpy's ``edge``, which TensorFlow's ``pad`` lacks
  (``SYMMETRIC`` repeats the edge and then mirrors), so it is a gather with clamped indices;
  ``reflect`` is ``REFLECT``;
- ``pixel_shuffle`` reads channel c*r*r + i*r + j, where depth_to_space reads (i*r + j)*C + c:
  Reshape to (H, W, C, r, r), Permute to (H, r, W, r, C), Reshape;
- ``dropout`` is the identity in inference, whatever p.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .base import Family, Param, Params, Tolerance, boolean, choice, integer, invalid, optional, real, shape

Taps = list[tuple[np.ndarray, np.ndarray]]   # per output position: source index and weight, per tap

_LINEAR = {"linear": 1, "bilinear": 2, "trilinear": 3}
_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear")


def _int_or_ints(value: Any) -> int | tuple[int, ...]:
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("expected an int or a list of ints, got an empty list")
        return tuple(integer(1)(v) for v in value)
    return integer(1)(value)


def _real_or_reals(value: Any) -> float | tuple[float, ...]:
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("expected a number or a list of numbers, got an empty list")
        return tuple(real(0.0, exclusive=True)(v) for v in value)
    return real(0.0, exclusive=True)(value)


def _per_axis(value: Any, n: int) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, tuple) else (value,) * n


# ---- upsample: torch's source positions, axis by axis


def upsample_geometry(p: Params) -> list[tuple[int, int, float | None]]:
    """Per spatial axis: (input size, output size, the scale factor torch's kernel receives or None)."""
    spatial = p["input_shape"][1:]
    n = len(spatial)
    if p["size"] is not None:
        return [(L, o, None) for L, o in zip(spatial, _per_axis(p["size"], n), strict=True)]
    factors = _per_axis(p["scale_factor"], n)
    kernel_gets = None if p["recompute_scale_factor"] else factors
    return [(L, int(L * s), None if kernel_gets is None else s) for L, s in zip(spatial, factors, strict=True)]


def torch_scale(length: int, out: int, factor: float | None, align_corners: bool, dtype: Any) -> Any:
    """area_pixel_compute_scale: the source step per output step, in torch's arithmetic."""
    if align_corners:
        return dtype(length - 1) / dtype(out - 1) if out > 1 else dtype(0)
    return dtype(1.0 / factor) if factor is not None and factor > 0 else dtype(length) / dtype(out)


def axis_taps(length: int, out: int, factor: float | None, mode: str, align_corners: bool,
              dtype: Any = np.float32, rank: int = 2) -> Taps:
    """torch's source indices and weights along one axis of a ``rank``-D resize.

    ``dtype`` is the kernel's arithmetic: nearest modes always use float32, linear and cubic the
    input's precision.
    """
    dst = np.arange(out)
    if mode in ("nearest", "nearest-exact"):
        f32 = np.float32
        scale = torch_scale(length, out, factor, False, f32)
        offset = f32(0.5) if mode == "nearest-exact" else f32(0)
        index = np.floor((dst + offset).astype(f32) * scale).astype(np.int64)
        # torch 2.13's 2-D nearest kernel takes UpSample.h's nearest_idx shortcuts (out == in copies,
        # out == 2 in halves) whatever the scale factor; its 1-D and 3-D kernels do not: scale_factor=1.1
        # on 5 elements picks 0, 1, 2, 3, 4 in 2-D and 0, 0, 1, 2, 3 in 1-D.
        if mode == "nearest" and rank == 2 and out in (length, 2 * length):
            index = dst if out == length else dst >> 1
        return [(np.minimum(index, length - 1), np.ones(out))]
    cubic = mode == "bicubic"
    if out == length and not cubic:
        return [(dst, np.ones(out))]
    scale = torch_scale(length, out, factor, align_corners, dtype)
    d = dst.astype(dtype)
    src = scale * d if align_corners else scale * (d + dtype(0.5)) - dtype(0.5)
    if not cubic:
        src = np.maximum(src, dtype(0))
    # guard_index_and_lambda
    index = np.minimum(np.floor(src).astype(np.int64), length - 1)
    lam = np.clip(src - index.astype(dtype), dtype(0), dtype(1)).astype(dtype)
    if not cubic:
        upper = index + (index < length - 1)
        return [(index, (dtype(1) - lam).astype(np.float64)), (upper, lam.astype(np.float64))]
    a = dtype(-0.75)

    def near(t: Any) -> Any:   # cubic_convolution1, |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def far(t: Any) -> Any:    # cubic_convolution2, 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    one = dtype(1)
    weights = [far(lam + one), near(lam), near(one - lam), far(one - lam + one)]
    return [(np.clip(index - 1 + j, 0, length - 1), np.asarray(w, dtype).astype(np.float64))
            for j, w in enumerate(weights)]


def _taps(p: Params, dtype: Any = np.float32) -> list[Taps]:
    geometry = upsample_geometry(p)
    return [axis_taps(L, o, s, p["mode"], bool(p["align_corners"]), dtype, len(geometry)) for L, o, s in geometry]


def _check_upsample(p: Params) -> None:
    n = len(p["input_shape"]) - 1
    if not 1 <= n <= 3:
        raise invalid("input_shape", f"Upsample takes (C, L), (C, H, W) or (C, D, H, W) per sample, "
                                     f"got rank {n + 1}")
    if p["size"] is None and p["scale_factor"] is None:
        raise invalid("size", "either size or scale_factor should be defined")
    if p["size"] is not None and p["scale_factor"] is not None:
        raise invalid("scale_factor", "only one of size or scale_factor should be defined")
    for name in ("size", "scale_factor"):
        if isinstance(p[name], tuple) and len(p[name]) != n:
            raise invalid(name, f"has {len(p[name])} values for {n} spatial dimensions")
    mode = p["mode"]
    need = _LINEAR.get(mode, 2 if mode == "bicubic" else None)
    if need is not None and need != n:
        raise invalid("mode", f"{mode} needs {need} spatial dimension(s) ({need + 2}-D input), got {n}")
    if p["align_corners"] is not None and mode.startswith("nearest"):
        raise invalid("align_corners", "can only be set with the interpolating modes: linear | bilinear | "
                                       "bicubic | trilinear")
    if p["recompute_scale_factor"] and p["size"] is not None:
        raise invalid("recompute_scale_factor", "is not meaningful with an explicit size")
    if any(o < 1 for _, o, _ in upsample_geometry(p)):
        raise invalid("scale_factor", f"gives an empty output {[o for _, o, _ in upsample_geometry(p)]}")


def _build_upsample_torch(p: Params) -> Any:
    import torch
    return torch.nn.Upsample(size=p["size"], scale_factor=p["scale_factor"], mode=p["mode"],
                             align_corners=p["align_corners"], recompute_scale_factor=p["recompute_scale_factor"])


def _keras_layer_for(p: Params, taps: list[Taps]) -> Any:
    """A Keras resampling layer that picks exactly torch's positions, or None."""
    import keras
    geometry = upsample_geometry(p)
    n, mode = len(geometry), p["mode"]
    repeats = [o // L if o % L == 0 else 0 for L, o, _ in geometry]
    if mode == "nearest" and all(repeats) and all(
            len(t) == 1 and np.array_equal(t[0][0], np.arange(L).repeat(k))
            for t, (L, _, _), k in zip(taps, geometry, repeats, strict=True)):
        cls = {1: keras.layers.UpSampling1D, 2: keras.layers.UpSampling2D, 3: keras.layers.UpSampling3D}[n]
        return cls(repeats[0] if n == 1 else tuple(repeats))
    # TF's resize uses the scale in/out in float32 and half-pixel centres (the torch formulas otherwise).
    same_scale = all(torch_scale(L, o, s, False, np.float32) == np.float32(L) / np.float32(o)
                     for L, o, s in geometry)
    if n != 2 or not same_scale or p["align_corners"] or mode not in ("bilinear", "nearest-exact"):
        return None
    interpolation = "bilinear" if mode == "bilinear" else "nearest"
    if all(repeats) and mode == "bilinear":
        return keras.layers.UpSampling2D(tuple(repeats), interpolation=interpolation)
    return keras.layers.Resizing(geometry[0][1], geometry[1][1], interpolation=interpolation)


def _gather_blend(x: Any, axis: int, taps: Taps) -> Any:
    """sum_k take(x, index_k, axis) * weight_k; the indices and weights are constants."""
    import keras
    ops = keras.ops
    if len(taps) == 1 and np.array_equal(taps[0][0], np.arange(x.shape[axis])):
        return x
    terms = []
    for index, weight in taps:
        picked = ops.take(x, index.tolist(), axis=axis)
        if np.all(weight == 1.0):
            terms.append(picked)
            continue
        shape = [1] * len(x.shape)
        shape[axis] = len(weight)
        terms.append(ops.multiply(picked, weight.astype(np.float32).reshape(shape)))
    return functools.reduce(ops.add, terms)


def _build_upsample_keras(p: Params, x: Any) -> Any:
    taps = _taps(p)
    layer = _keras_layer_for(p, taps)
    if layer is not None:
        return layer(x)
    for axis in reversed(range(len(taps))):   # torch blends the last axis innermost
        x = _gather_blend(x, axis + 1, taps[axis])
    return x


def upsample_reference(x: np.ndarray, p: Params, dtype: Any = np.float32) -> np.ndarray:
    """float64 blends of the positions and weights torch's kernels compute in ``dtype``."""
    y = np.asarray(x, dtype=np.float64)
    for axis, taps in enumerate(_taps(p, dtype), start=2):
        shape = [-1 if i == axis else 1 for i in range(y.ndim)]
        y = functools.reduce(np.add, [np.take(y, index, axis=axis) * weight.reshape(shape) for index, weight in taps])
    return y


def _upsample_tolerance(p: Params) -> Tolerance:
    if p["mode"].startswith("nearest"):
        return Tolerance.exact()
    taps = 4 if p["mode"] == "bicubic" else 2
    return Tolerance.reduction(taps ** (len(p["input_shape"]) - 1))


# ---- padding


def _pad4(value: Any) -> tuple[int, int, int, int]:
    one = integer(-(2 ** 31))
    if isinstance(value, list | tuple):
        if len(value) != 4:
            raise ValueError(f"expected an int or 4 ints (left, right, top, bottom), got {list(value)}")
        return tuple(one(v) for v in value)   # type: ignore[return-value]
    return (one(value),) * 4


def _pad_pairs(p: Params) -> list[tuple[int, int]]:
    """torch's (left, right, top, bottom) as per-axis (before, after) for H then W."""
    left, right, top, bottom = p["padding"]
    return [(top, bottom), (left, right)]


def _check_pad(mode: str) -> Any:
    def check(p: Params) -> None:
        pairs = _pad_pairs(p)
        for size, (before, after), axis in zip(p["input_shape"][1:], pairs, ("height", "width"), strict=True):
            if size + before + after < 1:
                raise invalid("padding", f"gives an empty {axis}: {size} + {before} + {after}")
            kept = size + min(before, 0) + min(after, 0)
            if mode == "replicate" and kept < 1:
                raise invalid("padding", f"crops the whole {axis} ({size}) and then pads it: there is no edge "
                                         "left to replicate (torch repeats a cropped-away element)")
            if mode == "reflect" and max(before, after) >= kept:
                raise invalid("padding", f"reflection padding {max(before, after)} must be less than the {axis} "
                                         f"{kept} (after any cropping); torch refuses pads >= the input size")
    return check


def _build_pad_keras(mode: str) -> Any:
    def build(p: Params, x: Any) -> Any:
        import keras
        layers, pairs = keras.layers, _pad_pairs(p)
        if mode == "replicate":   # numpy's "edge": clamp the source index; negative pads crop
            for axis, (size, (before, after)) in enumerate(zip(p["input_shape"][1:], pairs, strict=True), 1):
                index = np.clip(np.arange(-before, size + after), 0, size - 1)
                x = _gather_blend(x, axis, [(index, np.ones(len(index)))])
            return x
        crop = tuple((max(-b, 0), max(-a, 0)) for b, a in pairs)
        pad = tuple((max(b, 0), max(a, 0)) for b, a in pairs)
        if mode == "zeros":   # pad first: a crop may remove every row that the padding then adds to
            x = layers.ZeroPadding2D(pad)(x) if any(map(any, pad)) else x
            return layers.Cropping2D(crop)(x) if any(map(any, crop)) else x
        if any(map(any, crop)):   # reflect what is left after cropping, as torch does
            x = layers.Cropping2D(crop)(x)
        return keras.ops.pad(x, [(0, 0), *pad, (0, 0)], mode="reflect") if any(map(any, pad)) else x
    return build


def _pad_reference(mode: str) -> Any:
    numpy_mode: Any = {"zeros": "constant", "reflect": "reflect", "replicate": "edge"}[mode]

    def ref(x: np.ndarray, w: Any, p: Params) -> np.ndarray:
        pairs = _pad_pairs(p)
        crop = tuple(slice(max(-b, 0), x.shape[i + 2] - max(-a, 0)) for i, (b, a) in enumerate(pairs))
        cropped = x[(slice(None), slice(None), *crop)]
        return np.pad(cropped, [(0, 0), (0, 0), *((max(b, 0), max(a, 0)) for b, a in pairs)], mode=numpy_mode)
    return ref


def _pad_family(name: str, torch_class: str, mode: str) -> Family:
    def build_torch(p: Params) -> Any:
        import torch
        return getattr(torch.nn, torch_class)(p["padding"])

    return Family(name=name, torch_class=torch_class, channels_first=True,
                  params={"padding": Param(_pad4, abbrev="p"), "input_shape": Param(shape(rank=3), abbrev="in")},
                  build_torch=build_torch, build_keras=_build_pad_keras(mode), check=_check_pad(mode),
                  reference=_pad_reference(mode), tolerance=lambda p: Tolerance.exact())


# ---- pixel shuffle and dropout


def _check_pixel_shuffle(p: Params) -> None:
    c, r = p["input_shape"][0], p["upscale_factor"]
    if c % (r * r):
        raise invalid("input_shape", f"{c} channels are not divisible by upscale_factor^2 = {r * r}")


def _build_pixel_shuffle_keras(p: Params, x: Any) -> Any:
    import keras
    layers = keras.layers
    c, h, w = p["input_shape"]
    r = p["upscale_factor"]
    x = layers.Reshape((h, w, c // (r * r), r, r))(x)      # torch's channel c*r*r + i*r + j
    x = layers.Permute((1, 4, 2, 5, 3))(x)                  # (H, i, W, j, C)
    return layers.Reshape((h * r, w * r, c // (r * r)))(x)


def _pixel_shuffle_reference(x: np.ndarray, w: Any, p: Params) -> np.ndarray:
    n, c, h, wd = x.shape
    r = p["upscale_factor"]
    out = np.empty((n, c // (r * r), h * r, wd * r))
    for i in range(r):
        for j in range(r):
            out[:, :, i::r, j::r] = x[:, i * r + j::r * r]
    return out


def _build_pixel_shuffle_torch(p: Params) -> Any:
    import torch
    return torch.nn.PixelShuffle(p["upscale_factor"])


def _build_dropout_torch(p: Params) -> Any:
    import torch
    return torch.nn.Dropout(p["p"])


def _build_dropout_keras(p: Params, x: Any) -> Any:
    import keras
    return keras.layers.Dropout(p["p"])(x)


def _dropout_check(p: Params) -> None:
    if p["p"] > 1:
        raise invalid("p", f"dropout probability has to be between 0 and 1, got {p['p']}")


FAMILIES = [
    Family(name="upsample", torch_class="Upsample", channels_first=True,
           params={"size": Param(optional(_int_or_ints), default=None, abbrev="size"),
                   "scale_factor": Param(optional(_real_or_reals), default=None, abbrev="sf"),
                   "mode": Param(choice(*_MODES), default="nearest", abbrev=""),
                   "align_corners": Param(optional(boolean), default=None, abbrev="ac"),
                   "recompute_scale_factor": Param(optional(boolean), default=None, abbrev="rsf"),
                   "input_shape": Param(shape(min_rank=2), abbrev="in")},
           build_torch=_build_upsample_torch, build_keras=_build_upsample_keras, check=_check_upsample,
           reference=lambda x, w, p: upsample_reference(x, p), tolerance=_upsample_tolerance),
    _pad_family("zero_pad2d", "ZeroPad2d", "zeros"),
    _pad_family("reflection_pad2d", "ReflectionPad2d", "reflect"),
    _pad_family("replication_pad2d", "ReplicationPad2d", "replicate"),
    Family(name="pixel_shuffle", torch_class="PixelShuffle", channels_first=True,
           params={"upscale_factor": Param(integer(1), abbrev="r"), "input_shape": Param(shape(rank=3), abbrev="in")},
           build_torch=_build_pixel_shuffle_torch,
           build_keras=_build_pixel_shuffle_keras, check=_check_pixel_shuffle,
           reference=_pixel_shuffle_reference, tolerance=lambda p: Tolerance.exact()),
    Family(name="dropout", torch_class="Dropout", channels_first=True,
           params={"p": Param(real(0.0), default=0.5, abbrev="p"), "input_shape": Param(shape(), abbrev="in")},
           build_torch=_build_dropout_torch, build_keras=_build_dropout_keras, check=_dropout_check,
           reference=lambda x, w, p: x, tolerance=lambda p: Tolerance.exact()),
]

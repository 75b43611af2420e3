"""rescaling and normalization: Keras preprocessing layers that live inside models
(EfficientNet puts ``Rescaling(1/255)`` and ``Normalization`` before its stem), against the torch
twins in :mod:`conformance.zoo_models`, since torch has no such layers.

- ``Rescaling`` holds no weights: scale and offset are configuration. The transfer still pairs
  it with the twin, so that a torch model that does not rescale is refused rather than silently
  "converted", and the pair's check refuses a different scale or offset (compared in float32,
  the precision both frameworks compute in). Nothing is written.
- ``Normalization`` (adapted, or built without constant statistics) keeps ``mean``, ``variance``
  and ``count`` as non-trainable variables; they move by name, unchanged (one value per channel
  on both sides). Keras computes ``(x - mean) / max(sqrt(variance), keras.config.epsilon())``:
  no eps inside the root, unlike BatchNorm. The layer computes its mean and variance tensors
  from the variables only in ``finalize_state()``, so written variables take effect only once
  that has run: the converter's ``after_keras_write`` does it, as Keras's own weight loading does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..rules import Context, Converter, WeightRule
from .base import Family, Param, Params, Tolerance, boolean, integer, invalid, shape


def _number_or_list(value: Any) -> float | tuple[float, ...]:
    """One number, or one per channel."""
    def number(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"expected a number or a list of numbers (one per channel), got {value!r}")
        return float(v)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("expected a number or a non-empty list of numbers")
        return tuple(number(v) for v in value)
    return number(value)


def _check_rescaling(p: Params) -> None:
    for name in ("scale", "offset"):
        if isinstance(p[name], tuple) and len(p[name]) != p["input_shape"][0]:
            raise invalid(name, f"{len(p[name])} values for {p['input_shape'][0]} channels")


def _build_torch_rescaling(p: Params) -> Any:
    from ..zoo_models import Rescaling
    return Rescaling(p["scale"], p["offset"])


def _build_keras_rescaling(p: Params, x: Any) -> Any:
    import keras
    value = lambda v: list(v) if isinstance(v, tuple) else v   # noqa: E731
    return keras.layers.Rescaling(value(p["scale"]), value(p["offset"]))(x)


def _per_channel(value: Any, rank: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32).astype(np.float64)
    return array.reshape(-1, *([1] * (rank - 2))) if array.ndim else array


def _rescaling_reference(x: Any, w: Any, p: Params) -> Any:
    return x * _per_channel(p["scale"], x.ndim) + _per_channel(p["offset"], x.ndim)


def _check_normalization(p: Params) -> None:
    if p["input_shape"][0] != p["num_features"]:
        raise invalid("input_shape", f"has {p['input_shape'][0]} channels but num_features is {p['num_features']}")


def _build_torch_normalization(p: Params) -> Any:
    from ..zoo_models import Normalization
    return Normalization(p["num_features"], invert=p["invert"])


def _build_keras_normalization(p: Params, x: Any) -> Any:
    import keras
    return keras.layers.Normalization(axis=-1, invert=p["invert"])(x)


def _normalization_reference(x: Any, w: Any, p: Params) -> Any:
    rank = x.ndim
    mean = _per_channel(w["mean"], rank)
    std = np.maximum(np.sqrt(_per_channel(w["variance"], rank)), 1e-7)
    return mean + x * std if p["invert"] else (x - mean) / std


FAMILIES = [
    Family(
        name="rescaling", torch_class="Rescaling (conformance.zoo_models, twin of keras.layers.Rescaling)",
        params={"scale": Param(_number_or_list, abbrev="x"), "offset": Param(_number_or_list, default=0.0, abbrev="o"),
                "input_shape": Param(shape(), abbrev="in")},
        build_torch=_build_torch_rescaling, build_keras=_build_keras_rescaling, check=_check_rescaling,
        channels_first=True, reference=_rescaling_reference, input_range=(0.0, 255.0),
        # One multiply and one add per element, in float32 on both sides.
        tolerance=lambda p: Tolerance.elementwise()),
    Family(
        name="normalization", torch_class="Normalization (conformance.zoo_models, twin of keras.layers.Normalization)",
        params={"num_features": Param(integer(1), abbrev=None), "invert": Param(boolean, default=False, abbrev="inv"),
                "input_shape": Param(shape(), abbrev="in")},
        build_torch=_build_torch_normalization, build_keras=_build_keras_normalization, check=_check_normalization,
        channels_first=True, reference=_normalization_reference,
        # A subtraction and a division (or a multiply and an add) per element: no reduction.
        tolerance=lambda p: Tolerance.elementwise(),
        weight_layouts={"mean": "C -> C", "variance": "C -> C"}),
]


# ---- converters


def _rescaling_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    return []     # scale and offset are configuration on both sides: checked, not moved


def _float32_problem(name: str, torch_value: Any, keras_value: Any) -> str | None:
    t, k = np.asarray(torch_value, dtype=np.float32), np.asarray(keras_value, dtype=np.float32)
    try:
        t, k = np.broadcast_arrays(t, k)
    except ValueError:
        return f"{name} {t.tolist()} vs {k.tolist()}: one value per channel on one side, another count on the other"
    if not np.array_equal(t, k):
        return f"{name} {np.asarray(torch_value).tolist()} vs {np.asarray(keras_value).tolist()} (in float32)"
    return None


def _check_rescaling_pair(module: Any, layer: Any) -> str | None:
    return (_float32_problem("scale", module.scale, layer.scale)
            or _float32_problem("offset", module.offset, layer.offset))


def _normalization_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    return [WeightRule("mean", "mean"), WeightRule("variance", "variance"),
            WeightRule("count", "count", optional=True, note="samples seen by adapt(); Keras keeps it for old files")]


def _check_normalization_pair(module: Any, layer: Any) -> str | None:
    import keras
    if getattr(layer, "input_mean", None) is not None:
        return ("the Keras layer was given constant mean and variance (Normalization(mean=..., variance=...)), "
                "which are not variables and cannot be transferred; build it without them (or adapt() it)")
    build_shape = getattr(layer, "_build_input_shape", None)
    rank = len(build_shape) if build_shape is not None else None
    if tuple(layer.axis) not in ((-1,), (rank - 1,) if rank else (-1,)):
        return (f"Keras normalises per index of axes {tuple(layer.axis)}; only the channel (last) axis "
                "corresponds to the torch twin's channel axis")
    if bool(layer.invert) != bool(module.invert):
        return f"invert {module.invert} vs invert {layer.invert}"
    if not math.isclose(module.epsilon, keras.config.epsilon(), rel_tol=1e-6):
        return (f"epsilon {module.epsilon:g} vs keras.config.epsilon() {keras.config.epsilon():g}, which Keras's "
                "Normalization uses as the smallest standard deviation")
    return None


def _finalize(layer: Any) -> None:
    layer.finalize_state()


CONVERTERS = [
    Converter("rescaling", ("Rescaling",), ("Rescaling",), _rescaling_rules, _check_rescaling_pair),
    Converter("normalization", ("Normalization",), ("Normalization",), _normalization_rules,
              _check_normalization_pair, after_keras_write=_finalize),
]

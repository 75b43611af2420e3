"""layer_norm, group_norm, instance_norm1d/2d: per-sample normalisation in inference mode.

PyTorch ``nn.LayerNorm``, ``nn.GroupNorm`` and ``nn.InstanceNormNd`` against Keras
``LayerNormalization`` and ``GroupNormalization``. What a converter must get right:
- eps: PyTorch defaults to 1e-5, Keras to 1e-3. The Keras layers are built with torch's eps, and a
  transfer between layers whose eps differ is refused.
- LayerNorm normalises the last ``len(normalized_shape)`` dims of a channels-first tensor. After
  the move to channels-last those are other axes: over (H, W) they are Keras axes (1, 2), and
  gamma/beta keep their shape; over (C, H, W) they are all axes, and gamma/beta become (H, W, C).
- InstanceNorm has no Keras layer: it is ``GroupNormalization(groups=C)``, affine <-> center and
  scale. With ``track_running_stats=True`` torch uses the running statistics in eval mode, which is
  exactly ``BatchNormalization`` in inference, so that is what it pairs with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import reference
from ..layout import Layout
from ..rules import Context, Converter, WeightRule, spatial_axes
from ..structure import eps_mismatch
from .activation import keras_axis
from .base import Family, Param, Params, Tolerance, boolean, integer, invalid, real, shape

_MAX_RANK = 4   # C and up to three spatial dims per sample, like the other spatial families


def norm_tolerance(length: int, eps: float) -> Tolerance:
    """The reduction policy over the ``length`` values normalised together, plus one special case.

    A group of one value normalises to exactly beta, but both frameworks compute
    ``x * a + (beta - mean * a)`` with ``a = gamma / sqrt(eps)`` (about 300 for eps 1e-5), so float32
    rounding of ``|x * a|`` is left over. Inputs in [-1, 1] and gamma below 2 bound it by 4 ulp of
    ``1 / sqrt(eps)``.
    """
    base = Tolerance.reduction(length)
    if length > 1:
        return base
    atol = base.atol + 4 * 2.0 ** -23 / math.sqrt(eps)
    return Tolerance(atol, base.rtol, f"one value per group, normalised to beta: rounding of x*gamma/sqrt(eps) "
                                      f"(atol 1e-5 + 4*2^-23/sqrt({eps:g}))")


def _sizes(value: Any) -> tuple[int, ...]:
    """``normalized_shape``: an int or a list of ints, as torch accepts."""
    values = value if isinstance(value, list | tuple) else [value]
    if not values:
        raise ValueError("expected at least one size")
    return tuple(integer(1)(v) for v in values)


def _check_rank(p: Params) -> None:
    if len(p["input_shape"]) > _MAX_RANK:
        raise invalid("input_shape", f"at most {_MAX_RANK} dims per sample (C and up to 3 spatial dims), "
                                     f"got {list(p['input_shape'])}")


# ---- layer_norm


def layer_norm_axes(p: Params) -> list[int]:
    """The Keras axes (batch included) that hold torch's last ``len(normalized_shape)`` dims."""
    rank = len(p["input_shape"]) + 1
    dims = range(rank - len(p["normalized_shape"]), rank)
    if rank <= 2:   # (N, F): no layout change
        return list(dims)
    return sorted(keras_axis(d, rank) for d in dims)


def _check_layer_norm(p: Params) -> None:
    _check_rank(p)
    ns, sample = p["normalized_shape"], p["input_shape"]
    if len(ns) > len(sample) or tuple(sample[len(sample) - len(ns):]) != ns:
        raise invalid("normalized_shape", f"{list(ns)} must equal the last {len(ns)} sizes of input_shape "
                                          f"{list(sample)}; PyTorch refuses other inputs")


def _build_layer_norm_torch(p: Params) -> Any:
    import torch
    return torch.nn.LayerNorm(p["normalized_shape"], eps=p["eps"], elementwise_affine=p["elementwise_affine"],
                              bias=p["bias"])


def _build_layer_norm_keras(p: Params, x: Any) -> Any:
    import keras
    affine = p["elementwise_affine"]
    return keras.layers.LayerNormalization(axis=layer_norm_axes(p), epsilon=p["eps"], scale=affine,
                                           center=affine and p["bias"])(x)


def _layer_norm_reference(x: np.ndarray, w: Mapping[str, np.ndarray], p: Params) -> np.ndarray:
    axes = tuple(range(x.ndim - len(p["normalized_shape"]), x.ndim))
    centred = x - x.mean(axis=axes, keepdims=True)
    y = centred / np.sqrt((centred ** 2).mean(axis=axes, keepdims=True) + p["eps"])
    if "weight" in w:
        y = y * w["weight"]
    if "bias" in w:
        y = y + w["bias"]
    return y


def channels_last_layout(k: int) -> Layout:
    """``C H W -> H W C`` for k = 3: LayerNorm weights over the channel and k - 1 spatial dims."""
    spatial = spatial_axes(k - 1) if k <= 4 else [f"S{i}" for i in range(k - 1)]
    return Layout(f"C {' '.join(spatial)} -> {' '.join(spatial)} C")


_LAYER_NORM_LAYOUTS = {f"{name} (over C and the spatial dims)": "C H W -> H W C" for name in ("weight", "bias")} | {
    f"{name} (over trailing spatial dims only)": "H W -> H W" for name in ("weight", "bias")}


# ---- group_norm and instance_norm


def group_norm_reference(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, groups: int,
                         eps: float) -> np.ndarray:
    """Normalise each sample over the channels of a group and every spatial position."""
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    centred = g - g.mean(axis=2, keepdims=True)
    y = (centred / np.sqrt((centred ** 2).mean(axis=2, keepdims=True) + eps)).reshape(x.shape)
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(per_channel)
    if bias is not None:
        y = y + bias.reshape(per_channel)
    return y


def _check_group_norm(p: Params) -> None:
    _check_rank(p)
    c, g = p["num_channels"], p["num_groups"]
    if p["input_shape"][0] != c:
        raise invalid("input_shape", f"has {p['input_shape'][0]} channels but num_channels is {c}")
    if c % g:
        raise invalid("num_groups", f"num_groups={g} must divide num_channels={c}")


def _build_group_norm_torch(p: Params) -> Any:
    import torch
    return torch.nn.GroupNorm(p["num_groups"], p["num_channels"], eps=p["eps"], affine=p["affine"], bias=p["bias"])


def _build_group_norm_keras(p: Params, x: Any) -> Any:
    import keras
    return keras.layers.GroupNormalization(groups=p["num_groups"], axis=-1, epsilon=p["eps"], scale=p["affine"],
                                           center=p["affine"] and p["bias"])(x)


def _check_instance_norm(n: int) -> Any:
    def check(p: Params) -> None:
        sample = p["input_shape"]
        if len(sample) != n + 1:
            raise invalid("input_shape", f"InstanceNorm{n}d takes (C, {', '.join(spatial_axes(n))}) per sample, "
                                         f"got {list(sample)}")
        if sample[0] != p["num_features"]:
            raise invalid("input_shape", f"has {sample[0]} channels but num_features is {p['num_features']}")
        if not p["track_running_stats"] and math.prod(sample[1:]) < 2:
            raise invalid("input_shape", "PyTorch refuses instance statistics over a single spatial element")
    return check


def _build_instance_norm_torch(n: int) -> Any:
    def build(p: Params) -> Any:
        import torch
        cls = {1: torch.nn.InstanceNorm1d, 2: torch.nn.InstanceNorm2d}[n]
        return cls(p["num_features"], eps=p["eps"], affine=p["affine"], bias=p["bias"],
                   track_running_stats=p["track_running_stats"])
    return build


def _build_instance_norm_keras(p: Params, x: Any) -> Any:
    import keras
    common = dict(epsilon=p["eps"], scale=p["affine"], center=p["affine"] and p["bias"])
    if p["track_running_stats"]:   # torch's eval mode uses the running statistics
        return keras.layers.BatchNormalization(axis=-1, **common)(x)
    return keras.layers.GroupNormalization(groups=p["num_features"], axis=-1, **common)(x)


def _instance_norm_reference(x: np.ndarray, w: Mapping[str, np.ndarray], p: Params) -> np.ndarray:
    if p["track_running_stats"]:
        return reference.batch_norm(x, w["running_mean"], w["running_var"], w.get("weight"), w.get("bias"),
                                    eps=p["eps"])
    return group_norm_reference(x, w.get("weight"), w.get("bias"), p["num_features"], p["eps"])


def _instance_norm_tolerance(p: Params) -> Tolerance:
    if p["track_running_stats"]:
        return Tolerance(1e-5, 1e-4, "per-element affine map with the running statistics")
    return norm_tolerance(math.prod(p["input_shape"][1:]), p["eps"])


_PER_CHANNEL = {"weight": "C -> C", "bias": "C -> C"}


def _common(affine_name: str, affine_default: bool) -> dict[str, Param]:
    return {
        "eps": Param(real(0.0, exclusive=True), default=1e-5, abbrev="eps"),
        affine_name: Param(boolean, default=affine_default, abbrev="affine"),
        "bias": Param(boolean, default=True, abbrev="bias"),
    }


FAMILIES = [
    Family(
        name="layer_norm", torch_class="LayerNorm", channels_first=True,
        params={"normalized_shape": Param(_sizes, abbrev="ns"), **_common("elementwise_affine", True),
                "input_shape": Param(shape(), abbrev="in")},
        build_torch=_build_layer_norm_torch, build_keras=_build_layer_norm_keras, check=_check_layer_norm,
        reference=_layer_norm_reference, weight_layouts=_LAYER_NORM_LAYOUTS,
        tolerance=lambda p: norm_tolerance(math.prod(p["normalized_shape"]), p["eps"]),
    ),
    Family(
        name="group_norm", torch_class="GroupNorm", channels_first=True,
        params={"num_groups": Param(integer(1), abbrev="g"), "num_channels": Param(integer(1), abbrev=None),
                **_common("affine", True), "input_shape": Param(shape(), abbrev="in")},
        build_torch=_build_group_norm_torch, build_keras=_build_group_norm_keras, check=_check_group_norm,
        reference=lambda x, w, p: group_norm_reference(x, w.get("weight"), w.get("bias"), p["num_groups"], p["eps"]),
        tolerance=lambda p: norm_tolerance(p["num_channels"] // p["num_groups"] * math.prod(p["input_shape"][1:]),
                                           p["eps"]),
        weight_layouts=_PER_CHANNEL,
    ),
    *(Family(
        name=f"instance_norm{n}d", torch_class=f"InstanceNorm{n}d", channels_first=True,
        params={"num_features": Param(integer(1), abbrev=None), **_common("affine", False),
                "track_running_stats": Param(boolean, default=False, abbrev="track"),
                "input_shape": Param(shape(rank=n + 1), abbrev="in")},
        build_torch=_build_instance_norm_torch(n), build_keras=_build_instance_norm_keras,
        check=_check_instance_norm(n), reference=_instance_norm_reference, tolerance=_instance_norm_tolerance,
        weight_layouts=_PER_CHANNEL | {"running_mean": "C -> C", "running_var": "C -> C"},
    ) for n in (1, 2)),
]


# ---- weight rules


class WeightedConverter(Converter):
    """Claims only layers that hold weights.

    A norm layer without affine parameters (or running statistics) has nothing to move, and
    ``transfer`` would refuse its weightless Keras layer as "not built yet". Such a pair is left
    out of the pairing on both sides, like an activation. Unbuilt Keras layers are still claimed,
    so the "build the model first" message stays. The price: an eps mismatch between two weightless
    layers goes unseen (a change to ``transfer`` that tells "not built" from "no weights" would fix it).
    """

    def claims_torch(self, module: Any) -> bool:
        return super().claims_torch(module) and _torch_has_weights(module)

    def claims_keras(self, layer: Any) -> bool:
        return super().claims_keras(layer) and (not layer.built or bool(layer.weights))

    def matches(self, modules: list[Any], layers: list[Any]) -> tuple[int, int] | None:
        if modules and layers and self.claims_torch(modules[0]) and self.claims_keras(layers[0]):
            return 1, 1
        return None


def _torch_has_weights(module: Any) -> bool:
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return any(t.is_floating_point() for t in tensors)


def _affine(weight: str, bias: str, layout: Layout | None = None, note: str = "") -> list[WeightRule]:
    return [WeightRule("weight", weight, layout, optional=True, note=note),
            WeightRule("bias", bias, layout, optional=True, note=note)]


def _layer_norm_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    ns = tuple(module.normalized_shape)
    variable = layer.gamma if layer.gamma is not None else layer.beta
    rolled = (*ns[1:], ns[0])
    if len(ns) > 1 and variable is not None and tuple(variable.shape) == rolled and _covers_every_axis(ns, layer):
        note = "over C and the spatial dims of a channels-last model"
        if rolled == ns:
            note += " (all sizes equal: assumed channels-last, the suite's convention)"
        return _affine("gamma", "beta", channels_last_layout(len(ns)), note)
    return _affine("gamma", "beta")


def _covers_every_axis(ns: tuple[int, ...], layer: Any) -> bool:
    """Only a LayerNorm over every non-batch dim includes the channel axis, the one that moves."""
    try:
        rank = len(layer.input.shape)
    except (AttributeError, ValueError):   # never called, or called on several inputs: trust the shapes
        return True
    return len(ns) == rank - 1


def _check_layer_norm_pair(module: Any, layer: Any) -> Any:
    axes = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
    if len(axes) != len(module.normalized_shape):
        return (f"torch normalises over the last {len(module.normalized_shape)} dims "
                f"{tuple(module.normalized_shape)}, Keras over {len(axes)} axes {list(axes)}")
    return eps_mismatch(module, layer)


def _check_group_norm_pair(module: Any, layer: Any) -> Any:
    if module.num_groups != layer.groups:
        return f"num_groups {module.num_groups} vs groups {layer.groups}"
    return eps_mismatch(module, layer)


def _group_norm_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    return _affine("gamma", "beta")


def _is_batch_norm(layer: Any) -> bool:
    return any(c.__name__ == "BatchNormalization" for c in type(layer).__mro__)


def _instance_norm_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    rules = _affine("gamma", "beta")
    if _is_batch_norm(layer):
        rules += [WeightRule("running_mean", "moving_mean"), WeightRule("running_var", "moving_variance")]
    return rules


def _check_instance_norm_pair(module: Any, layer: Any) -> str | None:
    is_batch_norm = _is_batch_norm(layer)
    if module.track_running_stats and not is_batch_norm:
        return ("track_running_stats=True: torch normalises with the running statistics in eval mode; "
                "use BatchNormalization with them, not GroupNormalization")
    if not module.track_running_stats and is_batch_norm:
        return ("InstanceNorm without running statistics normalises each sample over its own spatial "
                f"positions; BatchNormalization uses moving statistics: use GroupNormalization(groups="
                f"{module.num_features})")
    if not is_batch_norm and layer.groups != module.num_features:
        return (f"InstanceNorm is GroupNormalization with one group per channel: groups {layer.groups} "
                f"vs num_features {module.num_features}")
    return eps_mismatch(module, layer)


CONVERTERS = [
    WeightedConverter("layer norm", ("LayerNorm",), ("LayerNormalization",), _layer_norm_rules,
                      _check_layer_norm_pair),
    WeightedConverter("group norm", ("GroupNorm",), ("GroupNormalization",), _group_norm_rules,
                      _check_group_norm_pair),
    WeightedConverter("instance norm", ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"),
                      ("GroupNormalization", "BatchNormalization"), _instance_norm_rules,
                      _check_instance_norm_pair, ignore_torch=("num_batches_tracked",)),
]

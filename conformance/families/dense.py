"""linear: PyTorch ``nn.Linear`` against Keras ``Dense``.

The kernel is transposed (``O I -> I O``). When the Dense layer reads a flattened feature map,
the rows are also re-ordered, because torch flattens C,H,W and Keras flattens H,W,C: the rule
becomes ``O (C H W) -> (H W C) O``. :mod:`conformance.keras_graph` finds that feature map.
"""

from __future__ import annotations

from typing import Any

from .. import reference
from ..keras_graph import flatten_layout
from ..rules import DENSE, Context, Converter, WeightRule
from .base import Family, Param, Params, Tolerance, boolean, integer, invalid, shape


def _check(p: Params) -> None:
    if p["input_shape"][-1] != p["in_features"]:
        raise invalid("input_shape", f"last dimension {p['input_shape'][-1]} != in_features {p['in_features']}")


def _build_torch(p: Params) -> Any:
    import torch
    return torch.nn.Linear(p["in_features"], p["out_features"], bias=p["bias"])


def _build_keras(p: Params, x: Any) -> Any:
    import keras
    return keras.layers.Dense(p["out_features"], use_bias=p["bias"])(x)


FAMILIES = [Family(
    name="linear", torch_class="Linear",
    params={
        "in_features": Param(integer(1), abbrev=None),
        "out_features": Param(integer(1), abbrev="o"),
        "bias": Param(boolean, default=True, abbrev="bias"),
        "input_shape": Param(shape(min_rank=1), abbrev="in"),
    },
    build_torch=_build_torch, build_keras=_build_keras, check=_check,
    reference=lambda x, w, p: reference.linear(x, w["weight"], w.get("bias")),
    tolerance=lambda p: Tolerance.reduction(p["in_features"]),
    weight_layouts={"weight": str(DENSE)},
)]


def _rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    kernel = WeightRule("weight", "kernel", DENSE)
    feature_map = flatten_layout(layer, dict(context.keras_links))
    if feature_map is not None:
        kernel = WeightRule("weight", "kernel", feature_map.layout, sizes=feature_map.sizes,
                            note=f"rows re-ordered: reads a flattened {feature_map.describe()} feature map")
    return [kernel, WeightRule("bias", "bias", optional=True)]


CONVERTERS = [Converter("dense", ("Linear",), ("Dense",), _rules)]

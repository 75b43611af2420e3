"""More activations: gelu, leaky_relu, prelu, elu, selu, silu, hardswish, hardsigmoid, softplus.

Each one maps its torch parameters explicitly, because the defaults disagree (all checked on
Keras 3.15):
- GELU: torch defaults to the exact erf form; ``keras.ops.gelu`` defaults to the tanh
  approximation and ``keras.activations.gelu`` to the exact one, so ``approximate`` is always
  passed;
- LeakyReLU: torch's slope defaults to 0.01, the Keras layer's to 0.3 and ``keras.ops.leaky_relu``'s
  to 0.2. The Keras layer refuses a negative slope, which torch accepts: ``ops.leaky_relu`` then;
- PReLU: torch has 1 or C slopes applied along dim 1; Keras has one alpha per element unless
  ``shared_axes`` names the axes to share, so per-channel is ``shared_axes`` = the spatial axes
  and a single slope shares every axis. The weight ``(C,)`` becomes ``(1, ..., 1, C)``;
- hardsigmoid/hardswish: the installed Keras computes relu6(x + 3) / 6 like torch (older Keras
  used 0.2x + 0.5);
- Softplus: Keras has no beta or threshold; torch returns x where beta*x > threshold, so any
  configuration other than the default is built from ``keras.ops`` exactly as torch defines it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import reference
from ..layout import Layout
from ..rules import Context, Converter, WeightRule
from .base import Family, Param, Params, Tolerance, choice, integer, invalid, real, shape

_INPUT = Param(shape(), abbrev="in")


def _family(name: str, torch_class: str, params: dict[str, Param], build_keras: Callable[[Params, Any], Any],
            torch_kwargs: tuple[str, ...] = (), input_range: tuple[float, float] = (-1.0, 1.0),
            **extra: Any) -> Family:
    """An element-wise activation whose torch constructor takes ``torch_kwargs`` from the params."""
    def build_torch(p: Params) -> Any:
        import torch
        return getattr(torch.nn, torch_class)(**{k: p[k] for k in torch_kwargs})

    extra.setdefault("reference", lambda x, w, p: reference.activation(name, x, **{k: p[k] for k in torch_kwargs}))
    return Family(name=name, torch_class=torch_class, channels_first=True, params={**params, "input_shape": _INPUT},
                  build_torch=build_torch, build_keras=build_keras, input_range=input_range,
                  tolerance=lambda p: Tolerance.elementwise(), **extra)


def _keras_activation(keras_name: str) -> Callable[[Params, Any], Any]:
    def build(p: Params, x: Any) -> Any:
        import keras
        return keras.layers.Activation(keras_name)(x)
    return build


def _gelu_keras(p: Params, x: Any) -> Any:
    import keras
    return keras.ops.gelu(x, approximate=p["approximate"] == "tanh")


def _leaky_relu_keras(p: Params, x: Any) -> Any:
    import keras
    slope = p["negative_slope"]
    if slope >= 0:
        return keras.layers.LeakyReLU(negative_slope=slope)(x)
    return keras.ops.leaky_relu(x, negative_slope=slope)   # the layer refuses a negative slope


def _elu_keras(p: Params, x: Any) -> Any:
    import keras
    return keras.layers.ELU(alpha=p["alpha"])(x)


def _softplus_keras(p: Params, x: Any) -> Any:
    import keras
    beta, threshold = p["beta"], p["threshold"]
    if beta == 1.0 and threshold == 20.0:
        # float32 softplus(x) rounds to x long before x = 20, so torch's switch changes nothing.
        return keras.layers.Activation("softplus")(x)
    ops = keras.ops
    scaled = ops.multiply(x, beta)
    smooth = ops.softplus(scaled) if beta == 1.0 else ops.divide(ops.softplus(scaled), beta)
    return ops.where(ops.greater(scaled, threshold), x, smooth)


def _softplus_inputs(p: Params, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
    """Wide enough that some inputs cross torch's threshold, so its switch to x is exercised."""
    limit = max(2.0, 1.5 * p["threshold"] / p["beta"])
    return (rng.uniform(-limit, limit, size=(batch, *p["input_shape"])).astype(np.float32),)


# ---- PReLU: one slope, or one per channel; the only weighted layer here


def _prelu_check(p: Params) -> None:
    n, channels = p["num_parameters"], p["input_shape"][0]
    if n not in (1, channels):
        raise invalid("num_parameters", f"must be 1 or the number of channels ({channels}), got {n}; "
                                        "torch refuses any other count")


def _prelu_build_torch(p: Params) -> Any:
    import torch
    return torch.nn.PReLU(num_parameters=p["num_parameters"], init=p["init"])


def prelu_shared_axes(rank: int, per_channel: bool) -> list[int]:
    """Keras ``shared_axes`` for a channels-last input of ``rank`` dims (batch excluded)."""
    return list(range(1, rank)) if per_channel else list(range(1, rank + 1))


def _prelu_build_keras(p: Params, x: Any) -> Any:
    import keras
    per_channel = p["num_parameters"] > 1
    axes = prelu_shared_axes(len(p["input_shape"]), per_channel)
    return keras.layers.PReLU(shared_axes=axes or None)(x)


def _prelu_reference(x: np.ndarray, w: Any, p: Params) -> np.ndarray:
    slope = w["weight"].reshape((1, -1) + (1,) * (x.ndim - 2)) if x.ndim >= 2 else w["weight"]
    return np.where(x > 0, x, slope * x)


def prelu_layout(keras_rank: int) -> Layout:
    """Torch's ``(C,)`` (or ``(1,)``) slope vector to a channels-last Keras alpha of ``keras_rank`` dims."""
    return Layout(" ".join(["C ->", *["1"] * (keras_rank - 1), "C"]))


_PRELU_LAYOUTS = {f"weight (N C{dims})": str(prelu_layout(r + 1))
                  for r, dims in enumerate(["", " L", " H W", " D H W"])}


def _prelu_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    rank = len(layer.alpha.shape)
    note = "one slope shared by every element" if module.num_parameters == 1 else "one slope per channel"
    return [WeightRule("weight", "alpha", prelu_layout(rank), note=note)]


def _prelu_check_pair(module: Any, layer: Any) -> str | None:
    alpha = getattr(layer, "alpha", None)
    if alpha is None:
        return None   # not built yet: the transfer says so
    got = tuple(alpha.shape)
    want = (1,) * (len(got) - 1) + (module.num_parameters,)
    if got == want:
        return None
    rank = len(got)
    if module.num_parameters == 1:
        fix = f"shared_axes={prelu_shared_axes(rank, False)}"
    else:
        fix = f"shared_axes={prelu_shared_axes(rank, True)} (the spatial axes of a channels-last input)"
    return (f"torch PReLU has {module.num_parameters} slope(s) but the Keras alpha has shape {got} "
            f"(Keras PReLU has one alpha per element unless shared_axes says otherwise); build it with {fix}")


FAMILIES = [
    _family("gelu", "GELU", {"approximate": Param(choice("none", "tanh"), default="none", abbrev="")},
            _gelu_keras, ("approximate",), (-4.0, 4.0)),
    _family("leaky_relu", "LeakyReLU", {"negative_slope": Param(real(), default=0.01, abbrev="slope")},
            _leaky_relu_keras, ("negative_slope",)),
    _family("elu", "ELU", {"alpha": Param(real(), default=1.0, abbrev="alpha")}, _elu_keras, ("alpha",),
            (-3.0, 3.0)),
    _family("selu", "SELU", {}, _keras_activation("selu"), (), (-3.0, 3.0)),
    _family("silu", "SiLU", {}, _keras_activation("silu"), (), (-6.0, 6.0)),
    _family("hardswish", "Hardswish", {}, _keras_activation("hard_silu"), (), (-5.0, 5.0)),
    _family("hardsigmoid", "Hardsigmoid", {}, _keras_activation("hard_sigmoid"), (), (-5.0, 5.0)),
    _family("softplus", "Softplus", {"beta": Param(real(0.0, exclusive=True), default=1.0, abbrev="beta"),
                                     "threshold": Param(real(0.0, exclusive=True), default=20.0, abbrev="th")},
            _softplus_keras, ("beta", "threshold"), make_inputs=_softplus_inputs),
    Family(name="prelu", torch_class="PReLU", channels_first=True,
           params={"num_parameters": Param(integer(1), default=1, abbrev="n"),
                   "init": Param(real(), default=0.25, abbrev=None), "input_shape": _INPUT},
           build_torch=_prelu_build_torch, build_keras=_prelu_build_keras, check=_prelu_check,
           reference=_prelu_reference, tolerance=lambda p: Tolerance.elementwise(),
           weight_layouts=_PRELU_LAYOUTS),
]

CONVERTERS = [Converter("prelu", ("PReLU",), ("PReLU",), _prelu_rules, _prelu_check_pair)]

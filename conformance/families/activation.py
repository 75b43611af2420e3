"""Activations and flatten: the weightless layers that small CNNs need.

They are element-wise except softmax, whose ``dim`` moves with the layout (NCHW dim 1 is NHWC
axis -1), and flatten, which must put the channel axis first again before flattening (or reshaping, for
start_dim/end_dim other than 1/-1), because Keras flattens H,W,C where torch flattens C,H,W.
"""

from __future__ import annotations

import math
from typing import Any

from .. import reference
from .base import Family, Param, Params, Tolerance, integer, invalid, shape


def keras_axis(torch_dim: int, rank: int) -> int:
    """Where torch's ``dim`` of a channels-first tensor of ``rank`` (batch included) is in Keras."""
    dim = torch_dim % rank
    if dim == 0 or rank <= 2:
        return dim
    return rank - 1 if dim == 1 else dim - 1


def _elementwise(name: str, torch_class: str, keras_activation: str) -> Family:
    def build_torch(p: Params) -> Any:
        import torch
        return getattr(torch.nn, torch_class)()

    def build_keras(p: Params, x: Any) -> Any:
        import keras
        return keras.layers.Activation(keras_activation)(x)

    return Family(name=name, torch_class=torch_class, channels_first=True,
                  params={"input_shape": Param(shape(), abbrev="in")},
                  build_torch=build_torch, build_keras=build_keras,
                  reference=lambda x, w, p: reference.activation(name, x),
                  tolerance=lambda p: Tolerance.elementwise())


def _check_dim(p: Params) -> None:
    rank = len(p["input_shape"]) + 1
    if not -rank <= p["dim"] < rank:
        raise invalid("dim", f"dim {p['dim']} is out of range for a rank-{rank} input (batch included)")
    if p["dim"] % rank == 0:
        raise invalid("dim", "dim 0 is the batch axis; softmax over the batch has no per-sample meaning")


def _softmax(name: str, torch_class: str) -> Family:
    def build_torch(p: Params) -> Any:
        import torch
        return getattr(torch.nn, torch_class)(dim=p["dim"])

    def build_keras(p: Params, x: Any) -> Any:
        import keras
        axis = keras_axis(p["dim"], len(p["input_shape"]) + 1)
        if name == "softmax":
            return keras.layers.Softmax(axis=axis)(x)
        return keras.ops.log_softmax(x, axis=axis)

    return Family(name=name, torch_class=torch_class, channels_first=True,
                  params={"dim": Param(integer(-8), abbrev="dim"), "input_shape": Param(shape(), abbrev="in")},
                  build_torch=build_torch, build_keras=build_keras, check=_check_dim,
                  reference=lambda x, w, p: reference.activation(name, x, dim=p["dim"]),
                  tolerance=lambda p: Tolerance.elementwise())


def _flatten_dims(p: Params) -> tuple[int, int]:
    """start_dim and end_dim as non-negative axes of the batched torch tensor."""
    rank = len(p["input_shape"]) + 1
    return p["start_dim"] % rank, p["end_dim"] % rank


def _check_flatten(p: Params) -> None:
    rank = len(p["input_shape"]) + 1
    for name in ("start_dim", "end_dim"):
        if not -rank <= p[name] < rank:
            raise invalid(name, f"{name} {p[name]} is out of range for a rank-{rank} input (batch included)")
    start, end = _flatten_dims(p)
    if start == 0:
        raise invalid("start_dim", "dim 0 is the batch axis; flattening it into the features is not covered")
    if start > end:
        raise invalid("end_dim", f"flatten() has invalid args: start_dim {p['start_dim']} comes after "
                                 f"end_dim {p['end_dim']}")


def _flatten_shape(p: Params) -> tuple[int, ...]:
    """torch's output shape for one sample (batch excluded)."""
    start, end = _flatten_dims(p)
    dims = p["input_shape"]
    return (*dims[:start - 1], math.prod(dims[start - 1:end]), *dims[end:])


def _build_flatten_keras(p: Params, x: Any) -> Any:
    import keras
    rank = len(p["input_shape"])
    start, end = _flatten_dims(p)
    if start == end:   # nothing to merge: the output keeps the layout (compare moves it back)
        return keras.layers.Identity()(x)
    if rank > 1:   # back to channels-first, so the flattened order is torch's C, H, W
        x = keras.layers.Permute((rank, *range(1, rank)))(x)
    target = _flatten_shape(p)
    return keras.layers.Flatten()(x) if len(target) == 1 else keras.layers.Reshape(target)(x)


def _build_flatten_torch(p: Params) -> Any:
    import torch
    return torch.nn.Flatten(p["start_dim"], p["end_dim"])


def _flatten_reference(x: Any, w: Any, p: Params) -> Any:
    return x.reshape(x.shape[0], *_flatten_shape(p))


FAMILIES = [
    _elementwise("relu", "ReLU", "relu"),
    _elementwise("tanh", "Tanh", "tanh"),
    _elementwise("sigmoid", "Sigmoid", "sigmoid"),
    _softmax("softmax", "Softmax"),
    _softmax("log_softmax", "LogSoftmax"),
    Family(name="flatten", torch_class="Flatten", channels_first=True,
           params={"start_dim": Param(integer(-8), default=1, abbrev="start"),
                   "end_dim": Param(integer(-8), default=-1, abbrev="end"),
                   "input_shape": Param(shape(), abbrev="in")},
           build_torch=_build_flatten_torch, build_keras=_build_flatten_keras, check=_check_flatten,
           reference=_flatten_reference, tolerance=lambda p: Tolerance.exact()),
]

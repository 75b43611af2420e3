"""batch_norm1d/2d/3d in inference mode: PyTorch ``nn.BatchNormNd`` against Keras ``BatchNormalization``.

The weights move by name (weight, bias, running_mean, running_var -> gamma, beta, moving_mean,
moving_variance). The defaults differ: eps 1e-5 against 1e-3, and Keras's momentum is
1 - torch's. The Keras layer is built with torch's eps, and a transfer between layers whose eps
differ is refused, because identical weights would still give different outputs.
"""

from __future__ import annotations

from typing import Any

from .. import reference
from ..rules import Context, Converter, WeightRule
from ..structure import eps_mismatch
from .base import Family, Param, Params, Tolerance, boolean, choice, integer, invalid, real, shape


def _check(n: int) -> Any:
    def check(p: Params) -> None:
        rank = len(p["input_shape"])
        allowed = {1: (1, 2), 2: (3,), 3: (4,)}[n]
        if rank not in allowed:
            layouts = {1: "(C) or (C, L)", 2: "(C, H, W)", 3: "(C, D, H, W)"}[n]
            raise invalid("input_shape", f"BatchNorm{n}d takes {layouts} per sample, "
                          f"rank {' or '.join(map(str, allowed))}; got rank {rank}")
        if p["input_shape"][0] != p["num_features"]:
            raise invalid("input_shape", f"has {p['input_shape'][0]} channels but num_features is "
                                         f"{p['num_features']}")
    return check


def _build_torch(n: int) -> Any:
    def build(p: Params) -> Any:
        import torch
        cls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}[n]
        return cls(p["num_features"], eps=p["eps"], momentum=p["momentum"], affine=p["affine"],
                   track_running_stats=p["track_running_stats"])
    return build


def keras_momentum(torch_momentum: float | None) -> float:
    """Keras ``BatchNormalization(momentum=)`` for torch's ``BatchNormNd(momentum=)``: the one place it is mapped.

    torch updates ``running = (1 - m) * running + m * batch``; Keras updates
    ``moving = m' * moving + (1 - m') * batch``; so ``m' = 1 - m``. torch's ``momentum=None``
    (a cumulative average over every batch seen) has no Keras counterpart and is refused.
    """
    if torch_momentum is None:
        raise ValueError("BatchNorm momentum=None (torch's cumulative moving average) has no Keras "
                         "BatchNormalization equivalent; use a fixed momentum")
    if not 0.0 <= float(torch_momentum) <= 1.0:
        raise ValueError(f"BatchNorm momentum must lie in [0, 1], got {torch_momentum!r}")
    return 1.0 - float(torch_momentum)


def _build_keras(p: Params, x: Any) -> Any:
    import keras
    return keras.layers.BatchNormalization(axis=-1, epsilon=p["eps"], momentum=keras_momentum(p["momentum"]),
                                           center=p["affine"], scale=p["affine"])(x)


def _reference(x: Any, w: Any, p: Params) -> Any:
    return reference.batch_norm(x, w["running_mean"], w["running_var"], w.get("weight"), w.get("bias"),
                                eps=p["eps"])


def _family(n: int) -> Family:
    return Family(
        name=f"batch_norm{n}d", torch_class=f"BatchNorm{n}d", channels_first=True,
        params={
            "num_features": Param(integer(1), abbrev=None),
            "eps": Param(real(0.0, exclusive=True), default=1e-5, abbrev="eps"),
            "momentum": Param(real(0.0), default=0.1, abbrev="m"),
            "affine": Param(boolean, default=True, abbrev="affine"),
            # Without running statistics torch normalises with batch statistics even in eval mode.
            "track_running_stats": Param(choice(True), default=True, abbrev=None),
            "input_shape": Param(shape(), abbrev="in"),
        },
        build_torch=_build_torch(n), build_keras=_build_keras, check=_check(n), reference=_reference,
        tolerance=lambda p: Tolerance(1e-5, 1e-4, "per-element affine map after normalisation"),
        # Same shape on both sides; only the names change (weight -> gamma, bias -> beta,
        # running_mean -> moving_mean, running_var -> moving_variance).
        weight_layouts={name: "C -> C" for name in ("weight", "bias", "running_mean", "running_var")},
    )


FAMILIES = [_family(1), _family(2), _family(3)]


def _rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    return [WeightRule("weight", "gamma", optional=True), WeightRule("bias", "beta", optional=True),
            WeightRule("running_mean", "moving_mean"), WeightRule("running_var", "moving_variance")]


CONVERTERS = [Converter("batch norm", ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"), ("BatchNormalization",),
                        _rules, eps_mismatch, ignore_torch=("num_batches_tracked",))]

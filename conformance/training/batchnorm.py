"""BatchNorm in training mode: the batch-statistics output and the running statistics.

Both frameworks normalise a training batch with its biased variance, so the outputs agree. The
running statistics differ by one rule: torch updates ``running_var`` with the unbiased batch
variance, ``var * n / (n - 1)`` with ``n`` the elements reduced per channel (N, N*L, N*H*W or
N*D*H*W), Keras ``moving_variance`` with the biased one (:data:`RUNNING_VAR`). The momentum is
mapped by :func:`conformance.families.norm.keras_momentum` (Keras momentum = 1 - torch momentum).
:class:`~conformance.training.keras_torch.UnbiasedBatchNormalization` is the opt-in correction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..comparison import _move_channels
from ..families.norm import keras_momentum
from .results import Divergence, ScenarioResult, tensor_error

RUNNING_VAR = Divergence(
    rule="bn-running-var-unbiased",
    reason=("torch BatchNorm updates running_var with the unbiased batch variance (sum of squares / (n-1)); "
            "Keras BatchNormalization updates moving_variance with the biased one (/ n). Both normalise the "
            "batch itself with the biased variance. Correction: conformance.training.UnbiasedBatchNormalization."),
    tensors=("*running_var",), factor="n/(n-1), n = elements reduced per channel (N, N*L, N*H*W, N*D*H*W)")

# Running statistics are means and mean squares of the batch in float32: rounding of order 1e-7
# relative, with the momentum-weighted old value added. 1e-5 relative (plus 1e-6 absolute for means
# near zero) is ~100x that and ~20x below the smallest unbiased-variance effect measured here.
RUNNING_ATOL, RUNNING_RTOL = 1e-6, 1e-5
OUTPUT_ATOL, OUTPUT_RTOL = 1e-5, 1e-4     # the batch_norm families' inference tolerance


def reduced_per_channel(input_shape: tuple[int, ...], batch: int) -> int:
    """``n``: how many elements each channel's batch statistics average over (torch layout, no batch)."""
    return batch * math.prod(input_shape[1:])


def _pair(family: str, num_features: int, input_shape: tuple[int, ...], momentum: float, eps: float,
          correction: bool, keras_momentum_override: float | None, seed: int) -> tuple[Any, Any]:
    import keras

    from ..pair import build_pair, randomize_torch
    from ..transfer import transfer_weights
    pair = build_pair(family, num_features=num_features, input_shape=input_shape, momentum=momentum, eps=eps)
    randomize_torch(pair.torch, seed)           # non-trivial gamma, beta and running statistics
    keras_model = pair.keras
    if correction or keras_momentum_override is not None:
        from .keras_torch import UnbiasedBatchNormalization
        layer = next(layer for layer in keras_model.layers if isinstance(layer, keras.layers.BatchNormalization))
        config = layer.get_config()
        if keras_momentum_override is not None:
            config["momentum"] = keras_momentum_override
        cls = UnbiasedBatchNormalization if correction else keras.layers.BatchNormalization
        inputs = keras.Input(keras_model.inputs[0].shape[1:])
        keras_model = keras.Model(inputs, cls.from_config(config)(inputs))
    transfer_weights(pair.torch, keras_model)
    return pair.torch, keras_model


def _batches(input_shape: tuple[int, ...], batch: int, steps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # Shifted and scaled so that the batch statistics differ from the starting running statistics.
    return [(rng.uniform(-1, 1, (batch, *input_shape)) * 1.5 + 0.3).astype(np.float32) for _ in range(steps)]


def _keras_stats(model: Any) -> tuple[np.ndarray, np.ndarray]:
    import keras
    layer = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    return keras.ops.convert_to_numpy(layer.moving_mean), keras.ops.convert_to_numpy(layer.moving_variance)


def batch_norm_training(family: str = "batch_norm2d", num_features: int = 5, input_shape: tuple[int, ...] = (5, 6, 7),
                        momentum: float = 0.1, eps: float = 1e-5, batch: int = 4, steps: int = 1,
                        correction: bool = False, keras_momentum_override: float | None = None,
                        seed: int = 0) -> ScenarioResult:
    """``steps`` forward passes in training mode on seeded batches, both frameworks from the same weights.

    Compares every pass's output (batch statistics) and the running statistics after the last.
    Without ``correction`` the running variance is expected to diverge by :data:`RUNNING_VAR`;
    ``measured`` holds the factor read from the first pass's updates (torch's over Keras's) and
    n/(n-1). ``keras_momentum_override`` plants a wrong momentum (for meta-tests).
    """
    import keras
    import torch
    input_shape = tuple(input_shape)
    torch_model, keras_model = _pair(family, num_features, input_shape, momentum, eps, correction,
                                     keras_momentum_override, seed)
    start_var = torch_model.running_var.detach().numpy().astype(np.float64).copy()
    torch_model.train()
    errors, factor = [], math.nan
    for step, x in enumerate(_batches(input_shape, batch, steps, seed + 1)):
        with torch.no_grad():
            out_t = torch_model(torch.from_numpy(x)).numpy()
        out_k = keras.ops.convert_to_numpy(keras_model(_move_channels(x, True), training=True))   # any backend
        out_k = np.moveaxis(out_k, -1, 1) if out_k.ndim >= 3 else out_k
        errors.append(tensor_error(f"output[{step}]", out_t, out_k, OUTPUT_ATOL, OUTPUT_RTOL))
        if step == 0:
            keep = 1.0 - momentum
            torch_delta = torch_model.running_var.detach().numpy() - keep * start_var
            keras_delta = _keras_stats(keras_model)[1] - keep * start_var
            factor = float(np.median(torch_delta / keras_delta))
    keras_mean, keras_var = _keras_stats(keras_model)
    errors.append(tensor_error("running_mean", torch_model.running_mean.detach().numpy(), keras_mean,
                               RUNNING_ATOL, RUNNING_RTOL))
    errors.append(tensor_error("running_var", torch_model.running_var.detach().numpy(), keras_var,
                               RUNNING_ATOL, RUNNING_RTOL))
    n = reduced_per_channel(input_shape, batch)
    return ScenarioResult(
        scenario="batch_norm_training",
        params=dict(family=family, num_features=num_features, input_shape=input_shape, momentum=momentum, eps=eps,
                    batch=batch, steps=steps, correction=correction, keras_momentum=keras_momentum_override
                    if keras_momentum_override is not None else keras_momentum(momentum), seed=seed),
        tensors=tuple(errors), expected=None if correction else RUNNING_VAR,
        tolerance=(f"outputs: atol {OUTPUT_ATOL} + rtol {OUTPUT_RTOL} (the family's inference tolerance); running "
                   f"statistics: atol {RUNNING_ATOL} + rtol {RUNNING_RTOL} (float32 means of the batch)"),
        measured={"variance_factor": factor, "expected_factor": n / (n - 1), "n": float(n)})

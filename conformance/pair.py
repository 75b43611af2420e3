"""``build_pair``: one PyTorch module and the Keras model that should compute the same function."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import CaseError, UnsupportedError
from .families import get_family
from .families.base import Family, channels_last


@dataclass
class Pair:
    """A PyTorch module (channels-first) and a Keras model (channels-last for spatial families)."""

    family: Family
    params: dict[str, Any]
    torch: Any
    keras: Any

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape in PyTorch's layout (of the first input, for families with several)."""
        if "input_shape" in self.params:
            return tuple(self.params["input_shape"])
        return tuple(self.sample_inputs(0, 1)[0].shape[1:])

    @property
    def channels_last(self) -> bool:
        return self.family.channels_first and len(self.input_shape) >= 2

    @property
    def keras_input_shape(self) -> tuple[int, ...]:
        return channels_last(self.input_shape) if self.channels_last else self.input_shape

    def sample_inputs(self, seed: int, batch: int = 2) -> tuple[np.ndarray, ...]:
        """Seeded inputs in PyTorch's layout: uniform over the family's input range by default."""
        rng = np.random.default_rng(seed)
        if self.family.make_inputs is not None:
            return tuple(self.family.make_inputs(self.params, rng, batch))
        low, high = self.family.input_range
        return (rng.uniform(low, high, size=(batch, *self.input_shape)).astype(np.float32),)

    def sample_input(self, seed: int, batch: int = 2) -> np.ndarray:
        """The first (usually the only) seeded input."""
        return self.sample_inputs(seed, batch)[0]


def build_pair(family: str, **params: Any) -> Pair:
    """Build the PyTorch module and the Keras model for ``family`` with torch's constructor ``params``.

    ``input_shape`` is one sample's shape in PyTorch's layout, without the batch dimension.
    Raises :class:`CaseError` for invalid parameters and :class:`UnsupportedError` when Keras
    cannot express the configuration.
    """
    spec = get_family(family)
    try:
        normalised = spec.normalise(params)
    except CaseError as exc:
        raise exc.located(case=f"build_pair({family!r})") from None
    try:
        torch_module = spec.build_torch(normalised)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CaseError(f"PyTorch rejected the parameters {normalised}: {exc}") from None
    torch_module.eval()
    import keras
    pair = Pair(spec, normalised, torch_module, None)
    try:
        examples = pair.sample_inputs(0, 1)
        inputs = [keras.Input(_keras_shape(pair, x.shape[1:]), dtype=str(x.dtype)) for x in examples]
        feed = inputs[0] if len(inputs) == 1 else inputs
        pair.keras = keras.Model(feed, spec.build_keras(normalised, feed), name=family)
    except UnsupportedError:
        raise
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise UnsupportedError(f"Keras rejected the layers built for {family} {normalised}: {exc}") from None
    if spec.deep_init:
        _mark_deep(pair)
    return pair


def _keras_shape(pair: Pair, shape: tuple[int, ...]) -> tuple[int, ...]:
    return channels_last(shape) if pair.channels_last and len(shape) >= 2 else tuple(shape)


# ---- seeded weights: non-trivial running statistics, positive variances
#
# Deep models (families with ``deep_init``) need more: with every weight uniform in [-1, 1] the
# activations grow by about sqrt(fan_in / 3) per layer and overflow float32 within a few dozen
# layers, and with BatchNorm statistics drawn at random no BatchNorm really normalises, so an
# input's influence fades: in EfficientNetB0 each squeeze-and-excitation gate halves it, and at
# the output it was 3e-4 of the output's size, so that a wrong stem changed the output by less
# than the tolerance. So their kernels are He-uniform (+-sqrt(6 / fan_in)), and after the draw
# one pass over seeded inputs, with only the BatchNorm layers in training mode, sets every
# BatchNorm's running statistics to those of the activations that reach it. Each BatchNorm then
# normalises, as in a trained network, and the input decides the output.


@dataclass(frozen=True)
class _Calibration:
    """Seeded inputs for the calibration pass (a plain holder: Keras does not track it)."""

    arrays: tuple[np.ndarray, ...]


def _mark_deep(pair: Pair) -> None:
    torch_inputs = pair.sample_inputs(seed=20261127, batch=64)
    keras_inputs = tuple(_channels_last_batch(a) if pair.channels_last else a for a in torch_inputs)
    pair.torch.conformance_calibration = _Calibration(torch_inputs)
    pair.keras.conformance_calibration = _Calibration(keras_inputs)


def _channels_last_batch(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(array, 1, -1)) if array.ndim >= 3 else array


def _distribution(name: str, is_norm: bool) -> tuple[float, float]:
    if name in ("running_var", "moving_variance", "variance"):
        return 0.5, 2.0
    if name in ("running_mean", "moving_mean", "beta") or (is_norm and name == "bias"):
        return -0.5, 0.5
    if name == "gamma" or (is_norm and name == "weight"):
        return 0.5, 1.5
    return -1.0, 1.0


def _fan_in_bound(fan_in: int) -> float:
    """He-uniform: the bound that keeps a ReLU layer's output about the size of its input."""
    return math.sqrt(6.0 / max(fan_in, 1))


def randomize_torch(module: Any, seed: int) -> None:
    """Fill every floating-point parameter and buffer with seeded values (deep models: see above)."""
    import torch
    rng = np.random.default_rng(seed)
    calibration = getattr(module, "conformance_calibration", None)
    with torch.no_grad():
        for owner in module.modules():
            is_norm = "Norm" in type(owner).__name__
            for name, tensor in [*owner._parameters.items(), *owner._buffers.items()]:
                if tensor is None or not tensor.is_floating_point():
                    continue
                low, high = _distribution(name, is_norm)
                if calibration is not None and name == "weight" and tensor.ndim >= 2:
                    high = _fan_in_bound(math.prod(tensor.shape[1:]))    # (O, I/groups, *kernel)
                    low = -high
                tensor.copy_(torch.from_numpy(rng.uniform(low, high, size=tuple(tensor.shape))))
    if calibration is not None:
        _calibrate_torch(module, calibration)


def _calibrate_torch(module: Any, calibration: _Calibration) -> None:
    """One pass with only the BatchNorm layers training, at momentum 1: running stats = batch stats."""
    import torch
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved, was_training = [m.momentum for m in norms], module.training
    device = next(iter(module.parameters())).device
    try:
        module.eval()
        for norm in norms:
            norm.train()
            norm.momentum = 1.0
        with torch.no_grad():
            module(*[torch.from_numpy(a).to(device) for a in calibration.arrays])
    finally:
        for norm, momentum in zip(norms, saved, strict=True):
            norm.momentum = momentum
        module.train(was_training)


def _keras_layers(layer: Any) -> list[Any]:
    """Every layer inside ``layer``, nested models included."""
    found = []
    for child in getattr(layer, "layers", None) or []:
        found.append(child)
        found.extend(_keras_layers(child))
    return found


def _keras_fan_ins(layers: list[Any]) -> dict[int, int]:
    """id(kernel variable) -> fan-in: all kernel axes but the output's; a depthwise kernel's
    (*kernel, C, M) reads only its kernel window."""
    fan_ins = {}
    for layer in layers:
        if getattr(layer, "layers", None) is not None:
            continue
        for variable in layer.weights:
            if variable.name == "kernel" and len(variable.shape) >= 2:
                axes = variable.shape[:-2] if type(layer).__name__.startswith("DepthwiseConv") else variable.shape[:-1]
                fan_ins[id(variable)] = math.prod(axes)
    return fan_ins


def randomize_keras(model: Any, seed: int) -> None:
    """Fill every Keras variable with seeded values, by the same rules as :func:`randomize_torch`.

    Layers that derive values from their variables once (``finalize_state``: Keras's
    Normalization) are then brought up to date, as Keras does after loading weights.
    """
    rng = np.random.default_rng(seed)
    layers = _keras_layers(model)
    calibration = getattr(model, "conformance_calibration", None)
    fan_ins = _keras_fan_ins(layers) if calibration is not None else {}
    for variable in model.weights:
        low, high = _distribution(variable.name, is_norm=False)
        if id(variable) in fan_ins:
            high = _fan_in_bound(fan_ins[id(variable)])
            low = -high
        variable.assign(rng.uniform(low, high, size=tuple(variable.shape)).astype(variable.dtype))
    for layer in layers:
        if callable(getattr(layer, "finalize_state", None)) and layer.built and layer.weights:
            layer.finalize_state()
    if calibration is not None:
        _calibrate_keras(model, layers, calibration)


def _calibrate_keras(model: Any, layers: list[Any], calibration: _Calibration) -> None:
    """The same pass in Keras: training=True with momentum 0 (moving stats = batch stats) and
    every dropout rate at 0, so that only the BatchNorm layers behave differently."""
    norms = [layer for layer in layers if type(layer).__name__ == "BatchNormalization"]
    drops = [layer for layer in layers if "Dropout" in type(layer).__name__ and hasattr(layer, "rate")]
    if not norms:
        return
    saved_momentum, saved_rate = [n.momentum for n in norms], [d.rate for d in drops]
    try:
        for norm in norms:
            norm.momentum = 0.0
        for drop in drops:
            drop.rate = 0.0
        arrays = calibration.arrays
        model(arrays[0] if len(arrays) == 1 else list(arrays), training=True)
    finally:
        for norm, momentum in zip(norms, saved_momentum, strict=True):
            norm.momentum = momentum
        for drop, rate in zip(drops, saved_rate, strict=True):
            drop.rate = rate

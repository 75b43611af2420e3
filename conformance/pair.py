"""``build_pair``: one PyTorch module and the Keras model that should compute the same function."""

from __future__ import annotations

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
    return pair


def _keras_shape(pair: Pair, shape: tuple[int, ...]) -> tuple[int, ...]:
    return channels_last(shape) if pair.channels_last and len(shape) >= 2 else tuple(shape)


# ---- seeded weights: non-trivial running statistics, positive variances


def _distribution(name: str, is_norm: bool) -> tuple[float, float]:
    if name in ("running_var", "moving_variance"):
        return 0.5, 2.0
    if name in ("running_mean", "moving_mean", "beta") or (is_norm and name == "bias"):
        return -0.5, 0.5
    if name == "gamma" or (is_norm and name == "weight"):
        return 0.5, 1.5
    return -1.0, 1.0


def randomize_torch(module: Any, seed: int) -> None:
    """Fill every floating-point parameter and buffer with seeded values."""
    import torch
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for owner in module.modules():
            is_norm = "Norm" in type(owner).__name__
            for name, tensor in [*owner._parameters.items(), *owner._buffers.items()]:
                if tensor is None or not tensor.is_floating_point():
                    continue
                low, high = _distribution(name, is_norm)
                tensor.copy_(torch.from_numpy(rng.uniform(low, high, size=tuple(tensor.shape))))


def randomize_keras(model: Any, seed: int) -> None:
    """Fill every Keras variable with seeded values, by the same rules as :func:`randomize_torch`."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        low, high = _distribution(variable.name, is_norm=False)
        variable.assign(rng.uniform(low, high, size=tuple(variable.shape)).astype(variable.dtype))

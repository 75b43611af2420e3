"""Seeded inputs for verifying a converted model, shaped from the Keras model's declared inputs.

A Keras model file records its input shape; a torch state dict does not. So the Keras side
decides the shape, and the layout: a model whose first layout-aware layer (a convolution, a
pooling) is channels-last takes ``(N, H, W, C)``, and torch gets ``(N, C, H, W)``; without one,
rank-3+ inputs are taken as images (channels-last) and rank 2 as sequences (unchanged).
``--input-shape`` (torch layout, no batch) overrides the shape and, where only one reading fits
the Keras input, the layout. Float inputs are uniform in [-1, 1), as in the catalogue; integer
inputs (token ids) lie below the smallest Embedding's vocabulary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .files import FileError


def _layers(model: Any) -> list[Any]:
    found = []
    for layer in getattr(model, "layers", []):
        found.extend(_layers(layer) if getattr(layer, "layers", None) is not None else [layer])
    return found


def _first_data_format(model: Any) -> str | None:
    for layer in _layers(model):
        data_format = getattr(layer, "data_format", None)
        if isinstance(data_format, str):
            return data_format
    return None


def _fits(shape: tuple[int, ...], declared: tuple[Any, ...]) -> bool:
    return len(shape) == len(declared) and all(d is None or d == s for s, d in zip(shape, declared, strict=True))


def _moved(shape: tuple[Any, ...]) -> tuple[Any, ...]:
    """torch (C, *spatial) -> Keras (*spatial, C)."""
    return (*shape[1:], shape[0]) if len(shape) >= 2 else shape


def verification_inputs(model: Any, batch: int, seed: int, input_shape: tuple[int, ...] | None = None
                        ) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Arrays in torch layout for every input of ``model``, and how they were made (for the report)."""
    name = getattr(model, "name", "the Keras model")
    tensors = list(getattr(model, "inputs", None) or [])
    if not tensors:
        raise FileError(f"{name}: the Keras model declares no inputs, so the verification input shape is unknown")
    if input_shape is not None and len(tensors) != 1:
        raise FileError(f"{name}: --input-shape gives one shape, but the model has {len(tensors)} inputs")
    data_format = _first_data_format(model)
    rng = np.random.default_rng(seed)
    arrays, shapes, layouts = [], [], []
    for tensor in tensors:
        declared = tuple(tensor.shape[1:])
        if input_shape is not None:
            shape = tuple(input_shape)
            as_last, as_is = _fits(_moved(shape), declared), _fits(shape, declared)
            if not (as_last or as_is):
                raise FileError(f"{name}: --input-shape {shape} (torch layout) fits the Keras input "
                                f"{(None, *declared)} neither channels-first nor channels-last")
            channels_last = as_last and (not as_is or data_format == "channels_last")
        else:
            if any(d is None for d in declared):
                raise FileError(f"{name}: the Keras input {(None, *declared)} has sizes that are not fixed; give "
                                "--input-shape (torch layout, without the batch axis)")
            channels_last = len(declared) >= 2 and (data_format == "channels_last" if data_format
                                                    else len(declared) >= 3)
            shape = (declared[-1], *declared[:-1]) if channels_last else declared
        if "int" in str(tensor.dtype):
            vocabulary = min((layer.input_dim for layer in _layers(model) if type(layer).__name__ == "Embedding"),
                             default=2)
            arrays.append(rng.integers(0, vocabulary, size=(batch, *shape)).astype(str(tensor.dtype)))
        else:
            arrays.append(rng.uniform(-1.0, 1.0, size=(batch, *shape)).astype(np.float32))
        shapes.append([batch, *shape])
        layouts.append(channels_last)
    if len(set(layouts)) > 1:
        raise FileError(f"{name}: its inputs mix channels-first and channels-last layouts; this is not supported")
    return arrays, {"seed": seed, "batch": batch, "shapes": shapes if len(shapes) > 1 else shapes[0],
                    "channels_last": layouts[0]}


__all__ = ["verification_inputs"]

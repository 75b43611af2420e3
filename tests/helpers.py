"""Small helpers shared by the tests: seeded inputs and weight snapshots."""

from __future__ import annotations

from typing import Any

import numpy as np


def inputs(shape: tuple[int, ...], seed: int = 0, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(batch, *shape)).astype(np.float32)


def keras_snapshot(model: Any) -> list[np.ndarray]:
    return [np.array(w, copy=True) for w in model.get_weights()]


def torch_snapshot(module: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def same_weights(a: list[np.ndarray] | dict[str, np.ndarray], b: list[np.ndarray] | dict[str, np.ndarray]) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

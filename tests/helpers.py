"""Small helpers shared by the tests: seeded inputs, weight snapshots and the layers of a Keras model."""

from __future__ import annotations

from typing import Any

import numpy as np


def inputs(shape: tuple[int, ...], seed: int = 0, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(batch, *shape)).astype(np.float32)


def keras_layers(model: Any) -> list[tuple[str, dict[str, Any]]]:
    """The class name and config of each layer of a Keras model, its InputLayer left out: what a family built."""
    return [(type(layer).__name__, layer.get_config()) for layer in model.layers
            if type(layer).__name__ != "InputLayer"]


def keras_snapshot(model: Any) -> list[np.ndarray]:
    return [np.array(w, copy=True) for w in model.get_weights()]


def torch_snapshot(module: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def same_weights(a: list[np.ndarray] | dict[str, np.ndarray], b: list[np.ndarray] | dict[str, np.ndarray]) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def conforms(family: str, raw: dict[str, Any], seed: int = 11) -> list[Any]:
    """Hypothesis helper: a generated configuration passes in both directions.

    Configurations that the family refuses are discarded (``assume``), not failed. Returns the
    results, for tests that check more (reference distances).
    """
    from hypothesis import assume

    from conformance.cases import DIRECTIONS, Case
    from conformance.errors import CaseError
    from conformance.families import get_family
    from conformance.runner import run_case
    try:
        params = get_family(family).normalise(raw)
    except CaseError:
        assume(False)
        return []
    case = Case(id=f"{family}{raw}", family=family, params=params, file="<hypothesis>", seed=seed, batch=2,
                tolerance=None, divergences=(), layouts={})
    results = [run_case(case, direction) for direction in DIRECTIONS]
    for result in results:
        assume(not recorded_refusal(family, result))   # a refusal the catalogue records for this environment
        assert result.outcome == "passed", result.explain()
    return results


def recorded_refusal(family: str, result: Any) -> bool:
    """Whether ``result`` is a framework refusal that the family's case file records as [[unsupported]]
    for this environment (same framework, same words): generated parameters can reach it too."""
    from pathlib import Path

    from conformance.cases import load_file
    from conformance.facts import scope_facts
    from conformance.runner import installed_versions
    path = Path(__file__).resolve().parent.parent / "cases" / f"{family}.toml"
    if result.outcome != "error" or not path.is_file():
        return False
    records = {id(r): r for c in load_file(path) for r in c.divergences if r.kind == "unsupported"}.values()
    return any(r.applies_to(installed_versions(), scope_facts()) and r.message in result.message for r in records)


def tensorflow_backend_only(reason: str) -> Any:
    """Skip a test that shows TensorFlow-backend behaviour (a TensorFlow kernel, a bug of the TensorFlow
    backend's ops) on Keras's other backends, saying why."""
    import keras
    import pytest
    return pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                              reason=f"TensorFlow-backend behaviour ({reason}); Keras runs on "
                                     f"{keras.backend.backend()} here")


def check_naive(family: str, params: dict[str, Any], naive: Any, copy: Any = None, low: float = -1.0,
                high: float = 1.0) -> None:
    """The catalogue's pair passes; a naive Keras model ``naive(keras_input)`` given the same weights fails.

    The weights come from the correct Keras model unless ``copy(pair, naive_model)`` places them.
    """
    import keras

    import conformance
    from conformance.pair import randomize_torch
    pair = conformance.build_pair(family, **params)
    randomize_torch(pair.torch, 0)
    conformance.transfer_weights(pair.torch, pair.keras)
    x = np.random.default_rng(1).uniform(low, high, size=(2, *pair.input_shape)).astype(np.float32)
    tolerance = pair.family.tolerance(pair.params)
    good = conformance.compare(pair.torch, pair.keras, x, tolerance=tolerance, channels_last=pair.channels_last)
    assert good.passed, good.summary()
    inp = keras.Input(pair.keras_input_shape)
    model = keras.Model(inp, naive(inp))
    if copy is not None:
        copy(pair, model)
    else:
        model.set_weights(pair.keras.get_weights())
    bad = conformance.compare(pair.torch, model, x, tolerance=tolerance, channels_last=pair.channels_last)
    assert not bad.passed, f"the naive rule was not caught: {bad.summary()}"

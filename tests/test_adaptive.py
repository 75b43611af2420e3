"""Adaptive pooling for every output size: torch's bins, built from standard Keras layers.

These tests use the families of :mod:`conformance.families.adaptive` directly, so they hold whether or
not pool.py still registers its own adaptive families.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import CaseError, compare
from conformance.families import adaptive, get_family, pool
from conformance.families.base import Family, channels_last

FAMILIES = {f.name: f for f in adaptive.ALL_FAMILIES}


def build(name: str, **raw: Any) -> tuple[Family, dict[str, Any], torch.nn.Module, keras.Model]:
    family = FAMILIES[name]
    params = family.normalise(raw)
    inp = keras.Input(channels_last(params["input_shape"]))
    return family, params, family.build_torch(params).eval(), keras.Model(inp, family.build_keras(params, inp))


def conforms(name: str, seed: int = 0, **raw: Any) -> None:
    family, params, module, model = build(name, **raw)
    x = np.random.default_rng(seed).uniform(-1, 1, (2, *params["input_shape"])).astype(np.float32)
    result = compare(module, model, x, tolerance=family.tolerance(params), channels_last=True)
    assert result.passed, result.summary()
    expected = family.reference(x.astype(np.float64), {}, params)
    np.testing.assert_allclose(result.keras_output, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("length", "out"), [(12, 5), (12, 7), (11, 4), (5, 8), (7, 1), (6, 6), (3, 3)])
def test_bins_are_torchs(length: int, out: int) -> None:
    """Each bin read back from torch: pooling a one-hot input shows which outputs include that position."""
    eye = torch.eye(length, dtype=torch.float64).unsqueeze(1)               # (L, 1, L): position i is hot
    covered = torch.nn.functional.adaptive_max_pool1d(eye, out)[:, 0, :]     # (L, o): 1 where i is in bin j
    bins = [(int(np.flatnonzero(col)[0]), int(np.flatnonzero(col)[-1]) + 1) for col in covered.numpy().T]
    assert adaptive.adaptive_bins(length, out) == bins


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize(("n", "output_size", "input_shape"), [
    (1, 5, [3, 12]), (1, 16, [2, 11]), (1, 1, [2, 7]),
    (2, [5, 7], [3, 12, 12]), (2, [3, None], [2, 7, 10]), (2, [13, 4], [2, 12, 12]),
    (3, [3, 5, 2], [2, 6, 7, 9]), (3, [None, 4, 5], [2, 6, 8, 9]), (3, 2, [1, 5, 5, 5]),
])
def test_output_sizes_that_do_not_divide_conform(kind: str, n: int, output_size: Any, input_shape: list[int]) -> None:
    conforms(f"adaptive_{kind}_pool{n}d", output_size=output_size, input_shape=input_shape)


def test_sizes_that_divide_keep_the_single_pooling_layer() -> None:
    *_, model = build("adaptive_avg_pool2d", output_size=[3, 4], input_shape=[2, 12, 12])
    assert [type(layer).__name__ for layer in model.layers[1:]] == ["AveragePooling2D"]
    assert model.layers[1].pool_size == (4, 3)


def test_mixed_axes_pool_the_dividing_ones_first_with_standard_layers_only() -> None:
    *_, model = build("adaptive_max_pool2d", output_size=[3, 5], input_shape=[2, 12, 12])
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds[0] == "MaxPooling2D" and model.layers[1].pool_size == (4, 1)
    assert set(kinds) == {"MaxPooling2D", "Cropping2D", "Concatenate"}
    assert kinds.count("Cropping2D") == 5


def test_model_saves_and_loads_in_safe_mode(tmp_path: Path) -> None:
    *_, model = build("adaptive_avg_pool3d", output_size=[3, 5, 2], input_shape=[2, 6, 7, 9])
    path = tmp_path / "adaptive.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 6, 7, 9, 2)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(loaded(x)))


def test_a_uniform_pooling_guess_is_caught() -> None:
    """The naive rule: the nearest plain pooling layer (k = 3, s = 2 gives 5 outputs of 12) has other bins."""
    _, params, module, _ = build("adaptive_avg_pool2d", output_size=5, input_shape=[3, 12, 12])
    inp = keras.Input((12, 12, 3))
    guess = keras.Model(inp, keras.layers.AveragePooling2D(3, 2)(inp))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 12, 12)).astype(np.float32)
    result = compare(module, guess, x, tolerance=FAMILIES["adaptive_avg_pool2d"].tolerance(params),
                     channels_last=True)
    assert not result.passed and result.problem is None, result.summary()
    conforms("adaptive_avg_pool2d", output_size=5, input_shape=[3, 12, 12])


def test_max_pooling_over_overlapping_bins_is_caught_when_bins_are_disjoint() -> None:
    """Another naive rule: k = ceil(L/o) with s = floor(L/o) looks right for 12 -> 5 but is not."""
    _, params, module, _ = build("adaptive_max_pool1d", output_size=5, input_shape=[2, 12])
    inp = keras.Input((12, 2))
    guess = keras.Model(inp, keras.layers.MaxPooling1D(4, 2)(inp))
    x = np.random.default_rng(3).uniform(-1, 1, (4, 2, 12)).astype(np.float32)
    assert not compare(module, guess, x, tolerance=FAMILIES["adaptive_max_pool1d"].tolerance(params),
                       channels_last=True).passed


@pytest.mark.parametrize(("name", "raw", "field"), [
    ("adaptive_avg_pool1d", dict(output_size=None, input_shape=[3, 8]), "output_size"),
    ("adaptive_max_pool2d", dict(output_size=[2, 3, 4], input_shape=[3, 8, 8]), "output_size"),
    ("adaptive_avg_pool2d", dict(output_size=0, input_shape=[3, 8, 8]), "output_size"),
    ("adaptive_max_pool3d", dict(output_size=2, input_shape=[3, 8, 8]), "input_shape"),
    ("adaptive_avg_pool2d", dict(input_shape=[3, 8, 8]), "output_size"),
    ("adaptive_avg_pool2d", dict(output_size=2, input_shape=[3, 8, 8], ceil_mode=True), "ceil_mode"),
])
def test_invalid_params_name_the_field(name: str, raw: dict[str, Any], field: str) -> None:
    with pytest.raises(CaseError) as info:
        FAMILIES[name].normalise(raw)
    assert info.value.field == field, str(info.value)


def test_the_registry_serves_these_families_once_pool_py_lets_go() -> None:
    if any(f.name in FAMILIES for f in pool.FAMILIES):
        pytest.skip("pool.py still registers its adaptive families; delete them to switch over")
    assert all(get_family(name) is family for name, family in FAMILIES.items())


@st.composite
def adaptive_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    n = draw(st.sampled_from([1, 2, 3]))
    spatial = draw(st.lists(st.integers(1, 9 if n < 3 else 6), min_size=n, max_size=n))
    out = [draw(st.one_of(st.integers(1, 10), st.none())) if n > 1 else draw(st.integers(1, 10)) for _ in spatial]
    kind = draw(st.sampled_from(["avg", "max"]))
    return f"adaptive_{kind}_pool{n}d", dict(output_size=out, input_shape=[draw(st.integers(1, 3)), *spatial])


@settings(max_examples=30)
@given(adaptive_configs())
def test_random_adaptive_configurations_conform(config: tuple[str, dict[str, Any]]) -> None:
    name, raw = config
    conforms(name, seed=5, **raw)

"""compare(): element-wise, unsorted, absolute differences, explicit NaN handling, layout moves."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from helpers import inputs
from torch import nn

import conformance
from conformance.comparison import compare_arrays, default_tolerance
from conformance.families.base import Tolerance
from conformance.pair import randomize_torch

TOL = Tolerance(1e-5, 1e-4, "test")


def test_identical_arrays_pass_with_zero_headroom() -> None:
    a = np.random.default_rng(0).normal(size=(2, 3, 4))
    result = compare_arrays(a, a.copy(), TOL)
    assert result.passed and result.max_abs_error == 0 and result.headroom == 0


def test_a_permuted_output_fails_even_though_sorted_values_match() -> None:
    a = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    b = a[:, ::-1].copy()
    assert np.array_equal(np.sort(a, axis=None), np.sort(b, axis=None))
    result = compare_arrays(a, b, TOL)
    assert not result.passed and result.headroom > 1


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_errors_of_either_sign_are_caught(sign: float) -> None:
    a = np.zeros((3, 3), np.float32)
    b = a.copy()
    b[1, 2] = sign * 1e-3
    result = compare_arrays(a, b, TOL)
    assert not result.passed
    assert result.worst_index == (1, 2) and result.keras_value == pytest.approx(sign * 1e-3)
    assert result.max_abs_error == pytest.approx(1e-3)
    assert "index (1, 2)" in result.summary()


def test_nan_must_appear_on_both_sides_at_the_same_place() -> None:
    a = np.array([1.0, np.nan, 3.0])
    assert compare_arrays(a, a.copy(), TOL).passed
    b = np.array([1.0, 2.0, 3.0])
    result = compare_arrays(a, b, TOL)
    assert not result.passed and "NaN at index (1,)" in (result.problem or "")
    assert not compare_arrays(b, a, TOL).passed


def test_infinities_must_match_exactly() -> None:
    a = np.array([-np.inf, 1.0])
    assert compare_arrays(a, a.copy(), TOL).passed
    assert not compare_arrays(a, np.array([np.inf, 1.0]), TOL).passed
    assert not compare_arrays(a, np.array([-3e38, 1.0]), TOL).passed


def test_shape_mismatch_fails_with_both_shapes() -> None:
    result = compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)), TOL)
    assert not result.passed and math.isinf(result.headroom)
    assert result.problem == "output shapes differ: torch (2, 3), keras (3, 2)"


def test_relative_tolerance_scales_with_magnitude() -> None:
    big = np.array([1000.0])
    assert compare_arrays(big, big + 0.05, TOL).passed          # 0.05 <= 1e-5 + 1e-4 * 1000
    assert not compare_arrays(big, big + 0.2, TOL).passed


def test_default_tolerance_grows_with_the_largest_fan_in() -> None:
    small, large = default_tolerance(nn.Linear(4, 2)), default_tolerance(nn.Conv2d(64, 8, 3))
    assert small.atol == pytest.approx(1e-5 * 2) and large.atol == pytest.approx(1e-5 * math.sqrt(64 * 9))


def test_compare_moves_spatial_inputs_to_channels_last_and_outputs_back() -> None:
    pair = conformance.build_pair("conv2d", in_channels=3, out_channels=4, kernel_size=3, input_shape=(3, 7, 9))
    randomize_torch(pair.torch, 0)
    conformance.transfer_weights(pair.torch, pair.keras)
    result = conformance.compare(pair.torch, pair.keras, inputs((3, 7, 9)))
    assert result.passed, result.summary()
    assert result.torch_output is not None and result.torch_output.shape == (2, 4, 5, 7)


def test_compare_leaves_sequence_inputs_alone() -> None:
    torch_model = nn.Linear(6, 3)
    keras_model = keras.Sequential([keras.Input((5, 6)), keras.layers.Dense(3)])
    conformance.transfer_weights(torch_model, keras_model)
    assert conformance.compare(torch_model, keras_model, inputs((5, 6))).passed


def test_ambiguous_shapes_are_resolved_by_the_first_keras_layer() -> None:
    """(N, 5, 5) fits both readings; an LSTM reads sequences as they are, a Conv2D channels-last."""
    lstm = conformance.build_pair("lstm", input_size=5, hidden_size=4, batch_first=True, input_shape=(5, 5))
    randomize_torch(lstm.torch, 0)
    conformance.transfer_weights(lstm.torch, lstm.keras)
    assert conformance.compare(lstm.torch, lstm.keras, lstm.sample_input(1)).passed
    conv = conformance.build_pair("conv2d", in_channels=4, out_channels=4, kernel_size=3, input_shape=(4, 4, 4))
    randomize_torch(conv.torch, 0)
    conformance.transfer_weights(conv.torch, conv.keras)
    assert conformance.compare(conv.torch, conv.keras, conv.sample_input(1)).passed


def test_a_permuted_flatten_dense_fails_by_a_wide_margin_on_tiny_outputs() -> None:
    """With Keras-like small weights the outputs peak near 1e-3; an unscaled absolute floor let the classic
    Flatten -> Dense bug pass within a few times the tolerance. Scaled by the output's magnitude, it fails
    by orders of magnitude, and the right conversion still passes."""
    import keras
    import torch
    from torch import nn

    import conformance
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 5, 4)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.05)
    inp = keras.Input((6, 5, 3))
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(
        keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp))))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 6, 5)).astype(np.float32)
    conformance.transfer_weights(net, model)
    right = conformance.compare(net, model, x)
    assert right.passed and right.scale < 0.1, right.summary()
    assert "scaled by the output's magnitude" in right.summary()
    conv, dense = net[0], net[3]
    model.layers[1].set_weights([conv.weight.detach().numpy().transpose(2, 3, 1, 0), conv.bias.detach().numpy()])
    model.layers[3].set_weights([dense.weight.detach().numpy().T, dense.bias.detach().numpy()])   # rows unpermuted
    wrong = conformance.compare(net, model, x)
    assert not wrong.passed and wrong.headroom > 50, wrong.summary()       # was 6 with an unscaled floor

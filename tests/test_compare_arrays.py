"""comparison.py's arithmetic, exactly: headroom, the allowed error, the scaled floor, NaN, infinities,
several outputs, layout moves. NumPy only (no torch, no Keras), so mutation testing can run it in about a
second per mutant (scripts/mutation.py, the ``fast`` stage); tests/test_compare.py covers compare() on
real models. Values are float64 and chosen so that every expected number is exact or nearly so.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from conformance import comparison
from conformance.comparison import Comparison, compare_arrays
from conformance.families.base import Tolerance

TOL = Tolerance(1e-5, 1e-4, "test")


def test_headroom_is_the_error_over_atol_plus_rtol_times_torch() -> None:
    t = np.array([0.5, -2.0])
    result = compare_arrays(t, t + np.array([1e-4, 0.0]), TOL)
    assert not result.passed and not result
    assert result.allowed_error == pytest.approx(1e-5 + 1e-4 * 0.5)
    assert result.headroom == pytest.approx(1e-4 / 6e-5)
    assert result.max_abs_error == pytest.approx(1e-4) and result.max_rel_error == pytest.approx(2e-4)
    assert result.worst_index == (0,) and result.torch_value == 0.5 and result.keras_value == pytest.approx(0.5001)
    assert result.scale == 1.0 and result.problem is None


def test_an_error_equal_to_the_allowed_error_passes() -> None:
    t = np.array([0.0, 1.0])
    at_limit = compare_arrays(t, np.array([1e-5, 1.0]), TOL)
    assert at_limit.passed and at_limit.headroom == pytest.approx(1.0)
    assert not compare_arrays(t, np.array([1.0001e-5, 1.0]), TOL).passed


def test_the_worst_element_is_the_worst_ratio_not_the_largest_error() -> None:
    t = np.array([[100.0, 0.0]])
    result = compare_arrays(t, t + np.array([[5e-3, 5e-5]]), TOL)   # 5e-3 < 1e-5 + 1e-2; 5e-5 = 5 x 1e-5
    assert result.worst_index == (0, 1) and result.headroom == pytest.approx(5.0)
    assert result.max_abs_error == pytest.approx(5e-3)


def test_the_floor_follows_small_outputs_down_to_the_element_wise_atol() -> None:
    t = np.full(4, 2e-3)
    loose = Tolerance(1e-3, 0.0, "test", scaled=True)
    result = compare_arrays(t, t + 2e-5, loose)     # floor max(1e-3 * 2e-3, 1e-5) = 1e-5
    assert result.scale == pytest.approx(1e-2) and result.allowed_error == pytest.approx(1e-5)
    assert result.headroom == pytest.approx(2.0) and "scaled by the output's magnitude" in result.summary()
    mid = np.full(4, 0.5)
    assert compare_arrays(mid, mid + 5e-4, loose).scale == pytest.approx(0.5)
    assert compare_arrays(mid, mid + 5e-4, loose).allowed_error == pytest.approx(5e-4)
    tight = Tolerance(1e-6, 0.0, "test", scaled=True)   # below the element-wise floor: never raised to it
    assert compare_arrays(t, t + 2e-6, tight).allowed_error == pytest.approx(1e-6)
    big = np.full(2, 8.0)
    assert compare_arrays(big, big, loose).scale == 1.0
    unscaled = Tolerance(1e-3, 0.0, "written for cancellation")   # not a plain reduction: never scaled
    assert compare_arrays(t, t + 2e-5, unscaled).allowed_error == pytest.approx(1e-3)


def test_an_exact_tolerance_allows_nothing_but_gives_a_finite_headroom() -> None:
    exact = Tolerance.exact()
    t = np.array([-0.5, 0.25])
    same = compare_arrays(t, t.copy(), exact)
    assert same.passed and same.headroom == 0 and same.scale == 1.0
    off = compare_arrays(t, np.array([-0.5, 0.2500001]), exact)
    assert not off.passed and math.isfinite(off.headroom) and off.headroom > 1e300 and off.worst_index == (1,)


def test_nan_on_both_sides_is_left_out_and_the_rest_still_counts() -> None:
    t = np.array([np.nan, 1.0, 2.0])
    assert compare_arrays(t, t.copy(), TOL).passed
    result = compare_arrays(t, np.array([np.nan, 1.5, 2.0]), TOL)
    assert not result.passed and result.problem is None and result.worst_index == (1,)
    assert result.max_abs_error == pytest.approx(0.5)


def test_nan_on_one_side_names_the_first_such_index() -> None:
    t = np.array([[1.0, 2.0], [3.0, np.nan]])
    result = compare_arrays(t, np.array([[1.0, np.nan], [3.0, 4.0]]), TOL)
    assert not result.passed and result.worst_index == (0, 1) and math.isinf(result.headroom)
    assert result.allowed_error == 0 and math.isinf(result.max_abs_error) and math.isinf(result.max_rel_error)
    assert result.problem == "NaN at index (0, 1) on one side only: torch 2.0, keras nan"
    assert result.summary().startswith("FAILED: NaN at index (0, 1)")


def test_infinities_count_only_when_they_differ() -> None:
    t = np.array([np.inf, -np.inf, 1.0])
    same = compare_arrays(t, t.copy(), TOL)
    assert same.passed and same.max_abs_error == 0
    flipped = compare_arrays(t, np.array([np.inf, np.inf, 1.0]), TOL)
    assert not flipped.passed and math.isinf(flipped.headroom) and flipped.worst_index == (1,)
    assert compare_arrays(np.array([1.0, 3.0]), np.array([1.0, np.inf]), TOL).worst_index == (1,)
    assert not compare_arrays(np.array([np.inf, 1.0]), np.array([1.0, 1.0]), TOL).passed   # torch inf, Keras not


def test_an_error_of_exactly_one_counts() -> None:
    result = compare_arrays(np.array([0.0, 0.5]), np.array([1.0, 0.5]), TOL)
    assert not result.passed and result.headroom == pytest.approx(1 / 1e-5) and result.worst_index == (0,)


def test_infinities_do_not_count_as_magnitude() -> None:
    t = np.array([np.inf, 2e-3, -2e-3])
    assert compare_arrays(t, t.copy(), Tolerance(1e-3, 0.0, "test", scaled=True)).scale == pytest.approx(1e-2)


def test_empty_and_mismatched_outputs() -> None:
    empty = compare_arrays(np.zeros((0, 3)), np.zeros((0, 3)), TOL)
    assert empty.passed and empty.headroom == 0 and empty.allowed_error == TOL.atol
    assert empty.scale == 1.0 and "scaled" not in empty.summary()
    assert empty.max_abs_error == 0 and empty.max_rel_error == 0
    wrong = compare_arrays(np.zeros(6), np.zeros((2, 3)), TOL)
    assert not wrong.passed and math.isinf(wrong.max_abs_error) and math.isinf(wrong.headroom)
    assert wrong.allowed_error == 0 and math.isinf(wrong.max_rel_error)
    assert wrong.problem == "output shapes differ: torch (6,), keras (2, 3)"


def test_relative_error_of_a_zero_uses_the_smallest_float32() -> None:
    result = compare_arrays(np.array([0.0, 1.0]), np.array([1e-30, 1.0]), TOL)
    assert result.passed and result.max_rel_error == pytest.approx(1e-30 / np.finfo(np.float32).tiny)


def _part(headroom_error: float, problem: bool = False) -> Comparison:
    t = np.array([1.0, 2.0])
    if problem:
        return compare_arrays(t, np.array([1.0, np.nan]), TOL)
    return compare_arrays(t, t + np.array([0.0, headroom_error]), TOL)


def test_several_outputs_are_each_judged_and_the_worst_is_reported() -> None:
    combined = comparison._combine([_part(0.0), _part(1e-2), _part(1e-6)])
    assert not combined.passed and combined.output == 1
    assert combined.headroom == pytest.approx(1e-2 / (1e-5 + 2e-4))
    assert combined.max_abs_error == pytest.approx(1e-2) and combined.problem is None
    assert len(combined.torch_outputs or []) == 3 and len(combined.keras_outputs or []) == 3
    assert "worst in output 1" in combined.summary()
    assert comparison._combine([_part(0.0), _part(1e-6)]).passed
    assert not comparison._combine([_part(1e-2), _part(0.0)]).passed
    broken = comparison._combine([_part(0.0), _part(0.0, problem=True)])
    assert not broken.passed and broken.problem is not None and broken.problem.startswith("output 1: NaN")


def test_outputs_are_flattened_in_order_and_none_dropped() -> None:
    a, b, c, d = (np.full(1, float(i)) for i in range(4))
    flat = comparison._flatten_outputs((a, [b, None, {"x": c, "y": (d,)}]))
    assert [float(x[0]) for x in flat] == [0.0, 1.0, 2.0, 3.0]
    assert comparison._flatten_outputs(None) == []


def test_channels_move_only_for_feature_maps() -> None:
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    last = comparison._move_channels(x, to_last=True)
    assert last.shape == (2, 4, 5, 3) and np.array_equal(comparison._move_channels(last, to_last=False), x)
    assert comparison._move_channels(x[:, :, 0, 0], to_last=True).shape == (2, 3)


def _keras_like(shape: tuple[Any, ...] | None, data_format: str | None = None, *more: tuple[Any, ...]) -> Any:
    """A stand-in with what _keras_input_is_channels_last reads: the inputs' shapes and the first one's consumer."""
    if shape is None:
        return SimpleNamespace(inputs=[])
    consumer = SimpleNamespace(operation=SimpleNamespace(data_format=data_format) if data_format
                               else SimpleNamespace())
    history = SimpleNamespace(operation=SimpleNamespace(_outbound_nodes=[consumer]))
    return SimpleNamespace(inputs=[SimpleNamespace(shape=(None, *shape), _keras_history=history),
                                   *(SimpleNamespace(shape=(None, *m)) for m in more)])


@pytest.mark.parametrize(("declared", "data_format", "expected"), [
    ((5, 6, 3), None, True),                  # only channels-last fits
    ((3, 5, 6), None, False),                 # only channels-first fits
    ((3, 3, 3), "channels_last", True),       # both fit: the first layer decides
    ((3, 3, 3), "channels_first", False),
    ((3, 3, 3), None, False),                 # both fit, a layer without data_format: as it is
    ((None, None, 3), None, True),            # free sizes fit
    ((7, 7), None, False),                    # another rank fits neither: the first layer decides
    ((5, 6, 3), None, False),                 # larger than either reading: fits neither
    ((5, 6, 3, 1), None, False),              # another rank: fits neither, even where a prefix agrees
    ((5, 6), None, False),                    # a lower rank too
])
def test_the_keras_input_layout_is_read_from_the_model(declared: tuple[Any, ...], data_format: str | None,
                                                        expected: bool) -> None:
    shape = (2, 3, 3, 3) if declared == (3, 3, 3) else (2, 3, 5, 6) if declared != (None, None, 3) else (2, 3, 4, 4)
    if declared == (7, 7):
        shape = (2, 3, 7)
    if declared == (5, 6, 3) and not expected:
        shape = (2, 3, 4, 5)
    if declared in ((5, 6, 3, 1), (5, 6)):
        shape = (2, 3, 5, 6)
    assert comparison._keras_input_is_channels_last(_keras_like(declared, data_format), shape) is expected


def test_without_a_readable_model_only_images_move() -> None:
    assert comparison._keras_input_is_channels_last(_keras_like(None), (2, 3, 4, 5)) is True
    assert comparison._keras_input_is_channels_last(_keras_like(None), (2, 3, 4, 5, 6)) is True
    assert comparison._keras_input_is_channels_last(_keras_like(None), (2, 3, 4)) is False
    assert comparison._keras_input_is_channels_last(_keras_like((4, 3)), (2, 3, 4)) is True
    assert comparison._keras_input_is_channels_last(_keras_like((5,)), (2, 5)) is False


def test_default_tolerance_takes_the_largest_fan_in() -> None:
    model = SimpleNamespace(parameters=lambda: [np.zeros(7), np.zeros((4, 3, 3, 3)), np.zeros((8, 50))])
    assert comparison.default_tolerance(model).atol == pytest.approx(1e-5 * math.sqrt(50))
    flat = comparison.default_tolerance(SimpleNamespace(parameters=lambda: [np.zeros(3)]))
    assert flat.atol == 1e-5 and "reduction over 1 terms" in flat.reason


def test_summary_says_what_was_compared() -> None:
    passed = compare_arrays(np.array([1.0]), np.array([1.0]), TOL)
    assert passed.summary().startswith("passed: max abs error 0") and "scaled" not in passed.summary()
    assert "worst at index (0,): torch 1.0, keras 1.0" in passed.summary()


def test_the_repr_stays_short_without_the_arrays() -> None:
    big = np.zeros((64, 64))
    result = comparison._combine([compare_arrays(big, big, TOL), compare_arrays(big, big, TOL)])
    assert len(repr(result)) < 600 and "array(" not in repr(result)


def test_the_first_keras_input_decides_and_vectors_never_move() -> None:
    """With several inputs the first one's declared shape is read; a (N, F) input never moves, even when
    the first layer is channels-last (a Flatten has a data_format too)."""
    two = _keras_like((5, 6, 3), None, (7,))
    assert comparison._keras_input_is_channels_last(two, (2, 3, 5, 6)) is True
    assert comparison._keras_input_is_channels_last(_keras_like((6,), "channels_last"), (2, 6)) is False
    first_decides = _keras_like((3, 3, 3), "channels_first", (4,))     # both readings fit: ask the first input
    assert comparison._keras_input_is_channels_last(first_decides, (2, 3, 3, 3)) is False
    two_readers = _keras_like((3, 3, 3), "channels_first")             # ... and its first reader
    nodes = two_readers.inputs[0]._keras_history.operation._outbound_nodes
    nodes.append(SimpleNamespace(operation=SimpleNamespace(data_format="channels_last")))
    assert comparison._keras_input_is_channels_last(two_readers, (2, 3, 3, 3)) is False


def test_outputs_masked_everywhere_have_no_error() -> None:
    t = np.array([np.nan, np.inf])
    result = compare_arrays(t, t.copy(), TOL)
    assert result.passed and result.max_abs_error == 0 and result.headroom == 0


def test_a_comparison_is_an_immutable_value() -> None:
    import dataclasses
    result = compare_arrays(np.zeros(2), np.zeros(2), TOL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.passed = False  # type: ignore[misc]

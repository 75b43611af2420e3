"""What the pooling families build on the Keras side, for configurations the catalogue does not hold."""

from __future__ import annotations

import pytest
from helpers import inputs, keras_layers

import conformance


def _kinds(pair: conformance.Pair) -> list[str]:
    return [kind for kind, _ in keras_layers(pair.keras)]


@pytest.mark.parametrize("dimensions", [1, 2])
def test_a_dilated_max_pool_with_a_kernel_of_one_is_one_strided_tap(dimensions: int) -> None:
    """Dilation with kernel 1 reads one element per window: a single crop, no Maximum of one input."""
    shape = (2,) + (7,) * dimensions
    pair = conformance.build_pair(f"max_pool{dimensions}d", kernel_size=1, stride=2, dilation=2, input_shape=shape)
    kinds = _kinds(pair)
    assert "Maximum" not in kinds and kinds.count(f"MaxPooling{dimensions}D") == 1
    x = inputs(shape, batch=3)
    result = conformance.compare(pair.torch, pair.keras, x)
    assert result.passed, result.summary()
    assert result.max_abs_error == 0.0


@pytest.mark.parametrize(("padding", "count_include_pad", "expected"), [
    (0, True, ["AveragePooling2D"]),
    (0, False, ["AveragePooling2D"]),                       # nothing padded: nothing to leave out of the count
    (1, True, ["ZeroPadding2D", "AveragePooling2D"]),       # zeros counted: Keras's own average
])
def test_average_pooling_is_plain_keras_where_the_counts_agree(padding: int, count_include_pad: bool,
                                                               expected: list[str]) -> None:
    """Only where torch's divisor differs from the window size (padding left out of the count, ceil_mode's extra
    positions) is the average built as a sum divided by a count; elsewhere it is Keras's own layers."""
    pair = conformance.build_pair("avg_pool2d", kernel_size=3, stride=2, padding=padding,
                                  count_include_pad=count_include_pad, input_shape=(2, 9, 9))
    assert _kinds(pair) == expected
    x = inputs((2, 9, 9), batch=3)
    assert conformance.compare(pair.torch, pair.keras, x).passed


def test_average_pooling_without_the_padding_in_the_count_divides_by_torchs_count() -> None:
    pair = conformance.build_pair("avg_pool2d", kernel_size=3, stride=2, padding=1, count_include_pad=False,
                                  input_shape=(2, 9, 9))
    assert "ZeroPadding2D" not in _kinds(pair)
    x = inputs((2, 9, 9), batch=3)
    assert conformance.compare(pair.torch, pair.keras, x).passed


@pytest.mark.parametrize("padding", [0, 1])
def test_a_max_pool_without_dilation_is_one_keras_max_pooling(padding: int) -> None:
    """The strided crops and their Maximum are for dilation only; padding is a -inf pad op, not a layer."""
    pair = conformance.build_pair("max_pool2d", kernel_size=3, stride=2, padding=padding, input_shape=(2, 9, 9))
    assert _kinds(pair) == ["MaxPooling2D"]


def test_average_pooling_pads_each_axis_by_its_own_amount() -> None:
    pair = conformance.build_pair("avg_pool2d", kernel_size=(3, 5), stride=2, padding=(1, 2), input_shape=(2, 9, 9))
    assert dict(keras_layers(pair.keras))["ZeroPadding2D"]["padding"] == ((1, 1), (2, 2))
    x = inputs((2, 9, 9), batch=3)
    assert conformance.compare(pair.torch, pair.keras, x).passed

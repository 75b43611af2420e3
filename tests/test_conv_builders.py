"""What the conv families build on the Keras side: the layers, not only the numbers they give. A needless layer
(a subsampling pool of stride 1, a padding of 0) leaves the outputs unchanged, so only these tests see it."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import keras_layers

import conformance


def _layers(family: str, **params: Any) -> list[tuple[str, dict[str, Any]]]:
    return keras_layers(conformance.build_pair(family, **params).keras)


def _kinds(family: str, **params: Any) -> list[str]:
    return [kind for kind, _ in _layers(family, **params)]


def test_dilation_with_stride_one_needs_no_subsampling() -> None:
    assert _kinds("conv2d", in_channels=2, out_channels=3, kernel_size=3, dilation=2,
                  input_shape=(2, 9, 9)) == ["Conv2D"]


def test_dilation_with_a_stride_is_a_stride_one_conv_then_subsampling() -> None:
    """Keras refuses strides > 1 with dilation_rate > 1 on a plain convolution."""
    (conv_kind, conv), (pool_kind, pool) = _layers("conv2d", in_channels=2, out_channels=3, kernel_size=3,
                                                   stride=(2, 1), dilation=2, input_shape=(2, 9, 9))
    assert (conv_kind, tuple(conv["strides"]), tuple(conv["dilation_rate"])) == ("Conv2D", (1, 1), (2, 2))
    assert (pool_kind, tuple(pool["pool_size"]), tuple(pool["strides"])) == ("MaxPooling2D", (1, 1), (2, 1))


@pytest.mark.parametrize(("in_channels", "out_channels", "groups", "expected"), [
    (4, 8, 4, "DepthwiseConv2D"),      # groups == in_channels > 1: depthwise, multiplier 2
    (2, 2, 2, "DepthwiseConv2D"),      # the smallest depthwise: two channels, multiplier 1
    (1, 3, 1, "Conv2D"),               # groups == in_channels == 1 is a plain convolution
    (4, 4, 2, "Conv2D"),               # grouped, not depthwise
])
def test_depthwise_only_when_each_channel_is_its_own_group(in_channels: int, out_channels: int, groups: int,
                                                          expected: str) -> None:
    (kind, config), = _layers("conv2d", in_channels=in_channels, out_channels=out_channels, kernel_size=3,
                              groups=groups, input_shape=(in_channels, 6, 6))
    assert kind == expected
    if kind == "DepthwiseConv2D":
        assert config["depth_multiplier"] == out_channels // in_channels
    else:
        assert config["groups"] == groups


def test_depthwise_3d_is_a_grouped_conv3d() -> None:
    """Keras has no DepthwiseConv3D."""
    (kind, config), = _layers("conv3d", in_channels=3, out_channels=6, kernel_size=2, groups=3,
                              input_shape=(3, 4, 4, 4))
    assert (kind, config["groups"], config["filters"]) == ("Conv3D", 3, 6)


def test_an_int_pad_is_explicit_zero_padding_then_valid() -> None:
    (pad_kind, pad), (conv_kind, conv) = _layers("conv2d", in_channels=2, out_channels=3, kernel_size=3,
                                                 padding=(1, 2), input_shape=(2, 6, 6))
    assert (pad_kind, pad["padding"], conv_kind, conv["padding"]) == ("ZeroPadding2D", ((1, 1), (2, 2)),
                                                                      "Conv2D", "valid")
    (pad_kind, pad), _ = _layers("conv1d", in_channels=2, out_channels=3, kernel_size=3, padding=2,
                                 input_shape=(2, 6))
    assert (pad_kind, tuple(pad["padding"])) == ("ZeroPadding1D", (2, 2))
    assert _kinds("conv2d", in_channels=2, out_channels=3, kernel_size=3, input_shape=(2, 6, 6)) == ["Conv2D"]
    (kind, config), = _layers("conv2d", in_channels=2, out_channels=3, kernel_size=3, padding="same",
                              input_shape=(2, 6, 6))
    assert (kind, config["padding"]) == ("Conv2D", "same")

"""The catalogue's rules are not decoration: applying the naive rule instead makes compare() fail.

Each test builds the correct pair, then a Keras counterpart made the way a hurried converter
would, with the very same weights, and checks that the naive version is caught while the
correct one passes.
"""

from __future__ import annotations

from typing import Any

import keras
from helpers import check_naive

L = keras.layers


def test_conv_kernel_transposed_the_wrong_way() -> None:
    def copy(pair: Any, model: keras.Model) -> None:
        w = pair.torch.weight.detach().numpy()
        model.layers[-1].set_weights([w.transpose(3, 2, 1, 0), pair.torch.bias.detach().numpy()])
    check_naive("conv2d", dict(in_channels=4, out_channels=4, kernel_size=3, input_shape=(4, 8, 8)),
                lambda x: L.Conv2D(4, 3)(x), copy)


def test_int_padding_mapped_to_same_with_stride_2() -> None:
    check_naive("conv2d", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1,
                               input_shape=(3, 8, 8)),
                lambda x: L.Conv2D(4, 3, strides=2, padding="same")(x))


def test_max_pool_padded_with_zeros_instead_of_minus_infinity() -> None:
    check_naive("max_pool2d", dict(kernel_size=3, stride=2, padding=1, input_shape=(3, 8, 8)),
                lambda x: L.MaxPooling2D(3, 2)(L.ZeroPadding2D(1)(x)))


def test_max_pool_padding_mapped_to_same() -> None:
    check_naive("max_pool2d", dict(kernel_size=3, stride=2, padding=1, input_shape=(3, 8, 8)),
                lambda x: L.MaxPooling2D(3, 2, padding="same")(x))


def test_avg_pool_count_include_pad_false_mapped_to_zero_padding() -> None:
    check_naive("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, input_shape=(3, 9, 9)),
                lambda x: L.AveragePooling2D(3, 2)(L.ZeroPadding2D(1)(x)))


def test_avg_pool_count_include_pad_true_mapped_to_same() -> None:
    check_naive("avg_pool2d", dict(kernel_size=3, stride=1, padding=1, input_shape=(3, 9, 9)),
                lambda x: L.AveragePooling2D(3, 1, padding="same")(x))


def test_ceil_mode_ignored() -> None:
    check_naive("max_pool2d", dict(kernel_size=2, stride=2, ceil_mode=True, input_shape=(3, 9, 9)),
                lambda x: L.MaxPooling2D(2, 2)(x))


def test_batch_norm_with_keras_default_epsilon() -> None:
    check_naive("batch_norm2d", dict(num_features=4, input_shape=(4, 5, 5)),
                lambda x: L.BatchNormalization()(x))


def test_softmax_axis_not_moved_with_the_layout() -> None:
    check_naive("softmax", dict(dim=1, input_shape=(3, 4, 5)), lambda x: L.Softmax(axis=1)(x))


def test_flatten_without_returning_to_channels_first() -> None:
    check_naive("flatten", dict(input_shape=(3, 4, 5)), lambda x: L.Flatten()(x))


def test_depthwise_kernel_reshaped_in_the_wrong_order() -> None:
    def copy(pair: Any, model: keras.Model) -> None:
        w = pair.torch.weight.detach().numpy()            # (C*M, 1, kh, kw), channel-major
        wrong = w.reshape(2, 3, 3, 3).transpose(2, 3, 1, 0)  # read as (M, C): multiplier-major
        model.layers[-1].set_weights([wrong, pair.torch.bias.detach().numpy()])
    check_naive("conv2d", dict(in_channels=3, out_channels=6, kernel_size=3, groups=3, input_shape=(3, 8, 8)),
                lambda x: L.DepthwiseConv2D(3, depth_multiplier=2)(x), copy)


def test_dilated_max_pool_without_dilation() -> None:
    check_naive("max_pool2d", dict(kernel_size=2, stride=1, dilation=2, input_shape=(3, 8, 8)),
                lambda x: L.MaxPooling2D(3, 1)(x))

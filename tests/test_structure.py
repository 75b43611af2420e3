"""Structural checks at transfer: pairs that would differ even with identical weights are refused, before
anything is written, with a fix for the side being written into."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import torch
from torch import nn

import conformance
from conformance import ConversionError

L = keras.layers


def _refused(torch_model: nn.Module, keras_model: Any, into_keras: str, into_torch: str) -> None:
    """Both directions refuse, each naming the fix on its destination; neither writes anything."""
    keras_before = [w.copy() for w in keras_model.get_weights()]
    torch_before = {k: v.clone() for k, v in torch_model.state_dict().items()}
    with pytest.raises(ConversionError) as info:
        conformance.transfer_weights(torch_model, keras_model)
    assert into_keras in str(info.value), str(info.value)
    with pytest.raises(ConversionError) as info:
        conformance.transfer_weights(keras_model, torch_model)
    assert into_torch in str(info.value), str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(keras_before, keras_model.get_weights(), strict=True))
    assert all(torch.equal(v, torch_model.state_dict()[k]) for k, v in torch_before.items())


def _conv_net(stride: int, padding: Any) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=stride, padding=padding), nn.ReLU(), nn.Flatten(),
                         nn.LazyLinear(5)).eval()


def _keras_conv(strides: int, padding: str, size: int = 8) -> Any:
    inp = keras.Input((size, size, 3))
    x = L.Conv2D(4, 3, strides=strides, padding=padding, activation="relu")(inp)
    return keras.Model(inp, L.Dense(5)(L.Flatten()(x)))


def _materialised(net: nn.Module, size: int) -> nn.Module:
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    return net


def test_stride_2_padding_1_against_stride_1() -> None:
    net = _materialised(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)).eval(), 8)
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, strides=1, padding="same")])
    _refused(net, model, "build the Keras layer with strides=(2, 2)", "set the torch layer's stride=(1, 1)")


def test_stride_2_padding_1_against_same_on_an_even_input() -> None:
    """"same" with stride 2 on an even size pads 0 before and 1 after; padding=1 pads 1 and 1."""
    net = _materialised(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)).eval(), 8)
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, strides=2, padding="same")])
    _refused(net, model, "pad by (1 before/1 after, 1 before/1 after) with ZeroPadding2D",
             "pad the torch input by (0 before/1 after, 0 before/1 after) before the conv")


def test_same_padding_resolved_on_an_odd_input_agrees() -> None:
    """On an odd size "same" with stride 2 pads 1 and 1, exactly what padding=1 does: no refusal."""
    net = _materialised(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)).eval(), 9)
    model = keras.Sequential([keras.Input((9, 9, 3)), L.Conv2D(4, 3, strides=2, padding="same")])
    conformance.transfer_weights(net, model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 9, 9)).astype(np.float32)
    assert conformance.compare(net, model, x).passed


def _keras_conv_on(size: int, layer: Any) -> Any:
    return keras.Sequential([keras.Input((size, size, 4)), layer])


@pytest.mark.parametrize("torch_dilation, keras_dilation", [(2, 1), (1, 2)])
def test_dilation_differs_either_way(torch_dilation: int, keras_dilation: int) -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, dilation=torch_dilation, padding=torch_dilation)).eval()
    model = _keras_conv_on(9, L.Conv2D(4, 3, padding="same", dilation_rate=keras_dilation))
    _refused(net, model, f"build the Keras layer with dilation_rate={(torch_dilation,) * 2}",
             f"set the torch layer's dilation={(keras_dilation,) * 2}")
    depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, dilation=torch_dilation, padding=torch_dilation, groups=4)).eval()
    model = _keras_conv_on(9, L.DepthwiseConv2D(3, padding="same", dilation_rate=keras_dilation))
    _refused(depthwise, model, f"build the Keras layer with dilation_rate={(torch_dilation,) * 2}",
             f"set the torch layer's dilation={(keras_dilation,) * 2}")


@pytest.mark.parametrize("torch_groups, keras_groups", [(2, 1), (1, 2)])
def test_groups_differ_either_way(torch_groups: int, keras_groups: int) -> None:
    """Named as groups, before the kernels' shapes (which differ too) are compared."""
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=torch_groups)).eval()
    model = _keras_conv_on(9, L.Conv2D(4, 3, padding="same", groups=keras_groups))
    _refused(net, model, f"groups {torch_groups} vs groups {keras_groups}; build the Keras layer with "
                         f"groups={torch_groups}", f"set the torch layer's groups={keras_groups}")


@pytest.mark.parametrize("groups", [1, 2])
def test_a_conv_with_fewer_groups_than_channels_is_not_depthwise(groups: int) -> None:
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=groups)).eval()
    model = _keras_conv_on(9, L.DepthwiseConv2D(3, padding="same", depth_multiplier=2))
    message = f"groups={groups} is not depthwise (in_channels=4)"
    _refused(net, model, message, message)


@pytest.mark.parametrize("out_channels, multiplier", [(4, 2), (8, 1)])
def test_depth_multiplier_differs_either_way(out_channels: int, multiplier: int) -> None:
    net = nn.Sequential(nn.Conv2d(4, out_channels, 3, padding=1, groups=4)).eval()
    model = _keras_conv_on(9, L.DepthwiseConv2D(3, padding="same", depth_multiplier=multiplier))
    message = f"out_channels {out_channels} != in_channels 4 x depth_multiplier {multiplier}"
    _refused(net, model, message, message)


def test_a_fused_activation_pairs_only_with_the_activation() -> None:
    bare = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2)).eval()
    fused = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Dense(2)])
    _refused(bare, fused, "make the Keras model apply nothing there (a fused activation= counts)",
             "make the torch model apply relu there")
    with_relu = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    conformance.transfer_weights(with_relu, fused)
    assert conformance.compare(with_relu, fused, np.ones((2, 6), np.float32)).passed


def test_a_fused_activation_at_the_output() -> None:
    bare = nn.Sequential(nn.Linear(6, 4)).eval()
    fused = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="sigmoid")])
    _refused(bare, fused, "the models differ at their outputs", "make the torch model apply sigmoid there")


def test_pooling_geometry_and_kind() -> None:
    class Net(nn.Module):
        def __init__(self, pool: nn.Module) -> None:
            super().__init__()
            self.a, self.pool, self.b = nn.Conv2d(3, 4, 1), pool, nn.Conv2d(4, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.pool(self.a(x)))

    def keras_net(pool: Any) -> Any:
        inp = keras.Input((8, 8, 3))
        return keras.Model(inp, L.Conv2D(4, 1)(pool(L.Conv2D(4, 1)(inp))))
    _refused(Net(nn.MaxPool2d(2)).eval(), keras_net(L.AveragePooling2D(2)),
             "make the Keras model apply max pooling (kernel (2, 2), stride (2, 2)) there",
             "make the torch model apply avg pooling (kernel (2, 2), stride (2, 2)) there")
    _refused(Net(nn.MaxPool2d(3, stride=1)).eval(), keras_net(L.MaxPooling2D(3, strides=2)),
             "max pooling (kernel (3, 3), stride (1, 1))", "max pooling (kernel (3, 3), stride (2, 2))")


def test_batch_norm_eps_fix_names_the_destination() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    model = keras.Sequential([keras.Input((5, 5, 3)), L.Conv2D(4, 1), L.BatchNormalization()])
    _refused(net, model, "build the Keras layer with epsilon=1e-05", "set torch.nn.BatchNorm2d(eps=0.001)")


def test_densenet_style_eps_gets_the_right_advice() -> None:
    net = nn.Sequential(nn.BatchNorm2d(4)).eval()
    model = keras.Sequential([keras.Input((5, 5, 4)), L.BatchNormalization(epsilon=1.001e-5)])
    _refused(net, model, "epsilon=1e-05", "set torch.nn.BatchNorm2d(eps=1.001e-05)")


def test_recurrent_direction() -> None:
    net = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    model = keras.Sequential([keras.Input((5, 3)), L.LSTM(4, return_sequences=True)])
    with pytest.raises(ConversionError, match="torch bidirectional=True, Keras layer is not Bidirectional"):
        conformance.transfer_weights(net, model)


class Tagger(nn.Module):
    """An LSTM tagger: a Linear on every step of the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.fc = nn.LSTM(3, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0])


def _keras_tagger(return_sequences: bool) -> Any:
    inp = keras.Input((5, 3))
    return keras.Model(inp, L.Dense(2)(L.LSTM(4, return_sequences=return_sequences)(inp)))


def test_recurrent_return_mode() -> None:
    """return_sequences=False gives the Dense the last step only: same weights, other outputs."""
    net = Tagger().eval()
    _refused(net, _keras_tagger(False), "it reads 1.333 values per value of the model's input in torch but 0.2667",
             "make the torch model's earlier layers match the Keras model's")
    model = _keras_tagger(True)
    conformance.transfer_weights(net, model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    assert conformance.compare(net, model, x).passed

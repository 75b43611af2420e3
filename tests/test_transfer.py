"""transfer_weights: single layers and whole models, both ways, all-or-nothing on mismatch."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from helpers import inputs, keras_snapshot, same_weights, torch_snapshot
from torch import nn

import conformance
from conformance import ConversionError
from conformance.pair import randomize_keras, randomize_torch


def test_single_conv_layer_both_ways_and_round_trip() -> None:
    pair = conformance.build_pair("conv2d", in_channels=3, out_channels=5, kernel_size=(3, 2), input_shape=(3, 8, 8))
    randomize_torch(pair.torch, 0)
    before = torch_snapshot(pair.torch)
    report = conformance.transfer_weights(pair.torch, pair.keras)
    assert report.direction == "torch->keras"
    kernel = pair.keras.layers[-1].kernel.numpy()
    np.testing.assert_array_equal(kernel, before["weight"].transpose(2, 3, 1, 0))
    randomize_torch(pair.torch, 1)
    back = conformance.transfer_weights(pair.keras, pair.torch)
    assert back.direction == "keras->torch"
    assert same_weights(torch_snapshot(pair.torch), before), "torch -> keras -> torch is exact"


def test_mapping_is_readable() -> None:
    pair = conformance.build_pair("conv1d", in_channels=4, out_channels=8, kernel_size=3, groups=4,
                                  input_shape=(4, 10))
    report = conformance.transfer_weights(pair.torch, pair.keras)
    rows = list(report)
    assert [(r.source, r.rule) for r in rows] == [
        ("Conv1d.weight", "(C M) 1 W -> W C M (depth multiplier 2)"), ("Conv1d.bias", "copy")]
    assert rows[0].source_shape == (8, 1, 3) and rows[0].destination_shape == (3, 4, 2)
    text = str(report)
    assert "weight transfer torch->keras: 2 tensors" in text and "(C M) 1 W -> W C M" in text


class Block(nn.Module):
    """A nested, hand-written module: conv -> bn -> relu -> pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(Block(3, 8), Block(8, 4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 2 * 3, 6), nn.ReLU(), nn.Linear(6, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x))


def keras_net(units: int = 6, bn_eps: float = 1e-5, first_bias: bool = True) -> keras.Model:
    """The same network as a functional model with a nested Sequential block."""
    def block(x: keras.KerasTensor, filters: int, bias: bool = True) -> keras.KerasTensor:
        x = keras.layers.ZeroPadding2D(1)(x)
        x = keras.layers.Conv2D(filters, 3, use_bias=bias)(x)
        x = keras.layers.BatchNormalization(epsilon=bn_eps)(x)
        x = keras.layers.ReLU()(x)
        return keras.layers.MaxPooling2D(2)(x)

    inp = keras.Input((8, 12, 3))
    x = block(inp, 8, first_bias)
    x = block(x, 4)
    x = keras.layers.Flatten()(x)
    head = keras.Sequential([keras.Input((24,)), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(2)])
    return keras.Model(inp, head(x))


def test_nested_models_both_ways() -> None:
    net, model = Net().eval(), keras_net()
    x = inputs((3, 8, 12))
    randomize_torch(net, 3)
    report = conformance.transfer_weights(net, model)
    assert len(report) == 2 * 6 + 4
    assert "rows re-ordered" in report.rows[12].rule
    assert conformance.compare(net, model, x).passed
    randomize_keras(model, 4)
    conformance.transfer_weights(model, net)
    result = conformance.compare(net, model, x)
    assert result.passed, result.summary()


@pytest.mark.parametrize(("make_keras", "fragment"), [
    (lambda: keras_net(units=7), r"layer pair #5 \(torch Linear 'head.1' <-> keras Dense"),
    (lambda: keras_net(bn_eps=1e-3), "eps 1e-05 vs epsilon 0.001"),
    (lambda: keras_net(first_bias=False), "has 'bias' but keras has no 'bias'"),
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), "does not correspond"),
])
def test_mismatch_names_the_first_differing_pair_and_leaves_destination_untouched(make_keras, fragment) -> None:
    net, model = Net().eval(), make_keras()
    randomize_torch(net, 0)
    randomize_keras(model, 1)
    keras_before, torch_before = keras_snapshot(model), torch_snapshot(net)
    with pytest.raises(ConversionError, match=fragment):
        conformance.transfer_weights(net, model)
    assert same_weights(keras_snapshot(model), keras_before)
    with pytest.raises(ConversionError):
        conformance.transfer_weights(model, net)
    assert same_weights(torch_snapshot(net), torch_before)


def test_count_mismatch_names_the_unpaired_layer() -> None:
    short = keras.Sequential([keras.Input((8, 12, 3)), keras.layers.Conv2D(8, 3, padding="same")])
    with pytest.raises(ConversionError, match=r"layer pair #2: torch BatchNorm2d 'stem.0.bn' has no counterpart"):
        conformance.transfer_weights(Net(), short)


def test_shape_mismatch_is_reported_with_both_shapes() -> None:
    torch_conv = nn.Conv2d(3, 4, 3)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 5)])
    with pytest.raises(ConversionError, match=r"\(4, 3, 3, 3\).*becomes \(3, 3, 3, 4\).*\(5, 5, 3, 4\)"):
        conformance.transfer_weights(torch_conv, model)


def test_unbuilt_keras_model_and_unknown_layers_are_refused() -> None:
    with pytest.raises(ConversionError, match="build the model"):
        conformance.transfer_weights(nn.Conv2d(3, 4, 3), keras.Sequential([keras.layers.Conv2D(4, 3)]))

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(3))

    with pytest.raises(ConversionError, match=r"torch module 1 \(Scale\) has weights \['gain'\]"):
        conformance.transfer_weights(nn.Sequential(nn.Linear(2, 3), Scale()),
                                     keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]))


def test_non_models_are_refused() -> None:
    with pytest.raises(ConversionError, match="one torch.nn.Module and one keras.Model"):
        conformance.transfer_weights(nn.Linear(2, 2), nn.Linear(2, 2))


def test_flatten_and_dense_in_different_nested_models() -> None:
    """The walk back from the Dense leaves its model and enters the one that ends with Flatten."""
    net = Net().eval()
    randomize_torch(net, 5)
    features = keras.Sequential([keras.Input((8, 12, 3)), keras.layers.Conv2D(8, 3, padding="same"),
                                 keras.layers.BatchNormalization(epsilon=1e-5), keras.layers.ReLU(),
                                 keras.layers.MaxPooling2D(2), keras.layers.Conv2D(4, 3, padding="same"),
                                 keras.layers.BatchNormalization(epsilon=1e-5), keras.layers.ReLU(),
                                 keras.layers.MaxPooling2D(2), keras.layers.Flatten()])
    head = keras.Sequential([keras.Input((24,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)])
    inp = keras.Input((8, 12, 3))
    model = keras.Model(inp, head(features(inp)))
    report = conformance.transfer_weights(net, model)
    assert "O (C H W) -> (H W C) O" in report.rows[12].rule
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 12)).astype(np.float32)
    assert conformance.compare(net, model, x).passed


def test_keras_to_torch_shape_mismatch_names_the_keras_source() -> None:
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    with pytest.raises(ConversionError, match=r"kernel \(5, 3\) becomes \(3, 5\) under O I -> I O, but weight is "
                                              r"\(4, 5\)"):
        conformance.transfer_weights(model, nn.Linear(5, 4))


def test_torch_modules_pair_by_data_flow_not_registration_order() -> None:
    """nn.TransformerEncoderLayer registers linear1/linear2 before norm1 but calls norm1 first: the traced
    graph pairs it without example_inputs (made from the Keras model's input), and with them."""
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation="gelu",
                                       batch_first=True).eval()
    randomize_torch(layer, 0)
    pair = conformance.build_pair("transformer_block", heads=2, mlp=16, input_shape=(5, 8))
    x = pair.sample_input(1)
    report = conformance.transfer_weights(layer, pair.keras)
    assert report.pairing == "graph" and "layers paired by graph" in str(report)
    result = conformance.compare(layer, pair.keras, x)
    assert result.passed, result.summary()
    randomize_torch(layer, 1)
    conformance.transfer_weights(layer, pair.keras, example_inputs=x)
    assert conformance.compare(layer, pair.keras, x).passed
    assert torch.backends.mha.get_fastpath_enabled(), "the fast path switch is restored"

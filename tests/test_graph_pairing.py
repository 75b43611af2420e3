"""Whole models as users write them: layers pair by data flow, and the layout propagates through merges."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import torch
from torch import nn

import conformance
from conformance import ConversionError
from conformance.pair import randomize_keras, randomize_torch

L = keras.layers


def _roundtrip(net: nn.Module, model: Any, shape: tuple[int, ...], seed: int = 0) -> list[Any]:
    """Transfer both ways (no example_inputs) and compare after each; returns the two reports."""
    x = np.random.default_rng(seed).uniform(-1, 1, (2, *shape)).astype(np.float32)
    reports = []
    for direction in ("torch->keras", "keras->torch"):
        if direction == "torch->keras":
            randomize_torch(net, seed + 1)
            reports.append(conformance.transfer_weights(net, model))
        else:
            randomize_keras(model, seed + 2)
            reports.append(conformance.transfer_weights(model, net))
        result = conformance.compare(net.eval(), model, x)
        assert result.passed, f"{direction}: {result.summary()}\n{reports[-1]}"
    return reports


class TwoBranches(nn.Module):
    """Two convolutions of one input, merged, flattened, then a Linear: the classic bug after a merge."""

    def __init__(self, merge: str) -> None:
        super().__init__()
        self.merge = merge
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4 * 5 * 6 * (2 if merge == "cat" else 1), 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.a(x), torch.relu(self.b(x))
        merged = a + b if self.merge == "add" else torch.cat([a, b], dim=1)
        return self.fc(torch.flatten(merged, 1))


def _keras_two_branches(merge: str, b_first: bool = False) -> Any:
    inp = keras.Input((5, 6, 3))
    conv_a, conv_b = L.Conv2D(4, 3, padding="same"), L.Conv2D(4, 1, activation="relu")
    if b_first:                   # create (and call) the second branch first
        b = conv_b(inp)
        a = conv_a(inp)
    else:
        a, b = conv_a(inp), conv_b(inp)
    merged = L.Add()([a, b]) if merge == "add" else L.Concatenate()([a, b])
    return keras.Model(inp, L.Dense(7)(L.Flatten()(merged)))


@pytest.mark.parametrize("merge", ["add", "cat"])
@pytest.mark.parametrize("b_first", [False, True])
def test_flatten_after_a_merge_converts_both_ways(merge: str, b_first: bool) -> None:
    reports = _roundtrip(TwoBranches(merge), _keras_two_branches(merge, b_first), (3, 5, 6))
    fc = [r for r in reports[0] if r.source == "fc.weight"]
    assert "(C H W) -> (H W C)" in fc[0].rule, str(reports[0])
    assert reports[1].pairing == "graph"


def test_flatten_after_a_merge_of_differently_laid_out_maps_is_refused() -> None:
    inp = keras.Input((4, 4, 4))
    a = L.Conv2D(4, 1)(inp)
    b = L.Permute((3, 1, 2))(L.Conv2D(4, 1)(inp))          # channels first now
    model = keras.Model(inp, L.Dense(3)(L.Flatten()(L.Add()([a, b]))))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Linear(64, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.a(x) + self.b(x), 1))
    with pytest.raises(ConversionError, match=r"Add '.*' merges feature maps laid out differently"):
        conformance.transfer_weights(Net(), model)


def test_an_unknown_layer_before_flatten_dense_is_refused_by_name() -> None:
    inp = keras.Input((5, 6, 3))
    x = L.Conv2D(4, 3, padding="same")(inp)
    x = L.Lambda(lambda t: t * 2.0, name="mystery")(x)
    model = keras.Model(inp, L.Dense(7)(L.Flatten()(x)))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(120, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.conv(x) * 2.0, 1))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ConversionError, match=r"Lambda 'mystery'.*never assumes torch's order"):
        conformance.transfer_weights(Net(), model)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_element_wise_keras_ops_keep_the_layout() -> None:
    inp = keras.Input((5, 6, 3))
    x = keras.ops.relu(L.Conv2D(4, 3, padding="same")(inp)) * 2.0
    model = keras.Model(inp, L.Dense(7)(L.Flatten()(x)))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(120, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(torch.relu(self.conv(x)) * 2.0, 1))
    _roundtrip(Net(), model, (3, 5, 6))


class MainFirstBlock(nn.Module):
    """A ResNet block as people write it in torch: main path registered and called first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16, eps=1e-3)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16, eps=1e-3)
        self.proj, self.bn_proj = nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.bn_proj(self.proj(x)))


def _keras_shortcut_first() -> Any:
    """The same block as keras.applications writes it: the projection shortcut created and called first."""
    inp = keras.Input((8, 8, 8))
    shortcut = L.BatchNormalization(epsilon=1e-3)(L.Conv2D(16, 1, strides=2, use_bias=False)(inp))
    x = L.ZeroPadding2D(1)(inp)
    x = L.ReLU()(L.BatchNormalization(epsilon=1e-3)(L.Conv2D(16, 3, strides=2, use_bias=False)(x)))
    x = L.BatchNormalization(epsilon=1e-3)(L.Conv2D(16, 3, padding="same", use_bias=False)(x))
    return keras.Model(inp, L.ReLU()(L.Add()([shortcut, x])))


def test_a_shortcut_first_keras_block_pairs_with_a_main_first_torch_block() -> None:
    reports = _roundtrip(MainFirstBlock(), _keras_shortcut_first(), (8, 8, 8))
    rows = {r.source: r for r in reports[0]}
    assert rows["proj.weight"].destination.startswith("conv2d") and rows["proj.weight"].source_shape == (16, 8, 1, 1)
    assert all(r.pairing == "graph" for r in reports)
    assert "depth" in rows["conv2.weight"].position


def test_concatenated_branches_pair_by_their_place_in_the_concatenation() -> None:
    """Equal-sized branches whose order only the concatenation fixes: Keras creates them in reverse."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right, self.fc = nn.Linear(6, 5), nn.Linear(6, 5), nn.Linear(10, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.cat([self.left(x), torch.tanh(self.right(x))], dim=1))
    inp = keras.Input((6,))
    right = L.Dense(5, activation="tanh")(inp)
    left = L.Dense(5)(inp)
    model = keras.Model(inp, L.Dense(3)(L.Concatenate()([left, right])))
    _roundtrip(Net(), model, (6,))


def test_mapping_rules_read_in_the_direction_applied() -> None:
    pair = conformance.build_pair("linear", in_features=32, out_features=64, input_shape=(32,))
    randomize_keras(pair.keras, 0)
    report = conformance.transfer_weights(pair.keras, pair.torch)
    kernel = next(r for r in report if r.source.endswith("kernel"))
    assert kernel.source_shape == (32, 64) and kernel.destination_shape == (64, 32)
    assert kernel.rule.startswith("I O -> O I")


def test_a_model_that_cannot_be_traced_pairs_by_order_and_says_why() -> None:
    class Picky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] == 2:
                raise ValueError("only batches of 3")
            return self.second(self.first(x))
    model = keras.Sequential([keras.Input((4,)), L.Dense(4), L.Dense(2)])
    report = conformance.transfer_weights(Picky(), model)
    assert report.pairing.startswith("order, not graph") and "only batches of 3" in report.pairing
    assert f"layers paired by {report.pairing}" in str(report)


class Watched(TwoBranches):
    """TwoBranches that notes the device of every input it is run on, and can insist on numbers."""

    def __init__(self, needs_numbers: bool) -> None:
        super().__init__("add")
        self.needs_numbers, self.devices = needs_numbers, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.devices.append(x.device.type)
        if self.needs_numbers and float(x.abs().sum()) < 0:      # data-dependent: impossible on meta
            raise AssertionError("unreachable")
        return super().forward(x)


@pytest.mark.parametrize("needs_numbers", [False, True])
def test_the_pairing_trace_runs_without_data_and_falls_back_to_real_inputs(needs_numbers: bool,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Pairing needs shapes, not numbers: a large model's traced pass runs on the meta device (no convolution
    is computed, and the model's own weights are not touched); a model that reads its input's values is
    traced on real inputs instead, and pairs the same. (This model is small: the threshold is lowered.)"""
    from conformance import graph
    monkeypatch.setattr(graph, "META_FROM", 0)
    net = Watched(needs_numbers)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    report = conformance.transfer_weights(net, _keras_two_branches("add"))
    assert report.pairing.startswith("graph"), report.pairing
    assert net.devices == (["meta", "cpu"] if needs_numbers else ["meta"])
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
    assert all(p.device.type == "cpu" for p in net.parameters())
    _roundtrip(Watched(needs_numbers), _keras_two_branches("add"), (3, 5, 6))


def test_small_models_are_traced_on_real_inputs() -> None:
    """Below graph.META_FROM parameters the real pass is cheaper than functional_call's swap."""
    net = Watched(needs_numbers=False)
    conformance.transfer_weights(net, _keras_two_branches("add"))
    assert net.devices == ["cpu"]


def test_a_meta_pass_that_fails_inside_a_unit_leaves_the_real_pass_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    """The causal attention twin makes its mask on the CPU inside forward, so the meta pass fails inside
    the attention module, after its pre-hook ran; the real pass must then record from a clean state
    (it once inherited the 'inside a unit' count and paired the key padding mask as the query)."""
    from conformance import graph
    monkeypatch.setattr(graph, "META_FROM", 0)
    pair = conformance.build_pair("multihead_attention", embed_dim=8, num_heads=2, batch_first=False, seq_len=6,
                                  input_shape=(6, 8), kv_len=9, key_padding_mask=True, is_causal=True)
    report = conformance.transfer_weights(pair.torch, pair.keras)
    assert report.pairing.startswith("graph"), report.pairing

"""The recurrent families (lstm, gru, rnn): naive rules caught, references, invalid params, transfer rules.

The naive-rule tests give a hand-built Keras model the same torch weights moved the way a hurried
converter would (PITFALLS.md rows 11 and 12) and check that compare() catches it while the
catalogue's pair passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import torch
from helpers import conforms
from hypothesis import given, settings
from hypothesis import strategies as st

import conformance
from conformance.errors import CaseError, ConversionError
from conformance.families import get_family
from conformance.families.recurrent import TIME_MAJOR_BATCH
from conformance.pair import randomize_keras, randomize_torch

L = keras.layers


def _pair(family: str, **params: Any) -> conformance.Pair:
    pair = conformance.build_pair(family, **params)
    randomize_torch(pair.torch, 0)
    conformance.transfer_weights(pair.torch, pair.keras)
    return pair


def _weights(pair: conformance.Pair) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in pair.torch.rnn.state_dict().items()}


def _compare(pair: conformance.Pair, model: Any, x: np.ndarray) -> conformance.Comparison:
    tolerance = get_family(pair.family.name).tolerance(pair.params)
    return conformance.compare(pair.torch, model, x, tolerance=tolerance, channels_last=False)


Naive = Callable[[conformance.Pair], keras.Model]


def check_naive(family: str, params: dict[str, Any], naive: Naive) -> None:
    """The catalogue's pair passes; the naive Keras model, given the same torch weights, fails."""
    pair = _pair(family, **params)
    x = pair.sample_input(1)
    good = _compare(pair, pair.keras, x)
    assert good.passed, good.summary()
    bad = _compare(pair, naive(pair), x)
    assert not bad.passed, f"the naive rule was not caught: {bad.summary()}"


def _one_layer(layer: Any, length: int, features: int) -> tuple[keras.Model, Any]:
    """Input (N, L, H_in) -> [output, h_n (1, N, H)(, c_n)] through one unidirectional Keras layer."""
    inp = keras.Input((length, features))
    out, *states = layer(inp)
    return keras.Model(inp, [out, *(keras.ops.expand_dims(s, 0) for s in states)]), layer


GRU_PARAMS = dict(input_size=5, hidden_size=4, batch_first=True, input_shape=(6, 5))
LSTM_PARAMS = dict(input_size=5, hidden_size=4, batch_first=True, input_shape=(6, 5))


def test_gru_gates_copied_without_reordering() -> None:
    """Pitfall 12: torch's (r, z, n) blocks copied as if they were Keras's (z, r, h)."""
    def naive(pair: conformance.Pair) -> keras.Model:
        model, layer = _one_layer(L.GRU(4, return_sequences=True, return_state=True), 6, 5)
        w = _weights(pair)
        biases = np.stack([w["bias_ih_l0"], w["bias_hh_l0"]])
        layer.set_weights([w["weight_ih_l0"].T, w["weight_hh_l0"].T, biases])
        return model
    check_naive("gru", GRU_PARAMS, naive)


def test_gru_with_reset_before_the_recurrent_matmul() -> None:
    """Pitfall 12: reset_after=False (older Keras's default), gates re-ordered and the biases summed."""
    def naive(pair: conformance.Pair) -> keras.Model:
        model, layer = _one_layer(L.GRU(4, return_sequences=True, return_state=True, reset_after=False), 6, 5)
        w = _weights(pair)

        def order(a: np.ndarray) -> np.ndarray:
            return a.reshape(3, 4, *a.shape[1:])[[1, 0, 2]].reshape(a.shape)
        layer.set_weights([order(w["weight_ih_l0"]).T, order(w["weight_hh_l0"]).T,
                           order(w["bias_ih_l0"] + w["bias_hh_l0"])])
        return model
    check_naive("gru", GRU_PARAMS, naive)


def test_lstm_with_only_the_input_bias() -> None:
    """Pitfall 11: b_hh dropped instead of added into Keras's single bias."""
    def naive(pair: conformance.Pair) -> keras.Model:
        model, layer = _one_layer(L.LSTM(4, return_sequences=True, return_state=True), 6, 5)
        w = _weights(pair)
        layer.set_weights([w["weight_ih_l0"].T, w["weight_hh_l0"].T, w["bias_ih_l0"]])
        return model
    check_naive("lstm", LSTM_PARAMS, naive)


def test_lstm_with_hard_sigmoid_recurrent_activation() -> None:
    """Pitfall 11: the right weights, but standalone Keras 2's hard_sigmoid gates instead of sigmoid."""
    def naive(pair: conformance.Pair) -> keras.Model:
        lstm = L.LSTM(4, return_sequences=True, return_state=True, recurrent_activation="hard_sigmoid")
        model, layer = _one_layer(lstm, 6, 5)
        layer.set_weights(pair.keras.get_weights())
        return model
    check_naive("lstm", LSTM_PARAMS, naive)


def test_time_major_input_read_as_batch_major() -> None:
    """batch_first=False: a Keras model that forgets to transpose (L, N, H) runs N steps over L sequences.

    L == N here, so every shape agrees and only the values can tell.
    """
    params = dict(input_size=5, hidden_size=4, input_shape=(TIME_MAJOR_BATCH, 5))

    def naive(pair: conformance.Pair) -> keras.Model:
        model, layer = _one_layer(L.LSTM(4, return_sequences=True, return_state=True), TIME_MAJOR_BATCH, 5)
        layer.set_weights(pair.keras.get_weights())
        return model
    check_naive("lstm", params, naive)


def test_bidirectional_states_stacked_direction_major() -> None:
    """h_n is indexed layer * 2 + direction; stacking all forward states first is wrong."""
    params = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True,
                  input_shape=(5, 3))

    def naive(pair: conformance.Pair) -> keras.Model:
        inp = keras.Input((5, 3))
        x, h = inp, []
        for _ in range(2):
            x, forward, backward = L.Bidirectional(L.GRU(4, return_sequences=True, return_state=True))(x)
            h.append((forward, backward))
        model = keras.Model(inp, [x, keras.ops.stack([h[0][0], h[1][0], h[0][1], h[1][1]], axis=0)])
        model.set_weights(pair.keras.get_weights())
        return model
    check_naive("gru", params, naive)


# ---- random valid configurations conform in both directions


@st.composite
def recurrent_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    family = draw(st.sampled_from(["lstm", "gru", "rnn"]))
    features = draw(st.integers(1, 6))
    params: dict[str, Any] = dict(input_size=features, num_layers=draw(st.integers(1, 2)),
                                  bias=draw(st.booleans()), batch_first=draw(st.booleans()),
                                  bidirectional=draw(st.booleans()),
                                  input_shape=[draw(st.integers(1, 8)), features])
    relu = family == "rnn" and draw(st.booleans())
    if relu:   # relu does not saturate: keep the growth small (see cases/rnn.toml)
        params["nonlinearity"] = "relu"
    params["hidden_size"] = draw(st.integers(1, 4 if relu else 8))
    return family, params


@settings(max_examples=12, deadline=None)
@given(recurrent_configs())
def test_random_recurrent_configurations_conform(config: tuple[str, dict[str, Any]]) -> None:
    for result in conforms(*config):
        assert result.reference_error is not None and max(result.reference_error.values()) < 1e-4


# ---- the float64 references agree with torch in float64

REFERENCE_CONFIGS = [
    dict(num_layers=1, bias=True, batch_first=True, bidirectional=False),
    dict(num_layers=2, bias=False, batch_first=False, bidirectional=True),
    dict(num_layers=2, bias=True, batch_first=True, bidirectional=True),
]


@pytest.mark.parametrize("family,extra", [("lstm", {}), ("gru", {}), ("rnn", {}),
                                          ("rnn", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("config", REFERENCE_CONFIGS)
def test_reference_matches_torch_float64(family: str, extra: dict[str, Any], config: dict[str, Any]) -> None:
    spec = get_family(family)
    params = spec.normalise(dict(input_size=3, hidden_size=4, input_shape=(6, 3), **config, **extra))
    module = spec.build_torch(params).double().eval()
    randomize_torch(module, 3)
    (x,) = spec.make_inputs(params, np.random.default_rng(4), 2)
    x = x.astype(np.float64)
    with torch.no_grad():
        expected = [t.numpy() for t in module(torch.from_numpy(x))]
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    ours = spec.reference(x, weights, params)
    assert len(ours) == len(expected) == (3 if family == "lstm" else 2)
    for a, b in zip(ours, expected, strict=True):
        assert a.shape == b.shape and a.dtype == np.float64
        assert np.abs(a - b).max() <= 1e-10


# ---- invalid parameters name their field


@pytest.mark.parametrize("family,params,field", [
    ("lstm", dict(input_size=4, hidden_size=3, input_shape=(5, 3)), "input_shape"),
    ("lstm", dict(input_size=4, hidden_size=3, input_shape=(5, 2, 4)), "input_shape"),
    ("lstm", dict(input_size=4, hidden_size=3, proj_size=2, input_shape=(5, 4)), "proj_size"),
    ("gru", dict(input_size=4, hidden_size=0, input_shape=(5, 4)), "hidden_size"),
    ("gru", dict(input_size=4, hidden_size=3, num_layers=0, input_shape=(5, 4)), "num_layers"),
    ("gru", dict(input_size=4, hidden_size=3, num_layers=2, dropout=0.5, input_shape=(5, 4)), "dropout"),
    ("rnn", dict(input_size=4, hidden_size=3, nonlinearity="sigmoid", input_shape=(5, 4)), "nonlinearity"),
    ("rnn", dict(input_size=4, hidden_size=3, batch_first=1, input_shape=(5, 4)), "batch_first"),
    ("gru", dict(input_size=4, hidden_size=3, nonlinearity="relu", input_shape=(5, 4)), "nonlinearity"),
])
def test_invalid_parameters_name_the_field(family: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(CaseError) as info:
        conformance.build_pair(family, **params)
    assert info.value.field == field, str(info.value)


# ---- the weight rules


def test_keras_to_torch_to_keras_reproduces_the_keras_weights() -> None:
    for family in ("lstm", "gru", "rnn"):
        pair = conformance.build_pair(family, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                                      input_shape=(5, 3))
        randomize_keras(pair.keras, 5)
        before = [np.array(w) for w in pair.keras.get_weights()]
        conformance.transfer_weights(pair.keras, pair.torch)
        randomize_keras(pair.keras, 6)
        conformance.transfer_weights(pair.torch, pair.keras)
        after = pair.keras.get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)), family


def test_lstm_bias_inverse_puts_the_sum_in_b_ih() -> None:
    pair = _pair("lstm", input_size=3, hidden_size=2, input_shape=(4, 3))
    summed = pair.torch.rnn.bias_ih_l0.detach().numpy() + pair.torch.rnn.bias_hh_l0.detach().numpy()
    mapping = conformance.transfer_weights(pair.keras, pair.torch)
    np.testing.assert_array_equal(pair.torch.rnn.bias_ih_l0.detach().numpy(), summed)
    np.testing.assert_array_equal(pair.torch.rnn.bias_hh_l0.detach().numpy(), np.zeros(8, np.float32))
    assert any("zeros in b_hh" in row.rule for row in mapping)


def test_gru_torch_to_keras_to_torch_is_exact() -> None:
    pair = _pair("gru", input_size=3, hidden_size=2, bidirectional=True, input_shape=(4, 3))
    before = {k: v.clone() for k, v in pair.torch.state_dict().items()}
    randomize_torch(pair.torch, 9)
    conformance.transfer_weights(pair.keras, pair.torch)
    assert all(torch.equal(before[k], v) for k, v in pair.torch.state_dict().items())


def _keras_model(layer: Any, length: int = 4, features: int = 3) -> keras.Model:
    inp = keras.Input((length, features))
    return keras.Model(inp, layer(inp))


@pytest.mark.parametrize("module,layer,message", [
    (lambda: torch.nn.GRU(3, 2), lambda: L.GRU(2, reset_after=False), "reset_after"),
    (lambda: torch.nn.LSTM(3, 2), lambda: L.LSTM(2, recurrent_activation="hard_sigmoid"),
     "recurrent_activation"),
    (lambda: torch.nn.RNN(3, 2, nonlinearity="relu"), lambda: L.SimpleRNN(2), "activation"),
    (lambda: torch.nn.LSTM(3, 2, bidirectional=True), lambda: L.LSTM(2), "Bidirectional"),
    (lambda: torch.nn.GRU(3, 2, bidirectional=True), lambda: L.Bidirectional(L.GRU(2), merge_mode="sum"),
     "merge_mode"),
    (lambda: torch.nn.LSTM(3, 2, bidirectional=True), lambda: L.Bidirectional(L.GRU(2)), "against Keras GRU"),
    (lambda: torch.nn.LSTM(3, 2), lambda: L.LSTM(2, go_backwards=True), "go_backwards"),
    (lambda: torch.nn.LSTM(3, 2, bias=False), lambda: L.LSTM(2), "use_bias"),
    (lambda: torch.nn.LSTM(3, 4, proj_size=2), lambda: L.LSTM(4), "proj_size"),
])
def test_transfer_refuses_layers_configured_differently(module: Any, layer: Any, message: str) -> None:
    model = _keras_model(layer())
    with pytest.raises(ConversionError, match=message):
        conformance.transfer_weights(module(), model)


def test_two_layer_module_against_one_keras_layer_is_refused() -> None:
    with pytest.raises(ConversionError):
        conformance.transfer_weights(torch.nn.LSTM(3, 2, num_layers=2), _keras_model(L.LSTM(2)))


# ---- the Keras side: saving, and the time-major design


def test_time_major_pair_saves_and_loads_in_safe_mode(tmp_path: Any) -> None:
    pair = _pair("lstm", input_size=3, hidden_size=4, num_layers=2, bidirectional=True, input_shape=(5, 3))
    path = tmp_path / "lstm.keras"
    pair.keras.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    result = _compare(pair, loaded, pair.sample_input(2))
    assert result.passed, result.summary()


def test_time_major_pair_accepts_any_sequence_length() -> None:
    """The free leading axis of the time-major Keras model is the sequence length."""
    pair = _pair("gru", input_size=3, hidden_size=4, bidirectional=True, input_shape=(5, 3))
    x = np.random.default_rng(0).uniform(-1, 1, (9, TIME_MAJOR_BATCH, 3)).astype(np.float32)
    result = _compare(pair, pair.keras, x)
    assert result.passed, result.summary()
    assert [o.shape for o in result.keras_outputs] == [(9, TIME_MAJOR_BATCH, 8), (2, TIME_MAJOR_BATCH, 4)]

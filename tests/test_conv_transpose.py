"""Transposed and separable convolutions: naive rules caught, Keras facts pinned, references, transfers.

Covers pitfall 16 (ConvTranspose: kernel layout, padding crop, output_padding, groups, stride with
dilation) and the separable composite (two torch modules, one Keras layer, the depthwise bias).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch  # before keras/tensorflow, always
import torch.nn.functional as F
from helpers import conforms, inputs, keras_snapshot, torch_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

import conformance
from conformance.errors import CaseError
from conformance.families import get_family
from conformance.families.conv_transpose import conv_transpose_reference
from conformance.pair import randomize_keras, randomize_torch

keras = pytest.importorskip("keras")
L = keras.layers


def _pair(family: str, seed: int = 0, **params: Any) -> Any:
    pair = conformance.build_pair(family, **params)
    randomize_torch(pair.torch, seed)
    conformance.transfer_weights(pair.torch, pair.keras)
    return pair


def _compare(pair: Any, model: Any) -> conformance.Comparison:
    x = inputs(pair.input_shape, seed=1)
    return conformance.compare(pair.torch, model, x, tolerance=pair.family.tolerance(pair.params),
                               channels_last=pair.channels_last)


def check_naive(family: str, params: dict[str, Any], naive: Callable[[Any], Any],
                weights: Callable[[Any], list[np.ndarray]]) -> None:
    """The correct pair passes; the naive Keras model given the same torch weights fails."""
    pair = _pair(family, **params)
    good = _compare(pair, pair.keras)
    assert good.passed, good.summary()
    inp = keras.Input(pair.keras_input_shape)
    model = keras.Model(inp, naive(inp))
    model.set_weights(weights(pair))
    bad = _compare(pair, model)
    assert not bad.passed, f"the naive rule was not caught: {bad.summary()}"


def _torch_weights(pair: Any, kernel_axes: tuple[int, ...]) -> list[np.ndarray]:
    module = pair.torch
    return [module.weight.detach().numpy().transpose(kernel_axes), module.bias.detach().numpy()]


# ---- naive rules for transposed convolutions (pitfall 16)

SQUARE = dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, input_shape=(4, 5, 5))


def test_forward_conv_rule_coincides_with_the_transpose_rule() -> None:
    """'O I H W -> H W I O' read literally on a transpose kernel is the right permutation (2, 3, 1, 0).

    The trap is the naming: a converter that takes the transpose kernel's axis 0 for O (as in a
    forward conv) and writes Keras's transpose layout H W O I applies (2, 3, 0, 1) instead.
    """
    from conformance.families.conv_transpose import transpose_layout
    from conformance.rules import kernel_layout
    w = np.random.default_rng(0).normal(size=(3, 5, 2, 4))
    np.testing.assert_array_equal(kernel_layout(2).apply(w), transpose_layout(2).apply(w))


def test_transpose_kernel_read_as_a_forward_kernel() -> None:
    check_naive("conv_transpose2d", SQUARE, lambda x: L.Conv2DTranspose(4, 3, strides=2, output_padding=0)(x),
                lambda pair: _torch_weights(pair, (2, 3, 0, 1)))


def test_kernel_flipped_as_for_a_convolution_with_full_padding() -> None:
    def flipped(pair: Any) -> list[np.ndarray]:
        w, b = _torch_weights(pair, (2, 3, 1, 0))
        return [w[::-1, ::-1].copy(), b]
    check_naive("conv_transpose2d", SQUARE, lambda x: L.Conv2DTranspose(4, 3, strides=2, output_padding=0)(x),
                flipped)


PADDED = dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, output_padding=1,
              input_shape=(3, 5, 5))


def test_padding_mapped_to_same() -> None:
    """Same shape (2L) as torch, but TF's 'same' crops at the end where torch crops at the start."""
    check_naive("conv_transpose2d", PADDED, lambda x: L.Conv2DTranspose(4, 3, strides=2, padding="same")(x),
                lambda pair: _torch_weights(pair, (2, 3, 1, 0)))


def test_output_padding_ignored() -> None:
    check_naive("conv_transpose2d", PADDED,
                lambda x: L.Cropping2D(1)(L.Conv2DTranspose(4, 3, strides=2, output_padding=0)(x)),
                lambda pair: _torch_weights(pair, (2, 3, 1, 0)))


def test_output_padding_as_zeros_appended() -> None:
    """With output_padding <= padding, torch's extra row and column are real computed values."""
    def naive(x: Any) -> Any:
        y = L.Cropping2D(1)(L.Conv2DTranspose(4, 3, strides=2, output_padding=0)(x))
        return L.ZeroPadding2D(((0, 1), (0, 1)))(y)
    check_naive("conv_transpose2d", PADDED, naive, lambda pair: _torch_weights(pair, (2, 3, 1, 0)))


def test_keras_valid_without_output_padding_is_not_the_full_output() -> None:
    """Keras 'valid' with output_padding=None appends max(k, s) - k positions when the stride exceeds the kernel."""
    params = dict(in_channels=2, out_channels=3, kernel_size=2, stride=3, input_shape=(2, 4, 4))
    check_naive("conv_transpose2d", params, lambda x: L.Conv2DTranspose(3, 2, strides=3)(x),
                lambda pair: _torch_weights(pair, (2, 3, 1, 0)))


def _refuses_dilation() -> bool:
    """TensorFlow's own CPU kernels (oneDNN off) refuse dilated transposed convolutions: recorded as
    [[unsupported]] in cases/conv_transpose2d.toml; tests that run one skip there."""
    from conformance.facts import scope_facts
    return scope_facts()["keras_backend"] == "tensorflow" and not scope_facts()["onednn"]


needs_dilated_transpose = pytest.mark.skipif(_refuses_dilation(), reason="TensorFlow without oneDNN refuses dilated "
                                             "transposed convolutions (recorded in cases/conv_transpose2d.toml)")


@needs_dilated_transpose
def test_stride_dropped_when_keras_refuses_it_with_dilation() -> None:
    params = dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, dilation=2, input_shape=(2, 4, 4))
    check_naive("conv_transpose2d", params, lambda x: L.Conv2DTranspose(3, 3, dilation_rate=2)(x),
                lambda pair: _torch_weights(pair, (2, 3, 1, 0)))


# ---- what the installed Keras does (if one of these changes, the family can be simplified)


def test_keras_has_no_grouped_transposed_convolution() -> None:
    with pytest.raises(ValueError, match="groups"):
        L.Conv2DTranspose(4, 3, groups=2)


def test_keras_refuses_stride_with_dilation_on_transposed_convolution() -> None:
    with pytest.raises(ValueError, match="dilation_rate"):
        L.Conv2DTranspose(4, 3, strides=2, dilation_rate=2)


def test_keras_output_padding_appends_the_bias_only_positions_torch_computes() -> None:
    """Past the full output, torch's output_padding positions hold the bias; Keras's output_padding matches."""
    t = torch.nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=1).eval()
    randomize_torch(t, 0)
    x = inputs((2, 4))
    expected = t(torch.from_numpy(x)).detach().numpy()
    layer = L.Conv1DTranspose(3, 3, strides=2, output_padding=1)
    layer.build((None, 4, 2))
    layer.set_weights([t.weight.detach().numpy().transpose(2, 1, 0), t.bias.detach().numpy()])
    got = np.moveaxis(keras.ops.convert_to_numpy(layer(np.moveaxis(x, 1, -1))), -1, 1)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(expected[:, :, -1], np.broadcast_to(t.bias.detach().numpy(), (2, 3)), atol=0)


# ---- grouped: the dense block-diagonal Keras form


def _dense_grouped() -> tuple[Any, Any]:
    t = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2).eval()
    inp = keras.Input((5, 5, 4))
    return t, keras.Model(inp, L.Conv2DTranspose(6, 3, strides=2, output_padding=0)(inp))


def test_grouped_torch_to_one_dense_keras_layer() -> None:
    t, model = _dense_grouped()
    randomize_torch(t, 3)
    mapping = conformance.transfer_weights(t, model)
    assert "block-diagonal" in str(mapping)
    kernel = model.get_weights()[0]                  # (3, 3, O=6, I=4)
    assert not kernel[:, :, 3:, :2].any() and not kernel[:, :, :3, 2:].any()
    result = conformance.compare(t, model, inputs((4, 5, 5)), channels_last=True)
    assert result.passed, result.summary()
    before = torch_snapshot(t)
    conformance.transfer_weights(model, t)           # back: the blocks, exactly
    assert all(np.array_equal(before[k], v.detach().numpy()) for k, v in t.state_dict().items())


def test_dense_keras_kernel_with_entries_off_the_blocks_is_refused() -> None:
    t, model = _dense_grouped()
    randomize_keras(model, 4)
    before = torch_snapshot(t)
    with pytest.raises(conformance.ConversionError, match="cannot be represented by a grouped torch layer"):
        conformance.transfer_weights(model, t)
    assert all(np.array_equal(before[k], v.detach().numpy()) for k, v in t.state_dict().items())


def test_split_keras_groups_round_trip_exactly() -> None:
    pair = conformance.build_pair("conv_transpose2d", in_channels=6, out_channels=3, kernel_size=2, groups=3,
                                  stride=2, input_shape=(6, 3, 3))
    randomize_keras(pair.keras, 5)
    original = keras_snapshot(pair.keras)
    conformance.transfer_weights(pair.keras, pair.torch)
    randomize_keras(pair.keras, 6)
    conformance.transfer_weights(pair.torch, pair.keras)
    assert all(np.array_equal(a, b) for a, b in zip(original, keras_snapshot(pair.keras), strict=True))


# ---- separable


SEPARABLE = dict(in_channels=3, out_channels=4, kernel_size=3, depth_multiplier=2, stride=2, padding=1,
                 depthwise_bias=True, input_shape=(3, 7, 7))


def test_separable_depthwise_bias_dropped() -> None:
    def weights(pair: Any) -> list[np.ndarray]:
        depthwise, pointwise = pair.torch[0], pair.torch[1]
        dw = depthwise.weight.detach().numpy().reshape(3, 2, 3, 3).transpose(2, 3, 0, 1)
        return [dw, pointwise.weight.detach().numpy().transpose(2, 3, 1, 0), pointwise.bias.detach().numpy()]
    check_naive("separable_conv2d", SEPARABLE,
                lambda x: L.SeparableConv2D(4, 3, strides=2, depth_multiplier=2)(L.ZeroPadding2D(1)(x)), weights)


def test_separable_folded_bias_round_trips_keras_to_torch_to_keras() -> None:
    pair = conformance.build_pair("separable_conv2d", **SEPARABLE)
    randomize_keras(pair.keras, 7)
    original = keras_snapshot(pair.keras)
    mapping = conformance.transfer_weights(pair.keras, pair.torch)
    assert "folded" in str(mapping) and not pair.torch[0].bias.detach().numpy().any()
    randomize_keras(pair.keras, 8)
    conformance.transfer_weights(pair.torch, pair.keras)
    assert all(np.array_equal(a, b) for a, b in zip(original, keras_snapshot(pair.keras), strict=True))


def test_separable_refuses_a_second_convolution_that_is_not_pointwise() -> None:
    pair = conformance.build_pair("separable_conv2d", in_channels=2, out_channels=3, kernel_size=3,
                                  input_shape=(2, 6, 6))
    pair.torch[1] = torch.nn.Conv2d(2, 3, 3, padding=1)
    before = keras_snapshot(pair.keras)
    with pytest.raises(conformance.ConversionError, match="not pointwise"):
        conformance.transfer_weights(pair.torch, pair.keras)
    assert all(np.array_equal(a, b) for a, b in zip(before, keras_snapshot(pair.keras), strict=True))


@pytest.mark.parametrize(("family", "params"), [
    ("conv_transpose2d", dict(in_channels=6, out_channels=3, kernel_size=3, groups=3, stride=2, dilation=1,
                              padding=1, output_padding=1, input_shape=(6, 4, 4))),   # runs with oneDNN off too
    ("separable_conv2d", SEPARABLE),
])
def test_models_save_and_load_in_safe_mode(tmp_path: Any, family: str, params: dict[str, Any]) -> None:
    pair = _pair(family, **params)
    path = tmp_path / "model.keras"
    pair.keras.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.moveaxis(inputs(pair.input_shape), 1, -1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pair.keras(x)), keras.ops.convert_to_numpy(loaded(x)))


# ---- float64 references against torch float64


# (spatial, c_in, c_out, kernel, stride, padding, output_padding, dilation, groups, bias)
TRANSPOSE_CASES = [
    ((5,), 2, 3, (3,), 2, 1, 1, 1, 1, True),
    ((4,), 3, 3, (2,), 3, 0, 2, 1, 3, False),
    ((6,), 2, 4, (3,), 1, 2, 2, 3, 2, True),
    ((1,), 1, 2, (4,), 2, 0, 0, 1, 1, True),
    ((4, 5), 4, 6, (3, 2), (2, 1), (1, 0), (1, 0), (1, 2), 2, True),
    ((3, 3), 2, 2, (1, 1), 3, 0, 2, 1, 1, True),
    ((3, 4, 2), 2, 4, (2, 3, 1), (2, 1, 1), (0, 1, 0), (1, 0, 0), (1, 2, 1), 2, True),
]


@pytest.mark.parametrize("spatial,c_in,c_out,kernel,stride,padding,output_padding,dilation,groups,bias",
                         TRANSPOSE_CASES)
def test_conv_transpose_reference(spatial, c_in, c_out, kernel, stride, padding, output_padding, dilation,
                                  groups, bias) -> None:
    n = len(spatial)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c_in, *spatial))
    w = rng.standard_normal((c_in, c_out // groups, *kernel))
    b = rng.standard_normal(c_out) if bias else None
    def tup(v: Any) -> tuple[int, ...]:
        return (v,) * n if isinstance(v, int) else tuple(v)
    ours = conv_transpose_reference(x, w, b, stride=tup(stride), padding=tup(padding),
                                    output_padding=tup(output_padding), dilation=tup(dilation), groups=groups)
    fn = getattr(F, f"conv_transpose{n}d")
    expected = fn(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                  stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                  dilation=dilation).numpy()
    assert ours.dtype == np.float64 and ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-10


@pytest.mark.parametrize("family", ["separable_conv1d", "separable_conv2d"])
def test_separable_reference(family: str) -> None:
    spec = get_family(family)
    n = int(family[-2])
    params = spec.normalise(dict(in_channels=3, out_channels=4, kernel_size=3, depth_multiplier=2, stride=2,
                                 dilation=2, padding=1, depthwise_bias=True, input_shape=(3, *[9] * n)))
    module = spec.build_torch(params).double().eval()
    randomize_torch(module, 1)
    x = np.random.default_rng(2).standard_normal((2, 3, *[9] * n))
    weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    expected = module(torch.from_numpy(x)).detach().numpy()
    assert np.abs(spec.reference(x, weights, params) - expected).max() <= 1e-10


# ---- invalid parameters name the field


@pytest.mark.parametrize(("family", "params", "field"), [
    ("conv_transpose2d", dict(kernel_size=3, stride=2, output_padding=2), "output_padding"),
    ("conv_transpose1d", dict(kernel_size=3, stride=1, dilation=2, output_padding=2), "output_padding"),
    ("conv_transpose2d", dict(kernel_size=3, groups=3), "groups"),
    ("conv_transpose2d", dict(kernel_size=3, padding=4), "padding"),
    ("conv_transpose2d", dict(kernel_size=3, padding="same"), "padding"),
    ("conv_transpose2d", dict(kernel_size=3, input_shape=(3, 4, 4)), "input_shape"),
    ("conv_transpose3d", dict(kernel_size=3, padding_mode="reflect"), "padding_mode"),
    ("separable_conv2d", dict(kernel_size=3, stride=2, padding="same"), "padding"),
    ("separable_conv2d", dict(kernel_size=3, bias=False, depthwise_bias=True), "depthwise_bias"),
    ("separable_conv1d", dict(kernel_size=9), "input_shape"),
])
def test_invalid_parameters_name_the_field(family: str, params: dict[str, Any], field: str) -> None:
    n = int(family[-2])
    raw = dict(in_channels=2, out_channels=4, input_shape=(2, *[4] * n))
    raw.update(params)
    with pytest.raises(CaseError) as info:
        get_family(family).normalise(raw)
    assert info.value.field == field, info.value


# ---- random valid configurations conform in both directions


@st.composite
def configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    n = draw(st.sampled_from([1, 2]))
    dims = st.lists(st.integers(1, 3), min_size=n, max_size=n)
    kernel, stride, dilation = draw(dims), draw(dims), draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    if draw(st.booleans()):
        groups = draw(st.sampled_from([1, 2, 3]))
        cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
        output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)]
        return f"conv_transpose{n}d", dict(
            in_channels=cin, out_channels=cout, kernel_size=kernel, stride=stride, dilation=dilation,
            groups=groups, padding=draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
            output_padding=output_padding, bias=draw(st.booleans()),
            input_shape=[cin, *draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))])
    cin = draw(st.integers(1, 3))
    bias = draw(st.booleans())
    return f"separable_conv{n}d", dict(
        in_channels=cin, out_channels=draw(st.integers(1, 4)), kernel_size=kernel, stride=stride,
        dilation=dilation, depth_multiplier=draw(st.integers(1, 2)), bias=bias,
        depthwise_bias=bias and draw(st.booleans()),
        padding=draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        input_shape=[cin, *draw(st.lists(st.integers(4, 9), min_size=n, max_size=n))])


@settings(max_examples=20)
@given(configs())
def test_random_configurations_conform(config: tuple[str, dict[str, Any]]) -> None:
    conforms(*config)

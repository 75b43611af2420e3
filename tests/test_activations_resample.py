"""Activations (activations_more.py) and shape/resampling layers (resample.py).

Naive rules are caught, the float64 references agree with torch in float64, invalid parameters
name their field, the PReLU converter refuses a Keras layer shaped per element, every Keras
model saves and loads in safe mode, and random valid configurations conform both ways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F
from helpers import check_naive, conforms, tensorflow_backend_only
from hypothesis import given, settings
from hypothesis import strategies as st

import conformance
from conformance import reference
from conformance.errors import CaseError
from conformance.families import get_family
from conformance.families.resample import upsample_reference
from conformance.pair import randomize_keras

L, ops = keras.layers, keras.ops


# ---- naive rules


def test_gelu_exact_mapped_to_ops_gelu_default_which_is_tanh() -> None:
    check_naive("gelu", dict(input_shape=(3, 5, 6)), lambda x: ops.gelu(x), low=-4, high=4)


def test_gelu_tanh_mapped_to_keras_activation_gelu_which_is_exact() -> None:
    check_naive("gelu", dict(approximate="tanh", input_shape=(3, 5, 6)), lambda x: L.Activation("gelu")(x),
                low=-4, high=4)


def test_leaky_relu_with_the_keras_default_slope() -> None:
    check_naive("leaky_relu", dict(input_shape=(3, 5, 6)), lambda x: L.LeakyReLU()(x))


def test_leaky_relu_with_the_keras_ops_default_slope() -> None:
    check_naive("leaky_relu", dict(input_shape=(7,)), lambda x: ops.leaky_relu(x))


def test_prelu_shared_axes_left_in_channels_first_numbering() -> None:
    """C == H, so PReLU(shared_axes=[2, 3]) builds an alpha of shape (4, 1, 1) that fits the weight."""
    def copy(pair: Any, model: keras.Model) -> None:
        model.layers[-1].set_weights([pair.torch.weight.detach().numpy().reshape(4, 1, 1)])
    check_naive("prelu", dict(num_parameters=4, input_shape=(4, 4, 5)), lambda x: L.PReLU(shared_axes=[2, 3])(x),
                copy)


def test_prelu_single_slope_spread_only_over_the_spatial_axes() -> None:
    """Sharing only H and W leaves C slopes; filling them from a per-channel layer's alpha differs."""
    def copy(pair: Any, model: keras.Model) -> None:
        slope = float(pair.torch.weight.detach().numpy()[0])
        model.layers[-1].set_weights([np.array([[[slope, -slope, 0.5]]], np.float32)])
    check_naive("prelu", dict(num_parameters=1, input_shape=(3, 4, 5)), lambda x: L.PReLU(shared_axes=[1, 2])(x),
                copy)


def test_prelu_transfer_refuses_a_keras_alpha_per_element() -> None:
    pair = conformance.build_pair("prelu", num_parameters=3, input_shape=(3, 4, 5))
    inp = keras.Input((4, 5, 3))
    per_element = keras.Model(inp, L.PReLU()(inp))
    before = [w.copy() for w in per_element.get_weights()]
    with pytest.raises(conformance.ConversionError, match=r"shared_axes=\[1, 2\]"):
        conformance.transfer_weights(pair.torch, per_element)
    assert all(np.array_equal(a, b) for a, b in zip(before, per_element.get_weights(), strict=True))
    single = conformance.build_pair("prelu", num_parameters=1, input_shape=(3, 4, 5))
    with pytest.raises(conformance.ConversionError, match="1 slope"):
        conformance.transfer_weights(single.torch, pair.keras)


def test_prelu_weights_round_trip_exactly() -> None:
    pair = conformance.build_pair("prelu", num_parameters=3, input_shape=(3, 4, 5))
    randomize_keras(pair.keras, 3)
    before = pair.keras.get_weights()[0].copy()
    report = conformance.transfer_weights(pair.keras, pair.torch)
    assert [r.rule for r in report] == ["1 1 C -> C (one slope per channel)"]   # as applied, keras -> torch
    randomize_keras(pair.keras, 4)
    conformance.transfer_weights(pair.torch, pair.keras)
    np.testing.assert_array_equal(pair.keras.get_weights()[0], before)
    assert pair.keras.get_weights()[0].shape == (1, 1, 3)


def test_hardsigmoid_with_the_keras_2_formula() -> None:
    check_naive("hardsigmoid", dict(input_shape=(3, 5, 6)),
                lambda x: ops.clip(ops.add(ops.multiply(x, 0.2), 0.5), 0.0, 1.0), low=-5, high=5)


def test_softplus_beta_ignored() -> None:
    check_naive("softplus", dict(beta=2.0, input_shape=(3, 5, 6)), lambda x: L.Activation("softplus")(x))


def test_softplus_threshold_ignored() -> None:
    check_naive("softplus", dict(threshold=1.0, input_shape=(3, 5, 6)), lambda x: L.Activation("softplus")(x),
                low=-2, high=2)


@tensorflow_backend_only("ops.pad mode='symmetric' as TensorFlow pads")
def test_replicate_padding_as_tensorflow_symmetric() -> None:
    check_naive("replication_pad2d", dict(padding=2, input_shape=(2, 4, 5)),
                lambda x: ops.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="symmetric"))


def test_symmetric_agrees_with_replicate_for_a_pad_of_one_so_the_catalogue_uses_larger_pads() -> None:
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 2, 4, 5)).astype(np.float32))
    edge = torch.nn.ReplicationPad2d(1)(x).numpy()
    padded = ops.pad(np.moveaxis(x.numpy(), 1, -1), [(0, 0), (1, 1), (1, 1), (0, 0)], mode="symmetric")
    symmetric = keras.ops.convert_to_numpy(padded)
    np.testing.assert_array_equal(np.moveaxis(symmetric, -1, 1), edge)


def test_padding_tuple_read_in_keras_order() -> None:
    """torch's (left, right, top, bottom) is not Keras's ((top, bottom), (left, right))."""
    check_naive("zero_pad2d", dict(padding=[1, 2, 0, 3], input_shape=(2, 4, 5)),
                lambda x: L.ZeroPadding2D(((1, 2), (0, 3)))(x))   # same output shape (7, 8), other placement


def test_pixel_shuffle_as_depth_to_space() -> None:
    def depth_to_space(x: Any) -> Any:   # TensorFlow's channel order, (i*r + j)*C + c
        x = L.Reshape((3, 4, 2, 2, 2))(x)
        return L.Reshape((6, 8, 2))(L.Permute((1, 3, 2, 4, 5))(x))
    check_naive("pixel_shuffle", dict(upscale_factor=2, input_shape=(8, 3, 4)), depth_to_space)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 4, 8)).astype(np.float32)
    inp = keras.Input((3, 4, 8))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.Model(inp, depth_to_space(inp))(x)),
                                  tf.nn.depth_to_space(x, 2).numpy())


def test_bilinear_align_corners_true_mapped_to_upsampling2d() -> None:
    check_naive("upsample", dict(scale_factor=2, mode="bilinear", align_corners=True, input_shape=(3, 5, 6)),
                lambda x: L.UpSampling2D(2, interpolation="bilinear")(x))


def test_bilinear_non_dividing_scale_factor_mapped_to_resizing() -> None:
    """torch interpolates with 1/scale_factor, TensorFlow with in/out: 5 -> 7 at 1.5 is 0.667 vs 0.714."""
    check_naive("upsample", dict(scale_factor=1.5, mode="bilinear", input_shape=(3, 5, 6)),
                lambda x: L.Resizing(7, 9, interpolation="bilinear")(x))


def test_nearest_with_a_non_integer_ratio_mapped_to_resizing() -> None:
    """TensorFlow's nearest uses half-pixel centres (torch's nearest-exact), torch's nearest floor(dst*scale)."""
    check_naive("upsample", dict(size=(7, 9), input_shape=(3, 5, 6)),
                lambda x: L.Resizing(7, 9, interpolation="nearest")(x))


@tensorflow_backend_only("TensorFlow's bicubic resize kernel")
def test_bicubic_mapped_to_tensorflow_bicubic() -> None:
    check_naive("upsample", dict(scale_factor=2, mode="bicubic", input_shape=(3, 5, 6)),
                lambda x: L.UpSampling2D(2, interpolation="bicubic")(x))


def test_torch_nearest_2d_copies_where_1d_and_3d_apply_the_scale() -> None:
    """Evidence for the rank-dependent rule in resample.axis_taps (torch 2.13 CPU)."""
    line = torch.arange(5.0)
    one = F.interpolate(line.reshape(1, 1, 5), scale_factor=1.1, mode="nearest").reshape(-1)
    two = F.interpolate(line.reshape(1, 1, 1, 5), scale_factor=(1.0, 1.1), mode="nearest").reshape(-1)
    three = F.interpolate(line.reshape(1, 1, 1, 1, 5), scale_factor=(1.0, 1.0, 1.1), mode="nearest").reshape(-1)
    assert one.tolist() == three.tolist() == [0, 0, 1, 2, 3]
    assert two.tolist() == [0, 1, 2, 3, 4]


# ---- references against torch in float64


def _f64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


ACTIVATIONS = [
    ("gelu", {}, torch.nn.GELU()), ("gelu", {"approximate": "tanh"}, torch.nn.GELU(approximate="tanh")),
    ("leaky_relu", {"negative_slope": -0.5}, torch.nn.LeakyReLU(-0.5)),
    ("leaky_relu", {}, torch.nn.LeakyReLU()), ("elu", {"alpha": -0.5}, torch.nn.ELU(-0.5)),
    ("selu", {}, torch.nn.SELU()), ("silu", {}, torch.nn.SiLU()), ("hardswish", {}, torch.nn.Hardswish()),
    ("hardsigmoid", {}, torch.nn.Hardsigmoid()),
    ("softplus", {"beta": 2.0, "threshold": 1.0}, torch.nn.Softplus(2.0, 1.0)),
    ("softplus", {"beta": 0.5, "threshold": 5.0}, torch.nn.Softplus(0.5, 5.0)),
]


@pytest.mark.parametrize("name,kwargs,module", ACTIVATIONS, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_activation_references_match_torch_float64(name: str, kwargs: dict[str, Any], module: Any) -> None:
    x = np.random.default_rng(0).uniform(-6, 6, (2, 3, 50))
    ours = reference.activation(name, x, **kwargs)
    np.testing.assert_allclose(ours, module(_f64(x)).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,n", [((3, 4, 5), 3), ((3, 4, 5), 1), ((3,), 3), ((3, 6), 3), ((3, 2, 4, 5), 3)])
def test_prelu_reference_matches_torch_float64(shape: tuple[int, ...], n: int) -> None:
    rng = np.random.default_rng(0)
    x, w = rng.uniform(-1, 1, (2, *shape)), rng.uniform(-1, 1, n)
    ours = get_family("prelu").reference(x, {"weight": w}, {"num_parameters": n, "input_shape": shape})
    np.testing.assert_allclose(ours, F.prelu(_f64(x), _f64(w)).numpy(), rtol=0, atol=1e-15)


UPSAMPLES = [
    dict(scale_factor=1.1, mode="nearest", input_shape=(2, 5, 6)),
    dict(scale_factor=2.1, mode="nearest", input_shape=(2, 7)),
    dict(scale_factor=(1.1, 2.1, 0.7), mode="nearest", input_shape=(2, 5, 3, 4)),
    dict(size=(7, 9), mode="nearest-exact", input_shape=(2, 5, 6)),
    dict(scale_factor=1.5, mode="bilinear", input_shape=(2, 5, 6)),
    dict(scale_factor=0.5, mode="bilinear", align_corners=True, input_shape=(2, 5, 6)),
    dict(size=(1, 8), mode="bilinear", align_corners=True, input_shape=(2, 5, 6)),
    dict(scale_factor=1.5, mode="bilinear", recompute_scale_factor=True, input_shape=(2, 5, 6)),
    dict(scale_factor=2.5, mode="linear", input_shape=(2, 7)),
    dict(scale_factor=2, mode="bicubic", align_corners=True, input_shape=(2, 5, 6)),
    dict(size=(3, 11), mode="bicubic", input_shape=(2, 5, 6)),
    dict(scale_factor=(2, 1.5, 0.5), mode="trilinear", input_shape=(2, 3, 4, 5)),
]


@pytest.mark.parametrize("raw", UPSAMPLES, ids=lambda raw: f"{raw['mode']}-{raw.get('scale_factor', raw.get('size'))}")
def test_upsample_reference_matches_torch_float64(raw: dict[str, Any]) -> None:
    params = get_family("upsample").normalise(raw)
    x = np.random.default_rng(0).uniform(-1, 1, (2, *params["input_shape"]))
    torch_kw = {k: v for k, v in params.items() if k != "input_shape"}
    expected = F.interpolate(_f64(x), **torch_kw).numpy()
    np.testing.assert_allclose(upsample_reference(x, params, np.float64), expected, rtol=0, atol=1e-12)
    # and the family's reference (torch's float32 positions) against torch in float32
    ours32 = get_family("upsample").reference(x, {}, params)
    expected32 = F.interpolate(torch.from_numpy(x.astype(np.float32)), **torch_kw).numpy()
    np.testing.assert_allclose(ours32, expected32, rtol=0, atol=5e-6)


PADS = [1, 3, (1, 2, 0, 3), (-1, 2, 0, 1), (2, -1, -2, 1), (0, 4, 3, 0)]


@pytest.mark.parametrize("family,module", [("zero_pad2d", torch.nn.ZeroPad2d),
                                           ("reflection_pad2d", torch.nn.ReflectionPad2d),
                                           ("replication_pad2d", torch.nn.ReplicationPad2d)])
@pytest.mark.parametrize("padding", PADS)
def test_pad_references_match_torch_float64(family: str, module: Any, padding: Any) -> None:
    spec = get_family(family)
    try:
        params = spec.normalise({"padding": padding, "input_shape": [2, 4, 5]})
    except CaseError:
        assert family == "reflection_pad2d" and padding == 3, "only reflect refuses some of these pads"
        return
    x = np.random.default_rng(0).uniform(-1, 1, (2, 2, 4, 5))
    np.testing.assert_array_equal(spec.reference(x, {}, params), module(padding)(_f64(x)).numpy())


@pytest.mark.parametrize("r,channels", [(1, 3), (2, 8), (3, 18)])
def test_pixel_shuffle_reference_matches_torch_float64(r: int, channels: int) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (2, channels, 3, 4))
    ours = get_family("pixel_shuffle").reference(x, {}, {"upscale_factor": r})
    np.testing.assert_array_equal(ours, F.pixel_shuffle(_f64(x), r).numpy())


# ---- invalid parameters name their field


@pytest.mark.parametrize("family,raw,field", [
    ("gelu", dict(approximate="erf", input_shape=[3]), "approximate"),
    ("prelu", dict(num_parameters=2, input_shape=[3, 4, 4]), "num_parameters"),
    ("softplus", dict(beta=0, input_shape=[3]), "beta"),
    ("upsample", dict(input_shape=[3, 4, 4]), "size"),
    ("upsample", dict(size=4, scale_factor=2, input_shape=[3, 4, 4]), "scale_factor"),
    ("upsample", dict(scale_factor=2, mode="linear", input_shape=[3, 4, 4]), "mode"),
    ("upsample", dict(scale_factor=2, mode="bicubic", input_shape=[3, 4]), "mode"),
    ("upsample", dict(scale_factor=2, align_corners=True, input_shape=[3, 4, 4]), "align_corners"),
    ("upsample", dict(size=4, recompute_scale_factor=True, input_shape=[3, 4, 4]), "recompute_scale_factor"),
    ("upsample", dict(scale_factor=0.1, input_shape=[3, 4, 4]), "scale_factor"),
    ("upsample", dict(scale_factor=[2, 2, 2], input_shape=[3, 4, 4]), "scale_factor"),
    ("upsample", dict(size=4, input_shape=[3, 4, 4, 4, 4]), "input_shape"),
    ("upsample", dict(size=4, mode="area", input_shape=[3, 4, 4]), "mode"),
    ("reflection_pad2d", dict(padding=4, input_shape=[2, 4, 5]), "padding"),
    ("reflection_pad2d", dict(padding=[-1, 4, 0, 0], input_shape=[2, 4, 5]), "padding"),
    ("zero_pad2d", dict(padding=[0, 0, -2, -2], input_shape=[2, 4, 5]), "padding"),
    ("zero_pad2d", dict(padding=[1, 2], input_shape=[2, 4, 5]), "padding"),
    ("replication_pad2d", dict(padding=1, input_shape=[4, 5]), "input_shape"),
    ("replication_pad2d", dict(padding=[0, 0, 1, -2], input_shape=[2, 2, 2]), "padding"),
    ("pixel_shuffle", dict(upscale_factor=2, input_shape=[6, 3, 3]), "input_shape"),
    ("dropout", dict(p=1.5, input_shape=[3]), "p"),
])
def test_invalid_parameters_name_the_field(family: str, raw: dict[str, Any], field: str) -> None:
    with pytest.raises(CaseError) as info:
        conformance.build_pair(family, **raw)
    assert info.value.field == field, str(info.value)


# ---- the Keras models use standard layers and keras.ops only: they survive safe-mode loading


@pytest.mark.parametrize("family,raw", [
    ("upsample", dict(scale_factor=2, mode="bicubic", align_corners=True, input_shape=(2, 4, 5))),
    ("upsample", dict(size=(7, 9), mode="bilinear", input_shape=(2, 4, 5))),
    ("replication_pad2d", dict(padding=(-1, 2, 3, 0), input_shape=(2, 4, 5))),
    ("reflection_pad2d", dict(padding=(-1, 2, 3, 0), input_shape=(2, 4, 5))),
    ("pixel_shuffle", dict(upscale_factor=2, input_shape=(8, 3, 4))),
    ("softplus", dict(beta=2.0, threshold=1.0, input_shape=(3, 4))),
    ("prelu", dict(num_parameters=3, input_shape=(3, 4, 5))),
    ("leaky_relu", dict(negative_slope=-0.5, input_shape=(3,))),
])
def test_keras_models_save_and_load_in_safe_mode(tmp_path: Path, family: str, raw: dict[str, Any]) -> None:
    pair = conformance.build_pair(family, **raw)
    randomize_keras(pair.keras, 0)
    x = np.random.default_rng(0).uniform(-1, 1, (2, *pair.keras_input_shape)).astype(np.float32)
    path = tmp_path / "model.keras"
    pair.keras.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(pair.keras(x)))


# ---- random valid configurations conform in both directions


@st.composite
def activation_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    family = draw(st.sampled_from(["gelu", "leaky_relu", "prelu", "elu", "softplus", "selu", "hardswish"]))
    raw: dict[str, Any] = {"input_shape": shape}
    if family == "gelu":
        raw["approximate"] = draw(st.sampled_from(["none", "tanh"]))
    elif family == "leaky_relu":
        raw["negative_slope"] = draw(st.floats(-2, 2, allow_nan=False))
    elif family == "prelu":
        raw["num_parameters"] = draw(st.sampled_from([1, shape[0]]))
    elif family == "elu":
        raw["alpha"] = draw(st.floats(-2, 2, allow_nan=False))
    elif family == "softplus":
        raw["beta"] = draw(st.floats(0.25, 4))
        raw["threshold"] = draw(st.floats(0.5, 20))
    return family, raw


@st.composite
def resample_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    family = draw(st.sampled_from(["upsample", "upsample", "zero_pad2d", "reflection_pad2d", "replication_pad2d",
                                   "pixel_shuffle"]))
    if family == "pixel_shuffle":
        r = draw(st.integers(1, 3))
        return family, {"upscale_factor": r, "input_shape": [r * r * draw(st.integers(1, 2)),
                                                             draw(st.integers(1, 4)), draw(st.integers(1, 4))]}
    if family != "upsample":
        return family, {"padding": draw(st.lists(st.integers(-2, 4), min_size=4, max_size=4)),
                        "input_shape": [2, draw(st.integers(2, 6)), draw(st.integers(2, 6))]}
    n = draw(st.integers(1, 3))
    mode = draw(st.sampled_from({1: ["nearest", "nearest-exact", "linear"],
                                 2: ["nearest", "nearest-exact", "bilinear", "bicubic"],
                                 3: ["nearest", "trilinear"]}[n]))
    raw = {"mode": mode, "input_shape": [2, *draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))]}
    if not mode.startswith("nearest"):
        raw["align_corners"] = draw(st.sampled_from([True, False]))
    if draw(st.booleans()):
        raw["size"] = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    else:
        raw["scale_factor"] = draw(st.lists(st.sampled_from([0.5, 0.7, 1.0, 1.1, 1.5, 2.0, 2.1, 2.5, 3.0]),
                                            min_size=n, max_size=n))
        raw["recompute_scale_factor"] = draw(st.sampled_from([None, True]))
    return "upsample", raw


@settings(max_examples=20)
@given(activation_configs())
def test_random_activation_configurations_conform(config: tuple[str, dict[str, Any]]) -> None:
    conforms(*config)


@settings(max_examples=25)
@given(resample_configs())
def test_random_resample_configurations_conform(config: tuple[str, dict[str, Any]]) -> None:
    conforms(*config)

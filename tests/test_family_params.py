"""Family parameters as the case schema reads them: defaults, lower bounds and the messages for shapes that
do not fit. Written for the survivors of mutation testing of conformance/families/dense.py, whose weight
rules were all caught but whose parameter checks were not (docs/mutation.md). No torch, no Keras."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.errors import CaseError
from conformance.families import get_family
from conformance.families.base import Family


def refused(family: str | Family, raw: dict[str, Any], field: str, message: str) -> None:
    """The case schema refuses ``raw`` with a CaseError that names ``field`` and matches ``message``."""
    with pytest.raises(CaseError, match=message) as caught:
        (get_family(family) if isinstance(family, str) else family).normalise(raw)
    assert caught.value.field == field


def test_linear_defaults_and_bounds() -> None:
    linear = get_family("linear")
    assert linear.normalise({"in_features": 1, "out_features": 1, "input_shape": [1]}) == {
        "in_features": 1, "out_features": 1, "bias": True, "input_shape": (1,)}
    for field, value in (("in_features", 0), ("out_features", 0)):
        raw = {"in_features": 1, "out_features": 1, "input_shape": [1], field: value}
        with pytest.raises(CaseError, match="must be >= 1, got 0") as caught:
            linear.normalise(raw)
        assert caught.value.field == field


@pytest.mark.parametrize("last", [3, 9])
def test_linear_input_must_end_in_in_features(last: int) -> None:
    with pytest.raises(CaseError, match=f"last dimension {last} != in_features 6") as caught:
        get_family("linear").normalise({"in_features": 6, "out_features": 2, "input_shape": [2, 4, last]})
    assert caught.value.field == "input_shape"


def test_flatten_linear_refuses_maps_it_cannot_build() -> None:
    family = get_family("flatten_linear")
    base = {"out_channels": 2, "kernel_size": 3, "out_features": 4}
    with pytest.raises(CaseError, match="expected \\(C, L\\), \\(C, H, W\\) or \\(C, D, H, W\\)"):
        family.normalise({**base, "input_shape": [3, 4, 4, 4, 4]})
    with pytest.raises(CaseError, match="too small for kernel 3"):
        family.normalise({**base, "input_shape": [3, 2, 5]})
    assert family.normalise({**base, "input_shape": [3, 3, 5]})["merge"] == "none"


# ---- batch_norm1d/2d/3d (conformance/families/norm.py)


def test_batch_norm_defaults_and_bounds() -> None:
    family = get_family("batch_norm2d")
    assert family.normalise({"num_features": 1, "input_shape": [1, 2, 2]}) == {
        "num_features": 1, "eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True,
        "input_shape": (1, 2, 2)}
    base = {"num_features": 1, "input_shape": [1, 2, 2]}
    for field, value, message in (("num_features", 0, "must be >= 1, got 0"), ("eps", 0.0, "must be > 0.0"),
                                  ("momentum", -0.1, "must be >= 0.0"),
                                  ("track_running_stats", False, "expected one of \\[True\\]")):
        refused(family, {**base, field: value}, field, message)
    assert family.normalise({**base, "momentum": 0.0, "eps": 1e-12})["momentum"] == 0.0


@pytest.mark.parametrize(("name", "good", "bad", "layouts"), [
    ("batch_norm1d", ([3], [3, 5]), [3, 4, 5], "\\(C\\) or \\(C, L\\) per sample, rank 1 or 2; got rank 3"),
    ("batch_norm2d", ([3, 4, 5],), [3, 4], "\\(C, H, W\\) per sample, rank 3; got rank 2"),
    ("batch_norm3d", ([3, 2, 4, 5],), [3, 4, 5], "\\(C, D, H, W\\) per sample, rank 4; got rank 3"),
])
def test_batch_norm_takes_only_its_own_rank(name: str, good: tuple[list[int], ...], bad: list[int],
                                            layouts: str) -> None:
    family = get_family(name)
    for shape in good:
        assert family.normalise({"num_features": 3, "input_shape": shape})["input_shape"] == tuple(shape)
    refused(family, {"num_features": 3, "input_shape": bad}, "input_shape", layouts)


@pytest.mark.parametrize("channels", [2, 4])
def test_batch_norm_channels_must_be_num_features(channels: int) -> None:
    refused("batch_norm2d", {"num_features": 3, "input_shape": [channels, 4, 4]}, "input_shape",
            f"has {channels} channels but num_features is 3")


def test_keras_momentum_is_one_minus_torchs_and_refuses_what_keras_cannot_do() -> None:
    from conformance.families.norm import keras_momentum
    assert [keras_momentum(m) for m in (0.0, 0.1, 0.25, 1.0)] == [1.0, 0.9, 0.75, 0.0]
    with pytest.raises(ValueError, match="momentum=None .* has no Keras"):
        keras_momentum(None)
    for outside in (-0.01, 1.01):
        with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
            keras_momentum(outside)


# ---- conv1d/2d/3d (conformance/families/conv.py)

CONV = {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "input_shape": [2, 5, 5]}


def test_conv_defaults_and_bounds() -> None:
    family = get_family("conv2d")
    assert family.normalise(CONV) == {
        "in_channels": 2, "out_channels": 4, "kernel_size": (3, 3), "stride": (1, 1), "padding": (0, 0),
        "dilation": (1, 1), "groups": 1, "bias": True, "padding_mode": "zeros", "input_shape": (2, 5, 5)}
    for field in ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "groups"):
        refused(family, {**CONV, field: 0}, field, "must be >= 1, got 0")
    assert family.normalise({**CONV, "padding": 0})["padding"] == (0, 0)
    refused(family, {**CONV, "padding": -1}, "padding", "must be >= 0, got -1")
    refused(family, {**CONV, "padding_mode": "reflect"}, "padding_mode", "expected one of \\['zeros'\\]")


@pytest.mark.parametrize("channels", [1, 3])
def test_conv_channels_must_be_in_channels(channels: int) -> None:
    refused("conv2d", {**CONV, "input_shape": [channels, 5, 5]}, "input_shape",
            f"has {channels} channels but in_channels is 2")


@pytest.mark.parametrize(("in_channels", "out_channels", "groups", "fits"), [
    (4, 8, 4, True), (4, 8, 2, True), (4, 6, 4, False), (6, 4, 4, False), (4, 6, 3, False)])
def test_conv_groups_must_divide_both_channel_counts(in_channels: int, out_channels: int, groups: int,
                                                    fits: bool) -> None:
    raw = {**CONV, "in_channels": in_channels, "out_channels": out_channels, "groups": groups,
           "input_shape": [in_channels, 5, 5]}
    if fits:
        assert get_family("conv2d").normalise(raw)["groups"] == groups
        return
    refused("conv2d", raw, "groups",
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")


def test_conv_same_padding_only_at_stride_one() -> None:
    family = get_family("conv2d")
    assert family.normalise({**CONV, "padding": "same"})["padding"] == "same"
    assert family.normalise({**CONV, "padding": "same", "input_shape": [2, 1, 1]})["padding"] == "same"
    for stride in ((2, 1), (1, 2)):
        refused(family, {**CONV, "padding": "same", "stride": list(stride)}, "padding",
                "padding='same' with stride > 1")
    assert family.normalise({**CONV, "padding": "valid", "stride": 2})["padding"] == "valid"
    refused(family, {**CONV, "padding": "valid", "input_shape": [2, 5, 2]}, "input_shape",   # 'valid' pads nothing
            "spatial size 2 is too small for kernel 3 with dilation 1 and padding 0")
    assert family.normalise({**CONV, "padding": "valid", "input_shape": [2, 5, 3]})["input_shape"] == (2, 5, 3)


@pytest.mark.parametrize(("spatial", "kernel", "stride", "pad", "dilation", "fits"), [
    (3, 3, 1, 0, 1, True), (2, 3, 1, 0, 1, False),          # output length 1, then 0
    (1, 3, 1, 1, 1, True), (1, 3, 1, 0, 1, False),          # one pixel each side makes room
    (1, 4, 1, 1, 1, False),                                 # but not for a kernel of 4
    (5, 3, 1, 0, 2, True), (4, 3, 1, 0, 2, False),          # dilation 2: the kernel spans 5
    (3, 3, 5, 0, 1, True),                                  # a stride never empties the output
])
def test_conv_spatial_size_must_fit_the_kernel(spatial: int, kernel: int, stride: int, pad: int,
                                               dilation: int, fits: bool) -> None:
    raw = {**CONV, "kernel_size": kernel, "stride": stride, "padding": pad, "dilation": dilation,
           "input_shape": [2, 6, spatial]}
    family = get_family("conv2d")
    if fits:
        assert family.normalise(raw)["input_shape"] == (2, 6, spatial)
        return
    refused(family, raw, "input_shape",
            f"spatial size {spatial} is too small for kernel {kernel} with dilation {dilation} and padding {pad}")


def test_conv_output_length_is_torchs_formula() -> None:
    from conformance.families.conv import conv_output_length
    # floor((L + total padding - dilation * (k - 1) - 1) / stride) + 1, as torch.nn.Conv2d documents
    assert conv_output_length(10, 3, 2, 2, 1) == 5
    assert conv_output_length(11, 3, 2, 2, 1) == 6
    assert conv_output_length(9, 3, 1, 0, 3) == 3
    assert conv_output_length(7, 1, 3, 0, 1) == 3


@pytest.mark.parametrize(("name", "shape"), [("conv1d", [2, 5]), ("conv3d", [2, 5, 5, 5])])
def test_conv_rank_follows_the_family(name: str, shape: list[int]) -> None:
    family = get_family(name)
    n = len(shape) - 1
    params = family.normalise({**CONV, "input_shape": shape})
    assert params["kernel_size"] == (3,) * n and params["stride"] == (1,) * n and params["padding"] == (0,) * n
    refused(family, {**CONV, "input_shape": [2, 5, 5]}, "input_shape", "expected rank")


@pytest.mark.parametrize(("name", "in_channels", "groups", "kernel"), [
    ("conv1d", 6, 1, [5]), ("conv2d", 4, 2, [3, 2]), ("conv2d", 8, 8, [3, 3]), ("conv3d", 3, 1, [2, 3, 1])])
def test_conv_tolerance_counts_the_terms_of_one_output(name: str, in_channels: int, groups: int,
                                                       kernel: list[int]) -> None:
    """One output element sums (in_channels / groups) * prod(kernel) products: the torch weight's size per
    output channel. The allowance grows with its square root and no faster (Tolerance.reduction)."""
    n = len(kernel)
    p = get_family(name).normalise({"in_channels": in_channels, "out_channels": 2 * in_channels,
                                    "kernel_size": kernel, "groups": groups,
                                    "input_shape": [in_channels] + [6] * n})
    terms = in_channels // groups
    for k in kernel:
        terms *= k
    tolerance = get_family(name).tolerance(p)
    assert tolerance.atol == pytest.approx(1e-5 * terms ** 0.5, rel=1e-12)
    assert tolerance.rtol == 1e-4
    assert f"reduction over {terms} terms" in tolerance.reason


def test_batch_norm_tolerance_is_one_rounding_per_element() -> None:
    """Inference BatchNorm is an affine map per element (no sum over the input): torch.testing's float32 atol,
    and an rtol for the (x - mean) / sqrt(var + eps) rounding, whatever the shape."""
    for name, shape in (("batch_norm1d", [3]), ("batch_norm2d", [3, 8, 8]), ("batch_norm3d", [3, 2, 2, 2])):
        family = get_family(name)
        tolerance = family.tolerance(family.normalise({"num_features": 3, "input_shape": shape}))
        assert (tolerance.atol, tolerance.rtol) == (1e-5, 1e-4)


# ---- max_pool / avg_pool 1d/2d/3d (conformance/families/pool.py)


def test_pool_defaults_and_bounds() -> None:
    assert get_family("max_pool2d").normalise({"kernel_size": 2, "input_shape": [1, 4, 4]}) == {
        "kernel_size": (2, 2), "stride": None, "padding": (0, 0), "ceil_mode": False, "dilation": (1, 1),
        "return_indices": False, "input_shape": (1, 4, 4)}
    assert get_family("avg_pool1d").normalise({"kernel_size": 3, "input_shape": [1, 4]}) == {
        "kernel_size": (3,), "stride": None, "padding": (0,), "ceil_mode": False, "count_include_pad": True,
        "divisor_override": None, "input_shape": (1, 4)}
    base = {"kernel_size": 2, "input_shape": [1, 6, 6]}
    for family, field, value, message in (
            ("max_pool2d", "kernel_size", 0, "must be >= 1, got 0"), ("max_pool2d", "stride", 0, "must be >= 1"),
            ("max_pool2d", "dilation", 0, "must be >= 1"), ("avg_pool2d", "padding", -1, "must be >= 0"),
            ("max_pool2d", "return_indices", True, "expected one of \\[False\\]"),
            ("avg_pool2d", "divisor_override", 2, "expected one of \\[\\]")):
        refused(family, {**base, field: value}, field, message)
    assert get_family("avg_pool2d").normalise({**base, "padding": 1, "stride": "none"})["stride"] is None


@pytest.mark.parametrize("family", ["max_pool2d", "avg_pool2d"])
def test_pool_padding_at_most_half_the_kernel(family: str) -> None:
    ok = get_family(family).normalise({"kernel_size": [4, 3], "padding": [2, 1], "input_shape": [1, 6, 6]})
    assert ok["padding"] == (2, 1)
    refused(family, {"kernel_size": [4, 3], "padding": [2, 2], "input_shape": [1, 6, 6]}, "padding",
            "padding 2 is more than half the kernel size 3")


def test_avg_pool3d_refuses_an_input_smaller_than_the_kernel_and_the_others_need_only_an_output() -> None:
    refused("avg_pool3d", {"kernel_size": [2, 3, 2], "padding": 1, "input_shape": [1, 4, 2, 4]}, "input_shape",
            "AvgPool3d refuses an input smaller than the kernel")
    fits = get_family("avg_pool3d").normalise({"kernel_size": 2, "input_shape": [1, 2, 2, 2]})
    assert fits["kernel_size"] == (2, 2, 2)
    # max pooling in 3-D and average pooling in 2-D only need a non-empty output: the padding makes room
    assert get_family("max_pool3d").normalise({"kernel_size": 3, "padding": 1, "input_shape": [1, 2, 2, 2]})
    assert get_family("avg_pool2d").normalise({"kernel_size": 3, "padding": 1, "input_shape": [1, 2, 2]})


@pytest.mark.parametrize(("family", "raw", "fits"), [
    ("max_pool1d", {"kernel_size": 3, "input_shape": [1, 3]}, True),
    ("max_pool1d", {"kernel_size": 3, "input_shape": [1, 2]}, False),
    ("max_pool1d", {"kernel_size": 3, "dilation": 2, "input_shape": [1, 4]}, False),   # the window spans 5
    ("max_pool1d", {"kernel_size": 3, "dilation": 2, "padding": 1, "input_shape": [1, 4]}, True),
    ("avg_pool1d", {"kernel_size": 2, "padding": 1, "input_shape": [1, 1]}, True),
    ("avg_pool1d", {"kernel_size": 3, "input_shape": [1, 2]}, False),
])
def test_pool_output_must_not_be_empty(family: str, raw: dict[str, object], fits: bool) -> None:
    if fits:
        assert get_family(family).normalise(raw)
        return
    refused(family, raw, "input_shape", "gives an empty output \\[0\\] for kernel \\[3\\]")


def test_pool_output_length_against_hand_worked_values() -> None:
    """torch's pooling_output_shape: floor or ceil of (L + 2p - d(k-1) - 1) / s, plus 1; with ceil_mode the
    last window must start inside the input or the left padding, else it is dropped."""
    from conformance.families.pool import pool_output_length
    assert pool_output_length(10, 3, 2, 0, 1, False) == 4
    assert pool_output_length(10, 3, 2, 0, 1, True) == 5
    assert pool_output_length(11, 3, 2, 1, 1, False) == 6
    assert pool_output_length(11, 3, 2, 1, 1, True) == 6
    # (5 + 2 - 2 + 1) // 2 + 1 = 4 windows, but the 4th would start at 6 >= 5 + 1: past the input and left pad
    assert pool_output_length(5, 2, 2, 1, 1, True) == 3
    assert pool_output_length(9, 3, 3, 0, 2, False) == 2
    # a stride longer than the window: ceil's 3rd window would start at 6, past the input (>= 5, not only == 5)
    assert pool_output_length(5, 1, 3, 0, 1, True) == 2


def test_max_pool_inputs_keep_both_signs_away_from_padded_borders() -> None:
    """Only the borders that padding can reach are made negative; elsewhere the values stay uniform in [-1, 1],
    so the maximum of a window is decided by its data (constant data would let any window pass)."""
    import numpy as np

    from conformance.families.pool import max_pool_inputs
    family = get_family("max_pool2d")
    p = family.normalise({"kernel_size": 3, "stride": 2, "padding": 1, "input_shape": [2, 16, 16]})
    (x,) = max_pool_inputs(p, np.random.default_rng(0), 3)
    assert x.shape == (3, 2, 16, 16) and x.dtype == np.float32
    interior = x[:, :, 3:-3, 3:-3]
    assert -1.0 <= interior.min() < -0.9 and 0.9 < interior.max() <= 1.0
    assert len(np.unique(interior)) == interior.size, "every value drawn, none repeated"
    assert (x[:, :, :3, :] < 0).all() and (x[:, :, :, -3:] < 0).all()
    # exactly one window span (3) from each padded border: the next row and column keep both signs
    for line in (x[:, :, 3, 3:-3], x[:, :, -4, 3:-3], x[:, :, 3:-3, 3], x[:, :, 3:-3, -4]):
        assert (line > 0).any() and (line < 0).any()
    unpadded = family.normalise({"kernel_size": 3, "input_shape": [2, 9, 9]})
    (y,) = max_pool_inputs(unpadded, np.random.default_rng(0), 3)
    assert (y > 0).mean() == pytest.approx(0.5, abs=0.1), "no padding, nothing made negative"

"""Check the float64 NumPy references in conformance.reference against torch float64."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance import reference as ref

TOL = 1e-10


def _t(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def _close(ours: np.ndarray, theirs: torch.Tensor) -> None:
    expected = theirs.detach().numpy()
    assert ours.dtype == np.float64
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(ours[~finite], expected[~finite])
    if finite.any():
        assert np.abs(ours[finite] - expected[finite]).max() <= TOL


def _torch_conv(x, w, b, **kw) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns when 'same' needs asymmetric padding
        warnings.simplefilter("ignore", UserWarning)
        return getattr(F, f"conv{w.ndim - 2}d")(_t(x), _t(w), _t(b), **kw)


# (spatial, c_in, c_out, kernel, stride, padding, dilation, groups, bias)
CONV_CASES = [
    ((9,), 3, 4, (3,), 1, 0, 1, 1, True),
    ((10,), 4, 6, (4,), 2, 1, 2, 2, False),
    ((8,), 3, 3, (3,), 1, "same", 2, 3, True),  # depthwise 1-D
    ((7,), 2, 2, (4,), 1, "same", 1, 1, True),  # even kernel: asymmetric 'same'
    ((7, 8), 3, 5, (3, 3), 1, 1, 1, 1, True),
    ((9, 7), 4, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, True),
    ((8, 8), 4, 4, (3, 3), 2, 1, 1, 4, False),  # depthwise
    ((8, 6), 3, 6, (3, 3), 1, 1, 1, 3, True),  # depthwise with multiplier 2
    ((6, 7), 2, 3, (2, 4), 1, "same", (2, 1), 1, True),
    ((6, 7), 2, 3, (3, 2), (1, 3), "valid", 1, 1, False),
    ((5, 6, 7), 2, 3, (3, 3, 3), 1, 1, 1, 1, True),
    ((6, 5, 7), 4, 4, (2, 3, 2), (2, 1, 3), (1, 0, 1), (1, 2, 1), 2, True),
    ((5, 5, 6), 3, 3, (3, 2, 3), 1, "same", (1, 2, 1), 3, False),
    ((5, 6, 4), 2, 2, (3, 3, 3), 1, "valid", 1, 1, True),
]


@pytest.mark.parametrize("spatial,c_in,c_out,kernel,stride,padding,dilation,groups,bias", CONV_CASES)
def test_conv(spatial, c_in, c_out, kernel, stride, padding, dilation, groups, bias) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c_in, *spatial))
    w = rng.standard_normal((c_out, c_in // groups, *kernel))
    b = rng.standard_normal(c_out) if bias else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _close(ref.conv(x, w, b, **kw), _torch_conv(x, w, b, **kw))


def test_conv_rejects_invalid() -> None:
    x, w = np.zeros((1, 2, 6)), np.zeros((2, 2, 3))
    with pytest.raises(ValueError, match="stride"):
        ref.conv(x, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="groups"):
        ref.conv(x, w, groups=2)
    with pytest.raises(ValueError):
        ref.conv(x, np.zeros((2, 2, 9)))


@pytest.mark.parametrize("x_shape", [(5,), (3, 5), (2, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(x_shape, bias) -> None:
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(x_shape), rng.standard_normal((4, 5))
    b = rng.standard_normal(4) if bias else None
    _close(ref.linear(x, w, b), F.linear(_t(x), _t(w), _t(b)))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 5), (2, 3, 3, 4, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm(shape, affine) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    mean, var = rng.standard_normal(3), rng.uniform(0.1, 2.0, 3)
    w, b = (rng.standard_normal(3), rng.standard_normal(3)) if affine else (None, None)
    expected = F.batch_norm(_t(x), _t(mean), _t(var), _t(w), _t(b), training=False, eps=1e-3)
    _close(ref.batch_norm(x, mean, var, w, b, eps=1e-3), expected)


# (spatial, kernel, stride, padding, dilation); each runs with ceil_mode False and True.
MAX_CASES = [
    ((9,), 3, None, 0, 1),
    ((6,), 3, 2, 0, 1),  # ceil_mode adds a window
    ((5,), 2, 2, 1, 1),  # ceil_mode's extra window starts in the right padding: dropped
    ((10,), 3, 2, 1, 2),
    ((7, 8), 2, None, 0, 1),
    ((7, 6), (3, 2), (2, 2), (1, 1), 1),  # ceil_mode adds a row
    ((9, 7), 3, (2, 3), (1, 0), (2, 1)),
    ((5, 6, 7), 2, None, 0, 1),
    ((6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 1, 0), (1, 2, 1)),
]


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("spatial,kernel,stride,padding,dilation", MAX_CASES)
def test_max_pool(spatial, kernel, stride, padding, dilation, ceil_mode) -> None:
    x = np.random.default_rng(3).standard_normal((2, 3, *spatial))
    fn = getattr(F, f"max_pool{len(spatial)}d")
    expected = fn(_t(x), kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    _close(ref.max_pool(x, kernel, stride, padding, dilation, ceil_mode), expected)


def test_ceil_mode_changes_shapes() -> None:
    # Guard that the case list really exercises both directions of the ceil_mode rule.
    x = np.zeros((1, 1, 6))
    assert ref.max_pool(x, 3, 2).shape[-1] == 2 and ref.max_pool(x, 3, 2, ceil_mode=True).shape[-1] == 3
    x = np.zeros((1, 1, 5))
    assert ref.max_pool(x, 2, 2, 1, ceil_mode=True).shape[-1] == 3


def test_max_pool_nan_and_invalid() -> None:
    x = np.arange(12.0).reshape(1, 1, 12)
    x[0, 0, 4] = np.nan
    _close(ref.max_pool(x, 3, 2, 1), F.max_pool1d(_t(x), 3, 2, 1))
    with pytest.raises(ValueError, match="half"):
        ref.max_pool(x, 3, 1, 2)


# (spatial, kernel, stride, padding, divisor_override); each runs over ceil_mode x count_include_pad.
AVG_CASES = [
    ((9,), 3, None, 0, None),
    ((6,), 3, 2, 1, None),  # ceil_mode window covers padding and positions beyond it
    ((5,), 2, 2, 1, None),
    ((11,), 4, 3, 2, None),
    ((7, 8), 2, None, 0, None),
    ((7, 6), (3, 2), (2, 2), (1, 1), None),
    ((6, 9), 3, (2, 3), (1, 1), 5),
    ((5, 6, 7), 2, None, 0, None),
    ((6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 1, 1), None),
    ((6, 5, 6), 3, 2, 1, 4),
]


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("spatial,kernel,stride,padding,divisor", AVG_CASES)
def test_avg_pool(spatial, kernel, stride, padding, divisor, ceil_mode, count_include_pad) -> None:
    x = np.random.default_rng(4).standard_normal((2, 3, *spatial))
    fn = getattr(F, f"avg_pool{len(spatial)}d")
    extra = {} if divisor is None else {"divisor_override": divisor}
    expected = fn(_t(x), kernel, stride, padding, ceil_mode, count_include_pad, **extra)
    ours = ref.avg_pool(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    _close(ours, expected)


ADAPTIVE_CASES = [
    ((12,), 4),  # divides
    ((10,), 3),  # does not divide
    ((5,), 7),  # more bins than inputs: bins overlap
    ((8, 9), (4, 3)),
    ((7, 10), (3, 4)),
    ((7, 10), (None, 3)),
    ((6, 7), 1),
    ((6, 8, 7), (3, 4, 7)),
    ((5, 7, 9), (2, None, 4)),
]


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("spatial,output_size", ADAPTIVE_CASES)
def test_adaptive_pool(kind, spatial, output_size) -> None:
    x = np.random.default_rng(5).standard_normal((2, 3, *spatial))
    fn = getattr(F, f"adaptive_{kind}_pool{len(spatial)}d")
    ours = getattr(ref, f"adaptive_{kind}_pool")(x, output_size)
    _close(ours, fn(_t(x), output_size))


ACTIVATIONS = [
    ("relu", {}, F.relu),
    ("tanh", {}, torch.tanh),
    ("sigmoid", {}, torch.sigmoid),
    ("softmax", {"dim": 1}, None),
    ("softmax", {"dim": -1}, None),
    ("softmax", {}, None),  # torch's legacy implicit dim
    ("log_softmax", {"dim": 0}, None),
    ("log_softmax", {"dim": -1}, None),
    ("gelu", {}, F.gelu),
    ("gelu", {"approximate": "tanh"}, F.gelu),
    ("leaky_relu", {}, F.leaky_relu),
    ("leaky_relu", {"negative_slope": 0.2}, F.leaky_relu),
    ("elu", {}, F.elu),
    ("elu", {"alpha": 0.5}, F.elu),
    ("selu", {}, F.selu),
    ("silu", {}, F.silu),
    ("hardswish", {}, F.hardswish),
    ("hardsigmoid", {}, F.hardsigmoid),
    ("softplus", {}, F.softplus),
    ("softplus", {"beta": 2.0, "threshold": 5.0}, F.softplus),
]


ACTIVATION_IDS = [name + "".join(f"-{k}={v}" for k, v in params.items()) for name, params, _ in ACTIVATIONS]


@pytest.mark.parametrize("shape", [(2, 7), (3, 4, 5)])  # implicit softmax dim is 1 for 2-d, 0 for 3-d
@pytest.mark.parametrize("name,params,torch_fn", ACTIVATIONS, ids=ACTIVATION_IDS)
def test_activation(name, params, torch_fn, shape) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape) * 4.0
    x.flat[:5] = [0.0, -3.0, 3.0, 40.0, -40.0]  # kinks, hardswish edges, saturation
    if torch_fn is None:
        torch_fn = getattr(F, name)
    with warnings.catch_warnings():  # implicit softmax dim is deprecated in torch
        warnings.simplefilter("ignore", UserWarning)
        expected = torch_fn(_t(x), **params)
    _close(ref.activation(name, x, **params), expected)


def test_activation_unknown_name() -> None:
    with pytest.raises(ValueError, match="swishy"):
        ref.activation("swishy", np.zeros(3))


def test_no_framework_import() -> None:
    path = Path(ref.__file__).resolve()
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('reference', {str(path)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@st.composite
def _conv_config(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
    mode = draw(st.sampled_from(["int", "same", "valid"]))
    if mode == "same":
        stride, padding = (1,) * n, "same"
    else:
        stride = tuple(draw(st.integers(1, 3)) for _ in range(n))
        padding = tuple(draw(st.integers(0, 2)) for _ in range(n)) if mode == "int" else "valid"
    pads = padding if isinstance(padding, tuple) else (0,) * n
    spatial = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4))
                    for k, d, p in zip(kernel, dilation, pads, strict=True))
    return dict(shape=(draw(st.integers(1, 2)), c_in, *spatial), w_shape=(c_out, c_in // groups, *kernel),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)),
                kw=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


@settings(max_examples=25, deadline=None)
@given(_conv_config())
def test_conv_property(cfg: dict) -> None:
    rng = np.random.default_rng(cfg["seed"])
    x, w = rng.standard_normal(cfg["shape"]), rng.standard_normal(cfg["w_shape"])
    b = rng.standard_normal(cfg["w_shape"][0]) if cfg["bias"] else None
    _close(ref.conv(x, w, b, **cfg["kw"]), _torch_conv(x, w, b, **cfg["kw"]))


@st.composite
def _pool_config(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["max", "avg"]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(n))
    stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * n)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(n)) if kind == "max" else (1,) * n
    # torch's avg_pool3d (only) also requires the unpadded input to be at least the kernel size.
    least = [k if kind == "avg" and n == 3 else d * (k - 1) + 1 - 2 * p
             for k, d, p in zip(kernel, dilation, padding, strict=True)]
    spatial = tuple(max(1, m) + draw(st.integers(0, 5)) for m in least)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=draw(st.booleans()))
    if kind == "max":
        kw["dilation"] = dilation
    else:
        kw["count_include_pad"] = draw(st.booleans())
        if n > 1 and draw(st.booleans()):
            kw["divisor_override"] = draw(st.integers(1, 9))
    return dict(kind=kind, shape=(2, 2, *spatial), seed=draw(st.integers(0, 2**32 - 1)), kw=kw)


@settings(max_examples=25, deadline=None)
@given(_pool_config())
def test_pool_property(cfg: dict) -> None:
    x = np.random.default_rng(cfg["seed"]).standard_normal(cfg["shape"])
    kind, kw = cfg["kind"], cfg["kw"]
    fn = getattr(F, f"{kind}_pool{len(cfg['shape']) - 2}d")
    _close(getattr(ref, f"{kind}_pool")(x, **kw), fn(_t(x), **kw))

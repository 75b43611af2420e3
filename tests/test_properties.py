"""Random valid conv and pool configurations conform in both directions (hypothesis)."""

from __future__ import annotations

from typing import Any

from helpers import conforms
from hypothesis import assume, given
from hypothesis import strategies as st


@st.composite
def conv_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    n = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 3))
    k = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    stride = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    dilation = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    padding: Any = draw(st.one_of(st.lists(st.integers(0, 2), min_size=n, max_size=n),
                                  st.sampled_from(["same", "valid"])))
    if padding == "same":
        stride = [1] * n
    # TensorFlow's CPU Conv2D is wrong for one input channel with row stride 1 and column stride > 1
    # in some geometries (a recorded divergence in cases/conv2d.toml): generate around it.
    assume(not (n == 2 and cin == 1 and stride[0] == 1 and stride[1] > 1))
    spatial = draw(st.lists(st.integers(5, 11), min_size=n, max_size=n))
    return f"conv{n}d", dict(in_channels=cin, out_channels=cout, kernel_size=k, stride=stride, padding=padding,
                             dilation=dilation, groups=groups, bias=draw(st.booleans()),
                             input_shape=[cin, *spatial])


@st.composite
def pool_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    n = draw(st.sampled_from([1, 2]))
    kind = draw(st.sampled_from(["max", "avg"]))
    k = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    padding = [draw(st.integers(0, ki // 2)) for ki in k]
    params: dict[str, Any] = dict(kernel_size=k, padding=padding, ceil_mode=draw(st.booleans()),
                                  stride=draw(st.one_of(st.none(), st.lists(st.integers(1, 3), min_size=n,
                                                                             max_size=n))),
                                  input_shape=[2, *draw(st.lists(st.integers(4, 10), min_size=n, max_size=n))])
    if kind == "max":
        params["dilation"] = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    else:
        params["count_include_pad"] = draw(st.booleans())
    return f"{kind}_pool{n}d", params


@given(conv_configs())
def test_random_conv_configurations_conform(config: tuple[str, dict[str, Any]]) -> None:
    conforms(*config, seed=7)


@given(pool_configs())
def test_random_pool_configurations_conform(config: tuple[str, dict[str, Any]]) -> None:
    conforms(*config, seed=7)

"""Layout rules: every rule round-trips exactly through its inverse, and bad rules say why."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.families import converters, families
from conformance.layout import Layout, LayoutError
from conformance.rules import DENSE, depthwise_layout, kernel_layout


def test_conv_kernel_rule_matches_the_textbook_transpose() -> None:
    w = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(kernel_layout(2).apply(w), w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(kernel_layout(1).apply(w[..., 0]), w[..., 0].transpose(2, 1, 0))
    np.testing.assert_array_equal(DENSE.apply(w[:, :, 0, 0]), w[:, :, 0, 0].T)


def test_depthwise_rule_splits_output_channels_channel_major() -> None:
    c, m = 3, 2
    w = np.arange(c * m * 1 * 2 * 2).reshape(c * m, 1, 2, 2)
    k = depthwise_layout(2).apply(w, M=m)
    assert k.shape == (2, 2, c, m)
    for ci in range(c):
        for mi in range(m):   # torch output channel ci*m + mi is keras (ci, mi)
            np.testing.assert_array_equal(k[:, :, ci, mi], w[ci * m + mi, 0])


def test_flatten_rule_reorders_rows_like_the_manual_recipe() -> None:
    out, c, h, w = 5, 3, 4, 2
    weight = np.random.default_rng(0).normal(size=(out, c * h * w))
    rule = Layout("O (C H W) -> (H W C) O")
    manual = weight.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(-1, out)
    np.testing.assert_array_equal(rule.apply(weight, C=c, H=h), manual)


_AXES = "ABCDEFG"


@st.composite
def permutation_rules(draw: st.DrawFn) -> tuple[Layout, np.ndarray, dict[str, int]]:
    rank = draw(st.integers(1, 5))
    names = list(_AXES[:rank])
    sizes = {n: draw(st.integers(1, 4)) for n in names}
    target = draw(st.permutations(names))
    # Optionally merge two adjacent target axes into a group, which needs one size to split back.
    text_target = " ".join(target)
    if rank >= 2 and draw(st.booleans()):
        text_target = f"({target[0]} {target[1]}) " + " ".join(target[2:])
    rule = Layout(f"{' '.join(names)} -> {text_target.strip()}")
    array = np.arange(int(np.prod([sizes[n] for n in names]))).reshape([sizes[n] for n in names])
    return rule, array, sizes


@given(permutation_rules())
def test_every_generated_rule_round_trips_exactly(case: tuple[Layout, np.ndarray, dict[str, int]]) -> None:
    rule, array, sizes = case
    moved = rule.apply(array)
    back = rule.invert(moved, **sizes)
    np.testing.assert_array_equal(back, array)


def _declared_rules() -> list[tuple[str, str]]:
    rules = []
    for family in families().values():
        rules += [(f"{family.name}.{name}", text) for name, text in family.weight_layouts.items()]
    return rules


@pytest.mark.parametrize(("where", "text"), _declared_rules(), ids=[w for w, _ in _declared_rules()])
def test_every_declared_family_rule_round_trips(where: str, text: str) -> None:
    rule = Layout(text).validate()
    sizes = {name: 2 + i for i, name in enumerate(rule.axis_names)}
    array = np.random.default_rng(1).normal(size=rule.source_shape(**sizes))
    np.testing.assert_array_equal(rule.invert(rule.apply(array, **sizes), **sizes), array)


def test_converters_are_declared() -> None:
    names = {c.name for c in converters()}
    assert {"conv", "depthwise conv", "dense", "batch norm"} <= names


@pytest.mark.parametrize(("text", "message"), [
    ("O I H W", "exactly one '->'"),
    ("O I -> I", "different axes"),
    ("O O -> O O", "appears twice"),
    ("(O I -> O I", "unclosed"),
    ("O ((I)) -> O I", "nested"),
    ("O I -> I O %", "unexpected characters"),
])
def test_malformed_rules_are_rejected_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(LayoutError, match=message.replace("(", r"\(")):
        Layout(text).validate()


def test_wrong_rank_and_unsplittable_sizes_are_reported() -> None:
    with pytest.raises(LayoutError, match="rank-4"):
        kernel_layout(2).apply(np.zeros((2, 3, 4)))
    with pytest.raises(LayoutError, match="cannot split"):
        depthwise_layout(2).apply(np.zeros((5, 1, 3, 3)), M=2)

"""Layout plans in detail: which axes merge, when a plan transposes, and sizes that do not fit.

The transfer's fast path (conformance/fastcopy.py) executes a :class:`~conformance.layout.Plan`
directly: it copies without a transpose when ``transposes`` is false, and transposes the merged
``elementary`` shape, so these are behaviour, not detail. Written for what mutation testing of
layout.py found untested (docs/mutation.md). NumPy only, so the mutation run's fast stage runs it.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance.layout import Layout, LayoutError


@pytest.mark.parametrize(("rule", "shape", "sizes", "elementary", "perm"), [
    ("O I H W -> H W I O", (2, 3, 4, 5), {}, (2, 3, 20), (2, 1, 0)),
    ("O I D H W -> D H W I O", (2, 3, 4, 5, 6), {}, (2, 3, 120), (2, 1, 0)),     # a run of three axes
    ("(G H) I -> I (G H)", (8, 3), {"G": 4}, (8, 3), (1, 0)),                    # G H stay together
    ("O (C H W) -> (H W C) O", (7, 60), {"C": 3, "H": 4}, (7, 3, 20), (2, 1, 0)),
    ("(C M) 1 H W -> H W C M", (6, 1, 4, 5), {"M": 2}, (6, 20), (1, 0)),
    ("A B C -> A B C", (2, 3, 4), {}, (24,), (0,)),
])
def test_axes_that_stay_adjacent_and_in_order_move_as_one(rule: str, shape: tuple[int, ...], sizes: dict[str, int],
                                                          elementary: tuple[int, ...], perm: tuple[int, ...]) -> None:
    plan = Layout(rule).plan(shape, **sizes)
    assert (plan.elementary, plan.perm) == (elementary, perm)
    x = np.arange(np.prod(shape)).reshape(shape)
    expected = Layout(rule.replace("(", "").replace(")", "")).apply(x.reshape(_split(rule, shape, sizes)))
    np.testing.assert_array_equal(plan.apply(x).reshape(expected.shape), expected)


def _split(rule: str, shape: tuple[int, ...], sizes: dict[str, int]) -> tuple[int, ...]:
    """The source shape with every group split into its elementary axes (a literal 1 kept)."""
    left = rule.split("->")[0].replace("(", " ( ").replace(")", " ) ").split()
    out, group, extents = [], None, iter(shape)
    for token in left:
        if token == "(":
            group = []
        elif token == ")":
            assert group is not None
            extent, known = next(extents), [sizes[n] for n in group if n in sizes]
            missing = extent // int(np.prod(known)) if known else extent
            out += [sizes.get(n, missing) for n in group]
            group = None
        elif group is not None:
            group.append(token)
        else:
            out.append(next(extents))
    return tuple(out)


def test_only_a_plan_that_moves_axes_transposes() -> None:
    assert Layout("O I H W -> H W I O").plan((2, 3, 4, 5)).transposes is True
    assert Layout("(G H) I -> (G H) I").plan((8, 3), G=4).transposes is False
    assert Layout("C -> 1 1 C").plan((5,)).transposes is False


@pytest.mark.parametrize("shape", [(7, 1), (5, 1)])
def test_a_group_whose_sizes_are_all_given_must_match_the_axis(shape: tuple[int, ...]) -> None:
    with pytest.raises(LayoutError, match=f"has size {shape[0]}, expected 6"):
        Layout("(C M) 1 -> C M").plan(shape, C=2, M=3)
    assert Layout("(C M) 1 -> C M").plan((6, 1), C=2, M=3).result == (2, 3)


def test_a_literal_one_must_be_one_and_an_unsplittable_group_is_refused() -> None:
    with pytest.raises(LayoutError, match="axis '1' has size 2"):
        Layout("C 1 -> C").plan((3, 2))
    with pytest.raises(LayoutError, match="axis '1' has size 0"):
        Layout("C 1 -> C").plan((3, 0))
    with pytest.raises(LayoutError, match=r"give the size of \['M'\]"):
        Layout("(C M) -> C M").plan((6,))
    with pytest.raises(LayoutError, match="cannot split size 7"):
        Layout("(C M) -> C M").plan((7,), M=2)
    with pytest.raises(LayoutError, match="cannot split size 4"):
        Layout("(C M) -> C M").plan((4,), M=0)


def test_rules_that_cannot_be_parsed_say_why() -> None:
    for text, message in [("A B", "exactly one '->'"), ("A -> B -> A", "exactly one '->'"),
                          ("A -> B", "different axes"), ("A A -> A", "twice"),
                          ("(A (B)) -> A B", "nested"), ("(A -> A", "unclosed"), ("() A -> A", "empty"),
                          ("(1 A) -> A", "literal 1 inside"), ("A + B -> A B", "unexpected characters"),
                          (" -> A", "names no axes"), ("A) -> A", "unmatched")]:
        with pytest.raises(LayoutError, match=message.replace("(", r"\(")):
            Layout(text).validate()


def test_inverse_text_and_source_shape() -> None:
    rule = Layout("O (C H W) -> (H W C) O")
    assert str(rule.inverse) == "(H W C) O -> O (C H W)" and str(rule) == rule.text
    assert rule.axis_names == ("O", "C", "H", "W")
    assert rule.source_shape(O=2, C=3, H=4, W=5) == (2, 60)
    x = np.arange(2 * 60).reshape(2, 60)
    np.testing.assert_array_equal(rule.invert(rule.apply(x, C=3, H=4), C=3, H=4), x)


@pytest.mark.parametrize("shape", [(2,), (2, 3, 4)])
def test_an_array_of_another_rank_is_refused_by_name(shape: tuple[int, ...]) -> None:
    with pytest.raises(LayoutError, match=f"expects a rank-2 array, got shape {shape}".replace("(", r"\(")
                       .replace(")", r"\)")):
        Layout("O I -> I O").plan(shape)


def test_rules_and_plans_are_immutable_values() -> None:
    import dataclasses
    rule = Layout("O I -> I O")
    assert {rule: 1}[Layout("O I -> I O")] == 1
    plan = rule.plan((2, 3))
    assert {plan: 1}[Layout("O I -> I O").plan((2, 3))] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.text = "I O -> O I"  # type: ignore[misc]

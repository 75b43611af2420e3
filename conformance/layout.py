"""Layout rules as data: ``"O I H W -> H W I O"``.

A rule names every axis of an array on the PyTorch side and says where it goes on the Keras
side. Parenthesised groups split or merge axes, ``(C M) 1 H W -> H W C M`` for a depthwise
kernel, and a literal ``1`` is an axis of size one. The same text drives the conversion, its
exact inverse (the rule read right to left) and what reports print, so the three cannot drift
apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import ConformanceError

_TOKEN = re.compile(r"\(|\)|[A-Za-z_][A-Za-z_0-9]*|1")

# One side of a rule: a list of output axes, each a tuple of elementary axis names
# (an empty tuple is a literal size-one axis).
_Side = tuple[tuple[str, ...], ...]


class LayoutError(ConformanceError, ValueError):
    """A rule that cannot be parsed, or an array that does not fit it."""


def _parse_side(text: str, rule: str) -> _Side:
    axes: list[tuple[str, ...]] = []
    group: list[str] | None = None
    consumed = "".join(text.split())
    tokens = _TOKEN.findall(text)
    if "".join(tokens) != consumed:
        raise LayoutError(f"layout rule {rule!r}: unexpected characters in {text.strip()!r}")
    for token in tokens:
        if token == "(":
            if group is not None:
                raise LayoutError(f"layout rule {rule!r}: nested parentheses")
            group = []
        elif token == ")":
            if not group:
                raise LayoutError(f"layout rule {rule!r}: empty or unmatched parentheses")
            axes.append(tuple(group))
            group = None
        elif token == "1":
            if group is not None:
                raise LayoutError(f"layout rule {rule!r}: a literal 1 inside parentheses")
            axes.append(())
        elif group is not None:
            group.append(token)
        else:
            axes.append((token,))
    if group is not None:
        raise LayoutError(f"layout rule {rule!r}: unclosed parenthesis")
    if not axes:
        raise LayoutError(f"layout rule {rule!r}: a side names no axes")
    return tuple(axes)


@dataclass(frozen=True)
class Plan:
    """A layout rule resolved for one shape: reshape to ``elementary``, transpose by ``perm``, reshape to ``result``."""

    elementary: tuple[int, ...]
    perm: tuple[int, ...]
    result: tuple[int, ...]

    @property
    def transposes(self) -> bool:
        return self.perm != tuple(range(len(self.perm)))

    def apply(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(self.elementary).transpose(self.perm).reshape(self.result)


@dataclass(frozen=True)
class Layout:
    """A parsed, invertible layout rule. ``Layout("O I H W -> H W I O").apply(kernel)``."""

    text: str

    @cached_property
    def _sides(self) -> tuple[_Side, _Side]:
        if self.text.count("->") != 1:
            raise LayoutError(f"layout rule {self.text!r}: expected exactly one '->'")
        left_text, right_text = self.text.split("->")
        left, right = _parse_side(left_text, self.text), _parse_side(right_text, self.text)
        left_names = [n for axis in left for n in axis]
        right_names = [n for axis in right for n in axis]
        for side_names in (left_names, right_names):
            if len(set(side_names)) != len(side_names):
                raise LayoutError(f"layout rule {self.text!r}: an axis name appears twice on one side")
        if set(left_names) != set(right_names):
            raise LayoutError(f"layout rule {self.text!r}: the two sides name different axes "
                              f"({sorted(set(left_names) ^ set(right_names))})")
        return left, right

    def validate(self) -> Layout:
        """Parse now, raising :class:`LayoutError` for a malformed rule."""
        _ = self._sides
        return self

    @property
    def inverse(self) -> Layout:
        left, right = self.text.split("->")
        return Layout(f"{right.strip()} -> {left.strip()}")

    def __str__(self) -> str:
        return self.text

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(n for axis in self._sides[0] for n in axis)

    def source_shape(self, **sizes: int) -> tuple[int, ...]:
        """The left side's shape for the given elementary axis sizes."""
        return tuple(math.prod(sizes[n] for n in axis) for axis in self._sides[0])

    def plan(self, shape: tuple[int, ...], **sizes: int) -> Plan:
        """The reshape, transpose and reshape that take an array of ``shape`` through this rule.

        ``sizes`` gives the size of elementary axes that a group on the left cannot determine
        on its own, e.g. ``M=2`` for ``(C M) 1 H W``. Any array library can apply the plan.
        """
        left, right = self._sides
        if len(shape) != len(left):
            raise LayoutError(f"layout rule {self.text!r} expects a rank-{len(left)} array, got shape {tuple(shape)}")
        known = dict(sizes)
        for axis, extent in zip(left, shape, strict=True):
            if not axis:
                if extent != 1:
                    raise LayoutError(f"layout rule {self.text!r}: axis '1' has size {extent}")
                continue
            unknown = [n for n in axis if n not in known]
            product = math.prod(known[n] for n in axis if n in known)
            group = "(" + " ".join(axis) + ")"
            if len(unknown) > 1:
                raise LayoutError(f"layout rule {self.text!r}: give the size of {unknown[1:]} to split {group}")
            if unknown:
                if product == 0 or extent % product:
                    raise LayoutError(f"layout rule {self.text!r}: cannot split size {extent} into {group} "
                                      f"with {sizes}")
                known[unknown[0]] = extent // product
            elif product != extent:
                raise LayoutError(f"layout rule {self.text!r}: axis {' '.join(axis)} has size {extent}, "
                                  f"expected {product}")
        order = [n for axis in left for n in axis]
        target = [n for axis in right for n in axis]
        # Merge runs of axes that stay adjacent and in order (H W in O I H W -> H W I O): a
        # lower-rank transpose moves the same bytes faster.
        runs: list[list[str]] = []
        for name in order:
            if runs and target.index(name) == target.index(runs[-1][-1]) + 1:
                runs[-1].append(name)
            else:
                runs.append([name])
        heads = sorted(runs, key=lambda run: target.index(run[0]))
        return Plan(tuple(math.prod(known[n] for n in run) for run in runs), tuple(runs.index(r) for r in heads),
                    tuple(math.prod(known[n] for n in axis) for axis in right))

    def apply(self, array: np.ndarray, **sizes: int) -> np.ndarray:
        """Rearrange ``array`` from the left side's layout to the right side's (a view where NumPy can)."""
        return self.plan(tuple(array.shape), **sizes).apply(array)

    def invert(self, array: np.ndarray, **sizes: int) -> np.ndarray:
        """The exact inverse of :meth:`apply`."""
        return self.inverse.apply(array, **sizes)

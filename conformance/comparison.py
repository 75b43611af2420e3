"""Comparing a PyTorch model with a Keras model on the same inputs.

Comparison is element-wise, unsorted, on absolute differences, against an explicit tolerance:
``|keras - torch| <= atol + rtol * |torch|``. ``headroom`` is the largest ratio of observed to
allowed error, so 0.1 means ten times inside the tolerance and > 1 means failed. NaN must
appear at the same positions on both sides; infinities must match exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .families.base import Tolerance


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing two outputs (or sets of outputs) element by element."""

    passed: bool
    max_abs_error: float
    max_rel_error: float
    tolerance: Tolerance
    headroom: float
    allowed_error: float                 # the allowed error at the worst element
    worst_index: tuple[int, ...] | None = None
    torch_value: float | None = None
    keras_value: float | None = None
    problem: str | None = None           # shape, dtype or NaN mismatch, in words
    torch_output: np.ndarray | None = field(default=None, repr=False)
    keras_output: np.ndarray | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        if self.problem:
            return f"FAILED: {self.problem}"
        verdict = "passed" if self.passed else "FAILED"
        text = (f"{verdict}: max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}, "
                f"allowed {self.allowed_error:.3g} at the worst element (atol {self.tolerance.atol:.3g}, "
                f"rtol {self.tolerance.rtol:.3g}), headroom {self.headroom:.3g}")
        if self.worst_index is not None:
            text += f"; worst at index {self.worst_index}: torch {self.torch_value!r}, keras {self.keras_value!r}"
        return text


def compare_arrays(torch_out: np.ndarray, keras_out: np.ndarray, tolerance: Tolerance) -> Comparison:
    """Compare two arrays already in the same (PyTorch) layout."""
    t = np.asarray(torch_out)
    k = np.asarray(keras_out)
    base = dict(tolerance=tolerance, torch_output=t, keras_output=k)
    if t.shape != k.shape:
        return Comparison(False, math.inf, math.inf, headroom=math.inf, allowed_error=0.0,
                          problem=f"output shapes differ: torch {t.shape}, keras {k.shape}", **base)
    if t.size == 0:
        return Comparison(True, 0.0, 0.0, headroom=0.0, allowed_error=tolerance.atol, **base)
    t64, k64 = t.astype(np.float64), k.astype(np.float64)
    t_nan, k_nan = np.isnan(t64), np.isnan(k64)
    if (t_nan != k_nan).any():
        index = tuple(int(i) for i in np.argwhere(t_nan != k_nan)[0])
        return Comparison(False, math.inf, math.inf, headroom=math.inf, allowed_error=0.0, worst_index=index,
                          torch_value=float(t64[index]), keras_value=float(k64[index]),
                          problem=f"NaN at index {index} on one side only: torch {t64[index]}, keras {k64[index]}",
                          **base)
    both = ~t_nan
    same_inf = np.isinf(t64) & (t64 == k64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both & ~same_inf, np.abs(k64 - t64), 0.0)
        allowed = tolerance.atol + tolerance.rtol * np.abs(np.where(np.isfinite(t64), t64, 0.0))
        ratio = np.where(diff == 0, 0.0, diff / np.where(allowed > 0, allowed, np.finfo(np.float64).tiny))
        rel = diff / np.maximum(np.abs(np.where(np.isfinite(t64), t64, 0.0)), np.finfo(np.float32).tiny)
    flat = int(np.argmax(ratio))
    index = tuple(int(i) for i in np.unravel_index(flat, t.shape))
    headroom = float(ratio.flat[flat])
    return Comparison(
        passed=bool(headroom <= 1.0), max_abs_error=float(diff.max()), max_rel_error=float(rel.max()),
        headroom=headroom, allowed_error=float(allowed.flat[flat]), worst_index=index,
        torch_value=float(t64[index]), keras_value=float(k64[index]), **base)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _move_channels(array: np.ndarray, to_last: bool) -> np.ndarray:
    if array.ndim < 3:
        return array
    return np.moveaxis(array, 1, -1) if to_last else np.moveaxis(array, -1, 1)


def _keras_input_is_channels_last(keras_model: Any, shape: tuple[int, ...]) -> bool:
    """Decide from the Keras model's declared input whether inputs must move to channels-last."""
    try:
        expected = tuple(keras_model.inputs[0].shape[1:])
    except (AttributeError, IndexError, ValueError, TypeError):
        expected = None
    moved = (*shape[2:], shape[1]) if len(shape) >= 3 else shape[1:]
    same = tuple(shape[1:])

    def fits(candidate: tuple[int, ...]) -> bool:
        return expected is not None and len(expected) == len(candidate) and all(
            e is None or e == c for e, c in zip(expected, candidate, strict=True))

    if len(shape) < 3:
        return False
    if fits(moved) and not fits(same):
        return True
    if fits(same) and not fits(moved):
        return False
    return True   # ambiguous or undeclared (square C == H == W): the suite's convention is channels-last


def default_tolerance(torch_model: Any) -> Tolerance:
    """Scale atol with the largest reduction (fan-in) in the model: a principled fp32 default."""
    fan_in = 1
    for parameter in torch_model.parameters():
        if parameter.ndim >= 2:
            fan_in = max(fan_in, math.prod(parameter.shape[1:]))
    return Tolerance.reduction(fan_in)


def compare(torch_model: Any, keras_model: Any, inputs: Any, *, tolerance: Tolerance | None = None,
            channels_last: bool | None = None) -> Comparison:
    """Run both models on ``inputs`` (PyTorch layout, batch first) and compare element-wise.

    Inputs move to channels-last for Keras when the Keras model expects it (``channels_last``
    overrides the guess); Keras outputs move back before comparing. Both models run in
    inference mode.
    """
    import torch

    x = _to_numpy(inputs).astype(np.float32, copy=False)
    tolerance = tolerance or default_tolerance(torch_model)
    to_last = _keras_input_is_channels_last(keras_model, x.shape) if channels_last is None else channels_last
    torch_model.eval()
    with torch.no_grad():
        torch_out = _to_numpy(torch_model(torch.from_numpy(np.ascontiguousarray(x))))
    keras_in = _move_channels(x, to_last=True) if to_last else x
    keras_out = _to_numpy(keras_model(keras_in, training=False))
    if to_last and keras_out.ndim >= 3 and keras_out.ndim == x.ndim:
        keras_out = _move_channels(keras_out, to_last=False)
    return compare_arrays(torch_out, keras_out, tolerance)

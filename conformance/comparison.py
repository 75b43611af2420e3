"""Comparing a PyTorch model with a Keras model on the same inputs.

Comparison is element-wise, unsorted, on absolute differences, against an explicit tolerance:
``|keras - torch| <= atol * s + rtol * |torch|``. ``headroom`` is the largest ratio of observed to
allowed error, so 0.1 means ten times inside the tolerance and > 1 means failed. NaN must
appear at the same positions on both sides; infinities must match exactly.

The absolute floor keeps its power when outputs are small. A reduction's ``atol`` assumes numbers
of order one: a sum of n such terms rounds to about 1e-5 * sqrt(n). When every value of an output
is far below one (VGG16 with Keras's default initialisation peaks at 0.008), float32 rounding
shrinks with it, and the unscaled floor let a wrong conversion pass: a permuted Flatten -> Dense
there erred by only 4.7x the floor. So for such reductions (``Tolerance.scaled``) the floor is ``atol``
times the output's largest magnitude
(at most 1), but never below torch.testing's element-wise float32 floor of 1e-5, because some
kernels have an absolute error of their own (torch's float32 GELU errs by 3e-7 on outputs of 4e-3).
Tolerances written for cancellation (normalising a single value, where rounding of x / sqrt(eps)
stays while the output shrinks) are not scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .families.base import Tolerance

ELEMENTWISE_ATOL = 1e-5   # a scaled floor never goes below this (nor above atol)


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
    output: int | None = None            # which output holds the worst element, for several outputs
    scale: float = 1.0                   # the factor on atol: the output's magnitude, within the floors above
    torch_output: np.ndarray | None = field(default=None, repr=False)
    keras_output: np.ndarray | None = field(default=None, repr=False)
    torch_outputs: list[np.ndarray] | None = field(default=None, repr=False)   # every output, in order
    keras_outputs: list[np.ndarray] | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        if self.problem:
            return f"FAILED: {self.problem}"
        verdict = "passed" if self.passed else "FAILED"
        scaled = f" scaled by the output's magnitude {self.scale:.3g}" if self.scale < 1.0 else ""
        text = (f"{verdict}: max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}, "
                f"allowed {self.allowed_error:.3g} at the worst element (atol {self.tolerance.atol:.3g}{scaled}, "
                f"rtol {self.tolerance.rtol:.3g}), headroom {self.headroom:.3g}")
        if self.output is not None:
            text += f"; worst in output {self.output}"
        if self.worst_index is not None:
            text += f"; worst at index {self.worst_index}: torch {self.torch_value!r}, keras {self.keras_value!r}"
        return text


def compare_arrays(torch_out: np.ndarray, keras_out: np.ndarray, tolerance: Tolerance) -> Comparison:
    """Compare two arrays already in the same (PyTorch) layout."""
    t = np.asarray(torch_out)
    k = np.asarray(keras_out)

    def result(**fields: Any) -> Comparison:
        return Comparison(tolerance=tolerance, torch_output=t, keras_output=k, **fields)

    if t.shape != k.shape:
        return result(passed=False, max_abs_error=math.inf, max_rel_error=math.inf, headroom=math.inf,
                      allowed_error=0.0, problem=f"output shapes differ: torch {t.shape}, keras {k.shape}")
    if t.size == 0:
        return result(passed=True, max_abs_error=0.0, max_rel_error=0.0, headroom=0.0, allowed_error=tolerance.atol)
    t64, k64 = t.astype(np.float64), k.astype(np.float64)
    t_nan, k_nan = np.isnan(t64), np.isnan(k64)
    if (t_nan != k_nan).any():
        index = tuple(int(i) for i in np.argwhere(t_nan != k_nan)[0])
        return result(passed=False, max_abs_error=math.inf, max_rel_error=math.inf, headroom=math.inf,
                      allowed_error=0.0, worst_index=index, torch_value=float(t64[index]),
                      keras_value=float(k64[index]),
                      problem=f"NaN at index {index} on one side only: torch {t64[index]}, keras {k64[index]}")
    both = ~t_nan
    same_inf = np.isinf(t64) & (t64 == k64)
    finite = np.abs(np.where(np.isfinite(t64), t64, 0.0))
    magnitude = min(1.0, float(finite.max())) if tolerance.scaled else 1.0
    floor = max(tolerance.atol * magnitude, min(tolerance.atol, ELEMENTWISE_ATOL))
    scale = floor / tolerance.atol if tolerance.atol else 1.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both & ~same_inf, np.abs(k64 - t64), 0.0)
        allowed = floor + tolerance.rtol * finite
        ratio = np.where(diff == 0, 0.0, diff / np.where(allowed > 0, allowed, np.finfo(np.float64).tiny))
        rel = diff / np.maximum(np.abs(np.where(np.isfinite(t64), t64, 0.0)), np.finfo(np.float32).tiny)
    flat = int(np.argmax(ratio))
    index = tuple(int(i) for i in np.unravel_index(flat, t.shape))
    headroom = float(ratio.flat[flat])
    return result(passed=bool(headroom <= 1.0), max_abs_error=float(diff.max()), max_rel_error=float(rel.max()),
                  headroom=headroom, allowed_error=float(allowed.flat[flat]), worst_index=index,
                  torch_value=float(t64[index]), keras_value=float(k64[index]), scale=scale)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _move_channels(array: np.ndarray, to_last: bool) -> np.ndarray:
    """Channels between axis 1 and the last axis, as a contiguous array; vectors and matrices stay as they are."""
    if array.ndim < 3:
        return array
    return np.ascontiguousarray(np.moveaxis(array, 1, -1) if to_last else np.moveaxis(array, -1, 1))


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
    # Both readings fit (C == L, or C == H == W) or nothing is declared: ask the first layer that
    # reads the input. A convolution or pooling layer says by its data_format; anything else
    # (recurrent, attention, dense) reads sequences as they are.
    try:
        first = keras_model.inputs[0]._keras_history.operation._outbound_nodes[0].operation
    except (AttributeError, IndexError, TypeError):
        return len(shape) >= 4
    data_format = getattr(first, "data_format", None)
    return data_format == "channels_last" if data_format else False


def default_tolerance(torch_model: Any) -> Tolerance:
    """Scale atol with the largest reduction (fan-in) in the model: a principled fp32 default."""
    fan_in = 1
    for parameter in torch_model.parameters():
        if parameter.ndim >= 2:
            fan_in = max(fan_in, math.prod(parameter.shape[1:]))
    return Tolerance.reduction(fan_in)


def flatten_nested(value: Any) -> list[Any]:
    """The leaves of nested tuples, lists and dicts of outputs, in order, as they are (tensors stay tensors,
    for autodiff); ``None`` entries are dropped."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [a for key in value for a in flatten_nested(value[key])]
    if isinstance(value, list | tuple):
        return [a for item in value for a in flatten_nested(item)]
    return [value]


def _flatten_outputs(value: Any) -> list[np.ndarray]:
    """Nested tuples, lists and dicts of outputs, in order, as arrays; ``None`` entries are dropped."""
    return [_to_numpy(a) for a in flatten_nested(value)]


def _combine(parts: list[Comparison]) -> Comparison:
    """Several outputs judged as one: all must pass; the worst output is the one reported."""
    worst_at = max(range(len(parts)), key=lambda i: parts[i].headroom)
    worst = parts[worst_at]
    return replace(worst, passed=all(p.passed for p in parts),
                   max_abs_error=max(p.max_abs_error for p in parts),
                   max_rel_error=max(p.max_rel_error for p in parts),
                   output=worst_at, problem=next((f"output {i}: {p.problem}" for i, p in enumerate(parts)
                                                  if p.problem), None),
                   torch_outputs=[p.torch_output for p in parts if p.torch_output is not None],
                   keras_outputs=[p.keras_output for p in parts if p.keras_output is not None])


def _device_of(torch_model: Any) -> Any:
    """Where the torch model lives: inputs go there, outputs come back to the CPU."""
    import torch
    for tensor in (*torch_model.parameters(), *torch_model.buffers()):
        return tensor.device
    return getattr(torch_model, "conformance_device", torch.device("cpu"))


def compare(torch_model: Any, keras_model: Any, inputs: Any, *, tolerance: Tolerance | None = None,
            channels_last: bool | None = None) -> Comparison:
    """Run both models on ``inputs`` (PyTorch layout, batch first) and compare element-wise.

    ``inputs`` is one array or tensor, or a list/tuple of them for models with several inputs.
    Float inputs move to channels-last for Keras when the Keras model expects it
    (``channels_last`` overrides the guess); Keras outputs move back before comparing. Models
    with several outputs (nested tuples in torch, lists in Keras) are compared output by output
    in order. Both models run in inference mode.
    """
    import torch

    arrays = [_to_numpy(v) for v in (inputs if isinstance(inputs, list | tuple) else [inputs])]
    arrays = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in arrays]
    tolerance = tolerance or default_tolerance(torch_model)
    first = arrays[0]
    to_last = _keras_input_is_channels_last(keras_model, first.shape) if channels_last is None else channels_last
    torch_model.eval()
    device = _device_of(torch_model)
    with torch.no_grad():
        torch_out = torch_model(*[torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays])
    keras_in = [_move_channels(a, to_last=True) if to_last and a.dtype.kind == "f" else a for a in arrays]
    keras_out = keras_model(keras_in[0] if len(keras_in) == 1 else keras_in, training=False)
    torch_list, keras_list = _flatten_outputs(torch_out), _flatten_outputs(keras_out)
    if len(torch_list) != len(keras_list):
        return Comparison(False, math.inf, math.inf, tolerance, math.inf, 0.0,
                          problem=f"torch returned {len(torch_list)} outputs, keras {len(keras_list)}")
    parts = []
    for t, k in zip(torch_list, keras_list, strict=True):
        if to_last and k.ndim >= 3 and k.ndim == first.ndim:
            k = _move_channels(k, to_last=False)
        parts.append(compare_arrays(t, k, tolerance))
    return parts[0] if len(parts) == 1 else _combine(parts)

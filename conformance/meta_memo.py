"""Shape propagation on PyTorch's meta device, each distinct call worked out once per traced pass.

Why: on the meta device many common functions have no compiled shape function and run PyTorch's
Python decompositions instead: ``relu`` about 0.3 ms a call, ``linear`` with a bias 0.4 ms,
``batch_norm`` 0.9 ms, ``hardswish`` 1.6 ms (measured on the AVX-512 development VM), against
10-30 us for those that have one. The pairing trace of an 11-layer conv stack spent two thirds of
its time in its eleven ReLUs. A model repeats itself (a stack, a ResNet's blocks), and on the
meta device a call's result is fixed by what it is given: the function, the shapes, strides and
dtypes of its tensors and its other arguments. So a repeated call gets an empty meta tensor of the
recorded shape, strides and dtype.

Functions that are fast on the meta device (a first call under :data:`WORTH_S`) always run:
describing their arguments would cost more. Only calls whose result is one new tensor or a tuple
of new tensors are memoised. Anything that may write to or return one of its arguments (an
in-place function, ``out=``, ``inplace=True``, a result that is an argument) runs every time,
because the pairing trace follows tensors by identity; so does anything given an argument this
module cannot describe exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any


class _Opaque(Exception):
    """An argument that cannot be described exactly: the call is not memoised."""


def _describe(value: Any) -> Hashable:
    import torch
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta":
            raise _Opaque
        return ("tensor", tuple(value.shape), value.stride(), value.dtype, value.requires_grad)
    if value is None or isinstance(value, bool | int | float | str | torch.dtype | torch.device | torch.layout
                                   | torch.memory_format):
        return (type(value).__name__, value)
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_describe(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _describe(v)) for k, v in value.items()))
    if isinstance(value, slice):
        return ("slice", _describe(value.start), _describe(value.stop), _describe(value.step))
    if value is Ellipsis:
        return ("...",)
    raise _Opaque


def _writes(func: Any, kwargs: dict[str, Any]) -> bool:
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or name.startswith("__i") or name == "__setitem__" \
        or "out" in kwargs or bool(kwargs.get("inplace"))


def _template(result: Any, inputs: list[Any]) -> Hashable | None:
    """How to make ``result`` again: (shape, stride, dtype) per tensor, or None where it cannot be."""
    import torch
    if isinstance(result, torch.Tensor):
        if type(result) is not torch.Tensor or result.device.type != "meta" or any(result is t for t in inputs):
            return None
        return (tuple(result.shape), result.stride(), result.dtype)
    if isinstance(result, tuple) and type(result) is tuple and result:
        parts = [_template(r, inputs) for r in result]
        return None if any(p is None for p in parts) else ("tuple", tuple(parts))
    return None


def _make(template: Any) -> Any:
    import torch
    if template[0] == "tuple":
        return tuple(_make(t) for t in template[1])
    shape, stride, dtype = template
    return torch.empty_strided(shape, stride, dtype=dtype, device="meta")


# A function whose first call takes less than this has a compiled shape function (conv2d on meta: 25 us):
# describing its arguments would cost more than running it again.
WORTH_S = 50e-6


class MetaMemo:
    """``memo(func, args, kwargs)`` is ``func(*args, **kwargs)`` on meta tensors, each distinct slow call run once."""

    def __init__(self) -> None:
        self._known: dict[Hashable, Any] = {}
        self._fast: set[Any] = set()

    def __call__(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if func in self._fast or _writes(func, kwargs):
            return func(*args, **kwargs)
        try:
            key = (func, _describe(args), _describe(kwargs))
            hash(key)
        except Exception:       # _Opaque, an unhashable value, a tensor without strides (sparse)
            return func(*args, **kwargs)
        template = self._known.get(key)
        if template is not None:
            return _make(template)
        start = time.perf_counter()
        result = func(*args, **kwargs)
        if time.perf_counter() - start < WORTH_S:
            self._fast.add(func)
            return result
        template = _template(result, [a for a in args if a is not None] + list(kwargs.values()))
        if template is not None:
            self._known[key] = template
        return result

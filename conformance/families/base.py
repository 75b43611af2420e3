"""What a layer family is made of, and the small parameter schema every family uses.

A family module (``conv.py``, ``pool.py`` ...) declares, in one place: its parameters and their
types, how to build the PyTorch module and the Keras layers from them, which combinations are
invalid, its float64 reference, and the weight rules that move its weights between the two
frameworks. Nothing here imports torch or keras, so catalogues load and validate quickly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CaseError
from ..layout import Layout

Params = Mapping[str, Any]

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One constructor argument: how to check it, its default, and its short name in case ids."""

    check: Callable[[Any], Any]
    default: Any = _MISSING
    abbrev: str | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING


# ---- value checkers: each returns the normalised value or raises ValueError with a short reason


def integer(minimum: int = 0) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        return value
    return check


def ints(n: int, minimum: int = 0) -> Callable[[Any], tuple[int, ...]]:
    """An int or a tuple of ``n`` ints, normalised to a tuple of ``n`` ints."""
    one = integer(minimum)

    def check(value: Any) -> tuple[int, ...]:
        if isinstance(value, list | tuple):
            if len(value) != n:
                raise ValueError(f"expected {n} values, got {len(value)} ({list(value)})")
            return tuple(one(v) for v in value)
        return (one(value),) * n
    return check


def padding(n: int) -> Callable[[Any], tuple[int, ...] | str]:
    as_ints = ints(n, 0)

    def check(value: Any) -> tuple[int, ...] | str:
        if isinstance(value, str):
            if value not in ("same", "valid"):
                raise ValueError(f"expected an int, {n} ints, 'same' or 'valid', got {value!r}")
            return value
        return as_ints(value)
    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def real(minimum: float | None = None, exclusive: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise ValueError(f"must be {'>' if exclusive else '>='} {minimum}, got {value}")
        return float(value)
    return check


def choice(*options: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in options:
            raise ValueError(f"expected one of {list(options)}, got {value!r}")
        return value
    return check


def optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``None`` (written as the string "none" in TOML, which has no null) or a valid value."""
    def check(value: Any) -> Any:
        return None if value is None or value == "none" else inner(value)
    return check


def shape(rank: int | None = None, min_rank: int = 1) -> Callable[[Any], tuple[int, ...]]:
    """One sample's shape, PyTorch layout, without the batch dimension."""
    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"expected a list of sizes, got {value!r}")
        dims = tuple(integer(1)(v) for v in value)
        if rank is not None and len(dims) != rank:
            raise ValueError(f"expected rank {rank} (one sample, PyTorch layout), got {list(dims)}")
        if len(dims) < min_rank:
            raise ValueError(f"expected rank >= {min_rank}, got {list(dims)}")
        return dims
    return check


# ---- the family record


@dataclass(frozen=True)
class Tolerance:
    """Allowed error: ``|torch - keras| <= atol + rtol * |torch|`` element-wise."""

    atol: float
    rtol: float
    reason: str = ""
    scaled: bool = False   # atol shrinks with small outputs (conformance.comparison): for plain reductions only,
    #                        not for tolerances that allow for cancellation (normalising one value per group)

    @classmethod
    def elementwise(cls) -> Tolerance:
        return cls(1e-5, 1.3e-6, "element-wise, torch.testing float32 defaults")

    @classmethod
    def exact(cls) -> Tolerance:
        return cls(0.0, 0.0, "selects input values, must match exactly")

    @classmethod
    def reduction(cls, length: int) -> Tolerance:
        """float32 sums grow their rounding error with the square root of the reduction length."""
        return cls(1e-5 * math.sqrt(max(length, 1)), 1e-4,
                   f"reduction over {length} terms: atol 1e-5*sqrt({length}), rtol 1e-4", scaled=True)


KerasBuilder = Callable[[Params, Any], Any]   # (params, keras tensor) -> keras tensor
Reference = Callable[[np.ndarray, Mapping[str, np.ndarray], Params], np.ndarray]


@dataclass(frozen=True)
class Family:
    """A PyTorch module class and the Keras layers that reproduce it."""

    name: str                      # snake_case of the torch class: "conv2d"
    torch_class: str               # "Conv2d", for messages and docs
    params: Mapping[str, Param]
    build_torch: Callable[[Params], Any]
    build_keras: KerasBuilder
    tolerance: Callable[[Params], Tolerance]
    channels_first: bool = False   # True: (C, *spatial) in torch, (*spatial, C) in Keras
    check: Callable[[Params], None] | None = None   # raises CaseError(field=...) for invalid combos
    reference: Reference | None = None
    input_range: tuple[float, float] = (-1.0, 1.0)
    # Families with several or non-float inputs (attention, embedding) make their own, in torch
    # layout: (params, rng, batch) -> one array per model input.
    make_inputs: Callable[[Params, np.random.Generator, int], tuple[np.ndarray, ...]] | None = None
    weight_layouts: Mapping[str, str] = field(default_factory=dict)  # for docs: torch name -> rule
    # Deep models: He-uniform kernels and BatchNorm statistics calibrated on seeded inputs, so that
    # activations neither overflow nor forget the input over dozens of layers (see pair.py).
    deep_init: bool = False
    # Train mode judges gradients against the float64 torch twin with an allowance for the measured
    # float32 conditioning (conformance.conditioning): for deep models with training-mode BatchNorm.
    conditioned_gradients: bool = False

    def normalise(self, raw: Params) -> dict[str, Any]:
        """Check every parameter and fill defaults; CaseError names the offending field."""
        unknown = sorted(set(raw) - set(self.params))
        if unknown:
            raise CaseError(f"unknown parameter for {self.name} ({self.torch_class}); "
                            f"known: {', '.join(sorted(self.params))}", field=unknown[0])
        out: dict[str, Any] = {}
        for name, spec in self.params.items():
            if name in raw:
                try:
                    out[name] = spec.check(raw[name])
                except ValueError as exc:
                    raise CaseError(str(exc), field=name) from None
            elif spec.required:
                raise CaseError(f"required parameter missing for {self.name}", field=name)
            else:
                out[name] = spec.default
        if self.check is not None:
            self.check(out)
        return out


def channels_last(shape: Sequence[int]) -> tuple[int, ...]:
    """(C, *spatial) -> (*spatial, C)."""
    return (*shape[1:], shape[0])


def invalid(field_name: str, message: str) -> CaseError:
    return CaseError(message, field=field_name)


def length_or_input_shape(p: dict[str, Any], length: str, features: int | None) -> None:
    """For families sized by a sequence length: ``input_shape`` works too, as for every family.

    ``input_shape`` is one sample's shape without the batch axis, ``(L, features)`` (or ``(L,)`` for
    token ids, ``features`` None). Either gives the other; both must agree. Fills both in ``p``.
    """
    given = p.get("input_shape")
    if given is not None:
        rank = 1 if features is None else 2
        if len(given) != rank or features is not None and given[1] != features:
            expected = "(L,): one sequence of token ids" if features is None else f"(L, {features})"
            raise invalid("input_shape", f"expected {expected} without the batch axis, got {list(given)}")
        if p[length] is not None and p[length] != given[0]:
            raise invalid("input_shape", f"input_shape says the sequence length is {given[0]}, but "
                                         f"{length} = {p[length]}; give one of them")
        p[length] = given[0]
    if p[length] is None:
        raise invalid(length, f"give {length} or input_shape")
    p["input_shape"] = (p[length],) if features is None else (p[length], features)


__all__ = ["Family", "Param", "Params", "Tolerance", "Layout", "boolean", "channels_last", "choice",
           "integer", "ints", "invalid", "optional", "padding", "real", "shape"]

"""What a training scenario returns: per-tensor errors, a verdict, and the divergence it expects.

A scenario trains the same converted weights in both frameworks and compares named tensors
(weights, BatchNorm running statistics, outputs) in PyTorch's layout. Each tensor gets an allowed
error; ``headroom`` is observed / allowed, so > 1 fails. A scenario may expect a known divergence
(:class:`Divergence`, data with its reason): then it must fail, on the tensors the rule names and
only there, and an unexpected pass is reported, as for the catalogue's strict divergences.

Nothing here imports torch or Keras.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Divergence:
    """A known, real difference between the frameworks' training behaviour."""

    rule: str                       # short name, e.g. "bn-running-var-unbiased"
    reason: str                     # why the frameworks differ, with the exact formula
    tensors: tuple[str, ...]        # fnmatch patterns of the tensors it affects, e.g. ("*running_var",)
    factor: str | None = None       # the exact factor, in words, e.g. "n/(n-1), n = N*H*W"


@dataclass(frozen=True)
class TensorError:
    """One compared tensor: the largest error over its elements against what was allowed there."""

    name: str
    max_abs_error: float
    allowed_error: float            # the allowed error at the worst element
    headroom: float                 # max over elements of observed / allowed
    torch_value: float | None = None
    keras_value: float | None = None

    @property
    def passed(self) -> bool:
        return self.headroom <= 1.0


@dataclass(frozen=True)
class ScenarioResult:
    """The outcome of one training scenario, shaped to become one catalogue case.

    ``verdict`` is ``"passed"``, ``"failed"``, ``"divergence"`` (the expected divergence was
    reproduced: counts as a success) or ``"unexpected pass"`` (a divergence was expected and
    everything agreed: a failure, so that a stale record is noticed).
    """

    scenario: str
    params: Mapping[str, Any]
    tensors: tuple[TensorError, ...]
    tolerance: str                   # how the allowed errors were derived, in words
    expected: Divergence | None = None
    measured: Mapping[str, float] = field(default_factory=dict)   # e.g. the measured variance factor
    notes: str = ""

    @property
    def worst(self) -> TensorError:
        return max(self.tensors, key=lambda t: t.headroom)

    @property
    def worst_tensor(self) -> str:
        return self.worst.name

    @property
    def max_abs_error(self) -> float:
        return max(t.max_abs_error for t in self.tensors)

    @property
    def allowed_error(self) -> float:
        return self.worst.allowed_error

    @property
    def headroom(self) -> float:
        return self.worst.headroom

    @property
    def agreed(self) -> bool:
        """Every tensor within its tolerance."""
        return all(t.passed for t in self.tensors)

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors if not t.passed)

    @property
    def divergence_reproduced(self) -> bool:
        """The expected divergence shows, and only on the tensors its rule names."""
        if self.expected is None or self.agreed:
            return False
        return all(any(fnmatch.fnmatchcase(name, pattern) for pattern in self.expected.tensors)
                   for name in self.failing)

    @property
    def verdict(self) -> str:
        if self.expected is None:
            return "passed" if self.agreed else "failed"
        if self.agreed:
            return "unexpected pass"
        return "divergence" if self.divergence_reproduced else "failed"

    @property
    def passed(self) -> bool:
        """A success for the suite: agreement, or the expected divergence reproduced."""
        return self.verdict in ("passed", "divergence")

    def summary(self) -> str:
        worst = self.worst
        text = (f"{self.scenario}: {self.verdict}; worst tensor {worst.name}: max abs error "
                f"{worst.max_abs_error:.3g}, allowed {worst.allowed_error:.3g}, headroom {worst.headroom:.3g}")
        if self.failing:
            text += f"; outside tolerance: {', '.join(self.failing)}"
        if self.expected is not None:
            text += f"; expected divergence {self.expected.rule}"
        if self.measured:
            text += "; measured " + ", ".join(f"{k} = {v:.6g}" for k, v in self.measured.items())
        return text


def tensor_error(name: str, torch_value: np.ndarray, keras_value: np.ndarray, atol: float,
                 rtol: float) -> TensorError:
    """``|keras - torch| <= atol + rtol * |torch|`` element-wise; NaN or a shape mismatch is infinite."""
    t = np.asarray(torch_value, dtype=np.float64)
    k = np.asarray(keras_value, dtype=np.float64)
    if t.shape != k.shape:
        return TensorError(f"{name} (shapes differ: torch {t.shape}, keras {k.shape})", math.inf, atol, math.inf)
    if t.size == 0:
        return TensorError(name, 0.0, atol, 0.0)
    diff = np.abs(k - t)
    diff = np.where(np.isnan(diff), np.inf, diff)
    allowed = atol + rtol * np.abs(t)
    ratio = diff / np.maximum(allowed, np.finfo(np.float64).tiny)
    at = np.unravel_index(int(np.argmax(ratio)), t.shape)
    return TensorError(name, float(diff.max()), float(allowed[at]), float(ratio[at]), float(t[at]), float(k[at]))

"""Reference models for end-to-end conformance scenarios.

``conformance.models`` imports neither torch nor TensorFlow: each name is loaded on first use,
and torch is always imported before Keras (the other order has been seen to crash)::

    from conformance.models import TorchLeNet5, keras_lenet5, naive_transfer
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..lazy import lazy_attribute

if TYPE_CHECKING:
    from .lenet import TorchLeNet5, keras_lenet5, naive_transfer

__all__ = ["TorchLeNet5", "keras_lenet5", "naive_transfer"]

_LAZY = {"TorchLeNet5": "lenet", "keras_lenet5": "lenet", "naive_transfer": "lenet"}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name, globals())

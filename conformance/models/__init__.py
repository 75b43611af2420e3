"""Reference models for end-to-end conformance scenarios.

``conformance.models`` imports neither torch nor TensorFlow: each name is loaded on first use,
and torch is always imported before Keras (the other order has been seen to crash)::

    from conformance.models import TorchLeNet5, keras_lenet5, naive_transfer
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lenet import TorchLeNet5, keras_lenet5, naive_transfer

__all__ = ["TorchLeNet5", "keras_lenet5", "naive_transfer"]

_LAZY = {"TorchLeNet5": "lenet", "keras_lenet5": "lenet", "naive_transfer": "lenet"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        import torch  # noqa: F401  (before anything that may import TensorFlow)
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""conformance: paired PyTorch and Keras layers, converted weights, compared outputs.

The public API is small and stable::

    pair = conformance.build_pair("conv2d", in_channels=3, out_channels=8, kernel_size=3,
                                  input_shape=(3, 32, 32))
    mapping = conformance.transfer_weights(pair.torch, pair.keras)
    result = conformance.compare(pair.torch, pair.keras, inputs)   # inputs in PyTorch layout

torch and keras are imported on first use, not at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CaseError, ConformanceError, ConversionError, UnsupportedError

if TYPE_CHECKING:
    from .comparison import Comparison, compare
    from .families.base import Tolerance
    from .pair import Pair, build_pair
    from .transfer import TransferReport, transfer_weights

__all__ = ["CaseError", "Comparison", "ConformanceError", "ConversionError", "Pair", "Tolerance",
           "TransferReport", "UnsupportedError", "build_pair", "compare", "transfer_weights"]
__version__ = "0.1.0"

_LAZY = {
    "build_pair": "pair", "Pair": "pair",
    "transfer_weights": "transfer", "TransferReport": "transfer",
    "compare": "comparison", "Comparison": "comparison",
    "Tolerance": "families.base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        _import_torch_first()
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'conformance' has no attribute {name!r}")


def _import_torch_first() -> None:
    """torch must be imported before TensorFlow: the other order has been seen to crash."""
    import torch  # noqa: F401

"""conformance: paired PyTorch and Keras layers, converted weights, compared outputs.

The public API is small and stable::

    pair = conformance.build_pair("conv2d", in_channels=3, out_channels=8, kernel_size=3,
                                  input_shape=(3, 32, 32))
    mapping = conformance.transfer_weights(pair.torch, pair.keras)
    result = conformance.compare(pair.torch, pair.keras, inputs)   # inputs in PyTorch layout
    report = conformance.convert_file("model.pt", "model.keras", torch_model="pkg.mod:build",
                                      to_architecture="architecture.keras")   # model files, verified

torch and keras are imported on first use, not at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CaseError, ConformanceError, ConversionError, UnsupportedError

if TYPE_CHECKING:
    from .comparison import Comparison, compare
    from .convert import ConversionReport, convert_file
    from .families.base import Tolerance
    from .files import FileError, UnsafeFileError
    from .inspection import Inspection, inspect_file
    from .pair import Pair, build_pair
    from .transfer import TransferReport, transfer_weights

__all__ = ["CaseError", "Comparison", "ConformanceError", "ConversionError", "ConversionReport", "FileError",
           "Inspection", "Pair", "Tolerance", "TransferReport", "UnsafeFileError", "UnsupportedError", "build_pair",
           "compare", "convert_file", "inspect_file", "transfer_weights"]
__version__ = "0.1.0"

_LAZY = {
    "build_pair": "pair", "Pair": "pair",
    "transfer_weights": "transfer", "TransferReport": "transfer",
    "compare": "comparison", "Comparison": "comparison",
    "Tolerance": "families.base",
    # model files (conformance inspect / convert)
    "inspect_file": "inspection", "Inspection": "inspection",
    "convert_file": "convert", "ConversionReport": "convert",
    "FileError": "files", "UnsafeFileError": "files",
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

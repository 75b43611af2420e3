"""Package attributes imported on first use, so that importing a package does not import torch or Keras."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any


def lazy_attribute(package: str, table: Mapping[str, str], name: str, namespace: MutableMapping[str, Any]) -> Any:
    """``package``'s attribute ``name`` from its submodule ``table[name]``, kept in ``namespace`` (the package's
    globals) once imported. torch is imported first: importing TensorFlow before it has crashed."""
    if name not in table:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    import torch  # noqa: F401  (before anything that may import TensorFlow)
    value = getattr(importlib.import_module(f"{package}.{table[name]}"), name)
    namespace[name] = value
    return value

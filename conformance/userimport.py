"""The user's torch architecture: ``--torch-model package.module:factory`` or ``path/to/file.py:factory``.

Importing runs the user's code, so it happens only when asked for by name, never because a model
file mentions a module. A dotted module is imported as ``python -m`` would from the current
directory; a path to a ``.py`` file is loaded from that file. The factory is any callable that
returns an ``nn.Module`` (a function, or the module class itself).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .files import FileError, first_line


def factory_file(spec: str | Callable[[], Any]) -> Path | None:
    """The ``.py`` file a ``--torch-model`` spec names, without importing anything (it must not be overwritten)."""
    if not isinstance(spec, str):
        return None
    module_part = spec.rpartition(":")[0]
    return Path(module_part) if module_part.endswith(".py") or "/" in module_part or os.sep in module_part else None


def resolve_factory(spec: str | Callable[[], Any]) -> tuple[Callable[[], Any], str, Path | None]:
    """(factory, a label for messages, the .py file it came from if any). ``spec`` may already be callable."""
    if not isinstance(spec, str):
        if not callable(spec):
            raise FileError(f"torch_model: expected 'package.module:factory' or a callable, got {type(spec).__name__}")
        module = getattr(spec, "__module__", None) or "?"
        return spec, f"{module}:{getattr(spec, '__qualname__', type(spec).__name__)}", None
    module_part, sep, attribute = spec.rpartition(":")
    if not sep or not module_part or not attribute:
        raise FileError(f"--torch-model {spec!r}: expected MODULE:FACTORY, e.g. mypackage.models:build or "
                        "path/to/models.py:build")
    file = None
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        file = Path(module_part)
        module = _load_file(file, spec)
    else:
        module = _import(module_part, spec)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise FileError(f"--torch-model {spec}: {module_part} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise FileError(f"--torch-model {spec}: {attribute} is a {type(target).__name__}, not callable")
    return target, spec, file


def _load_file(file: Path, spec: str) -> Any:
    if not file.is_file():
        raise FileError(f"{file}: no such Python file (from --torch-model {spec})")
    name = f"conformance_user_{file.stem}"
    loader_spec = importlib.util.spec_from_file_location(name, file)
    if loader_spec is None or loader_spec.loader is None:
        raise FileError(f"{file}: cannot be imported as a Python module (from --torch-model {spec})")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module   # dataclasses and pickling look the module up by name
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise FileError(f"{file}: importing it failed (from --torch-model {spec}): {first_line(exc)}") from None
    return module


def _import(name: str, spec: str) -> Any:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise FileError(f"--torch-model {spec}: importing {name} failed: {first_line(exc)}") from None
    finally:
        if added:
            sys.path.remove(cwd)


def build_torch_model(factory: Callable[[], Any], label: str) -> Any:
    import torch
    try:
        model = factory()
    except Exception as exc:
        raise FileError(f"--torch-model {label}: calling it failed: {first_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise FileError(f"--torch-model {label}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _listed(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_state_strict(model: Any, state: Mapping[str, Any], file: Path, label: str) -> None:
    """Load every tensor of ``state`` into ``model``, or say in one line how they differ."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = [f"{title}: {_listed(names)}" for title, names in (("missing from the file", missing),
                                                                   ("not in the model", unexpected),
                                                                   ("shapes differ", shapes)) if names]
    if problems:
        raise FileError(f"{file}: its weights do not fit {label} ({type(model).__name__}): {'; '.join(problems)}")
    try:
        model.load_state_dict(dict(state), strict=True)
    except Exception as exc:
        raise FileError(f"{file}: loading its weights into {label} failed: {first_line(exc)}") from None


__all__ = ["build_torch_model", "factory_file", "load_state_strict", "resolve_factory"]

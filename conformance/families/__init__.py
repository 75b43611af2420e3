"""The registry of layer families and weight converters, gathered from the family modules.

To add a family, write one module here that defines ``FAMILIES`` (and ``CONVERTERS`` if the
layer has weights) and a case file under ``cases/``. Modules are discovered, so nothing else
needs editing. Converters are tried in module order, then in the order each module lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from ..errors import CaseError
from ..rules import Converter
from .base import Family

_NOT_FAMILIES = {"base"}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_FAMILIES
                  and not m.name.startswith("_"))


@cache
def _load() -> tuple[dict[str, Family], tuple[Converter, ...]]:
    families: dict[str, Family] = {}
    converters: list[Converter] = []
    for name in _modules():
        module = importlib.import_module(f"{__name__}.{name}")
        for family in module.FAMILIES:
            if family.name in families:
                raise RuntimeError(f"family {family.name!r} is defined twice")
            families[family.name] = family
        converters.extend(getattr(module, "CONVERTERS", ()))
    return families, tuple(converters)


def families() -> dict[str, Family]:
    return dict(_load()[0])


def converters() -> tuple[Converter, ...]:
    return _load()[1]


def get_family(name: str) -> Family:
    known = _load()[0]
    if name not in known:
        close = [k for k in known if k.startswith(name[:4])] or sorted(known)
        raise CaseError(f"unknown family {name!r}; known families include: {', '.join(close)}", field="family")
    return known[name]

"""The registry of layer families and weight converters, gathered from the family modules.

To add a family, write one module here that defines ``FAMILIES`` (and ``CONVERTERS`` if the
layer has weights), add it to ``_MODULES``, and add a case file under ``cases/``.
"""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import CaseError
from ..rules import Converter
from .base import Family

_MODULES = ("conv", "dense", "norm", "pool", "activation")


@cache
def _load() -> tuple[dict[str, Family], tuple[Converter, ...]]:
    families: dict[str, Family] = {}
    converters: list[Converter] = []
    for name in _MODULES:
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

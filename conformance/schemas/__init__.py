"""The suite's file formats as JSON Schemas, generated from declarative models and shipped here.

``case`` (``cases/*.toml``, model :class:`conformance.schemas.case.CaseFile`), ``results``
(``results.json``, :class:`conformance.schemas.results.ResultsDocument`) and ``matrix`` (a merged
``conformance-matrix``, :class:`conformance.schemas.results.MatrixDocument`). The suite validates
with the models; editors and CI validate with the ``*.schema.json`` files beside this module
(``conformance schema NAME`` prints one, ``conformance schema --write`` regenerates them all).
This module imports pydantic only when a schema is generated, so ``import conformance`` stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NAMES = ("case", "results", "matrix")
_MODELS = {"case": ("case", "CaseFile"), "results": ("results", "ResultsDocument"),
           "matrix": ("results", "MatrixDocument")}
_IDS = "https://github.com/conformance/conformance/schemas/{name}.schema.json"


def path(name: str) -> Path:
    """The shipped schema file of format ``name``."""
    return HERE / f"{name}.schema.json"


def model(name: str) -> Any:
    """The pydantic model of format ``name`` (imports pydantic)."""
    import importlib
    module, cls = _MODELS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def generate(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of format ``name``, as the model says now."""
    schema = _without_null_defaults(model(name).model_json_schema(mode="validation"))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _IDS.format(name=name), **schema}


def _without_null_defaults(node: Any) -> Any:
    """A key that may be left out has no null default in a file: TOML has no null, and JSON writers omit it."""
    if isinstance(node, dict):
        return {k: _without_null_defaults(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_without_null_defaults(v) for v in node]
    return node


def text(name: str) -> str:
    """The schema as it is written to its file: stable key order, two-space indent, final newline."""
    return json.dumps(generate(name), indent=2, ensure_ascii=False) + "\n"


def shipped(name: str) -> dict[str, Any]:
    """The schema file shipped with the package."""
    return dict(json.loads(path(name).read_text(encoding="utf-8")))


def write_all() -> list[Path]:
    """Regenerate every shipped schema file from its model; returns the files that changed."""
    changed = []
    for name in NAMES:
        new = text(name)
        target = path(name)
        if not target.is_file() or target.read_text(encoding="utf-8") != new:
            target.write_text(new, encoding="utf-8")
            changed.append(target)
    return changed


def main(argv: Sequence[str]) -> int:
    """``conformance schema {case,results,matrix}`` prints one; ``--write`` regenerates the shipped files;
    ``--check`` exits 1 when a shipped file is not what its model generates (for CI)."""
    parser = argparse.ArgumentParser(prog="conformance schema", description=main.__doc__)
    parser.add_argument("name", nargs="?", choices=NAMES, help="the format whose JSON Schema to print")
    parser.add_argument("--write", action="store_true", help="regenerate every shipped *.schema.json")
    parser.add_argument("--check", action="store_true", help="exit 1 if a shipped schema differs from its model")
    args = parser.parse_args(argv)
    if args.write:
        for changed in write_all():
            print(f"wrote {changed}")
    elif args.check:
        stale = [str(path(n)) for n in NAMES if not path(n).is_file() or path(n).read_text(encoding="utf-8") != text(n)]
        for name in stale:
            print(f"{name}: differs from its model; run conformance schema --write", file=sys.stderr)
        return 1 if stale else 0
    elif args.name:
        sys.stdout.write(text(args.name))
    else:
        parser.print_help()
        return 2
    return 0


__all__ = ["NAMES", "generate", "main", "model", "path", "shipped", "text", "write_all"]

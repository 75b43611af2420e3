"""``conformance inspect FILE``: what a model file holds, and how well the suite covers it.

The answer has two parts: the layer tree (types, parameter counts, tensors) and, per layer
type, the conformance families that cover it with their verdict in a results file. A user who
is about to convert a model learns which of its layers the suite measures, how those fared,
and which it does not measure at all, before trusting a conversion.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .coverage import ResultsIndex, families_for, load_results
from .files import FileError, ModelFile, detect, load_torch
from .keras_files import keras_weight_shapes, load_keras
from .layertree import LayerNode, exported_tree, keras_tree, keras_weights_tree, state_dict_tree, torch_tree


@dataclass(frozen=True)
class CoverageRow:
    """One layer type of the file: the families covering it and their results."""

    layer_type: str
    layers: tuple[str, ...]
    families: tuple[str, ...]
    status: str                       # "covered", "not covered", or "converted, no cases (converter X)"
    results: dict[str, str]           # family -> verdict, or {} when there are no results
    inferred: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"type": self.layer_type, "layers": list(self.layers), "families": list(self.families),
                "status": self.status, "results": self.results, "inferred": self.inferred}


@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect_file` found; ``text()`` for people, ``to_json()`` for programs."""

    path: str
    kind: str
    description: str
    framework: str
    note: str
    nodes: list[LayerNode]
    coverage: list[CoverageRow]
    results_source: str | None        # None: no results file
    results_created: str = ""
    inferred: bool = False
    family_results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return self.nodes[0].parameters if self.nodes else 0

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path, "format": self.kind, "description": self.description,
                "framework": self.framework, "note": self.note, "parameters": self.parameters,
                "types_inferred": self.inferred, "layers": [n.to_json() for n in self.nodes],
                "coverage": [c.to_json() for c in self.coverage],
                "results": {"source": self.results_source, "created": self.results_created,
                            "families": self.family_results} if self.results_source else None}

    def text(self) -> str:
        lines = [f"{self.path}: {self.description}" + (f", {self.note}" if self.note else ""),
                 f"{self.parameters:,} parameters in {sum(1 for n in self.nodes if not n.container)} layers"]
        if self.inferred:
            lines.append("layer types are INFERRED from tensor names and shapes: this file records no types "
                         "(and layers without tensors, such as activations, pooling and flatten, leave no trace)")
        rows = [(("  " * n.depth) + n.path.rsplit(".", 1)[-1].rsplit("/", 1)[-1] if n.depth else n.path,
                 n.type + (" (inferred)" if n.inferred else ""), f"{n.parameters:,}",
                 ", ".join(f"{k} {v}" for k, v in n.tensors.items()) or n.detail) for n in self.nodes]
        lines += ["", *_table(("layer", "type", "params", "tensors"), rows)]
        details = [(n.path, n.detail) for n in self.nodes if n.detail and n.tensors]
        if details:
            lines += ["", "evidence and details:", *(f"  {p}: {d}" for p, d in details)]
        source = (f"results: {self.results_source}" + (f" ({self.results_created})" if self.results_created else "")
                  if self.results_source else "results: no results (no results file; run `conformance run`, "
                                              "or give --results PATH)")
        lines += ["", "coverage by layer type; " + source]
        cover = []
        for row in self.coverage:
            verdicts = "; ".join(f"{f}: {v}" for f, v in row.results.items()) if row.results else (
                "no results" if row.families else "")
            label = row.layer_type.replace("activation:", "activation ")
            cover.append((label + (" (inferred)" if row.inferred else ""), str(len(row.layers)),
                          ", ".join(row.families) or row.status, verdicts))
        lines += _table(("type", "layers", "families", "results"), cover)
        return "\n".join(lines)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    return [("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]).rstrip()
            for r in table]


def _coverage(nodes: list[LayerNode], framework: str, results: ResultsIndex | None) -> list[CoverageRow]:
    """One row per layer type (and per Keras built-in activation), in order of first appearance."""
    seen: dict[tuple[str, ...], list[str]] = {}
    inferred: dict[tuple[str, ...], bool] = {}
    for node in nodes:
        keys = []
        if node.candidates:
            keys.append(node.candidates)
        if node.activation:
            keys.append((f"activation:{node.activation}",))
        for key in keys:
            seen.setdefault(key, []).append(node.path)
            inferred[key] = node.inferred
    rows = []
    for key, layers in seen.items():
        families: list[str] = []
        converter = None
        for layer_type in key:
            found, known_by = families_for(framework, layer_type)
            families += [f for f in found if f not in families]
            converter = converter or known_by
        if families:
            status = "covered"
        elif converter:
            status = f"converted (converter '{converter}'), no family of cases measures it"
        else:
            status = "not covered"
        verdicts = {f: results.get(f).verdict() for f in families} if results else {}
        rows.append(CoverageRow(" or ".join(key), tuple(layers), tuple(families), status, verdicts,
                                inferred[key]))
    return rows


def describe_file(file: ModelFile, trust: bool = False) -> tuple[list[LayerNode], str, bool]:
    """The layer tree of a detected file, a note on what was read, and whether types are inferred."""
    if file.framework == "keras":
        if file.kind == "keras-weights":
            return keras_weights_tree(keras_weight_shapes(file)), "weights only", True
        return keras_tree(load_keras(file, trust)), "", False
    content = load_torch(file, trust)
    if content.module is not None:
        return torch_tree(content.module), content.note, False
    if file.kind == "torchscript":
        return torch_tree(content.program), "", False
    if file.kind == "torch-export":
        nodes = exported_tree(content.program)
        return nodes, "", any(n.inferred for n in nodes)
    shapes = {k: tuple(v.shape) for k, v in content.state.items()}
    return state_dict_tree(shapes), f"{content.note}, {len(shapes)} tensors", True


def inspect_file(path: str | os.PathLike[str], *, results: str | os.PathLike[str] | None = None,
                 trust: bool = False) -> Inspection:
    """Inspect one model file; ``results`` defaults to ``reports/latest/results.json`` when present.

    Raises :class:`FileError` (:class:`UnsafeFileError` for a file refused by safe loading) with a
    one-line message naming the file.
    """
    index = load_results(results)   # a bad --results fails before any framework is imported
    file = detect(path)
    if file.framework == "keras":   # a torch file needs no TensorFlow, which is slow to import
        from .quiet import import_frameworks_quietly
        import_frameworks_quietly()
    nodes, note, inferred = describe_file(file, trust)
    if not nodes:
        raise FileError(f"{path}: holds no layers")
    coverage = _coverage(nodes, file.framework if file.kind != "keras-weights" else "keras", index)
    family_results = {f: index.get(f).to_json() for row in coverage for f in row.families} if index else {}
    return Inspection(str(path), file.kind, file.description, file.framework, note, nodes, coverage,
                      index.source if index else None, index.created if index else "", inferred, family_results)


__all__ = ["CoverageRow", "Inspection", "describe_file", "inspect_file"]

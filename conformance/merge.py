"""``conformance merge``: shards of one run into one results document; runs of several environments into
one compatibility matrix.

Shards of one run share an environment (the same facts and versions). Their cases are joined in
catalogue order; shards that overlap, repeat or leave a gap are refused, naming the problem. Runs
from different environments (Keras backends, oneDNN settings, framework versions, devices) become
a matrix document, ``schema: conformance-matrix``, one entry per environment, each with its facts,
summary, records and cases. ``conformance report`` renders a matrix with one column per
environment; ``conformance diff`` compares two matrices environment by environment.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConformanceError
from .results import SCHEMA_VERSION, summarise

MATRIX_SCHEMA = "conformance-matrix"
MATRIX_SCHEMA_VERSION = 1
_SIGNATURE_FACTS = ("keras_backend", "onednn", "onednn_isa", "isa", "torch_device", "machine")
_SIGNATURE_VERSIONS = ("torch", "tensorflow", "keras", "numpy", "python")


def converter_of(document: dict[str, Any]) -> tuple[str, str]:
    """The converter a run judged (name, version): the ``converter`` fact, or our own for runs made before
    converters could be chosen (every run then went through transfer_weights)."""
    fact = ((document.get("environment") or {}).get("facts") or {}).get("converter") or {}
    if not isinstance(fact, dict):
        return "transfer_weights", ""
    return str(fact.get("name") or "transfer_weights"), str(fact.get("version") or "")


class MergeError(ConformanceError):
    """Shards or runs that cannot be merged: overlapping, missing, or not from one run."""


def signature(document: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two runs the same environment: the scoped facts and the framework versions."""
    env = document.get("environment") or {}
    facts = env.get("facts") or {}
    return (tuple(facts.get(k) for k in _SIGNATURE_FACTS) + tuple(env.get(k) for k in _SIGNATURE_VERSIONS)
            + (converter_of(document)[0],))


def environment_name(document: dict[str, Any], differing: set[str]) -> str:
    """A short column title: the Keras backend and oneDNN, then whatever else differs between the runs; runs
    of different converters are titled by the converter first (and the backend only where that differs)."""
    env = document.get("environment") or {}
    facts = env.get("facts") or {}
    parts = [f"{facts.get('keras_backend', env.get('keras_backend', '?'))}",
             f"oneDNN {'on' if facts.get('onednn') else 'off'}"]
    if "converter" in differing:
        name, version = converter_of(document)
        parts = [f"{name} {version}".strip()] + (parts if differing & {"keras_backend", "onednn"} else [])
    for key in _SIGNATURE_FACTS[2:]:
        if key in differing and key != "onednn":
            parts.append(f"{key} {facts.get(key)}")
    for key in _SIGNATURE_VERSIONS:
        if key in differing:
            parts.append(f"{key} {env.get(key)}")
    return ", ".join(parts)


def join_shards(paths: Sequence[str], documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One results document from the shards of one run, in catalogue order."""
    shards = [d.get("shard") for d in documents]
    if any(shards) and not all(shards):
        plain = paths[shards.index(None)] if None in shards else paths[0]
        raise MergeError(f"{plain} is a whole run, not a shard; merge shards with shards")
    if all(shards):
        counts = {s["count"] for s in shards if s}
        if len(counts) != 1:
            raise MergeError(f"the shards come from different splits ({' and '.join(f'/{c}' for c in sorted(counts))})")
        count = counts.pop()
        seen: dict[int, str] = {}
        for path, shard in zip(paths, shards, strict=True):
            assert shard is not None
            if shard["index"] in seen:
                raise MergeError(f"shard {shard['index']}/{count} is given twice: {seen[shard['index']]} and {path}")
            seen[shard["index"]] = path
        missing = sorted(set(range(1, count + 1)) - set(seen))
        if missing:
            raise MergeError(f"missing shard{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(f'{m}/{count}' for m in missing)}: the merged run would be incomplete")
    owner: dict[tuple[str, str], str] = {}
    cases: dict[tuple[str, str], dict[str, Any]] = {}
    for path, document in zip(paths, documents, strict=True):
        for case in document.get("cases", []):
            key = (case["id"], case["direction"])
            if key in owner:
                raise MergeError(f"{case['id']} {case['direction']} is in both {owner[key]} and {path}: the shards "
                                 "overlap")
            owner[key] = path
            cases[key] = case
    from .plugin import _in_catalogue_order
    ordered, _ = _in_catalogue_order(cases)
    records: dict[tuple[Any, ...], dict[str, Any]] = {}
    for document in documents:
        for record in document.get("divergences") or []:
            records.setdefault((record.get("file"), str(record.get("when")), record.get("kind"),
                                record.get("reason")), record)
    errors = [e for d in documents for e in (d.get("errors") or [])]
    unique_errors = [dict(t) for t in dict.fromkeys(tuple(sorted(e.items())) for e in errors)]
    first = documents[0]
    merged = {**first, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
              "summary": summarise(ordered), "divergences": list(records.values()), "errors": unique_errors,
              "cases": ordered}
    merged.pop("shard", None)
    merged["schema_version"] = SCHEMA_VERSION
    merged["merged_from"] = [str(p) for p in paths]
    return merged


def merge(paths: Sequence[str]) -> dict[str, Any]:
    """A results document (one environment) or a matrix document (several), from results files."""
    if not paths:
        raise MergeError("nothing to merge: name two or more results files")
    documents = [load_any(p) for p in paths]
    flat_paths: list[str] = []
    flat: list[dict[str, Any]] = []
    for path, document in zip(paths, documents, strict=True):
        if document.get("schema") == MATRIX_SCHEMA:
            for entry in document["environments"]:
                flat.append(entry["results"])
                flat_paths.append(f"{path} [{entry['name']}]")
        else:
            flat.append(document)
            flat_paths.append(str(path))
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, document in enumerate(flat):
        groups.setdefault(signature(document), []).append(index)
    joined = []
    for indices in groups.values():
        joined.append(join_shards([flat_paths[i] for i in indices], [flat[i] for i in indices])
                      if len(indices) > 1 else flat[indices[0]])
    if len(joined) == 1:
        return joined[0]
    differing = {k for position, k in enumerate(_SIGNATURE_FACTS + _SIGNATURE_VERSIONS + ("converter",))
                 if len({signature(d)[position] for d in joined}) > 1}
    names: list[str] = []
    for document in joined:
        name = environment_name(document, differing)
        names.append(name if name not in names else f"{name} ({len(names) + 1})")
    return {"schema": MATRIX_SCHEMA, "schema_version": MATRIX_SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "environments": [{"name": n, "results": d} for n, d in zip(names, joined, strict=True)]}


def load_any(path: str | Path) -> dict[str, Any]:
    """A results file or a matrix file, validated; ResultsError says why not."""
    from . import results as results_file
    document = results_file.read_json(path, results_file.ResultsError)
    if isinstance(document, dict) and document.get("schema") == MATRIX_SCHEMA:
        return results_file.check(document, str(path), model="matrix")
    return results_file.load(path)


__all__ = ["MATRIX_SCHEMA", "MergeError", "converter_of", "load_any", "merge", "signature"]

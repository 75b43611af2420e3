"""``results.json``: the versioned record of a run, written by the CLI and by pytest alike.

Top level: ``schema``, ``schema_version``, ``created``, ``environment``, ``summary``,
``divergences`` (the recorded known divergences and refusals, each with its ``kind`` and its
environment ``scope``), ``errors`` (case files that did not load)
and ``cases`` (one entry per concrete case and direction; see :class:`runner.CaseResult`).
Optional: ``benchmarks``, a timing summary from :func:`conformance.bench.summarise`, added by
:func:`conformance.bench.attach` (files without it are the same schema version).
``environment.facts.converter`` names the converter under test (name, version, directions;
``transfer_weights`` for our own); a run through a third-party converter may have the outcome
``refused`` (the converter declined), counted in ``summary`` only when it occurs, and its cases
carry ``converter`` (:mod:`conformance.converters.peer`).
Reports and the upgrade gate read only this file, never torch or keras.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConformanceError

SCHEMA = "conformance-results"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)   # 2 added the `unsupported` outcome, environment.facts and record scopes
OUTCOMES = ("passed", "failed", "divergence", "unsupported", "xpass", "skipped", "error")
# Outcomes only a converter under test has (conformance.converters.peer): counted in a summary when they occur,
# so a built-in run's summary is the same as before they existed.
PEER_OUTCOMES = ("refused",)


def git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(torch_device: str = "cpu", converter: str = "transfer_weights") -> dict[str, Any]:
    """Versions, platform, devices and the facts of :mod:`conformance.facts` (under ``facts``).
    Imports torch and keras, which a run has loaded anyway."""
    import numpy
    import torch  # torch before tensorflow
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "numpy": numpy.__version__}
    try:
        import keras
        env["keras"], env["keras_backend"] = keras.__version__, keras.backend.backend()
    except ImportError:
        env["keras"] = None
    from .runner import installed_versions  # from the package metadata: no TensorFlow import on other backends
    env["tensorflow"] = installed_versions().get("tensorflow")
    env["platform"] = f"{platform.system()} {platform.release()} {platform.machine()}"
    devices = [f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    env["devices"] = devices
    env["device"] = devices[-1] if len(devices) > 1 else devices[0]
    from .facts import collect
    env["facts"] = collect(torch_device)
    from .converters import get
    env["facts"]["converter"] = get(converter).fact()   # the converter under test: merge makes it a column
    env["git_revision"] = git_revision()
    return env


def summarise(cases: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(case["outcome"] for case in cases)
    summary = {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}
    summary.update({outcome: counts[outcome] for outcome in PEER_OUTCOMES if counts.get(outcome)})
    summary["total"] = sum(counts.values())
    return summary


def build(case_results: Sequence[dict[str, Any]], divergences: Sequence[dict[str, Any]] = (),
          errors: Sequence[dict[str, Any]] = (), torch_device: str = "cpu",
          converter: str = "transfer_weights", measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results document. ``measured`` is the environment as the processes that ran the cases saw it
    (xdist workers send theirs); without it this process measures its own. The command line is always
    this process's: in an xdist run the controller's, which is what the user typed."""
    env = environment(torch_device, converter) if measured is None else dict(measured)
    env["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "environment": env,
        "summary": summarise(case_results),
        "divergences": list(divergences),
        "errors": list(errors),
        "cases": list(case_results),
    }


def write(document: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a reader never sees half a file, and a crash never truncates the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


class ResultsError(ConformanceError, ValueError):
    """A results file that cannot be used: missing, not JSON, or not this schema."""


def read_json(path: str | Path, error: type[ValueError] = ValueError) -> Any:
    """A JSON file, or ``error`` saying in one line why it cannot be read."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not a JSON file: {exc}") from None


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return check(read_json(path, ResultsError), str(path))


def check(document: Any, label: str, model: str = "results") -> dict[str, Any]:
    """``document`` if it is a results document this tool reads (a matrix document with ``model="matrix"``),
    else ResultsError naming ``label`` and, one line each, every field that is wrong.

    Validation is by the model of :mod:`conformance.schemas.results`, the same one the shipped
    ``results.schema.json`` is generated from."""
    from pydantic import ValidationError  # here, not at import: only reading a results file needs pydantic

    from .schemas import model as format_model
    from .schemas.base import one_line_each, problems
    validator = format_model(model)
    try:
        validator.model_validate(document)
    except ValidationError as exc:
        found = problems(exc, validator, document)
        # Not this format, or not a version of it this tool reads: that alone is the answer.
        found = [p for p in found if p[0] in ("", "schema", "schema_version")][:1] or found
        path, message = found[0]
        where = f"field {path}: " if path not in ("", "schema", "schema_version") else ""
        raise ResultsError(f"{label}: {where}{message}{one_line_each(found)}") from None
    return document


def divergence_records(cases: Iterable[Any]) -> list[dict[str, Any]]:
    """The distinct recorded divergences of the loaded catalogue, for the results file and report."""
    seen: dict[int, dict[str, Any]] = {}
    for case in cases:
        for record in case.divergences:
            if id(record) not in seen:
                seen[id(record)] = {"family": case.family, "file": case.file, **record.to_json()}
    return list(seen.values())

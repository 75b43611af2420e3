"""Conversion and inference benchmarks: what to time, on which device, and the summary of a run.

The timed tests live in ``benchmarks/`` (pytest-benchmark); this module holds what they share:

- which cases represent each family (the first usable case of each ``cases/*.toml`` file, so new
  families are benchmarked without editing anything);
- the devices: the CPU always; CUDA for torch when ``torch.cuda.is_available()``, with TF32 off.
  Keras runs where TensorFlow puts it (the CPU with ``tensorflow-cpu``);
- the callables to time, one per (framework, mode, batch, device). torch modes: ``eager``,
  ``torchscript`` (``torch.jit.trace`` then ``torch.jit.freeze``) and ``compiled``
  (``torch.compile``). Keras modes: ``eager`` (``model(x)``), ``graph`` (``tf.function``) and
  ``xla`` (``tf.function(jit_compile=True)``). The default selection, :data:`DEFAULT_MODES`, leaves
  out ``compiled`` (a cold torch.compile takes about 45 s, then 2-3 s per graph, on a 2-core CPU)
  and ``graph`` (between eager and xla, and 100 more compilations). Inputs are made and placed
  before timing; compilation happens before timing too, and a compiled callable must agree with
  its eager one;
- :func:`summarise`: pytest-benchmark's JSON to a compact per-family summary, which
  :func:`attach` stores under ``"benchmarks"`` in a results.json for the report.

Command line::

    python -m conformance.bench summary benchmark.json -o bench-summary.json
    python -m conformance.bench attach reports/latest/results.json benchmark.json [--report]

Nothing here imports torch or TensorFlow at import time: summarising and attaching never need them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConformanceError
from .results import read_json

SCHEMA = "conformance-bench"
SCHEMA_VERSION = 1
BATCHES = (1, 32)
DEVICES = ("cpu", "cuda")
DIRECTIONS = ("torch->keras", "keras->torch")
TORCH_MODES = ("eager", "torchscript", "compiled")
KERAS_MODES = ("eager", "graph", "xla")
DEFAULT_MODES = "eager,torchscript,xla"
_WHAT_ORDER = {"transfer torch->keras": 0, "transfer keras->torch": 1, "inference": 2}
_FRAMEWORK_ORDER = {"conformance": 0, "torch": 1, "keras": 2}
_MODE_ORDER = {m: i for i, m in enumerate(("eager", "torchscript", "compiled", "graph", "xla"))}


class BenchError(ConformanceError, RuntimeError):
    """A benchmark that cannot give a meaningful time (a compiled callable that disagrees, say)."""


def parse_modes(text: str) -> set[str]:
    """``"eager,torchscript,xla"`` -> the set of modes; raises ValueError naming an unknown one."""
    modes = {m.strip() for m in text.split(",") if m.strip()}
    unknown = sorted(modes - set(TORCH_MODES) - set(KERAS_MODES))
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}; known: {', '.join(sorted({*TORCH_MODES, *KERAS_MODES}))}")
    return modes


# ---- which cases represent a family ------------------------------------------------------------------


def batch_axis(case: Any) -> int | None:
    """The input axis that grows with the batch size, or None for a model built for one batch size."""
    from .families import get_family
    family = get_family(case.family)
    if family.make_inputs is None:
        return 0
    one, two = (family.make_inputs(case.params, np.random.default_rng(0), n)[0].shape for n in (1, 2))
    changed = [i for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b]
    return changed[0] if len(changed) == 1 else None


def representative_cases(directory: str | Path = "cases", per_family: int = 1) -> list[Any]:
    """The first ``per_family`` usable cases of each family, in catalogue order.

    Usable: default tier, no recorded divergence, inputs that take a batch size. A family with
    none still gets its first case, so that its benchmark reports why it cannot run.
    Case files that do not load are left out (the conformance run reports them).
    """
    from .cases import DIRECTIONS as CASE_DIRECTIONS
    from .cases import load_catalogue
    by_family: dict[str, list[Any]] = {}
    for case in load_catalogue(directory).cases:
        by_family.setdefault(case.family, []).append(case)
    chosen = []
    for cases in by_family.values():
        usable = (c for c in cases if c.tier == "default" and not any(c.divergence_for(d) for d in CASE_DIRECTIONS)
                  and batch_axis(c) is not None)
        chosen.extend(list(itertools.islice(usable, per_family)) or cases[:per_family])
    return chosen


# ---- devices -----------------------------------------------------------------------------------------


def cuda_skip_reason() -> str | None:
    """Why torch cannot run on CUDA here, or None when it can."""
    import torch
    if torch.cuda.is_available():
        return None
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
    return f"no CUDA device: torch.cuda.is_available() is False ({build})"


def keras_device() -> str:
    """Where Keras runs: TensorFlow places the models on its first GPU when it sees one."""
    import tensorflow as tf
    return "cuda" if tf.config.list_physical_devices("GPU") else "cpu"


def device_skip_reason(framework: str, device: str) -> str | None:
    """None when ``framework`` can run on ``device`` here, otherwise the reason it cannot."""
    if device not in DEVICES:
        return f"unknown device {device!r}; known: {', '.join(DEVICES)}"
    if framework == "keras":
        where = keras_device()
        return None if where == device else f"Keras runs on TensorFlow's default device here, {where}"
    return None if device == "cpu" else cuda_skip_reason()


def set_threads(count: int) -> None:
    """The same number of CPU threads for both frameworks (before TensorFlow runs anything)."""
    import torch
    torch.set_num_threads(count)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(count)
    tf.config.threading.set_inter_op_parallelism_threads(count)


def configure_cuda() -> None:
    """Full float32 on CUDA: TF32 would round matmuls and convolutions to 10 mantissa bits."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def device_name(framework: str, device: str) -> str:
    """The device in words, for the summary: the GPU's name, or the CPU's core count."""
    if device == "cuda" and framework != "keras":
        import torch
        return f"cuda:0 {torch.cuda.get_device_name(0)}"
    import os
    return f"{device} ({os.cpu_count()} cores)" if device == "cpu" else device


# ---- the callables -----------------------------------------------------------------------------------

def pair_for(case: Any) -> Any:
    """The case's pair from the runner's cache: the benchmarks time exactly the models the catalogue judges."""
    from .runner import pair_for as cached_pair
    return cached_pair(case)[0]


def inputs_for(case: Any, pair: Any, batch: int) -> tuple[np.ndarray, ...]:
    return pair.sample_inputs(case.seed, batch)


def transfer_callable(pair: Any, direction: str) -> Callable[[], Any]:
    from .transfer import transfer_weights
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    source, destination = (pair.torch, pair.keras) if direction == "torch->keras" else (pair.keras, pair.torch)
    return lambda: transfer_weights(source, destination)


def torch_callable(module: Any, inputs: Sequence[np.ndarray], mode: str, device: str = "cpu") -> Callable[[], Any]:
    """``module`` on ``device`` in ``mode``, compiled and warmed up; the inputs are placed already."""
    import torch
    if mode not in TORCH_MODES:
        raise ValueError(f"torch mode must be one of {TORCH_MODES}, not {mode!r}")
    reason = device_skip_reason("torch", device)
    if reason:
        raise BenchError(reason)
    if device == "cuda":
        configure_cuda()
        module = copy.deepcopy(module).to(device)   # the shared pair stays on the CPU
    module.eval()
    xs = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch.jit, deprecated in favour of torch.compile
        warnings.simplefilter("ignore", torch.jit.TracerWarning)   # traced for these very inputs
        reference = module(*xs)
        if mode == "eager":
            target = module
        elif mode == "torchscript":
            target = torch.jit.trace(module, xs, check_trace=False)
            with contextlib.suppress(RuntimeError, AttributeError):   # an optimisation, not a must
                target = torch.jit.freeze(target)
        else:
            target = torch.compile(module)
        for _ in range(3):   # compile, and let the profiling executor specialise
            out = target(*xs)
    _check_same(reference, out, f"torch {mode}")
    sync = torch.cuda.synchronize if device == "cuda" else None

    def call() -> Any:
        with torch.no_grad():
            result = target(*xs)
        if sync is not None:
            sync()
        return result
    return call


def keras_callable(model: Any, inputs: Sequence[np.ndarray], mode: str, channels_last: bool) -> Callable[[], Any]:
    """``model`` in ``mode`` on channels-last inputs (moved here, before timing), warmed up."""
    import tensorflow as tf
    if mode not in KERAS_MODES:
        raise ValueError(f"keras mode must be one of {KERAS_MODES}, not {mode!r}")
    moved = [np.moveaxis(a, 1, -1) if channels_last and a.ndim >= 3 and a.dtype.kind == "f" else a for a in inputs]
    tensors = [tf.constant(np.ascontiguousarray(a)) for a in moved]
    feed = tensors[0] if len(tensors) == 1 else tensors
    reference = model(feed, training=False)
    if mode == "eager":
        return lambda: model(feed, training=False)
    function = tf.function(lambda x: model(x, training=False), jit_compile=mode == "xla", reduce_retracing=True)
    out = function(feed)
    _check_same(reference, out, f"keras {mode}")
    return lambda: function(feed)


def _arrays(value: Any) -> list[np.ndarray]:
    if isinstance(value, dict):
        return [a for k in value for a in _arrays(value[k])]
    if isinstance(value, list | tuple):
        return [a for v in value for a in _arrays(v)]
    if hasattr(value, "detach"):
        return [value.detach().cpu().numpy()]
    return [np.asarray(value)]


def _check_same(expected: Any, actual: Any, what: str) -> None:
    """A compiled callable that computes something else would time the wrong thing."""
    for e, a in zip(_arrays(expected), _arrays(actual), strict=True):
        if e.shape != a.shape or not np.allclose(a, e, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(e).max(
                initial=0.0))), equal_nan=True):
            raise BenchError(f"{what} output differs from eager: shapes {a.shape} and {e.shape}")


def plan_rounds(call: Callable[[], Any], budget_s: float = 0.2, min_rounds: int = 5, max_rounds: int = 100,
                round_s: float = 2e-4) -> tuple[int, int]:
    """(rounds, iterations) that fit ``budget_s``: each round at least ``round_s``, so the timer's
    resolution does not matter, and at least ``min_rounds`` rounds, so there is a noise band."""
    call()
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    iterations = max(1, math.ceil(round_s / once))
    rounds = int(budget_s / (once * iterations))
    return max(min_rounds, min(max_rounds, rounds)), iterations


# ---- the summary -------------------------------------------------------------------------------------


def _entry(bench: dict[str, Any]) -> dict[str, Any]:
    info, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
    entry = {
        "family": info.get("family") or "other",
        "case": info.get("case") or bench.get("name", "?"),
        "what": info.get("what") or "other",
        "framework": info.get("framework") or "?",
        "mode": info.get("mode") or "?",
        "batch": info.get("batch"),
        "device": info.get("device") or "?",
        "device_name": info.get("device_name") or info.get("device") or "?",
        "min": stats.get("min"), "median": stats.get("median"), "max": stats.get("max"),
        "mean": stats.get("mean"), "rounds": stats.get("rounds"), "iterations": stats.get("iterations"),
    }
    if entry["batch"] and isinstance(entry["median"], int | float) and entry["median"] > 0:
        entry["throughput"] = entry["batch"] / entry["median"]
    return entry


def _order(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry["case"], entry["device"] != "cpu", entry["device"], _WHAT_ORDER.get(entry["what"], 9),
            entry["batch"] or 0, _FRAMEWORK_ORDER.get(entry["framework"], 9), _MODE_ORDER.get(entry["mode"], 9))


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's JSON (``--benchmark-json``) as a compact per-family summary.

    ``{"schema", "schema_version", "created", "machine", "commit", "families": {family: [entry, ...]}}``,
    each entry ``family, case, what, framework, mode, batch, device, device_name, min, median, max,
    mean, rounds, iterations`` and, for inference, ``throughput`` (batch / median, samples per second).
    Times are seconds per call. Benchmarks without the labels the suite sets go under ``"other"``.
    """
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError("not a pytest-benchmark JSON file: no \"benchmarks\" list")
    families: dict[str, list[dict[str, Any]]] = {}
    for bench in data["benchmarks"]:
        entry = _entry(bench)
        families.setdefault(entry["family"], []).append(entry)
    machine = data.get("machine_info") or {}
    cpu = machine.get("cpu") or {}
    commit = data.get("commit_info") or {}
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": data.get("datetime"),
        "machine": {"cpu": cpu.get("brand_raw") or machine.get("processor") or "?", "cores": cpu.get("count"),
                    "python": machine.get("python_version"), **(machine.get("conformance") or {})},
        "commit": (commit.get("id") or "")[:12] + ("-dirty" if commit.get("dirty") else ""),
        "families": {name: sorted(entries, key=_order) for name, entries in families.items()},
    }


def load_summary(path: str | Path) -> dict[str, Any]:
    """A benchmark summary from ``path``: pytest-benchmark's JSON (summarised here) or a summary."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and data.get("schema") == SCHEMA:
        return data
    try:
        return summarise(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def attach(results_path: str | Path, benchmark_json_path: str | Path) -> dict[str, Any]:
    """Store the summary of ``benchmark_json_path`` under ``"benchmarks"`` in the results file, atomically.

    Returns the updated document. Raises ``results.ResultsError`` or ``ValueError`` for unusable input,
    before anything is written.
    """
    from . import results as results_file
    document = results_file.load(results_path)
    document["benchmarks"] = load_summary(benchmark_json_path)
    results_file.write(document, results_path)
    return document


def main(argv: Sequence[str] | None = None, prog: str = "conformance bench") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("summary", help="summarise pytest-benchmark's JSON")
    summary.add_argument("benchmark", metavar="BENCHMARK.json")
    summary.add_argument("-o", "--output", metavar="SUMMARY.json", help="default: standard output")
    attach_cmd = sub.add_parser("attach", help="add the summary to a results.json under \"benchmarks\"")
    attach_cmd.add_argument("results", metavar="RESULTS.json")
    attach_cmd.add_argument("benchmark", metavar="BENCHMARK.json", help="pytest-benchmark's JSON or a summary")
    attach_cmd.add_argument("--report", action="store_true", help="also re-render report.html beside it")
    args = parser.parse_args(argv)
    from . import results as results_file
    try:
        if args.command == "summary":
            text = json.dumps(load_summary(args.benchmark), indent=1) + "\n"
            if args.output:
                Path(args.output).write_text(text, encoding="utf-8")
                print(f"summary: {args.output}")
            else:
                sys.stdout.write(text)
            return 0
        document = attach(args.results, args.benchmark)
    except (ValueError, results_file.ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    count = sum(len(v) for v in document["benchmarks"]["families"].values())
    print(f"{args.results}: {count} benchmarks attached")
    if args.report:
        from .report import render
        report_path = Path(args.results).with_name("report.html")
        report_path.write_text(render(document), encoding="utf-8")
        print(f"report: {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

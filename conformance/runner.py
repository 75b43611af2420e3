"""One case, one direction, end to end: build, randomise, transfer, run, compare, judge.

The outcome is one of ``passed``, ``failed``, ``divergence`` (a recorded known divergence that
still diverges), ``unsupported`` (a framework refuses the configuration here, as recorded),
``xpass`` (a recorded divergence or refusal that no longer happens: the record is stale and the
run fails until it is updated), ``skipped`` and ``error``.
"""

from __future__ import annotations

import json
import math
import re
import time
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import numpy as np

from .cases import Case, Divergence
from .errors import ConformanceError, UnsupportedError
from .quiet import capture_framework_logs
from .refusal import NAMES, Refusal, plain, record_hint, refusal_from


@dataclass
class CaseResult:
    """Everything the results file records about one case in one direction."""

    id: str
    family: str
    direction: str
    params: dict[str, Any]
    outcome: str
    seed: int
    file: str = ""
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    allowed_error: float | None = None
    headroom: float | None = None
    tolerance: dict[str, Any] | None = None
    reference_error: dict[str, float] | None = None     # each framework's distance to the float64 reference
    worst: dict[str, Any] | None = None                 # index and both values at the worst element
    mapping: list[dict[str, Any]] = field(default_factory=list)
    divergence: dict[str, Any] | None = None
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    tier: str = "default"
    warnings: list[str] = field(default_factory=list)     # what torch and keras warned about during the case
    log: list[str] = field(default_factory=list)          # what the frameworks logged meanwhile (retracing notices):
    #                                                       depends on what the process ran before, like timings
    mode: str = "inference"                               # "train": see conformance.gradients
    training: dict[str, Any] | None = None                # train cases: what was compared, the worst, statistics

    @property
    def ok(self) -> bool:
        return self.outcome in ("passed", "divergence", "unsupported", "skipped")

    def to_json(self) -> dict[str, Any]:
        """Inference entries carry no ``mode`` or ``training``: they read as they did before train cases
        existed (a reader takes a missing ``mode`` as "inference")."""
        out = asdict(self)
        if self.mode == "inference":
            del out["mode"], out["training"]
        return _jsonable(out)

    def reproducer(self) -> str:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return (f'conformance run --select "{self.id}"\n'
                f'pytest "{self.file}::{self.id}::{self.direction}"\n'
                f'python: import conformance; pair = conformance.build_pair("{self.family}", {kwargs})')

    def explain(self) -> str:
        """The failure message: what differs, where, by how much, which side moved, how to reproduce."""
        lines = [f"{self.id} {self.direction}: {self.outcome.upper()}"]
        if self.message:
            lines.append(f"  {self.message}")
        if self.training and self.training.get("worst"):
            lines.append(f"  training mode: worst of {len(self.training.get('compared', []))} comparisons is "
                         f"{self.training['worst']}")
        if self.max_abs_error is not None and self.worst:
            lines.append(f"  max abs error {self.max_abs_error:.4g}, max rel error {self.max_rel_error:.4g}; "
                         f"allowed {self.allowed_error:.4g} at the worst element; headroom {self.headroom:.4g} "
                         f"(observed/allowed, > 1 fails)")
            lines.append(f"  worst at index {tuple(self.worst['index'])}: torch {self.worst['torch']!r}, "
                         f"keras {self.worst['keras']!r}")
        if self.reference_error:
            lines.append(f"  float64 reference distance: torch {self.reference_error['torch']:.3g}, "
                         f"keras {self.reference_error['keras']:.3g} -> {_who_moved(self.reference_error)}")
        if self.tolerance:
            lines.append(f"  tolerance: atol {self.tolerance['atol']:.3g}, rtol {self.tolerance['rtol']:.3g} "
                         f"({self.tolerance['reason']})")
        if self.divergence:
            kind = self.divergence.get("kind", "divergence")
            lines.append(f"  recorded {kind}: {self.divergence['reason']}")
            if self.divergence.get("scope"):
                lines.append(f"  record's scope: {self.divergence['scope']}")
        for warning in self.warnings:
            lines.append(f"  warned: {warning}")
        for line in self.log:
            lines.append(f"  logged: {line}")
        lines.append(f"  params: {json.dumps(_jsonable(self.params))}")
        lines.append(f"  seed: {self.seed}   file: {self.file}")
        lines.append("  reproduce:\n    " + self.reproducer().replace("\n", "\n    "))
        return "\n".join(lines)


def _who_moved(distances: dict[str, float]) -> str:
    t, k = distances["torch"], distances["keras"]
    if max(t, k) < 1e-4:
        return "both agree with the reference"
    if k > 10 * t:
        return "keras differs from the reference"
    if t > 10 * k:
        return "torch differs from the reference"
    return "both differ from the reference"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


# Building Keras models dominates the run time, and both directions of a case use the same pair.
_PAIRS: OrderedDict[str, Any] = OrderedDict()


@contextmanager
def _fresh_keras_names() -> Iterator[None]:
    """Keras numbers auto-named layers per process (dense, dense_1, ...): each pair is built with counters of
    its own, so the mapping in a result names the same layers whatever ran before it (serial, parallel or
    sharded), and the caller's own counters are put back afterwards, untouched."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.utils.naming import reset_uids
    except ImportError:          # another Keras: names may then differ between runs, results do not
        yield
        return
    saved = global_state.get_global_attribute("object_name_uids")
    reset_uids()
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def pair_for(case: Case) -> tuple[Any, dict[str, Any]]:
    """The case's pair, built once for both directions (and the benchmarks), with the memo that lets the
    second direction's transfer reuse the first one's pairing (see ``transfer_between_twins``)."""
    from .pair import build_pair
    if case.id not in _PAIRS:
        with _fresh_keras_names():
            _PAIRS[case.id] = (build_pair(case.family, **case.params), {})
        while len(_PAIRS) > 4:
            _PAIRS.popitem(last=False)
    return _PAIRS[case.id]


@cache
def installed_versions() -> dict[str, str]:
    import importlib.metadata as md
    versions = {}
    for package, dist in (("torch", "torch"), ("tensorflow", "tensorflow-cpu"), ("keras", "keras")):
        for name in (dist, "tensorflow") if package == "tensorflow" else (dist,):
            try:
                versions[package] = md.version(name)
                break
            except md.PackageNotFoundError:
                continue
    return versions


def run_case(case: Case, direction: str, torch_device: str = "cpu", converter: str = "transfer_weights") -> CaseResult:
    """Run one case in one direction and judge it. Never raises for a problem with the case.

    ``torch_device`` puts the torch side on a GPU ("cuda"); TF32 is then disabled, so that the
    comparison sees float32 arithmetic on both sides. The records that apply are those whose
    versions and environment facts (:func:`conformance.facts.scope_facts`) fit this process.
    """
    if converter != "transfer_weights":         # a converter under test: its own path and verdicts
        from .converters.peer import run_peer
        return run_peer(case, direction, converter, torch_device)
    from .facts import scope_facts
    result = CaseResult(case.id, case.family, direction, dict(case.params), "error", case.seed, case.file,
                        tier=case.tier, mode=getattr(case, "mode", "inference"))
    facts = scope_facts(torch_device)
    record = case.record_for(direction, installed_versions(), facts)
    if record is not None:
        result.divergence = record.to_json()
    started = time.perf_counter()
    caught: list[warnings.WarningMessage] = []
    with capture_framework_logs() as logged:
        try:
            with warnings.catch_warnings(record=True) as caught:   # kept with the case, not sprayed on the terminal
                warnings.simplefilter("always")
                _run(case, direction, result, torch_device)
        except UnsupportedError as exc:
            _refused(result, Refusal("keras", "keras", plain(f"Keras cannot express this configuration: {exc}")),
                     record, case, facts)
        except ConformanceError as exc:
            result.outcome, result.message = "error", plain(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a crash inside torch or keras must not stop the run
            refusal = refusal_from(exc)
            if refusal is not None:
                _refused(result, refusal, record, case, facts)
            else:
                frames = traceback.extract_tb(exc.__traceback__)
                where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
                result.outcome, result.message = "error", plain(f"{type(exc).__name__}: {exc}{where}")
        else:
            _judge(result, record, case)
    result.timings["total"] = time.perf_counter() - started
    result.warnings = sorted({plain(f"{w.category.__name__}: {w.message}") for w in caught})
    result.log = sorted({re.sub(r" at 0x[0-9a-f]+", "", line) for line in logged})
    return result


def _judge(result: CaseResult, record: Divergence | None, case: Case) -> None:
    """The outcome of a case that ran: passed or failed, or measured against its record."""
    passed = result.headroom is not None and result.headroom <= 1.0 and not result.message
    if record is None:
        result.outcome = "passed" if passed else "failed"
    elif record.kind == "unsupported":
        result.outcome = "xpass" if passed else "failed"
        result.message = (f"the recorded refusal did not happen: {NAMES[record.framework]} now runs this "
                          f"configuration{'' if passed else ', and the outputs differ'}. Remove or narrow the "
                          f"[[unsupported]] record in {case.file} (scope: {record.scope_text()})"
                          + (f"\n  {result.message}" if result.message else ""))
    else:
        result.outcome = "xpass" if passed else "divergence"
        if passed:
            result.message = ("recorded divergence no longer diverges: the frameworks now agree. "
                              f"Remove or narrow the [[divergence]] record in {case.file} "
                              f"(scope: {record.scope_text()})")


def _refused(result: CaseResult, refusal: Refusal, record: Divergence | None, case: Case,
             facts: dict[str, Any]) -> None:
    """A framework refused to run the case: ``unsupported`` when recorded for here, else an error."""
    if record is not None and record.kind == "unsupported" and record.framework == refusal.framework \
            and record.message in refusal.text:
        result.outcome = "unsupported"
        result.message = f"recorded as unsupported here ({record.scope_text()}): {refusal.describe()}"
        return
    result.outcome = "error"
    if record is not None and record.kind == "unsupported":
        result.message = (f"{refusal.describe()}\n  the [[unsupported]] record in {case.file} expects "
                          f"{NAMES[record.framework]} to refuse with {record.message!r}; update the record if the "
                          "refusal is the same one in other words")
    else:
        result.message = f"{refusal.describe()}\n  {record_hint(refusal, case.file, case.params, facts)}"


def use_one_torch_thread() -> None:
    """For catalogue runs: the cases are tiny, so torch's thread pool costs more than it saves,
    and beside TensorFlow's own pool it oversubscribes the cores (measured: 3x slower per case on
    2 busy cores). Called once by the CLI and the pytest plugin, not per case: resizing torch's
    pool is itself slow."""
    import torch
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def on_device(module: Any, device: str) -> Any:
    """Move a torch module to ``device``; with CUDA, switch TF32 off first (it rounds to 10 bits)."""
    import torch
    if device != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        module.to(device)
        module.conformance_device = torch.device(device)   # for modules without parameters
    return module


def _run(case: Case, direction: str, result: CaseResult, torch_device: str = "cpu") -> None:
    from .comparison import compare

    clock = time.perf_counter()
    pair, memo = pair_for(case)
    on_device(pair.torch, torch_device)
    result.timings["build"] = time.perf_counter() - clock
    source = randomized_source(pair, case, direction)
    clock = time.perf_counter()
    result.mapping = _builtin_transfer(pair, source, direction, case.id, memo)   # the built-in converter adapter
    result.timings["transfer"] = time.perf_counter() - clock

    tolerance = case.tolerance or pair.family.tolerance(pair.params)
    inputs = pair.sample_inputs(case.seed, case.batch)
    if result.mode == "train":
        from .gradients import judge_training
        judge_training(pair, case, direction, result, tolerance, list(inputs), memo)   # the transfer's pairing
        return
    clock = time.perf_counter()
    comparison = compare(pair.torch, pair.keras, list(inputs), tolerance=tolerance,
                         channels_last=pair.channels_last)
    result.timings["compare"] = time.perf_counter() - clock
    result.tolerance = {"atol": tolerance.atol, "rtol": tolerance.rtol, "reason": tolerance.reason}
    result.max_abs_error, result.max_rel_error = comparison.max_abs_error, comparison.max_rel_error
    result.allowed_error, result.headroom = comparison.allowed_error, comparison.headroom
    if comparison.worst_index is not None:
        result.worst = {"index": list(comparison.worst_index), "torch": comparison.torch_value,
                        "keras": comparison.keras_value, "output": comparison.output}
    if comparison.problem:
        result.message = comparison.problem
        return
    if pair.family.reference is not None:
        expected_list = reference_outputs(pair, inputs)
        torch_list = comparison.torch_outputs or [o for o in (comparison.torch_output,) if o is not None]
        keras_list = comparison.keras_outputs or [o for o in (comparison.keras_output,) if o is not None]
        result.reference_error = {
            "torch": max(_distance(a, e) for a, e in zip(torch_list, expected_list, strict=False)),
            "keras": max(_distance(a, e) for a, e in zip(keras_list, expected_list, strict=False)),
        }


def randomized_source(pair: Any, case: Case, direction: str) -> Any:
    """The source model of ``direction``, its weights drawn afresh from the case's seed for that direction."""
    from .pair import randomize_keras, randomize_torch

    seed = weight_seed(case, direction)
    if direction == "torch->keras":
        randomize_torch(pair.torch, seed)
        return pair.torch
    randomize_keras(pair.keras, seed)
    return pair.keras


def weight_seed(case: Case, direction: str) -> int:
    """The seed of the source side's weights: the same for every converter of this case and direction."""
    return case.seed + (1 if direction.startswith("torch->") else 2)


def reference_outputs(pair: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The family's float64 reference on ``inputs`` (torch layout) with the torch model's weights: the third
    party that says which framework moved."""
    weights = {k: v.detach().cpu().double().numpy() for k, v in pair.torch.state_dict().items()
               if v.is_floating_point()}
    x64 = tuple(a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs)
    expected = pair.family.reference(x64[0] if len(x64) == 1 else x64, weights, pair.params)
    return list(expected) if isinstance(expected, list | tuple) else [expected]


def _builtin_transfer(pair: Any, source: Any, direction: str, case_id: str, memo: dict[str, Any]
                      ) -> list[dict[str, Any]]:
    """The default run's conversion, through the ``transfer_weights`` adapter; returns its weight mapping."""
    from pathlib import Path

    from .converters import Context, TransferWeights
    context = Context(pair, direction, Path("."), case_id, memo=memo)
    TransferWeights().convert(source, (), context)
    return context.mapping


def _distance(actual: Any, expected: np.ndarray) -> float:
    a = np.asarray(actual, dtype=np.float64)
    if a.shape != expected.shape:
        return math.inf
    finite = np.isfinite(expected) & np.isfinite(a)
    mismatch = (~finite) & (a != expected)
    if mismatch.any():
        return math.inf
    return float(np.abs(a[finite] - expected[finite]).max()) if finite.any() else 0.0


__all__ = ["CaseResult", "installed_versions", "run_case", "use_one_torch_thread"]

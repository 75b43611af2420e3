"""A training scenario as a catalogue case: its :class:`ScenarioResult` becomes a results record.

``cases/training/*.toml`` are collected by the pytest plugin beside the layer catalogue, so
``conformance run``, ``pytest cases``, shards, merges and the report treat them like any case: one
record per concrete case, its direction given by where the weights started (``source``). The
scenario's own recorded divergence (data in :mod:`conformance.training.scenarios`) and a case
file's environment-scoped ``[[divergence]]`` record (:mod:`conformance.training.records`) are
strict alike: reproduced, it is a ``divergence``; gone, an ``xpass`` that fails.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass

from ..errors import ConformanceError
from ..facts import scope_facts
from ..runner import CaseResult, _jsonable, installed_versions
from .catalogue import TrainingCase

OUTCOMES = {"passed": "passed", "failed": "failed", "divergence": "divergence", "unexpected pass": "xpass"}


@dataclass
class ScenarioCaseResult(CaseResult):
    """A train-mode case result (every compared tensor under ``training``), reproduced by ``run_scenario``."""

    def explain(self) -> str:
        lines = [f"{self.id} {self.direction}: {self.outcome.upper()}"]
        if self.message:
            lines.append(f"  {self.message}")
        compared = (self.training or {}).get("compared", [])
        lines += [f"  {t['name']}: max abs error {t['max_abs_error']:.4g}, allowed {t['allowed_error']:.4g}, "
                  f"headroom {t['headroom']:.4g}" for t in compared if t["headroom"] > 1]
        if self.tolerance:
            lines.append(f"  tolerance: {self.tolerance['reason']}")
        if self.divergence:
            lines.append(f"  recorded divergence {self.divergence['rule']}: {self.divergence['reason']}")
        lines.append(f"  params: {json.dumps(_jsonable(self.params))}")
        lines.append(f"  file: {self.file}")
        lines.append("  reproduce:\n    " + self.reproducer().replace("\n", "\n    "))
        return "\n".join(lines)

    def reproducer(self) -> str:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return (f'conformance run --select "{self.id}"\n'
                f'pytest "{self.file}::{self.id}::{self.direction}"\n'
                f'python: from conformance.training import run_scenario; '
                f'print(run_scenario("{self.family}", {kwargs}).summary())')


def run_training_case(case: TrainingCase) -> ScenarioCaseResult:
    """Run one training case and judge it. Never raises for a problem with the case."""
    record = ScenarioCaseResult(case.id, case.family, case.direction, dict(case.params), "error", case.seed,
                                case.file, tier=case.tier, mode="train")
    started = time.perf_counter()
    try:
        applied = case.record_for(installed_versions(), scope_facts())
        result = case.run(applied)
    except ConformanceError as exc:
        record.message = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a crash inside torch or keras must not stop the run
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        record.message = f"{type(exc).__name__}: {exc}{where}"
    else:
        worst = result.worst
        record.outcome = OUTCOMES[result.verdict]
        record.max_abs_error, record.allowed_error = result.max_abs_error, result.allowed_error
        record.headroom = result.headroom
        record.worst = {"tensor": worst.name, "torch": worst.torch_value, "keras": worst.keras_value}
        record.tolerance = {"reason": result.tolerance}
        record.message = result.summary() if record.outcome != "passed" else ""
        if result.expected is not None:
            record.divergence = {"rule": result.expected.rule, "reason": result.expected.reason,
                                 "factor": result.expected.factor,
                                 "measured": _jsonable(dict(result.measured))}
            if applied is not None:       # the file's record: its scope and evidence travel with the result
                record.divergence = {**applied.to_json(), **record.divergence}
                if record.outcome == "xpass":
                    record.message += (f"\n  the recorded divergence no longer diverges here. Remove or narrow the "
                                       f"[[divergence]] record {applied.rule} in {case.file} "
                                       f"(scope: {applied.scope_text()})")
        record.training = {"judged": "weights and statistics after training", "worst": worst.name,
                           "compared": [{"name": t.name, "max_abs_error": t.max_abs_error,
                                         "allowed_error": t.allowed_error, "headroom": t.headroom}
                                        for t in result.tensors]}
    record.timings["total"] = time.perf_counter() - started
    return record


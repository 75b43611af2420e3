"""Training case files: ``scenario = ...`` plus ``[[grid]]`` tables, expanded into concrete cases.

A proposal for the catalogue's shape (``cases/training/*.toml``, which the layer catalogue does not
read), kept small so that the runner can adopt it or fold it into ``cases.py``::

    scenario = "fine_tune"
    description = "10 steps from converted weights, both directions"

    [[grid]]
    model = "residual_block"
    optimizer = ["sgd", "adam"]
    source = ["torch", "keras"]
    correction = [false, true]
    expect = "auto"          # or "none", or a divergence rule name

    [[divergence]]           # scoped by environment, strict: see conformance.training.records
    rule = "..."
    when = { model = ["residual_block"] }
    environment = { onednn = true, onednn_isa = "avx2" }
    reason = "..."

Every value in a grid is one value or a list of alternatives; a value that is itself a list
(``input_shape``, ``betas``) is written as a list of lists. Each concrete case runs with
``run_scenario(case.scenario, expect=case.expect, **case.params)``.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import CaseError
from .records import ScenarioRecord, check_used, parse_records


@dataclass(frozen=True)
class TrainingCase:
    """One concrete training case: a scenario, its parameters, and the divergence it records."""

    file: str
    scenario: str
    params: dict[str, Any]
    expect: str | None = "auto"
    divergences: tuple[ScenarioRecord, ...] = ()   # the file's [[divergence]] records (environment-scoped)

    # What the plugin and the results file read from any case.
    tier = "default"
    seed = 0                    # each scenario seeds itself (its ``seed`` parameter, 0 unless given)
    mode = "train"

    @property
    def family(self) -> str:
        return self.scenario

    @property
    def direction(self) -> str:
        """Where the converted weights started: torch (the default) or keras."""
        return "keras->torch" if self.params.get("source") == "keras" else "torch->keras"

    @property
    def id(self) -> str:
        shown = "-".join(f"{k}={_short(v)}" for k, v in self.params.items())
        return f"{self.scenario}[{shown}]"

    def record_for(self, installed: Mapping[str, str], facts: Mapping[str, Any]) -> ScenarioRecord | None:
        """The file's record that applies to this case here: parameters match, versions and facts in scope."""
        return next((r for r in self.divergences if r.matches(self.params, self.direction)
                     and r.applies_to(installed, facts)), None)

    def run(self, record: ScenarioRecord | None = None) -> Any:
        """Run the scenario, judged against ``record``'s expectation where one applies, else ``expect``."""
        from .scenarios import run_scenario
        try:
            return run_scenario(self.scenario, expect=record.expectation() if record else self.expect, **self.params)
        except CaseError as exc:
            raise exc.located(file=self.file, case=self.id) from None


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def load_file(path: str | Path) -> list[TrainingCase]:
    """The concrete cases of one training case file, each checked against its scenario's parameters."""
    from .scenarios import check_params
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CaseError(f"cannot read: {exc}", file=str(path)) from None
    scenario = data.get("scenario")
    if not isinstance(scenario, str):
        raise CaseError("missing scenario = \"...\" (batch_norm_training, optimizer_step or fine_tune)",
                        file=str(path), field="scenario")
    unknown = set(data) - {"scenario", "description", "grid", "divergence"}
    if unknown:
        raise CaseError(f"unknown top-level keys {sorted(unknown)}", file=str(path), field=sorted(unknown)[0])
    grids = data.get("grid") or [{}]
    cases = []
    for number, grid in enumerate(grids, start=1):
        options = {key: value if isinstance(value, list) else [value] for key, value in grid.items()}
        for combination in itertools.product(*options.values()):
            params = dict(zip(options, combination, strict=True))
            expect = params.pop("expect", "auto")
            case = TrainingCase(str(path), scenario, params, None if expect == "none" else expect)
            try:
                check_params(scenario, params)
            except CaseError as exc:
                raise CaseError(exc.detail, file=str(path), case=f"grid {number}: {case.id}",
                                field=exc.field) from None
            cases.append(case)
    records = parse_records(data.get("divergence", []), scenario, str(path))
    check_used(records, cases, str(path))
    return [replace(case, divergences=records) for case in cases]


def load(directory: str | Path) -> list[TrainingCase]:
    """Every training case of every ``*.toml`` file in ``directory``, in file order."""
    files = sorted(Path(directory).glob("*.toml"))
    if not files:
        raise CaseError("no *.toml training case files", file=str(directory))
    return [case for path in files for case in load_file(path)]


def load_beside(catalogue: str | Path) -> tuple[list[TrainingCase], list[CaseError]]:
    """The training cases in ``<catalogue>/training/`` (none when there is no such folder), and the
    errors of the files that did not load, so that one bad file does not hide the others."""
    cases: list[TrainingCase] = []
    errors: list[CaseError] = []
    for path in sorted((Path(catalogue) / "training").glob("*.toml")):
        try:
            cases += load_file(path)
        except CaseError as exc:
            errors.append(exc)
    return cases, errors

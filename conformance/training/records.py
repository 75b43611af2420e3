"""``[[divergence]]`` records in training case files: the layer catalogue's records, for scenarios.

A scenario's own divergences (the BatchNorm running variance, stock Keras Adam's epsilon) follow
from its parameters wherever it runs, so they are code (``expect = "auto"``). A divergence that
only some kernels show is a fact about an environment, so it is data in the case file, scoped and
strict like a layer case's record (:class:`conformance.cases.Divergence`: ``when``, version
ranges, ``environment``, ``reason``, ``link``), plus what a scenario needs to judge it::

    [[divergence]]
    rule = "onednn-avx2-1x1-stride2-filter-grad"
    when = { model = ["residual_block"] }      # the scenario's parameters, as the file writes them
    tensors = ["*"]                             # fnmatch patterns of the tensors it may put out of tolerance
    tensorflow = ">=2.21,<2.22"
    environment = { keras_backend = "tensorflow", onednn = true, onednn_isa = "avx2" }
    reason = "..."
    link = "tests/test_known_divergences.py::..."

Where a record applies (parameters match, versions and facts in scope) it replaces the case's own
expectation: the case must fail, only on those tensors, or it is an unexpected pass naming the
record. Outside its scope the case is judged as if the record were not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..cases import Divergence as Record
from ..cases import record_scope
from ..errors import CaseError
from .results import Divergence


@dataclass(frozen=True)
class ScenarioRecord(Record):
    """A case file's record for training scenarios: a layer record, named, with the tensors it affects."""

    rule: str = ""
    tensors: tuple[str, ...] = ("*",)
    factor: str | None = None

    def expectation(self) -> Divergence:
        """What the scenario's verdict is measured against while the record applies."""
        return Divergence(self.rule, self.reason, self.tensors, self.factor)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "rule": self.rule, "tensors": list(self.tensors), "factor": self.factor}


def parse_records(raw: list[Any], scenario: str, file: str) -> tuple[ScenarioRecord, ...]:
    """The ``[[divergence]]`` tables of a training case file, each validated by the layer records' model
    (:class:`conformance.schemas.case.ScenarioDivergence`) and its ``when`` by the scenario's parameters."""
    from pydantic import ValidationError

    from ..schemas.base import one_line_each, problems
    from ..schemas.case import ScenarioDivergence
    from .scenarios import check_params
    if not isinstance(raw, list):
        raise CaseError("write each record as a [[divergence]] table", file=file, field="divergence")
    records = []
    for i, table in enumerate(raw):
        where = f"divergence[{i}]"
        try:
            entry = ScenarioDivergence.model_validate(table)
        except ValidationError as exc:
            found = problems(exc, ScenarioDivergence, table)
            field, message = found[0]
            raise CaseError(message + one_line_each(found), file=file,
                            field=f"{where}.{field}" if field else where) from None
        pattern: dict[str, tuple[Any, ...]] = {}
        for key, values in entry.when.items():
            alternatives = tuple(values) if isinstance(values, list) else (values,)
            for value in alternatives:
                try:
                    check_params(scenario, {key: value})
                except CaseError as exc:
                    raise CaseError(exc.detail, file=file, field=f"{where}.when.{key}") from None
            pattern[key] = alternatives
        environment, versions = record_scope(entry, file, where)
        records.append(ScenarioRecord(pattern, entry.reason.strip(), entry.direction, versions, entry.link.strip(),
                                      environment, rule=entry.rule, tensors=tuple(entry.tensors),
                                      factor=entry.factor))
    return tuple(records)


def check_used(records: tuple[ScenarioRecord, ...], cases: list[Any], file: str) -> None:
    """A record that matches none of the file's cases is stale or mistyped: refused, naming it."""
    for i, record in enumerate(records):
        if not any(record.matches(case.params, case.direction) for case in cases):
            raise CaseError("matches no case in this file: a stale or mistyped record", file=file,
                            field=f"divergence[{i}].when")

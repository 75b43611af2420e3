"""The results document (``results.json``, schema versions 1 and 2) and the merged matrix document
(``conformance-matrix`` version 1) as declarative models.

:func:`conformance.results.check` and :func:`conformance.merge.load_any` read files through
them; ``results.schema.json`` and ``matrix.schema.json`` are generated from them. What a reader
relies on is typed (the keys of a case entry, the outcomes, the summary); what only describes
(environment facts, a case's measurements) stays open, so that a newer writer may add to it
without breaking an older reader. Only what a reader needs is required: ``schema``,
``schema_version`` and ``cases`` (each with ``id``, ``direction`` and ``outcome``). Version 1
is version 2 without the ``unsupported`` outcome, ``environment.facts`` and the records' scopes,
all optional here, so one model reads both.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from .base import Absent, Table

SCHEMA = "conformance-results"
MATRIX_SCHEMA = "conformance-matrix"
Outcome = Literal["passed", "failed", "divergence", "unsupported", "xpass", "skipped", "error", "refused"]
Direction = Literal["torch->keras", "keras->torch", "torch->tflite"]   # torch->tflite: converters under test only


def _infinity(value: Any) -> Any:
    return float(value) if value in ("inf", "-inf") else value


# An error or headroom: a number, null (NaN, or not measured), or "inf"/"-inf" as JSON cannot hold infinities.
Measure = Annotated[float | None,
                    BeforeValidator(_infinity, json_schema_input_type=float | Literal["inf", "-inf"] | None)]


class Open(Table):
    """An object whose listed keys are typed and whose other keys are kept as they are."""

    model_config = ConfigDict(extra="allow")


class CaseEntry(Open):
    """One concrete case in one direction (:class:`conformance.runner.CaseResult`)."""

    id: str = Field(description="family[parameters], as in pytest ids")
    direction: Direction
    outcome: Outcome
    family: str = ""
    params: dict[str, Any] = {}
    seed: int = 0
    file: str = ""
    tier: str = "default"
    message: str = ""
    max_abs_error: Measure = None
    max_rel_error: Measure = None
    allowed_error: Measure = None
    headroom: Measure = None
    tolerance: dict[str, Any] | None = None
    divergence: dict[str, Any] | None = Field(default=None, description="the record that applied, if any")
    mode: Literal["inference", "train"] = Field(default="inference", description="absent for inference results")
    training: dict[str, Any] | None = Field(default=None, description=(
        "train results: every comparison (outputs, input and weight gradients) or the dropout statistics"))


class Record(Open):
    """A recorded divergence or refusal of the catalogue (:meth:`conformance.cases.Divergence.to_json`)."""

    family: str
    file: str
    reason: str
    kind: Literal["divergence", "unsupported"] = "divergence"     # version 1 files have divergences only
    when: dict[str, list[Any]] = {}


class FileError(Table):
    """A case file that did not load: where, and why."""

    file: str | None = None
    case: str | None = None
    field: str | None = None
    message: str


class Shard(Table):
    index: int = Field(ge=1)
    count: int = Field(ge=1)


class Summary(Table):
    """Outcome counts (``unsupported`` is new in version 2); readers recount, so each may be absent."""

    passed: int = 0
    failed: int = 0
    divergence: int = 0
    unsupported: int = 0
    xpass: int = 0
    skipped: int = 0
    error: int = 0
    refused: int = 0     # a converter under test declined (conformance.converters); only where it occurs
    total: int = 0


class Environment(Open):
    """Versions, platform and the facts of :mod:`conformance.facts`; more keys may appear."""

    python: str | None = None
    torch: str | None = None
    tensorflow: str | None = None
    keras: str | None = None
    keras_backend: str | None = None
    facts: dict[str, Any] = Field(default={}, description="version 2: the environment facts (conformance.facts)")


class ResultsDocument(Table):
    """``results.json``: one run, written by ``conformance run`` and by pytest alike."""

    model_config = ConfigDict(title="conformance results document")
    messages: ClassVar[dict[str, str]] = {
        "model_type": "not a conformance results file (not a JSON object)",
        "schema.missing": f"not a conformance results file (no \"schema\": \"{SCHEMA}\")",
        "schema.literal_error": f"not a conformance results file (no \"schema\": \"{SCHEMA}\")",
        "schema_version.literal_error": "schema_version {input}, this tool reads 1, 2",
        "schema_version.missing": "no schema_version; this tool reads 1, 2",
        "benchmarks.dict_type": "\"benchmarks\", when present, must be an object (a benchmark summary)",
    }
    schema_: Literal["conformance-results"] = Field(alias="schema")
    schema_version: Literal[1, 2]
    created: str = Field(default="", description="when the run ended, ISO 8601, UTC")
    environment: Environment = Field(default_factory=Environment)
    summary: Summary = Field(default_factory=Summary)
    divergences: list[Record] = []
    errors: list[FileError] = []
    cases: list[CaseEntry]
    benchmarks: dict[str, Any] | None = Absent(description="a timing summary (conformance bench attach)")
    shard: Shard | None = Absent(description="conformance run --shard K/N")
    merged_from: list[str] | None = Absent(description="conformance merge's inputs")


class MatrixEntry(Table):
    name: str = Field(description="the column title: Keras backend, oneDNN and what else differs")
    results: ResultsDocument


class MatrixDocument(Table):
    """``conformance merge`` of runs from several environments: one entry per environment."""

    model_config = ConfigDict(title="conformance compatibility matrix")
    messages: ClassVar[dict[str, str]] = {
        "schema_version.literal_error": "matrix schema_version {input}, this tool reads 1",
        "environments.too_short": "no environments: a matrix has one or more",
    }
    schema_: Literal["conformance-matrix"] = Field(alias="schema")
    schema_version: Literal[1]
    created: str = ""
    environments: list[MatrixEntry] = Field(min_length=1)

"""The declared formats: each shipped JSON Schema is what its model generates, real files validate
against it with an independent validator (jsonschema), bad ones are refused, and the suite's own
errors stay one readable line per problem."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, get_args

import pytest

from conformance import cases, facts, schemas
from conformance import results as results_file
from conformance.errors import CaseError

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = sorted((ROOT / "cases").glob("*.toml"))
BASELINES = sorted(p for p in (ROOT / "reports" / "baselines").glob("*.json") if p.name != "costs.json")


def validator(name: str) -> Any:
    """A jsonschema validator of the shipped file: what an editor or CI tool uses, not our models."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = schemas.shipped(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", schemas.NAMES)
def test_shipped_schemas_are_what_the_models_generate(name: str) -> None:
    assert schemas.path(name).read_text(encoding="utf-8") == schemas.text(name), \
        f"{schemas.path(name)} is stale: run `conformance schema --write`"


def test_the_command_prints_and_checks_the_schemas() -> None:
    run = [sys.executable, "-m", "conformance.cli", "schema"]
    printed = subprocess.run([*run, "case"], capture_output=True, text=True, timeout=120, cwd=ROOT, check=True)
    assert json.loads(printed.stdout) == schemas.shipped("case")
    assert subprocess.run([*run, "--check"], capture_output=True, timeout=120, cwd=ROOT).returncode == 0


@pytest.mark.parametrize("path", CATALOGUE, ids=lambda p: p.name)
def test_every_case_file_validates_with_jsonschema(path: Path) -> None:
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    errors = [e.message for e in validator("case").iter_errors(document)]
    assert errors == []


@pytest.mark.parametrize(("change", "where"), [
    ({"familly": "relu"}, "familly"),
    ({"tier": "slow"}, "tier"),
    ({"batch": 0}, "batch"),
    ({"grid": []}, "grid"),
    ({"grid": [{"input_shape": []}]}, "input_shape"),
    ({"divergence": [{"when": {}, "reason": "r", "environment": {"onednn_isa": "avx1024"}}]}, "onednn_isa"),
    ({"divergence": [{"when": {}, "reason": "r", "environment": {"onednn": []}}]}, "onednn"),
    ({"divergence": [{"when": {}, "reason": "  "}]}, "reason"),
    ({"unsupported": [{"when": {}, "reason": "r", "framework": "theano", "message": "m"}]}, "framework"),
])
def test_jsonschema_refuses_what_the_loader_refuses(tmp_path: Path, change: dict[str, Any], where: str) -> None:
    """The schema is not vacuous: a tool that has only the schema finds the same mistakes."""
    document = {"family": "relu", "grid": [{"input_shape": [[3, 4]]}], **change}
    assert list(validator("case").iter_errors(document)), "jsonschema accepts it"
    path = tmp_path / "bad.toml"
    path.write_text(_toml(document), encoding="utf-8")
    with pytest.raises(CaseError) as info:
        cases.load_file(path)
    assert info.value.field is not None and where in info.value.field


def _toml(document: dict[str, Any]) -> str:
    """Just enough TOML for the documents above (JSON's scalars and inline arrays and tables are TOML's)."""
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)
    return "\n".join(f"{k} = {value(v)}" for k, v in document.items()) + "\n"


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.name)
def test_committed_results_validate_with_jsonschema(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert [e.message for e in validator("results").iter_errors(document)] == []
    assert results_file.check(document, str(path)) is document


def test_a_merged_matrix_validates_with_jsonschema() -> None:
    from conformance.merge import MATRIX_SCHEMA, load_any, merge
    matrix = merge([str(p) for p in BASELINES])
    assert matrix["schema"] == MATRIX_SCHEMA and len(matrix["environments"]) == len(BASELINES) >= 2
    assert [e.message for e in validator("matrix").iter_errors(matrix)] == []
    broken = {**matrix, "environments": [{"name": "x", "results": {"schema": "conformance-results"}}]}
    assert list(validator("matrix").iter_errors(broken))
    assert load_any is not None


def test_results_errors_name_every_bad_field_one_line_each() -> None:
    document = {"schema": "conformance-results", "schema_version": 2,
                "cases": [{"id": "a", "direction": "up", "outcome": "passed"},
                          {"id": "b", "direction": "torch->keras"}],
                "benchmarks": [1]}
    with pytest.raises(results_file.ResultsError) as info:
        results_file.check(document, "run.json")
    lines = str(info.value).splitlines()
    assert lines[0] == ("run.json: field cases[0].direction: expected 'torch->keras', 'keras->torch' or "
                        "'torch->tflite', got 'up'")
    assert lines[1:] == ["  and field cases[1].outcome: required, but missing",
                         '  and field benchmarks: "benchmarks", when present, must be an object (a benchmark summary)']
    assert "pydantic" not in str(info.value)
    assert list(validator("results").iter_errors(document))


def test_a_foreign_file_gets_one_line_not_a_list() -> None:
    with pytest.raises(results_file.ResultsError) as info:
        results_file.check({"name": "something else"}, "other.json")
    assert str(info.value) == 'other.json: not a conformance results file (no "schema": "conformance-results")'


def test_case_errors_name_every_bad_field_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('family = "relu"\ntier = "slow"\nbatch = 0\n[[grid]]\ninput_shape = [[3]]\n'
                    '[[divergence]]\nwhen = { input_shape = [[3]] }\nreason = "r"\nlink = "see the test"\n'
                    'environment = { onednn = "yes", avx = true }\n', encoding="utf-8")
    with pytest.raises(CaseError) as info:
        cases.load_file(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"file {path}, field batch: must be >= 1, got 0"
    assert lines[1:] == [
        "  and field tier: expected 'default' or 'extended', got 'slow'",
        "  and field divergence[0].environment.onednn: expected true or false, got 'yes'",
        "  and field divergence[0].environment.avx: unknown environment fact 'avx'; records can be scoped on "
        "keras_backend, onednn, onednn_isa, isa, torch_device, machine",
        "  and field divergence[0].link: a link is one URL or test path, without spaces; say the rest in the reason"]
    assert info.value.field == "batch"


def test_a_lone_value_is_one_alternative_and_its_error_has_no_index(tmp_path: Path) -> None:
    """``onednn_isa = "avx1024"`` stands for a list of one: the error names the key, not ``[0]``;
    in a written list it names the position."""
    for written, field in (('"avx1024"', "divergence[0].environment.onednn_isa"),
                           ('["avx512", "avx1024"]', "divergence[0].environment.onednn_isa[1]")):
        path = tmp_path / "isa.toml"
        path.write_text(f'family = "relu"\n[[grid]]\ninput_shape = [[3]]\n[[divergence]]\n'
                        f'when = {{ input_shape = [[3]] }}\nreason = "r"\nenvironment = {{ onednn_isa = {written} }}\n',
                        encoding="utf-8")
        with pytest.raises(CaseError) as info:
            cases.load_file(path)
        assert info.value.field == field and "'avx512'" in str(info.value)


def test_the_models_agree_with_the_constants_the_suite_uses() -> None:
    from conformance.schemas import case as case_model
    from conformance.schemas import results as results_model
    assert get_args(case_model.Framework) == cases.FRAMEWORKS
    assert ("both", *cases.DIRECTIONS) == get_args(case_model.Divergence.model_fields["direction"].annotation)
    from conformance.converters import CONVERTER_DIRECTIONS  # a converter under test may also write torch->tflite
    assert get_args(results_model.Direction) == CONVERTER_DIRECTIONS
    assert set(cases.DIRECTIONS) <= set(CONVERTER_DIRECTIONS)
    assert get_args(results_model.Outcome) == results_file.OUTCOMES + results_file.PEER_OUTCOMES
    versions = results_model.ResultsDocument.model_fields["schema_version"].annotation
    assert get_args(versions) == results_file.READABLE_VERSIONS
    environment = schemas.shipped("case")["$defs"]["Environment"]["properties"]
    assert list(environment) == list(facts.SCOPES)
    for fact, allowed in facts.SCOPES.items():
        single = environment[fact]["anyOf"][0]
        if allowed is None:
            assert single == {"type": "string"}
        elif isinstance(allowed[0], bool):
            assert single == {"type": "boolean"}
        else:
            assert tuple(single["enum"]) == allowed


def test_import_conformance_does_not_import_pydantic() -> None:
    """Only reading a file needs the models; the package, its plugin and the command line start without them."""
    code = ("import sys, conformance, conformance.plugin, conformance.cli, conformance.cases, conformance.results; "
            "print('pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         check=True)
    assert out.stdout.strip() == "False"

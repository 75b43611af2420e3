"""The upgrade gate, ``conformance.diff`` and ``conformance diff``: a real run with planted regressions."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance import cli
from conformance.diff import HEADROOM_FLOOR, diff

CONFORMANCE = [sys.executable, "-m", "conformance.cli"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("baseline")
    assert cli.main(["run", "--select", "relu,linear", "--output", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def _find(document: dict[str, Any], family: str, direction: str = "torch->keras") -> dict[str, Any]:
    return next(c for c in document["cases"] if c["family"] == family and c["direction"] == direction)


def _plant(baseline: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str], tuple[str, str]]:
    """A copy with one relu case flipped to failed and the linear case of largest headroom grown 20x."""
    candidate = copy.deepcopy(baseline)
    failed = _find(candidate, "relu")
    failed.update(outcome="failed", message="planted: outputs differ", max_abs_error=1.0, headroom=1e5)
    grown = max((c for c in candidate["cases"] if c["family"] == "linear" and c["outcome"] == "passed"),
                key=lambda c: c["headroom"])
    assert grown["headroom"] * 20 <= 1.0, "the planted growth must still pass"
    assert grown["headroom"] >= HEADROOM_FLOOR, "pick a case above the floor"
    grown["max_abs_error"] *= 20
    grown["headroom"] *= 20
    return candidate, (failed["id"], failed["direction"]), (grown["id"], grown["direction"])


def _write(tmp_path: Path, name: str, document: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


def _keys(changes: list[Any]) -> set[tuple[str, str]]:
    return {change.key for change in changes}


def test_baseline_is_clean(baseline: dict[str, Any]) -> None:
    assert {c["family"] for c in baseline["cases"]} == {"relu", "linear"}
    assert all(c["outcome"] == "passed" for c in baseline["cases"])
    assert not diff(baseline, baseline)


def test_planted_regressions_are_named(baseline: dict[str, Any]) -> None:
    candidate, failed, grown = _plant(baseline)
    changes = diff(baseline, candidate)
    assert _keys(changes.newly_failing) == {failed}
    assert _keys(changes.headroom_grew) == {grown}
    assert not changes.missing and not changes.stale_divergences
    text = changes.format()
    for case_id, direction in (failed, grown):
        assert f"{case_id} {direction}:" in text
    assert "passed (headroom 0) -> failed" in text
    assert "planted: outputs differ" in text
    assert "x20" in text and "2 regressions" in text


def test_cli_exits_1_on_regressions(baseline: dict[str, Any], tmp_path: Path) -> None:
    candidate, failed, grown = _plant(baseline)
    base, cand = _write(tmp_path, "base.json", baseline), _write(tmp_path, "cand.json", candidate)
    proc = subprocess.run([*CONFORMANCE, "diff", base, cand], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 1, proc.stderr
    for case_id, direction in (failed, grown):
        assert f"{case_id} {direction}" in proc.stdout
    assert "newly failing (1)" in proc.stdout and "headroom grew (1)" in proc.stdout


def test_identical_files_exit_0(baseline: dict[str, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    base = _write(tmp_path, "base.json", baseline)
    assert cli.main(["diff", base, base]) == 0
    assert "no regressions" in capsys.readouterr().out


def test_headroom_factor_option(baseline: dict[str, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    candidate, failed, _ = _plant(baseline)
    _find(candidate, "relu").update(outcome="passed", message="", headroom=0.0, max_abs_error=0.0)
    base, cand = _write(tmp_path, "base.json", baseline), _write(tmp_path, "cand.json", candidate)
    assert cli.main(["diff", base, cand]) == 1
    assert cli.main(["diff", base, cand, "--headroom-factor", "30"]) == 0
    capsys.readouterr()


def test_missing_case_is_listed(baseline: dict[str, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    candidate = copy.deepcopy(baseline)
    gone = candidate["cases"].pop(3)
    changes = diff(baseline, candidate)
    assert _keys(changes.missing) == {(gone["id"], gone["direction"])}
    base, cand = _write(tmp_path, "base.json", baseline), _write(tmp_path, "cand.json", candidate)
    assert cli.main(["diff", base, cand]) == 1
    out = capsys.readouterr().out
    assert "missing from the candidate (1)" in out and f"{gone['id']} {gone['direction']}: passed" in out


def test_xpass_is_a_stale_divergence(baseline: dict[str, Any]) -> None:
    before, after = copy.deepcopy(baseline), copy.deepcopy(baseline)
    record = {"reason": "planted reason", "link": "", "direction": "both", "versions": {}}
    _find(before, "linear").update(outcome="divergence", divergence=record)
    stale = _find(after, "linear")
    stale.update(outcome="xpass", divergence=record)
    changes = diff(before, after)
    assert _keys(changes.stale_divergences) == {(stale["id"], stale["direction"])}
    assert not changes.newly_failing
    assert "planted reason" in changes.format() and "divergence" in changes.format()


def test_new_failing_case_and_fixed_case() -> None:
    def doc(*cases: dict[str, Any]) -> dict[str, Any]:
        return {"cases": list(cases)}
    case = {"id": "x[a]", "family": "x", "direction": "torch->keras", "outcome": "failed", "message": "boom"}
    changes = diff(doc(), doc(case))
    assert _keys(changes.newly_failing) == {("x[a]", "torch->keras")}
    assert "new case" in changes.newly_failing[0].why
    fixed = diff(doc(case), doc({**case, "outcome": "passed", "headroom": 0.1}))
    assert not fixed and _keys(fixed.fixed) == {("x[a]", "torch->keras")}


def test_zero_baseline_headroom_uses_the_floor() -> None:
    def doc(headroom: float) -> dict[str, Any]:
        return {"cases": [{"id": "x[a]", "family": "x", "direction": "keras->torch", "outcome": "passed",
                           "headroom": headroom, "max_abs_error": headroom, "allowed_error": 1.0}]}
    assert not diff(doc(0.0), doc(5 * HEADROOM_FLOOR)).headroom_grew         # noise, below 10 x floor
    grew = diff(doc(0.0), doc(20 * HEADROOM_FLOOR)).headroom_grew
    assert len(grew) == 1 and "floor" in grew[0].why


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a JSON file"),
    (json.dumps({"schema": "something-else", "cases": []}), "not a conformance results file"),
    (json.dumps({"schema": "conformance-results", "schema_version": 99, "cases": []}), "schema_version 99"),
])
def test_unusable_input_exits_2(baseline: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                content: str, message: str) -> None:
    good, bad = _write(tmp_path, "good.json", baseline), _write(tmp_path, "bad.json", content)
    assert cli.main(["diff", good, bad]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.json" in err


def test_missing_file_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run([*CONFORMANCE, "diff", str(tmp_path / "nope.json"), str(tmp_path / "nope.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "nope.json: cannot read" in proc.stderr


def _loosen(document: dict[str, Any], family: str, **bounds: float) -> tuple[dict[str, Any], tuple[str, str]]:
    candidate = copy.deepcopy(document)
    case = _find(candidate, family)
    case["tolerance"].update(bounds)
    return candidate, (case["id"], case["direction"])


@pytest.mark.parametrize("bounds", [{"atol": 1.0}, {"rtol": 0.5}])
def test_a_tolerance_loosened_for_the_same_reason_is_a_regression(baseline: dict[str, Any],
                                                                  bounds: dict[str, float]) -> None:
    """Every other check is measured against the tolerance: a looser one (a family's tolerance loosened in the
    suite, or by a case file) hides them all, even where the case still passes with the same numbers."""
    candidate, key = _loosen(baseline, "linear", **bounds)
    changes = diff(baseline, candidate)
    assert _keys(changes.tolerance_loosened) == {key} and changes.regressions
    change = changes.tolerance_loosened[0]
    name = next(iter(bounds))
    assert f"{name} x" in change.why and "for the same reason (reduction over" in change.why
    assert change.after.startswith("atol ") and change.before != change.after
    assert "tolerance loosened (1):" in changes.format()
    assert diff(baseline, candidate).to_json()["tolerance_loosened"][0]["id"] == key[0]


def test_a_tighter_tolerance_or_a_different_rule_is_not_loosened(baseline: dict[str, Any]) -> None:
    tighter, _ = _loosen(baseline, "linear", atol=1e-9)
    assert not diff(baseline, tighter)
    other_rule, key = _loosen(baseline, "linear", atol=1.0)
    _find(other_rule, "linear")["tolerance"]["reason"] = "gradients: reduction over 9 loss terms"
    assert not diff(baseline, other_rule).tolerance_loosened


def test_an_exact_comparison_given_any_allowance_is_loosened(baseline: dict[str, Any]) -> None:
    exact = copy.deepcopy(baseline)
    _find(exact, "relu")["tolerance"].update(atol=0.0, rtol=0.0)
    allowing, key = _loosen(exact, "relu", atol=1e-7)
    changes = diff(exact, allowing)
    assert _keys(changes.tolerance_loosened) == {key}
    assert changes.tolerance_loosened[0].why.startswith("atol from 0 for the same reason")


@pytest.mark.parametrize("buffered", [True, False])
def test_a_reader_that_goes_away_gets_no_traceback(baseline: dict[str, Any], tmp_path: Path, buffered: bool) -> None:
    """`conformance diff A B | head`: the pipe closes before the report is written. Buffered (a pipe's default),
    the short report stays in the buffer until the exit's flush, which is where the error used to surface."""
    path = _write(tmp_path, "base.json", baseline)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen([*CONFORMANCE, "diff", path, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env)
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141, stderr.decode()
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr, stderr.decode()


def test_a_measured_allowance_that_moves_by_its_rounding_is_not_loosened(baseline: dict[str, Any]) -> None:
    """conditioning.allowance states sigma to three digits: one reason can carry atols 0.5% apart."""
    from conformance.diff import TOLERANCE_MARGIN
    key_case = _find(baseline, "linear")
    nudged, _ = _loosen(baseline, "linear", atol=key_case["tolerance"]["atol"] * 1.005)
    assert not diff(baseline, nudged)
    beyond, key = _loosen(baseline, "linear", atol=key_case["tolerance"]["atol"] * TOLERANCE_MARGIN * 1.001)
    assert _keys(diff(baseline, beyond).tolerance_loosened) == {key}

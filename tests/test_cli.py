"""The ``conformance`` command line end to end: help, run (results, report, JUnit), bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import cli

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = [sys.executable, "-m", "conformance.cli"]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CONFORMANCE, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_help() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    for command in ("run", "report", "diff"):
        assert command in proc.stdout
    proc = _run("diff", "--help")
    assert proc.returncode == 0 and "--headroom-factor" in proc.stdout
    proc = _run("run", "--help")
    assert proc.returncode == 0 and "--junit" in proc.stdout


def test_run_writes_results_report_and_junit(tmp_path: Path) -> None:
    out, junit = tmp_path / "out", tmp_path / "ci" / "junit.xml"
    proc = _run("run", "--select", "relu", "--output", str(out), "--junit", str(junit))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    document = json.loads((out / "results.json").read_text())
    assert document["schema"] == "conformance-results"
    assert document["cases"] and {c["family"] for c in document["cases"]} == {"relu"}
    assert document["summary"]["passed"] == len(document["cases"])
    page = (out / "report.html").read_text()
    assert all(case["id"] in page for case in document["cases"])
    root = ET.parse(junit).getroot()
    names = {tc.get("name") for tc in root.iter("testcase")}
    assert names == {f"{c['id']} {c['direction']}" for c in document["cases"]}
    assert {tc.get("classname") for tc in root.iter("testcase")} == {"relu"}
    assert root.get("failures") == "0" and root.get("errors") == "0"
    assert f"junit:   {junit}" in proc.stdout

    # the report command re-renders it, against a baseline
    html_out = tmp_path / "again.html"
    assert cli.main(["report", str(out / "results.json"), "-o", str(html_out),
                     "--baseline", str(out / "results.json")]) == 0
    assert "no regressions against the baseline" in html_out.read_text()

    # and stores it as a trimmed baseline, which a failing run cannot become without saying so
    baseline = tmp_path / "baselines" / "baseline.json"
    assert cli.main(["baseline", str(out / "results.json"), "-o", str(baseline)]) == 0
    stored = json.loads(baseline.read_text())
    assert len(stored["cases"]) == len(document["cases"]) and "mapping" not in stored["cases"][0]
    assert cli.main(["diff", str(baseline), str(out / "results.json")]) == 0
    document["cases"][0]["outcome"] = "failed"
    document["summary"]["failed"] = 1
    (out / "failing.json").write_text(json.dumps(document))
    assert cli.main(["baseline", str(out / "failing.json"), "-o", str(tmp_path / "b2.json")]) == 1
    assert not (tmp_path / "b2.json").exists()


def test_report_with_unusable_baseline_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    assert cli.main(["report", str(bad)]) == 2
    assert "not a JSON file" in capsys.readouterr().err


def test_unknown_selection_exits_2() -> None:
    proc = _run("run", "--select", "nosuchcase", "--output", "/nonexistent/never-written")
    assert proc.returncode == 2
    assert "no case matches --select 'nosuchcase'" in proc.stderr


def test_bad_case_file_is_named_and_the_good_ones_still_run(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(ROOT / "cases" / "relu.toml", cases / "relu.toml")
    (cases / "broken.toml").write_text('family = "relu"\n[[grid]]\ninput_shape = [[3, 4]]\nbogus_key = 1\n')
    out = tmp_path / "out"
    code = cli.main(["run", "--cases", str(cases), "--output", str(out), "--junit", str(out / "junit.xml")])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.toml" in captured.err
    document = json.loads((out / "results.json").read_text())
    assert document["cases"] and all(c["outcome"] == "passed" for c in document["cases"])
    assert {c["family"] for c in document["cases"]} == {"relu"}
    assert [e["file"] for e in document["errors"]] == [str(cases / "broken.toml")]
    assert "broken.toml" in (out / "report.html").read_text()
    testcases = ET.parse(out / "junit.xml").getroot().iter("testcase")
    errors = [tc for tc in testcases if tc.find("error") is not None]
    assert [tc.get("name") for tc in errors] == [str(cases / "broken.toml")]


def test_a_catalogue_with_no_loadable_case_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "mine.toml").write_text('family = "relu"\n[[grid]]\ninput_shape = [3, 4]\n')
    out = tmp_path / "out"
    assert cli.main(["run", "--cases", str(cases), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mine.toml" in err and "field input_shape" in err and "nothing was run" in err
    assert not out.exists()

"""report.html: self-contained, complete, and working in a real browser; plus the JUnit XML."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conformance import cli
from conformance.report import junit_xml, render

CHROMIUM = "/usr/bin/chromium"
INJECTION = "</script><script>document.title='pwned'</script><!--"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["run", "--select", "relu,linear,multihead_attention*-padall-*", "--output", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def planted(baseline: dict[str, Any]) -> dict[str, Any]:
    """One relu case failed (with a message that tries to break out of the data block), one linear
    case's error grown 20x, one case erroring."""
    candidate = copy.deepcopy(baseline)
    relu = next(c for c in candidate["cases"] if c["family"] == "relu")
    relu.update(outcome="failed", message=f"planted failure {INJECTION}\x1b[31m", headroom=3.0,
                max_abs_error=3e-5)
    grown = max((c for c in candidate["cases"] if c["family"] == "linear"), key=lambda c: c["headroom"])
    grown.update(headroom=grown["headroom"] * 20, max_abs_error=grown["max_abs_error"] * 20)
    broken = next(c for c in candidate["cases"] if c["family"] == "linear" and c["id"] != grown["id"])
    broken.update(outcome="error", message="RuntimeError: planted error & <b>markup</b>")
    candidate["planted"] = {"failed": relu["id"], "grown": grown["id"], "error": broken["id"]}
    return candidate


def _assert_no_external(page: str, evidence: set[str]) -> None:
    """No src at all, and no href but in-page anchors and the evidence links of divergence records."""
    for attr, url in re.findall(r"""\b(src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I):
        assert url.startswith("#") or (attr.lower() == "href" and html.unescape(url) in evidence), url
    assert not re.search(r"<link\b|<iframe\b|<img\b|@import|url\(\s*['\"]?(https?:)?//", page, flags=re.I)


def test_self_contained(baseline: dict[str, Any], planted: dict[str, Any]) -> None:
    evidence = {d["link"] for d in baseline["divergences"] if d.get("link")}
    assert evidence, "the run should include a recorded divergence with a link"
    for page in (render(baseline), render(planted, baseline=baseline)):
        scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, flags=re.S)
        assert len(scripts) == 2 and "<svg" in page and "<style>" in page
        _assert_no_external(re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S), evidence)
        assert not re.search(r"https?://", scripts[1]), "the code itself names no URL"
        assert not re.search(r"\b(fetch|XMLHttpRequest|import\(|WebSocket)\b", scripts[1])


def test_data_block_cannot_be_escaped(planted: dict[str, Any]) -> None:
    page = render(planted)
    assert page.count("</script>") == 2          # the data block and the code, nothing from the data
    data = re.search(r"<script type='application/json' id='conformance-data'>(.*?)</script>", page, re.S)
    assert data is not None
    cases = json.loads(data.group(1))["cases"]
    assert any(INJECTION in c["message"] for c in cases)      # intact after the round trip


def test_content(baseline: dict[str, Any]) -> None:
    page = render(baseline)
    env = baseline["environment"]
    for key in ("python", "torch", "tensorflow", "keras", "numpy", "device", "git_revision", "platform"):
        assert html.escape(str(env[key])) in page, key
    summary = baseline["summary"]
    assert f"{summary['total']} case results" in page
    assert f"<b>{summary['passed']}</b> passed" in page
    assert f"<b>{summary['divergence']}</b> divergence" in page
    for case in baseline["cases"]:
        assert case["id"] in page
    for record in baseline["divergences"]:
        assert html.escape(record["reason"]) in page
    assert "id='regressions'" not in page


def test_regression_panel(baseline: dict[str, Any], planted: dict[str, Any]) -> None:
    page = render(planted, baseline=baseline)
    start = page.index("<section id='regressions'")
    panel = page[start:page.index("</section>", start)]
    assert "3 regressions against the baseline" in panel
    assert "2 newly failing or erroring" in panel and "1 headroom grew" in panel
    for case_id in planted["planted"].values():
        assert html.escape(case_id) in panel
    assert "passed (headroom 0) → failed" in panel
    assert page.index("id='regressions'") < page.index("id='totals'")
    clean = render(baseline, baseline=baseline)
    assert "no regressions against the baseline" in clean


def test_junit_xml(planted: dict[str, Any]) -> None:
    root = ET.fromstring(junit_xml(planted))
    testcases = root.findall("./testsuite/testcase")
    assert len(testcases) == len(planted["cases"])
    by_name = {tc.get("name"): tc for tc in testcases}
    for case in planted["cases"]:
        assert by_name[f"{case['id']} {case['direction']}"].get("classname") == case["family"]
    failed = next(tc for tc in testcases if tc.get("name", "").startswith(planted["planted"]["failed"]))
    failure = failed.find("failure")
    assert failure is not None and INJECTION in (failure.text or "")       # escaped, not dropped
    assert "\x1b" not in (failure.text or "")                               # control characters removed
    assert 'conformance run --select "' in (failure.text or "")
    error = next(tc.find("error") for tc in testcases if tc.find("error") is not None)
    assert "planted error & <b>markup</b>" in error.get("message", "")
    skipped = [tc.find("skipped") for tc in testcases if tc.find("skipped") is not None]
    assert skipped and all(s.get("message", "").startswith("recorded divergence: ") for s in skipped)
    assert root.get("failures") == "1" and root.get("errors") == "1"
    assert root.get("skipped") == str(len(skipped))


# ---- in a real browser --------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed "
                                    "(apt-get install chromium); CI installs it")


def _chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               *args, url]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=90)
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _console(stderr: str) -> list[str]:
    """What the page wrote to the console, uncaught exceptions included (chromium logs them as CONSOLE)."""
    return [line for line in stderr.splitlines() if re.search(r"CONSOLE[:(]|Uncaught", line)]


class _Dom(HTMLParser):
    """Rows of the case table and family sections, with whether they are hidden."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, bool] = {}
        self.families: dict[str, bool] = {}
        self.cells = 0
        self.details = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "tr" and "row" in classes:
            self.rows[a["data-id"] or ""] = "hidden" in a
        elif tag == "tr" and "detail" in classes:
            self.details += "hidden" not in a
        elif tag == "section" and "fam" in classes:
            self.families[a["data-family"] or ""] = "hidden" in a
        elif tag == "i" and "c" in classes and "data-i" in a:
            self.cells += 1


def _dom(tmp_path: Path, page: Path, fragment: str = "") -> _Dom:
    proc = _chromium(tmp_path, page.as_uri() + fragment, "--dump-dom")
    assert not _console(proc.stderr), _console(proc.stderr)
    dom = _Dom()
    dom.feed(proc.stdout)
    return dom


@needs_chromium
def test_console_errors_are_detected(tmp_path: Path, baseline: dict[str, Any]) -> None:
    """The no-console-error assertion can fail: a deliberate error is seen."""
    page = tmp_path / "broken.html"
    page.write_text(render(baseline).replace("</body>", "<script>undefinedFunction();</script></body>"))
    errors = _console(_chromium(tmp_path, page.as_uri(), "--dump-dom").stderr)
    assert any("undefinedFunction" in line for line in errors), errors


@needs_chromium
def test_browser_renders_matrix(tmp_path: Path, baseline: dict[str, Any], planted: dict[str, Any]) -> None:
    page = tmp_path / "report.html"
    page.write_text(render(planted, baseline=baseline))
    dom = _dom(tmp_path, page)
    assert dom.cells == len(planted["cases"])
    assert set(dom.families) == {"relu", "linear", "multihead_attention"} and not any(dom.families.values())
    # families with failures open by default, so their rows are rendered, and nothing is filtered out
    assert planted["planted"]["failed"] in dom.rows and not any(dom.rows.values())


@needs_chromium
def test_browser_filters_from_fragment(tmp_path: Path, baseline: dict[str, Any],
                                       planted: dict[str, Any]) -> None:
    page = tmp_path / "report.html"
    page.write_text(render(planted, baseline=baseline))
    dom = _dom(tmp_path, page, "#q=relu&outcome=failed")
    shown = {case_id for case_id, hidden in dom.rows.items() if not hidden}
    assert shown == {planted["planted"]["failed"]}
    assert sum(1 for i in dom.rows if i.startswith("relu[")) == len({c["id"] for c in planted["cases"]
                                                                     if c["family"] == "relu"})
    assert dom.families["linear"] and dom.families["multihead_attention"] and not dom.families["relu"]
    dom = _dom(tmp_path, page, "#q=linear")
    assert all(hidden != case_id.startswith("linear[") for case_id, hidden in dom.rows.items())
    grown = planted["planted"]["grown"]
    dom = _dom(tmp_path, page, f"#case={grown}")
    assert dom.details == 1 and dom.rows[grown] is False
    diverging = next(c["id"] for c in planted["cases"] if c["outcome"] == "divergence")
    proc = _chromium(tmp_path, page.as_uri() + f"#case={diverging}", "--dump-dom")
    assert "class=\"detail\"" in proc.stdout and "evidence</a>" in proc.stdout
    _assert_no_external(proc.stdout, {d["link"] for d in baseline["divergences"]})


@needs_chromium
def test_browser_screenshot(tmp_path: Path, baseline: dict[str, Any], planted: dict[str, Any]) -> None:
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(render(planted, baseline=baseline))
    proc = _chromium(tmp_path, page.as_uri(), f"--screenshot={png}", "--window-size=1400,1000",
                     "--hide-scrollbars")
    assert not _console(proc.stderr)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1400, 1000)
    assert len(data) > 30_000, "a blank page compresses to a few kB"


def test_a_converters_refused_outcome_gets_its_filter_only_where_it_occurs(baseline: dict[str, Any]) -> None:
    assert "value='refused'" not in render(baseline)          # a built-in run's controls are as before
    peer = copy.deepcopy(baseline)
    declined = peer["cases"][0]
    declined.update(outcome="refused", message="the converter declined: planted")
    page = render(peer)
    assert "value='refused'" in page and "<i class='c o-refused'>" in page


def test_a_loosened_tolerance_heads_the_report_as_bad(baseline: dict[str, Any]) -> None:
    candidate = copy.deepcopy(baseline)
    case = next(c for c in candidate["cases"] if c["family"] == "linear")
    case["tolerance"]["atol"] *= 1e5
    page = render(candidate, baseline=baseline)
    start = page.index("<section id='regressions'")
    panel = page[start:page.index("</section>", start)]
    assert panel.startswith("<section id='regressions' class='bad'>")
    assert "1 regression against the baseline" in panel
    assert "1 tolerance loosened for the same reason" in panel and html.escape(case["id"]) in panel

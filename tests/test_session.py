"""One execution path: `conformance run` and `pytest cases` agree; parallel workers, shards and merges
reproduce a serial run; a crashing worker is an error; runs of several environments merge into a matrix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SLICE = "relu,linear,max_pool1d"          # deterministic families: no recorded nondeterministic divergence
# Process models (workers, shards, merges) do not depend on TensorFlow's kernels: run these once, in the
# default environment, not again in every oneDNN setting (each starts several processes).
pytestmark = pytest.mark.skipif(os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0",
                                reason="run in the default environment; the session does not depend on oneDNN")
CONFORMANCE = [sys.executable, "-m", "conformance.cli"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CONFORMANCE, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def _comparable(path: Path) -> dict[str, Any]:
    """A results document without what may differ between two runs of the same cases: when and how it
    was started, timings, and framework log lines (which depend on what the process ran before)."""
    document = json.loads(path.read_text())
    for key in ("created", "merged_from", "shard"):
        document.pop(key, None)
    document["environment"].pop("command", None)
    for case in document["cases"]:
        case.pop("timings", None)
        case.pop("log", None)
    return dict(document)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serial")
    proc = _run("run", "--select", SLICE, "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "results.json"


def test_pytest_and_the_cli_write_the_same_results(serial: Path, tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "cases", "-q", "-p", "no:cacheprovider",
                           "--conformance-select", SLICE, "--conformance-results", str(target)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _comparable(target) == _comparable(serial)


# The CLI, reporting afterwards which of the frameworks its own process imported.
WATCHED_CLI = ("import sys; from conformance.cli import main; code = main(sys.argv[1:]); "
               "print('controller imported:', "
               "sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules)); sys.exit(code)")


def test_parallel_workers_write_the_same_results_in_catalogue_order(serial: Path, tmp_path: Path) -> None:
    """Same document as a serial run, environment included: the workers measure it and send it, so the
    controller never imports the frameworks (on 2 cores that import ran beside both workers')."""
    proc = subprocess.run([sys.executable, "-c", WATCHED_CLI, "run", "--select", SLICE, "-n", "2",
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 workers" in proc.stdout and "controller imported: []" in proc.stdout, proc.stdout[-2000:]
    assert "environment: " in proc.stdout and "oneDNN" in proc.stdout
    assert _comparable(tmp_path / "results.json") == _comparable(serial)


def test_three_shards_merged_reproduce_the_full_run(serial: Path, tmp_path: Path) -> None:
    parts = []
    for k in (1, 2, 3):
        out = tmp_path / f"shard{k}"
        proc = _run("run", "--select", SLICE, "--shard", f"{k}/3", "--output", str(out))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        document = json.loads((out / "results.json").read_text())
        assert document["shard"] == {"index": k, "count": 3} and document["cases"]
        parts.append(out / "results.json")
    sizes = [len(json.loads(p.read_text())["cases"]) for p in parts]
    assert max(sizes) - min(sizes) <= max(sizes) // 2, f"balanced shards: {sizes}"
    proc = _run("merge", *map(str, reversed(parts)), "--output", str(tmp_path / "merged"))
    assert proc.returncode == 0, proc.stderr
    assert _comparable(tmp_path / "merged" / "results.json") == _comparable(serial)
    proc = _run("merge", str(parts[0]), str(parts[0]), str(parts[1]), "--output", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "shard 1/3 is given twice" in proc.stderr
    proc = _run("merge", str(parts[0]), str(parts[2]), "--output", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "missing shard 2/3" in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_shards_are_deterministic_and_balanced_by_cost() -> None:
    from conformance.selection import shard
    ids = [f"c{i}" for i in range(10)]
    costs = {"c0": 9.0, "c1": 1.0, "c2": 1.0, "c3": 1.0, "c4": 1.0, "c5": 1.0, "c6": 1.0, "c7": 1.0, "c8": 1.0}
    first, second = shard(ids, 1, 2, costs), shard(ids, 2, 2, costs)
    assert first | second == set(ids) and not first & second
    assert first == {"c0"}, "the one costly case fills a shard on its own"
    assert shard(list(reversed(ids)), 1, 2, costs) == first


def test_a_crashing_worker_turns_its_case_into_an_error(tmp_path: Path) -> None:
    """A kernel that kills its process (here a plugin that aborts on one case) does not stop the run."""
    (tmp_path / "crasher.py").write_text(
        "import os\nimport pytest\n\n@pytest.hookimpl(tryfirst=True)\n"
        "def pytest_runtest_call(item):\n"
        "    if 'relu[in7]' in item.nodeid and item.nodeid.endswith('torch->keras'):\n"
        "        os.abort()\n")
    target = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "cases", "-q", "-p", "no:cacheprovider", "-p", "crasher",
                           "-n", "2", "--conformance-select", "relu", "--conformance-results", str(target)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 1, proc.stdout[-3000:]
    document = json.loads(target.read_text())
    crashed = [c for c in document["cases"] if c["outcome"] == "error"]
    assert [(c["id"], c["direction"]) for c in crashed] == [("relu[in7]", "torch->keras")]
    assert "crashed" in crashed[0]["message"]
    assert sum(c["outcome"] == "passed" for c in document["cases"]) == len(document["cases"]) - 1


def test_runs_of_three_environments_merge_into_a_matrix(serial: Path, tmp_path: Path) -> None:
    runs = {"off": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "torch": {"KERAS_BACKEND": "torch"}}
    paths = [serial]
    for name, env in runs.items():
        proc = _run("run", "--select", SLICE, "--output", str(tmp_path / name), env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        paths.append(tmp_path / name / "results.json")
    proc = _run("merge", *map(str, paths), "--output", str(tmp_path / "matrix"))
    assert proc.returncode == 0 and "a matrix of 3 environments" in proc.stdout, proc.stderr
    matrix = json.loads((tmp_path / "matrix" / "results.json").read_text())
    assert matrix["schema"] == "conformance-matrix" and matrix["schema_version"] == 1
    names = [e["name"] for e in matrix["environments"]]
    assert len(set(names)) == 3 and any("torch" in n for n in names)
    page = (tmp_path / "matrix" / "report.html").read_text()
    assert all(name in page for name in names) and "families × environments" in page
    proc = _run("diff", str(tmp_path / "matrix" / "results.json"), str(tmp_path / "matrix" / "results.json"))
    assert proc.returncode == 0 and proc.stdout.count("no regressions") == 3
    if shutil.which("chromium"):
        shown = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                                (tmp_path / "matrix" / "report.html").as_uri()],
                               capture_output=True, text=True, timeout=120)
        header = shown.stdout[shown.stdout.index("<thead>"):shown.stdout.index("</thead>")]
        assert header.count("<th>") + header.count("<th ") == 4          # family + one column per environment


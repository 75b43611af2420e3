"""Converters under test: the adapter interface, the verdicts a peer gets, the built-in adapter's equality
with today's results, and the scoreboard that merge renders from runs of several converters.

The peer verdicts are checked with small adapters defined here (a faithful one, one that is off by a
little with no complaint, one whose converter raises, one that guesses layouts), so they run without
any third-party converter installed; the real adapters run in their own tox environments (peer-*).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance import converters
from conformance.cases import load_file
from conformance.converters import Context, Converter, ConverterError, Refused
from conformance.converters.peer import run_peer
from conformance.runner import run_case

ROOT = Path(__file__).resolve().parent.parent


def _torch_callable(module: Any, offset: float = 0.0) -> Callable[..., Any]:
    import torch
    clone = copy.deepcopy(module).eval()

    def run(*arrays: np.ndarray) -> Any:
        with torch.no_grad():
            out = clone(*[torch.from_numpy(a) for a in arrays])
        return out.numpy() + offset
    return run


class Faithful(Converter):
    name, directions, distribution = "test-faithful", ("torch->keras",), ""

    def version(self) -> str:
        return "1.0"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        return _torch_callable(source)


class Silent(Faithful):
    """Converts "successfully" and is off by 1e-3 everywhere: the dangerous kind."""
    name = "test-silent"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        return _torch_callable(source, offset=1e-3)


class Raising(Faithful):
    name = "test-raising"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        raise NotImplementedError("no converter for Relu")


class Declining(Faithful):
    name = "test-declining"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        raise Refused("unsupported operator")


class Broken(Faithful):
    """An adapter whose own code (in this package) breaks: our error, not the converter's refusal."""
    name = "test-broken"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        from conformance.converters.peer import _move
        return _move(None, True)  # type: ignore[arg-type,return-value]


class Guessing(Faithful):
    """Reads and writes channels-last, like a converter that decides layouts itself."""
    name, input_layout, output_layout = "test-guessing", "guess", "guess"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        inner = _torch_callable(source)

        def run(*arrays: np.ndarray) -> Any:
            return np.moveaxis(inner(*[np.ascontiguousarray(np.moveaxis(a, -1, 1)) for a in arrays]), 1, -1)
        return run


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    for adapter in (Faithful, Silent, Raising, Declining, Broken, Guessing):
        monkeypatch.setitem(converters.BUILTIN, adapter.name, f"{__name__}:{adapter.__name__}")


def _case(tmp_path: Path, shape: list[int], family: str = "relu") -> Any:
    path = tmp_path / f"{family}.toml"
    path.write_text(f'family = "{family}"\ndescription = "test"\n\n[[grid]]\ninput_shape = [{shape}]\n')
    return load_file(path)[0]


def test_a_faithful_converter_passes_and_a_silent_wrong_one_fails_with_evidence(tmp_path: Path) -> None:
    case = _case(tmp_path, [3, 5, 6])
    good = run_peer(case, "torch->keras", "test-faithful")
    assert good.outcome == "passed", good.explain()
    assert good.headroom == 0.0 and "convert" in good.timings
    bad = run_peer(case, "torch->keras", "test-silent")
    assert bad.outcome == "failed"
    assert bad.worst is not None and abs(bad.worst["keras"] - bad.worst["torch"] - 1e-3) < 1e-6
    assert bad.max_abs_error == pytest.approx(1e-3, rel=1e-3)
    assert "--converter test-silent" in bad.explain() and "without complaint" in bad.message
    assert bad.to_json()["converter"] == "test-silent"


def test_a_converter_that_raises_or_declines_is_refused_and_our_bug_is_an_error(tmp_path: Path) -> None:
    case = _case(tmp_path, [3, 5, 6])
    raised = run_peer(case, "torch->keras", "test-raising")
    assert raised.outcome == "refused" and "no converter for Relu" in raised.message
    declined = run_peer(case, "torch->keras", "test-declining")
    assert declined.outcome == "refused" and "unsupported operator" in declined.message
    broken = run_peer(case, "torch->keras", "test-broken")
    assert broken.outcome == "error" and "AttributeError" in broken.message


def test_a_layout_guessing_converter_skips_ambiguous_shapes_and_is_judged_on_the_rest(tmp_path: Path) -> None:
    ambiguous = run_peer(_case(tmp_path, [4, 4, 4]), "torch->keras", "test-guessing")
    assert ambiguous.outcome == "skipped" and "(2, 4, 4, 4)" in ambiguous.message
    clear = run_peer(_case(tmp_path, [3, 5, 6]), "torch->keras", "test-guessing")
    assert clear.outcome == "passed", clear.explain()
    # the faithful converter declares its layout, so the same ambiguous shape judges it
    assert run_peer(_case(tmp_path, [4, 4, 4]), "torch->keras", "test-faithful").outcome == "passed"


def test_a_failure_where_the_frameworks_themselves_diverge_is_a_divergence(tmp_path: Path) -> None:
    """A recorded framework divergence (a TensorFlow kernel wrong here) may be the reason a converter's output
    differs: the case reads `divergence` with the record, as in our own run; a faithful converter passes."""
    path = tmp_path / "relu.toml"
    path.write_text('family = "relu"\ndescription = "test"\n\n[[grid]]\ninput_shape = [[3, 5, 6]]\n\n'
                    '[[divergence]]\nwhen = { input_shape = [[3, 5, 6]] }\n'
                    'reason = "planted: a kernel is wrong here"\n')
    case = load_file(path)[0]
    silent = run_peer(case, "torch->keras", "test-silent")
    assert silent.outcome == "divergence" and "planted: a kernel is wrong here" in silent.message
    assert silent.divergence is not None and silent.worst is not None
    assert run_peer(case, "torch->keras", "test-faithful").outcome == "passed"


def test_unknown_converters_and_directions_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConverterError, match=r"no such converter; known: .*transfer_weights"):
        converters.get("no-such-converter")
    result = run_peer(_case(tmp_path, [3, 5, 6]), "keras->torch", "test-faithful")
    assert result.outcome == "skipped" and "does not convert keras->torch" in result.message


def test_results_count_refusals_and_record_the_converter(tmp_path: Path) -> None:
    from conformance import results
    case = _case(tmp_path, [3, 5, 6])
    cases = [run_peer(case, "torch->keras", name).to_json() for name in ("test-faithful", "test-declining")]
    document = results.build(cases, converter="test-declining")
    assert document["summary"]["refused"] == 1 and document["summary"]["passed"] == 1
    assert document["environment"]["facts"]["converter"] == {"name": "test-declining", "version": "1.0",
                                                            "directions": ["torch->keras"]}
    own = results.build([run_case(case, "torch->keras").to_json()])
    assert "refused" not in own["summary"]          # a built-in run's summary keeps today's keys
    assert own["environment"]["facts"]["converter"]["name"] == "transfer_weights"


def _baseline() -> dict[str, Any]:
    from conformance.facts import collect
    klass = collect()["class"]
    path = ROOT / "reports" / "baselines" / f"{klass}.json"
    if not path.exists():
        pytest.skip(f"no committed baseline for {klass}")
    return dict(json.loads(path.read_text()))


def test_the_builtin_adapter_reproduces_todays_results(tmp_path: Path) -> None:
    """``--converter transfer_weights`` writes the default run's document (timings and start aside), and its
    cases match the committed baseline of this environment class (outcome, errors, worst element)."""
    select = "relu,linear,max_pool1d"
    documents = []
    for extra in ((), ("--converter", "transfer_weights")):
        out = tmp_path / ("adapter" if extra else "default")
        proc = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--select", select, "--output", str(out),
                               *extra], capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        document = json.loads((out / "results.json").read_text())
        for key in ("created",):
            document.pop(key)
        document["environment"].pop("command")
        for case in document["cases"]:
            case.pop("timings")
            case.pop("log")
        documents.append(document)
    assert documents[0] == documents[1]
    assert documents[1]["environment"]["facts"]["converter"]["name"] == "transfer_weights"
    baseline = {(c["id"], c["direction"]): c for c in _baseline()["cases"]}
    for case in documents[1]["cases"]:
        expected = baseline[(case["id"], case["direction"])]
        for key in ("outcome", "max_abs_error", "headroom", "worst"):
            if key in expected:
                assert case[key] == expected[key], (case["id"], key)


def test_adapters_are_registered_as_entry_points() -> None:
    """A converter's own package registers under the group; this package's adapters are listed there too."""
    import tomllib
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    group = declared[converters.ENTRY_POINT_GROUP]
    builtin = {k: v for k, v in converters.BUILTIN.items() if not k.startswith("test-")}
    assert group == builtin
    for name in group:       # each loads and is well formed, installed or not
        adapter = converters.get(name)
        assert adapter.name == name and adapter.directions


# ---- the scoreboard ------------------------------------------------------------------------------------


def _peer_document(tmp_path: Path, name: str, cases: list[Any]) -> dict[str, Any]:
    from conformance import results
    return results.build([run_peer(c, "torch->keras", name).to_json() for c in cases], converter=name)


def test_merge_makes_converters_columns_and_the_scoreboard_shows_failed_loudest(tmp_path: Path) -> None:
    from conformance import results
    from conformance.merge import merge
    from conformance.report_matrix import render_matrix
    cases = [_case(tmp_path, [3, 5, 6]), _case(tmp_path, [4, 5], family="tanh")]
    paths = []
    own = results.build([run_case(c, d).to_json() for c in cases for d in ("torch->keras", "keras->torch")])
    for name, document in (("own", own), ("silent", _peer_document(tmp_path, "test-silent", cases)),
                           ("declining", _peer_document(tmp_path, "test-declining", cases))):
        paths.append(str(results.write(document, tmp_path / name / "results.json")))
    matrix = merge(paths)
    names = [e["name"] for e in matrix["environments"]]
    assert [n.split()[0] for n in names] == ["transfer_weights", "test-silent", "test-declining"]
    page = render_matrix(matrix)
    board = page[page.index("id='scoreboard'"):page.index("id='families'")]
    assert "<b class='failed'>2 failed</b>" in board and "<b class='failed'>1 failed</b>" in board
    assert "2 refused" in board and "2 passed" in board
    assert "median conversion time" in board
    head = board[board.index("<thead>"):board.index("</thead>")]
    assert "transfer_weights torch-&gt;keras" in head and "transfer_weights keras-&gt;torch" in head
    for index in range(4):               # our own has a column per direction; every cell links to its cases
        for family in ("relu", "tanh"):
            assert f"href='#sb-{index}-{family}'" in board and f"id='sb-{index}-{family}'" in board
    silent = board[board.index("id='sb-2-relu'"):]
    assert "worst at (" in silent.split("</div>")[0]


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="chromium not installed; CI installs it")
def test_the_scoreboard_renders_in_a_browser(tmp_path: Path) -> None:
    from conformance import results
    from conformance.merge import merge
    from conformance.report_matrix import render_matrix
    cases = [_case(tmp_path, [3, 5, 6])]
    paths = [str(results.write(_peer_document(tmp_path, name, cases), tmp_path / name / "results.json"))
             for name in ("test-faithful", "test-silent", "test-raising")]
    page = tmp_path / "report.html"
    page.write_text(render_matrix(merge(paths)))
    shown = subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri() + "#sb-1-relu"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    dom = shown.stdout
    board = dom[dom.index('id="scoreboard"'):dom.index('id="families"')]
    head = board[board.index("<thead>"):board.index("</thead>")]
    assert head.count("<th>") == 4 and "test-silent" in head          # family + one column per converter
    assert board.count('class="failed">1 failed</b>') == 2            # the silent one's cell and total row
    assert 'id="sb-1-relu"' in board and "1 refused" in board


def test_the_gate_refuses_to_compare_runs_of_different_converters(tmp_path: Path) -> None:
    from conformance import cli, results
    case = _case(tmp_path, [3, 5, 6])
    own = results.write(results.build([run_case(case, "torch->keras").to_json()]), tmp_path / "own.json")
    peer = results.write(_peer_document(tmp_path, "test-faithful", [case]), tmp_path / "peer.json")
    assert cli.main(["diff", str(own), str(peer)]) == 2
    assert cli.main(["diff", str(peer), str(peer)]) == 0        # a converter against its own earlier run

"""pytest integration, and the one execution path: every concrete case is a test item, in both directions.

``conformance run`` drives pytest with this plugin (:mod:`conformance.session`), so a results file
means the same thing however it was made, and parallel workers (pytest-xdist, ``-n``), shards
(``--conformance-shard K/N``) and selections cost one implementation.

Case directories are named in the pytest configuration (``conformance_cases = ["cases"]`` in
pyproject.toml's ``[tool.pytest.ini_options]``) or with ``--conformance-cases DIR``.

Node ids read ``cases/conv2d.toml::conv2d[o8-k3-s2-p1-d1-g1-bias-in4x16x16]::torch->keras``, so
``-k "conv2d and s2"`` selects cases. A case file that does not load is one failing item with a
message naming the file, case and field; the other files still run. A recorded divergence that
still diverges is reported as xfail, a recorded refusal (``unsupported``) as a skip; a record that
no longer holds fails. Each item's result travels on its test report, so the controller of an
xdist run collects them all; a worker that crashes turns its case into an ``error`` naming the
crash. The results are written to ``--conformance-results`` (default reports/pytest/results.json),
in catalogue order.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import pytest

from .cases import DIRECTIONS, Case, load_file
from .errors import CaseError


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("conformance_cases", type="args", default=[],
                  help="directories (relative to the rootdir) whose *.toml files are conformance case files")
    group = parser.getgroup("conformance")
    group.addoption("--conformance-results", default="reports/pytest/results.json",
                    help="where to write results.json for the catalogue cases that ran ('' to skip)")
    group.addoption("--conformance-cases", action="append", default=[], metavar="DIR",
                    help="also collect the *.toml case files of this directory")
    group.addoption("--conformance-select", default="", metavar="EXPR",
                    help="comma-separated: a family name, a substring of a case id, or a glob (conv2d*s2*)")
    group.addoption("--conformance-extended", action="store_true",
                    help="also run the cases of the extended tier (a selection includes them too)")
    group.addoption("--conformance-shard", default="", metavar="K/N",
                    help="run shard K of N: a deterministic 1/N of the selected cases, balanced by recorded cost")
    group.addoption("--conformance-costs", default="reports/baselines/costs.json", metavar="PATH",
                    help="seconds per case from an earlier run, to balance shards (default: %(default)s)")
    group.addoption("--conformance-torch-device", default="cpu", metavar="DEVICE",
                    help="run the torch side on this device, e.g. cuda (TF32 disabled)")
    group.addoption("--conformance-converter", default="transfer_weights", metavar="NAME",
                    help="the converter under test (an adapter of conformance.converters); default: our own "
                         "transfer_weights")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "catalogue: a concrete case from cases/*.toml")
    config.addinivalue_line("markers", "extended: slow cases, excluded from the default run")
    if not hasattr(config, "workerinput"):           # the controller (or a plain run) gathers the results
        config.pluginmanager.register(ResultsCollector(config), "conformance-results")


def _case_directories(config: pytest.Config) -> set[Path]:
    named = [config.rootpath / d for d in config.getini("conformance_cases")]
    named += [Path(d) for d in config.getoption("--conformance-cases")]
    return {d.resolve() for d in named}


TRAINING_FOLDER = "training"     # <case directory>/training/*.toml: training scenarios (conformance.training)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Only directories named by ``conformance_cases`` or ``--conformance-cases`` (and their ``training``
    folder): installing the package must not make pytest read some other project's TOML files as case files."""
    if file_path.suffix != ".toml":
        return None
    folder, directories = file_path.parent.resolve(), _case_directories(parent.config)
    if folder in directories:
        return CaseFile.from_parent(parent, path=file_path)
    if folder.name == TRAINING_FOLDER and folder.parent in directories:
        return TrainingFile.from_parent(parent, path=file_path)
    return None


def load_any(path: str | Path) -> list[Any]:
    """The concrete cases of a layer case file or of a training case file. Read once per version of the
    file: collection and the results' catalogue order (or a crash report) ask for the same files."""
    try:
        version = Path(path).stat().st_mtime_ns
    except OSError:
        version = -1            # the loader says what is wrong with a file it cannot read
    return list(_load_once(str(path), version))


@functools.lru_cache(maxsize=256)
def _load_once(path: str, mtime_ns: int) -> tuple[Any, ...]:
    if Path(path).parent.name == TRAINING_FOLDER:
        from .training.catalogue import load_file as load_training
        return tuple(load_training(path))
    return tuple(load_file(path))


class CaseFile(pytest.File):
    def collect(self) -> Any:
        try:
            cases = load_any(self.path)
        except CaseError as exc:
            # One failing item rather than a collection error, which would stop the whole session.
            yield InvalidCaseFile.from_parent(self, name="invalid-case-file", error=exc)
            return
        for case in cases:
            yield CaseNode.from_parent(self, name=case.id, case=case)


class TrainingFile(CaseFile):
    """A training case file: each case runs once, in the direction its weights started from."""


class InvalidCaseFile(pytest.Item):
    def __init__(self, *, error: CaseError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        e = self.error
        self.user_properties.append(("conformance_error", {"file": e.file, "case": e.case, "field": e.field,
                                                           "message": e.detail}))
        raise e

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return f"invalid case file: {self.error}"

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"invalid case file {self.path.name}"


class CaseNode(pytest.Collector):
    def __init__(self, *, case: Case, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def collect(self) -> Any:
        training = isinstance(self.parent, TrainingFile)
        if training and self.config.getoption("--conformance-converter", "transfer_weights") != "transfer_weights":
            return                  # training scenarios judge the frameworks, not a converter under test
        for direction in [self.case.direction] if training else _directions(self.config):
            kind = TrainingItem if training else CaseItem
            item = kind.from_parent(self, name=direction, case=self.case, direction=direction)
            item.add_marker("catalogue")
            if self.case.tier == "extended":
                item.add_marker("extended")
            yield item


def _directions(config: pytest.Config) -> tuple[str, ...]:
    """The directions the chosen converter converts (both, for the built-in one)."""
    name = config.getoption("--conformance-converter", "transfer_weights")
    if name == "transfer_weights":
        return DIRECTIONS
    cached = getattr(config, "_conformance_directions", None)
    if cached is None:
        from .converters import ConverterError, get
        try:
            cached = tuple(get(name).directions)
        except ConverterError as exc:
            raise pytest.UsageError(str(exc)) from None
        config._conformance_directions = cached  # type: ignore[attr-defined]
    return cached


class CaseFailure(Exception):
    def __init__(self, result: Any) -> None:
        super().__init__(result.id)
        self.result = result


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, direction: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.direction = direction

    def runtest(self) -> None:
        from .runner import run_case, use_one_torch_thread
        use_one_torch_thread()
        self.judge(run_case(self.case, self.direction, self.config.getoption("--conformance-torch-device"),
                            self.config.getoption("--conformance-converter")))

    def judge(self, result: Any) -> None:
        self.user_properties.append(("conformance_result", result.to_json()))
        if result.outcome == "divergence":
            pytest.xfail(f"recorded divergence: {result.divergence['reason'] if result.divergence else ''}")
        if result.outcome in ("skipped", "unsupported", "refused"):
            pytest.skip(f"{result.outcome}: {result.message}" if result.outcome == "refused" else result.message)
        if result.outcome != "passed":
            raise CaseFailure(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CaseFailure):
            return excinfo.value.result.explain()
        if isinstance(excinfo.value, pytest.xfail.Exception):
            # A recorded divergence: its reason is the whole story. pytest's own traceback through the
            # frameworks' frames cost about 0.1 s per divergence, for text nobody reads.
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.case.id} {self.direction}"


class TrainingItem(CaseItem):
    def runtest(self) -> None:
        from .runner import use_one_torch_thread
        from .training.run import run_training_case
        use_one_torch_thread()
        self.judge(run_training_case(self.case))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The CLI's selection semantics, the extended tier and the shard, applied to the collected cases."""
    from .selection import expressions, load_costs, parse_shard, selected, shard
    chosen = expressions(config.getoption("--conformance-select"))
    extended = config.getoption("--conformance-extended") or bool(chosen)
    case_items = [i for i in items if isinstance(i, CaseItem)]
    families = {i.case.family for i in case_items}
    keep = {id(i) for i in case_items if (not chosen or selected(i.case.id, i.case.family, chosen, families))
            and (extended or i.case.tier == "default")}
    shard_text = config.getoption("--conformance-shard")
    if shard_text:
        index, count = parse_shard(shard_text)
        ids = sorted({i.case.id for i in case_items if id(i) in keep})
        mine = shard(ids, index, count, load_costs(config.getoption("--conformance-costs")))
        keep = {id(i) for i in case_items if id(i) in keep and i.case.id in mine}
    dropped = [i for i in case_items if id(i) not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not isinstance(i, CaseItem) or id(i) in keep]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Every case's result rides on its report, so xdist's controller receives it from the workers."""
    report = yield
    if call.when == "call":
        for name, value in item.user_properties:
            if name in ("conformance_result", "conformance_error"):
                setattr(report, name, value)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker that ran cases sends its environment (versions, facts, threads) to the controller,
    which records it: the facts of the processes that ran the cases, and the controller never imports the
    frameworks itself (on 2 cores that import, about 6 s, ran beside both workers' own)."""
    output = getattr(session.config, "workeroutput", None)
    if output is None or "torch" not in sys.modules:          # not a worker, or one that ran no case
        return
    import json

    from .results import environment
    # torch is at one thread already: every case's runtest set it (use_one_torch_thread)
    measured = environment(session.config.getoption("--conformance-torch-device"),
                           session.config.getoption("--conformance-converter"))
    output["conformance_environment"] = json.loads(json.dumps(measured))   # plain types: execnet sends no others


class ResultsCollector:
    """Gathers every case's result from the test reports (local, or sent by xdist workers) and writes the
    results document at the end of the session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: dict[tuple[str, str], dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        self.environments: dict[str, dict[str, Any]] = {}      # xdist worker id -> its environment

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        environment = getattr(node, "workeroutput", {}).get("conformance_environment")
        if environment is not None:
            self.environments[str(node.gateway.id)] = environment

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = getattr(report, "conformance_result", None)
        if result is not None:
            self.results[(result["id"], result["direction"])] = result
        error = getattr(report, "conformance_error", None)
        if error is not None:
            self.errors.append(error)
        parts = report.nodeid.split("::")
        if result is None and report.failed and len(parts) >= 3 and "->" in parts[-1] \
                and (parts[-2], parts[-1]) not in self.results:
            crashed = _crashed(report)        # a worker died mid-case: the case is an error, named
            if crashed is not None:
                self.results[(crashed["id"], crashed["direction"])] = crashed

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = self.config
        target = config.getoption("--conformance-results")
        if not (self.results or self.errors) or not target:
            return
        from . import results as results_file
        measured = self.environments[min(self.environments)] if self.environments else None
        if measured is None:
            from .runner import use_one_torch_thread
            use_one_torch_thread()       # facts record the threads a catalogue run uses, in every process model
        ordered, records = _in_catalogue_order(self.results)
        document = results_file.build(ordered, records, self.errors,
                                      config.getoption("--conformance-torch-device"),
                                      config.getoption("--conformance-converter"), measured)
        shard_text = config.getoption("--conformance-shard")
        if shard_text:
            from .selection import parse_shard
            index, count = parse_shard(shard_text)
            document["shard"] = {"index": index, "count": count}
        path = results_file.write(document, Path(config.rootpath, target))
        self.written = f"conformance: {len(self.results)} case results written to {path}"

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if getattr(self, "written", ""):
            terminalreporter.write_line(self.written)


def _crashed(report: pytest.TestReport) -> dict[str, Any] | None:
    """The result of a case whose worker process died: an error that names the crash."""
    from .runner import CaseResult
    file, case_id, direction = report.nodeid.split("::")[-3:]
    try:
        case = next(c for c in load_any(file) if c.id == case_id)
    except (CaseError, StopIteration, OSError):
        return None
    text = str(report.longrepr or "").strip().splitlines()
    crash = next((line for line in text if "crashed" in line or "Signal" in line or "signal" in line),
                 text[-1] if text else "no message")
    result = CaseResult(case.id, case.family, direction, dict(case.params), "error", case.seed, case.file,
                        tier=case.tier, mode=case.mode,
                        message=f"the process running this case crashed (a segfault or abort in a kernel?): {crash}")
    return result.to_json()


def _in_catalogue_order(results: dict[tuple[str, str], dict[str, Any]]
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Results sorted by file, then the case's place in its file, then direction; and the records of the
    cases that ran. Both come from the case files, so serial, parallel and sharded runs agree."""
    from .results import divergence_records
    files = sorted({r["file"] for r in results.values()})
    order: dict[str, tuple[int, int]] = {}
    cases: list[Case] = []
    ran = {case_id for case_id, _ in results}
    for f_index, file in enumerate(files):
        try:
            loaded = load_any(file)
        except CaseError:
            continue
        for c_index, case in enumerate(loaded):
            order.setdefault(case.id, (f_index, c_index))
            if case.id in ran:
                cases.append(case)
    keyed = sorted(results.items(), key=lambda kv: (*order.get(kv[0][0], (len(files), 0)), kv[0][0],
                                                    DIRECTIONS.index(kv[0][1]) if kv[0][1] in DIRECTIONS else 9))
    return [r for _, r in keyed], divergence_records(cases) + _scenario_records(results)


def _scenario_records(results: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """The training scenarios' own divergences that applied in this run, as records: such a divergence is
    data in conformance.training (it depends on the case's parameters), not in its file. A case file's
    ``[[divergence]]`` record (it has a scope) is listed with the file's records instead."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results.values():
        record = result.get("divergence") or {}
        if result.get("mode") == "train" and record.get("rule") and "scope" not in record:
            seen.setdefault((result["family"], record["rule"]), {
                "family": result["family"], "file": result["file"], "kind": "divergence", "rule": record["rule"],
                "when": {}, "direction": "both", "versions": {}, "environment": {}, "keras_backend": None,
                "reason": record["reason"], "link": "",
                "scope": f"every environment; the scenario decides which cases ({record['rule']}, factor "
                         f"{record.get('factor') or 'none'})"})
    return sorted(seen.values(), key=lambda r: (r["family"], r["rule"]))

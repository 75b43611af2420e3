"""pytest integration: every concrete case in ``cases/*.toml`` is a test item, in both directions.

Case directories are named in the pytest configuration (``conformance_cases = ["cases"]`` in
pyproject.toml's ``[tool.pytest.ini_options]``).

Node ids read ``cases/conv2d.toml::conv2d[o8-k3-s2-p1-d1-g1-bias-in4x16x16]::torch->keras``, so
``-k "conv2d and s2"`` selects cases. A case file that does not load is one collection error
with a message naming the file, case and field; the other files still run. A recorded
divergence that still diverges is reported as xfail; one that no longer diverges fails.
The run's results are written to ``--conformance-results`` (default reports/pytest/results.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .cases import DIRECTIONS, Case, load_file
from .errors import CaseError

_RESULTS_KEY = pytest.StashKey[list]()
_CASES_KEY = pytest.StashKey[dict]()
_ERRORS_KEY = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("conformance_cases", type="args", default=[],
                  help="directories (relative to the rootdir) whose *.toml files are conformance case files")
    group = parser.getgroup("conformance")
    group.addoption("--conformance-results", default="reports/pytest/results.json",
                    help="where to write results.json for the catalogue cases that ran ('' to skip)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS_KEY] = []
    config.stash[_CASES_KEY] = {}
    config.stash[_ERRORS_KEY] = []
    config.addinivalue_line("markers", "catalogue: a concrete case from cases/*.toml")
    config.addinivalue_line("markers", "extended: slow cases, excluded from the default run")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Only directories named by the ``conformance_cases`` ini option: installing the package must
    not make pytest read some other project's TOML files as case files."""
    if file_path.suffix != ".toml":
        return None
    config = parent.config
    directories = {(config.rootpath / d).resolve() for d in config.getini("conformance_cases")}
    if file_path.parent.resolve() in directories:
        return CaseFile.from_parent(parent, path=file_path)
    return None


class CaseFile(pytest.File):
    def collect(self) -> Any:
        try:
            cases = load_file(self.path)
        except CaseError as exc:
            # One failing item rather than a collection error, which would stop the whole session.
            yield InvalidCaseFile.from_parent(self, name="invalid-case-file", error=exc)
            return
        for case in cases:
            self.config.stash[_CASES_KEY][case.id] = case
            yield CaseNode.from_parent(self, name=case.id, case=case)


class InvalidCaseFile(pytest.Item):
    def __init__(self, *, error: CaseError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        e = self.error
        self.config.stash[_ERRORS_KEY].append({"file": e.file, "case": e.case, "field": e.field, "message": e.detail})
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
        for direction in DIRECTIONS:
            item = CaseItem.from_parent(self, name=direction, case=self.case, direction=direction)
            item.add_marker("catalogue")
            if self.case.tier == "extended":
                item.add_marker("extended")
            yield item


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
        result = run_case(self.case, self.direction)
        self.config.stash[_RESULTS_KEY].append(result.to_json())
        if result.outcome == "divergence":
            pytest.xfail(f"recorded divergence: {result.divergence['reason'] if result.divergence else ''}")
        if result.outcome in ("skipped", "unsupported"):
            pytest.skip(result.message)
        if result.outcome != "passed":
            raise CaseFailure(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CaseFailure):
            return excinfo.value.result.explain()
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.case.id} {self.direction}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    results = session.config.stash.get(_RESULTS_KEY, [])
    errors = session.config.stash.get(_ERRORS_KEY, [])
    target = session.config.getoption("--conformance-results")
    if not (results or errors) or not target or hasattr(session.config, "workerinput"):
        return
    from . import results as results_file
    cases = session.config.stash.get(_CASES_KEY, {}).values()
    document = results_file.build(results, results_file.divergence_records(cases), errors)
    path = results_file.write(document, Path(session.config.rootpath, target))
    session.config.stash[_RESULTS_KEY] = []
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"conformance: {len(results)} case results written to {path}")

"""``conformance run`` as a pytest session: the CLI and ``pytest cases`` run the same code.

The session is hermetic: a generated configuration file stands in for the project's, so a user's
``addopts``, ``testpaths`` or conftest files do not change what the catalogue does; the case
directory, the selection, the shard and the worker count travel as the plugin's options. After
the session the CLI renders report.html (and JUnit XML) from the results file the plugin wrote.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# Plugins the catalogue never uses, each with a cost measured on the full catalogue: hypothesis's
# terminal summary (about 1 s), pytest's log capture around each of the 7,488 test phases (about 1 s;
# the runner keeps the frameworks' log lines itself, see quiet.py), and the unraisable-exception
# check's forced garbage collections of the heap that two frameworks leave at the end (about 1.5 s).
# xdist stays (-n runs on it), and so does faulthandler (it names the crash when a kernel segfaults).
_UNUSED_PLUGINS = ("-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:platformdirs",
                   "-p", "no:logging", "-p", "no:unraisableexception", "-p", "no:threadexception")


def pytest_arguments(args: argparse.Namespace, results: Path, ini: Path) -> list[str]:
    cases = Path(args.cases).resolve()
    arguments = [str(cases), "-c", str(ini), "--rootdir", str(Path.cwd()), "--confcutdir", str(cases),
                 "-p", "no:cacheprovider", "-p", "no:warnings", *_UNUSED_PLUGINS,
                 "-q", "--tb=short", "-rN",
                 "--conformance-cases", str(cases), "--conformance-results", str(results),
                 "--conformance-torch-device", args.torch_device,
                 "--conformance-converter", getattr(args, "converter", "transfer_weights")]
    if args.select:
        arguments += ["--conformance-select", args.select]
    if args.extended:
        arguments.append("--conformance-extended")
    if args.shard:
        arguments += ["--conformance-shard", args.shard, "--conformance-costs", str(args.costs)]
    if args.workers:
        arguments += ["-n", str(args.workers)]
    return arguments


def run_with_pytest(args: argparse.Namespace, catalogue_errors: bool = False) -> int:
    import pytest

    from . import results as results_file
    from .report import junit_xml, render
    output = Path(args.output)
    results_path = output / "results.json"
    started = time.perf_counter()
    if args.workers:
        try:
            import xdist  # noqa: F401
        except ImportError:
            print("error: -n needs pytest-xdist (pip install -c constraints.txt pytest-xdist)", file=sys.stderr)
            return EXIT_USAGE
    if results_path.exists():
        results_path.unlink()                 # never report an older run's results as this one's
    with tempfile.TemporaryDirectory() as scratch:
        ini = Path(scratch) / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        code = pytest.main(pytest_arguments(args, results_path.resolve(), ini))
    if not results_path.exists():
        print(f"error: the run wrote no results (pytest exit status {int(code)})", file=sys.stderr)
        return EXIT_USAGE if int(code) in (4, 5) else EXIT_FAILED
    document = results_file.load(results_path)
    report_path = output / "report.html"
    report_path.write_text(render(document), encoding="utf-8")
    if args.junit:
        junit = Path(args.junit)
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_bytes(junit_xml(document))
    if args.workers:        # known once the workers have reported it
        from .facts import describe
        print(f"environment: {describe(document['environment'].get('facts', {}))}")
    summary = document["summary"]
    print(", ".join(f"{summary[k]} {k}" for k in ("passed", "failed", "divergence", "unsupported", "xpass",
                                                  "refused", "error", "skipped") if summary.get(k))
          + f" in {time.perf_counter() - started:.1f}s")
    print(f"results: {results_path}\nreport:  {report_path}" + (f"\njunit:   {args.junit}" if args.junit else ""))
    bad = sum(summary.get(k, 0) for k in ("failed", "xpass", "error"))
    return EXIT_FAILED if bad or catalogue_errors or document.get("errors") else EXIT_OK


__all__ = ["run_with_pytest"]

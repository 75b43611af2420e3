"""The ``conformance`` command line: run the catalogue, render a report, diff two runs, inspect and
convert model files.

Heavy imports (torch, tensorflow) happen only inside the commands that need them, so
``conformance --help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def cmd_run(args: argparse.Namespace) -> int:
    """Check the catalogue and the selection here, then run the cases through pytest with the plugin
    (:mod:`conformance.session`): the same code path as ``pytest cases``, serial or on workers."""
    from .cases import load_catalogue
    from .selection import expressions, parse_shard, selected
    from .training.catalogue import load_beside
    catalogue = load_catalogue(args.cases)
    training, training_errors = load_beside(args.cases)
    for error in [*catalogue.errors, *training_errors]:
        print(f"error: {error}", file=sys.stderr)
    chosen = expressions(args.select)
    families = {c.family for c in [*catalogue.cases, *training]}
    cases = [c for c in catalogue.cases
             if (not chosen or selected(c.id, c.family, chosen, families)) and (args.extended or c.tier == "default"
                                                                                 or chosen)]
    scenarios = [c for c in training if (not chosen or selected(c.id, c.family, chosen, families))
                 and args.converter == "transfer_weights"]     # the frameworks' training, not a converter's
    if not catalogue.cases:
        print(f"error: no case could be loaded from {args.cases}; nothing was run", file=sys.stderr)
        return EXIT_USAGE
    if not cases and not scenarios:
        print(f"error: no case matches --select {args.select!r} in {args.cases}", file=sys.stderr)
        return EXIT_USAGE
    if args.shard:
        try:
            parse_shard(args.shard)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if not args.workers:     # workers import the frameworks and report the environment they ran in (plugin.py)
        from .quiet import import_frameworks_quietly
        import_frameworks_quietly()
    if args.torch_device != "cpu":
        import torch
        if not torch.cuda.is_available():
            print(f"error: --torch-device {args.torch_device}: CUDA is not available here (torch "
                  f"{torch.__version__})", file=sys.stderr)
            return EXIT_USAGE
    from .converters import ConverterError, get
    try:
        adapter = get(args.converter)
    except ConverterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    why_not = adapter.available()
    if why_not:
        print(f"error: --converter {args.converter}: {why_not}", file=sys.stderr)
        return EXIT_USAGE
    from .facts import collect, describe
    from .session import run_with_pytest
    converting = "" if args.converter == "transfer_weights" else \
        f" through {adapter.name} {adapter.version()} ({', '.join(adapter.directions)})"
    print(f"conformance: {len(cases)} cases x {len(adapter.directions)} directions"
          + (f" and {len(scenarios)} training cases" if scenarios else "") + f" from {args.cases}{converting}"
          + (f", shard {args.shard}" if args.shard else "") + (f", {args.workers} workers" if args.workers else "")
          + ("" if args.workers else f"\nenvironment: {describe(collect(args.torch_device))}"))
    return run_with_pytest(args, catalogue_errors=bool(catalogue.errors or training_errors))


def cmd_report(args: argparse.Namespace) -> int:
    from . import results as results_file
    from .merge import MATRIX_SCHEMA, load_any
    from .report import render
    try:
        document = load_any(args.results)
        if document.get("schema") == MATRIX_SCHEMA:
            from .report_matrix import render_matrix
            output = Path(args.output or Path(args.results).with_name("report.html"))
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(render_matrix(document), encoding="utf-8")
            print(f"report: {output} ({len(document['environments'])} environments)")
            return EXIT_OK
        baseline = results_file.load(_baseline_for(Path(args.baseline), document)) if args.baseline else None
    except results_file.ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.bench:
        from .bench import load_summary
        try:
            document["benchmarks"] = load_summary(args.bench)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    output = Path(args.output or Path(args.results).with_name("report.html"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(document, baseline=baseline), encoding="utf-8")
    print(f"report: {output}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from . import results as results_file
    from .diff import diff
    if not args.headroom_factor > 1:
        print(f"error: --headroom-factor must be above 1, not {args.headroom_factor:g}", file=sys.stderr)
        return EXIT_USAGE
    from .merge import MATRIX_SCHEMA, load_any
    try:
        candidate = load_any(args.candidate)
        pairs = _diff_pairs(Path(args.baseline), candidate)
    except results_file.ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .merge import converter_of
    for name, baseline_label, baseline, document in pairs:
        judged = converter_of(baseline)[0], converter_of(document)[0]
        if judged[0] != judged[1]:
            print(f"error: {baseline_label} judged converter {judged[0]}, {args.candidate} {judged[1]}"
                  f"{f' ({name})' if name else ''}: compare runs of one converter (conformance merge puts "
                  "different converters side by side)", file=sys.stderr)
            return EXIT_USAGE
    regressions = False
    for name, baseline_label, baseline, document in pairs:
        changes = diff(baseline, document, headroom_factor=args.headroom_factor)
        regressions = regressions or bool(changes)
        title = f"environment: {name}\n" if candidate.get("schema") == MATRIX_SCHEMA else ""
        print(f"{title}baseline:  {baseline_label}\ncandidate: {args.candidate}\n{changes.format()}\n")
    return EXIT_FAILED if regressions else EXIT_OK


def _diff_pairs(baseline: Path, candidate: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(environment name, baseline label, baseline, candidate) to compare: one pair for a results file, one
    per environment for a matrix, whose baselines come from a matrix (by name) or a directory (by class)."""
    from .merge import MATRIX_SCHEMA, load_any
    from .results import ResultsError
    entries = candidate["environments"] if candidate.get("schema") == MATRIX_SCHEMA else \
        [{"name": "", "results": candidate}]
    base_matrix = None if baseline.is_dir() else load_any(baseline)
    pairs = []
    for entry in entries:
        if base_matrix is None:
            path = _baseline_for(baseline, entry["results"])
            pairs.append((entry["name"], str(path), load_any(path), entry["results"]))
        elif base_matrix.get("schema") == MATRIX_SCHEMA:
            match = next((e for e in base_matrix["environments"] if e["name"] == entry["name"]), None)
            if match is None:
                raise ResultsError(f"{baseline}: no environment named {entry['name']!r} (there are: "
                                   f"{', '.join(e['name'] for e in base_matrix['environments'])})")
            pairs.append((entry["name"], f"{baseline} [{entry['name']}]", match["results"], entry["results"]))
        else:
            pairs.append((entry["name"], str(baseline), base_matrix, entry["results"]))
    return pairs


def _baseline_for(path: Path, candidate: dict[str, Any]) -> Path:
    """A baseline file as given, or from a directory of baselines the one of the candidate's
    environment class (``reports/baselines/tensorflow-onednn-off.json``)."""
    from .diff import environment_class
    from .results import ResultsError
    if not path.is_dir():
        return path
    wanted = environment_class(candidate)
    chosen = path / f"{wanted}.json"
    if not chosen.is_file():
        have = sorted(p.stem for p in path.glob("*.json") if p.name != "costs.json")
        raise ResultsError(f"{path}: no baseline for the candidate's environment class {wanted!r} (there are: "
                           f"{', '.join(have) or 'none'}). Make one with `conformance baseline RESULTS.json` on such "
                           "an environment, or name a baseline file to compare across classes.")
    return chosen


def cmd_merge(args: argparse.Namespace) -> int:
    """Join shards of one run, or runs of several environments into a matrix; write it and its report."""
    from . import results as results_file
    from .merge import MATRIX_SCHEMA, MergeError, merge
    try:
        document = merge(args.results)
    except (MergeError, results_file.ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    output = Path(args.output)
    path = results_file.write(document, output / "results.json")
    if document.get("schema") == MATRIX_SCHEMA:
        from .report_matrix import render_matrix
        html, what = render_matrix(document), f"a matrix of {len(document['environments'])} environments"
    else:
        from .report import render
        html, what = render(document), f"{len(document['cases'])} case results"
    (output / "report.html").write_text(html, encoding="utf-8")
    print(f"merged {len(args.results)} files into {what}\nresults: {path}\nreport:  {output / 'report.html'}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    """``conformance bench summary|attach ...``: the benchmark helpers of :mod:`conformance.bench`."""
    from .bench import main as bench_main
    return bench_main(args.arguments)


def cmd_baseline(args: argparse.Namespace) -> int:
    """Store a run as the gate's baseline, without what the gate does not read (mappings, timings)."""
    from . import results as results_file
    try:
        document = results_file.load(args.results)
    except results_file.ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bad = document["summary"].get("failed", 0) + document["summary"].get("error", 0) + document["summary"].get(
        "xpass", 0)
    if bad and not args.allow_failures:
        print(f"error: {args.results} has {bad} failed, erroring or stale cases; a baseline should be a clean run "
              "(--allow-failures to store it anyway)", file=sys.stderr)
        return EXIT_FAILED
    document["cases"] = [{k: v for k, v in case.items() if k not in ("mapping", "timings")}
                         for case in document["cases"]]
    document.pop("benchmarks", None)
    output = Path(args.output)
    if output.is_dir() or not output.suffix:
        from .diff import environment_class
        output = output / f"{environment_class(document)}.json"
    path = results_file.write(document, output)
    print(f"baseline: {path} ({len(document['cases'])} case results)")
    return EXIT_OK


# ---- model files: `conformance inspect` and `conformance convert` (conformance/inspection.py, convert.py)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .files import FileError
    from .inspection import inspect_file
    try:
        inspection = inspect_file(args.file, results=args.results, trust=args.trust)
    except FileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        import json
        print(json.dumps(inspection.to_json(), indent=1))
    else:
        print(inspection.text())
    return EXIT_OK


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected sizes like 1,32,32 (torch layout, no batch axis), got {text!r}")
    return dims


def cmd_convert(args: argparse.Namespace) -> int:
    from .errors import ConversionError
    from .files import FileError
    try:
        from .convert import convert_file
        report = convert_file(args.source, args.output, torch_model=args.torch_model,
                              to_architecture=args.to_architecture, trust=args.trust, force=args.force,
                              seed=args.seed, batch=args.batch, input_shape=args.input_shape)
    except FileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConversionError as exc:
        print(f"error: {args.source} -> {args.output}: the two architectures do not correspond: {exc}; nothing "
              "was written", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        import json
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(report.text())
    return EXIT_OK if report.passed else EXIT_FAILED


def _add_file_commands(sub: Any) -> None:
    inspect = sub.add_parser(
        "inspect", help="show a model file's layers, and which families cover them with their results",
        description="Reads a torch.save state dict or checkpoint (.pt/.pth), a TorchScript file, a torch.export "
                    "program (.pt2), or a Keras .keras / .h5 file, always with safe loading. Prints the layer tree "
                    "(types, parameter counts, tensors) and, per layer type, the conformance families that cover it "
                    "and their verdict in the results file. A bare state dict records no types: they are inferred "
                    "from names and shapes, and marked so. Exit status: 0, or 2 on an unusable or refused file.")
    inspect.add_argument("file", metavar="FILE")
    inspect.add_argument("--results", metavar="PATH",
                         help="results.json to report against (default: reports/latest/results.json if present)")
    inspect.add_argument("--json", action="store_true", help="print the same as JSON")
    inspect.add_argument("--trust", action="store_true",
                         help="allow loading that runs code from the file (a pickled module, a Keras Lambda); "
                              "only for files whose source you trust")
    inspect.set_defaults(func=cmd_inspect)
    convert = sub.add_parser(
        "convert", help="move a model file's weights into the other framework's architecture, verified",
        description="torch -> keras: --from a state dict / checkpoint / TorchScript / .pt2 file, --torch-model the "
                    "torch architecture, --to-architecture the Keras model file whose weights are replaced, --output "
                    "a new .keras, .h5 or .weights.h5 file. keras -> torch: --from a .keras or .h5 file, "
                    "--torch-model the torch architecture, --output a new .pt/.pth state dict. The result is written "
                    "to a temporary file, reloaded and compared with the source on seeded inputs; only a verified "
                    "file is renamed into place. Exit status: 0 verified and written, 1 verification failed "
                    "(nothing written), 2 unusable input (nothing written).")
    convert.add_argument("--from", dest="source", metavar="FILE", required=True, help="the model file to convert")
    convert.add_argument("--output", "-o", metavar="FILE", required=True,
                         help="the new file; never an input, and not an existing file unless --force")
    convert.add_argument("--torch-model", metavar="MODULE:FACTORY",
                         help="the torch architecture: a callable returning the nn.Module, as package.module:factory "
                              "(imported from the current directory) or path/to/file.py:factory. Imports that code")
    convert.add_argument("--to-architecture", metavar="FILE",
                         help="the destination architecture: for a Keras destination the .keras/.h5 model whose "
                              "weights are replaced (the file itself is not modified)")
    convert.add_argument("--input-shape", type=_shape, metavar="D,D,...",
                         help="verification input shape in torch layout without the batch axis, e.g. 1,32,32 "
                              "(default: from the Keras model's declared input)")
    convert.add_argument("--seed", type=int, default=0, help="seed of the verification inputs (default: 0)")
    convert.add_argument("--batch", type=int, default=4, help="verification batch size (default: 4)")
    convert.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    convert.add_argument("--trust", action="store_true",
                         help="allow loading that runs code from the files (a pickled module, a Keras Lambda)")
    convert.add_argument("--json", action="store_true", help="print the report as JSON")
    convert.set_defaults(func=cmd_convert)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conformance",
        description="Cross-framework conformance suite for PyTorch and Keras: paired layers, converted "
                    "weights, compared outputs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the case catalogue; writes results.json and report.html")
    run.add_argument("--select", metavar="EXPR",
                     help="comma-separated: a family name, a substring of a case id, or a glob (conv2d*s2*)")
    run.add_argument("--cases", metavar="DIR", default="cases", help="the case catalogue (default: cases)")
    run.add_argument("--output", metavar="DIR", default="reports/latest",
                     help="where results.json and report.html go (default: reports/latest)")
    run.add_argument("--extended", action="store_true", help="also run the cases of the extended tier")
    run.add_argument("--torch-device", metavar="DEVICE", default="cpu",
                     help="run the torch side on this device, e.g. cuda (TF32 disabled); default cpu")
    run.add_argument("--converter", metavar="NAME", default="transfer_weights",
                     help="the converter under test: transfer_weights (ours, the default) or an adapter registered "
                          "under the conformance.converters entry point (onnx2keras, onnx2torch, ...); see README")
    run.add_argument("--junit", metavar="PATH",
                     help="also write a JUnit XML file: one testcase per case and direction")
    run.add_argument("-n", "--workers", metavar="N",
                     help="run the cases in N worker processes (pytest-xdist), or 'auto' for one per core")
    run.add_argument("--shard", metavar="K/N",
                     help="run shard K of N: a deterministic 1/N of the catalogue, balanced by recorded case cost "
                          "(join the shards' results with conformance merge)")
    run.add_argument("--costs", metavar="PATH", default="reports/baselines/costs.json",
                     help="recorded seconds per case, to balance shards (default: %(default)s)")
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report", help="render report.html from a results.json")
    report.add_argument("results", metavar="RESULTS.json")
    report.add_argument("-o", "--output", metavar="report.html")
    report.add_argument("--baseline", metavar="BASELINE",
                        help="show regressions against this run (a file, or a directory of baselines by class)")
    report.add_argument("--bench", metavar="BENCH.json",
                        help="show these benchmark timings: pytest-benchmark's JSON or a summary from "
                             "conformance bench summary")
    report.set_defaults(func=cmd_report)
    compare = sub.add_parser(
        "diff", help="compare a run against a baseline; exit 1 on regressions, 2 on unusable input",
        description="Lists cases newly failing or erroring, cases missing from the candidate, recorded "
                    "divergences that now pass (xpass), and passing cases whose headroom (observed / allowed "
                    "error) grew more than --headroom-factor times (a baseline headroom below 1e-3 counts as "
                    "1e-3). When the runs used different kernels (oneDNN on/off, another Keras backend), it says so "
                    "and lists headroom growth for information only. Exit status: 0 no regressions, 1 regressions, "
                    "2 unusable input.")
    compare.add_argument("baseline", metavar="BASELINE",
                         help="a results file, or a directory of baselines: the one named after the candidate's "
                              "environment class is used (reports/baselines)")
    compare.add_argument("candidate", metavar="CANDIDATE.json")
    compare.add_argument("--headroom-factor", type=float, default=10.0, metavar="F",
                         help="flag a passing case whose headroom grew more than F times (default: 10)")
    compare.set_defaults(func=cmd_diff)
    merging = sub.add_parser("merge", help="join shards of a run, or runs of several environments into a matrix",
                             description="Shards of one run (conformance run --shard K/N) become one results file in "
                                         "catalogue order; overlapping or missing shards are refused. Runs from "
                                         "different environments (backends, oneDNN settings, versions, devices) "
                                         "become one compatibility matrix, reported with one column each.")
    merging.add_argument("results", nargs="+", metavar="RESULTS.json")
    merging.add_argument("--output", metavar="DIR", required=True, help="where results.json and report.html go")
    merging.set_defaults(func=cmd_merge)
    bench = sub.add_parser("bench", help="summarise pytest-benchmark timings or attach them to a results.json",
                           add_help=False)
    bench.add_argument("arguments", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    sub.add_parser("schema", help="print the JSON Schema of a case file, results or matrix; --write regenerates them",
                   add_help=False)
    baseline = sub.add_parser("baseline", help="store a results.json as the upgrade gate's baseline")
    baseline.add_argument("results", metavar="RESULTS.json")
    baseline.add_argument("-o", "--output", metavar="PATH", default="reports/baselines",
                          help="a file, or a directory where the file is named after the run's environment class "
                               "(default: reports/baselines/CLASS.json, e.g. tensorflow-onednn-on.json)")
    baseline.add_argument("--allow-failures", action="store_true", help="store a run that has failures")
    baseline.set_defaults(func=cmd_baseline)
    _add_file_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:            # its own sub-commands and --help
        from .bench import main as bench_main
        return bench_main(arguments[1:])
    if arguments[:1] == ["schema"]:
        from .schemas import main as schema_main
        return schema_main(arguments[1:])
    args = build_parser().parse_args(arguments)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # TensorFlow's start-up chatter hides our output
    try:
        code = int(args.func(args))
        sys.stdout.flush()   # a reader that went away shows here, not in Python's flush at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`conformance diff ... | head`): not an error of ours, so no traceback, and
        # stdout goes to devnull so that Python's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

"""Mutation testing of the conversion rules and the comparison, with cosmic-ray, module by module.

    python scripts/mutation.py layout rules comparison     # or --all; `tox -e mutation` runs this
    python scripts/mutation.py --report                    # the scores of the sessions run so far
    python scripts/mutation.py --recheck layout            # survivors again, against the tests as they are now

Why a script around cosmic-ray: each module gets its own test command, made of the stages that
``mutation.toml`` lists for it (the tests and catalogue cases that cover it, cheapest first), since
running the whole catalogue per mutant would take days. The repository is copied to a scratch
directory first (``--workdir``), because cosmic-ray writes each mutant into the source file: the
working tree is never touched, and an interrupted run leaves nothing behind in it. Sessions are
cosmic-ray's SQLite files in the scratch directory, so a second run resumes where the first stopped.

cosmic-ray calls ``python scripts/mutation.py stage MODULE`` as the test command of each mutant;
that runs the module's stages in order and stops at the first failure (the mutant is killed). A stage
marked ``fast`` runs in-process without ``tests/conftest.py`` (which imports torch and TensorFlow)
under a derandomised hypothesis profile. The score per module leaves out skipped operators and the
equivalent mutants that ``mutation.toml`` lists; survivors are written to
``reports/mutation/MODULE.json`` with their diffs. ``--recheck`` runs each survivor again (``cosmic-ray
apply`` in a second scratch copy) against the current tests, after tests were added to kill them; the
report then counts a survivor that the new tests kill as killed, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "mutation.toml"
STATE = ".mutation"          # inside the scratch copy: cosmic-ray configs and sessions


def load(root: Path) -> dict[str, Any]:
    with open(root / CONFIG, "rb") as handle:
        return tomllib.load(handle)


def copy_tree(source: Path, target: Path) -> None:
    """The files git knows of (tracked and untracked, not ignored), so the copy is what a commit would hold."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = source / name
        if not src.is_file() or name.startswith(("reports/", f"{STATE}/")):
            continue
        dst = target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(root), HYPOTHESIS_PROFILE="ci", PYTHONHASHSEED="0",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_stages(module: str, python: str) -> int:
    """The test command of one mutant (cwd: the scratch copy): each stage in order, stop at the first failure."""
    root = Path.cwd()
    for stage in load(root)["modules"][module]["stages"]:
        args = ["-x", "-q", "-p", "no:cacheprovider", *shlex.split(stage["args"])]
        if stage.get("fast"):
            code = subprocess.call([python, "-c", _FAST, *args], cwd=root, env=_env(root))
        else:
            code = subprocess.call([python, "-m", "pytest", *args], cwd=root, env=_env(root))
        if code != 0:
            return code
    return 0


# A fast stage: no tests/conftest.py, so no torch or TensorFlow; hypothesis as tests/conftest.py's "ci" profile.
_FAST = """
import sys, pytest
from hypothesis import HealthCheck, settings
settings.register_profile("mutation", derandomize=True, deadline=None, max_examples=30,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mutation")
sys.exit(pytest.main(["--noconftest", "-p", "no:conformance", *sys.argv[1:]]))
"""


def _tool(name: str) -> str:
    """A cosmic-ray executable: beside this Python, else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install cosmic-ray (see tox.ini [testenv:mutation])")
    return found


def write_config(work: Path, name: str, spec: dict[str, Any], settings: dict[str, Any], python: str) -> Path:
    command = f"{shlex.quote(python)} scripts/mutation.py stage {name} --python {shlex.quote(python)}"
    excludes = ", ".join(json.dumps(e) for e in settings.get("exclude-operators", []))
    text = (f'[cosmic-ray]\nmodule-path = {json.dumps(spec["path"])}\ntimeout = {float(settings["timeout"])}\n'
            f'excluded-modules = []\ntest-command = {json.dumps(command)}\n\n'
            f'[cosmic-ray.distributor]\nname = "local"\n\n'
            f'[cosmic-ray.filters.operators-filter]\nexclude-operators = [{excludes}]\n')
    path = work / STATE / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def mutate(work: Path, name: str, config: dict[str, Any], python: str) -> None:
    spec, settings = config["modules"][name], config["settings"]
    cfg = write_config(work, name, spec, settings, python)
    session = work / STATE / f"{name}.sqlite"

    def call(*argv: str) -> None:
        subprocess.run(list(argv), cwd=work, check=True, env=dict(os.environ, PYTHONPATH=str(work)))

    if not session.exists():
        call(_tool("cosmic-ray"), "init", str(cfg), str(session))
        call(_tool("cr-filter-operators"), str(session), str(cfg))
        print(f"[{name}] baseline: the stages must pass unmutated", flush=True)
        if run_stages_in(work, name, python) != 0:
            session.unlink()
            raise SystemExit(f"[{name}] the stages fail without any mutation; fix that first")
    call(_tool("cosmic-ray"), "exec", str(cfg), str(session))


def run_stages_in(work: Path, name: str, python: str) -> int:
    return subprocess.call([python, str(work / "scripts" / "mutation.py"), "stage", name, "--python", python],
                           cwd=work)


def results(work: Path, name: str, config: dict[str, Any]) -> dict[str, Any] | None:
    session = work / STATE / f"{name}.sqlite"
    if not session.exists():
        return None
    dump = subprocess.run([_tool("cosmic-ray"), "dump", str(session)], cwd=work, check=True, capture_output=True,
                          text=True).stdout
    equivalent = [e for e in config.get("equivalent", []) if e["module"] == name]
    source = (ROOT / config["modules"][name]["path"]).read_text().splitlines()   # the scratch file may be mutated now
    counts = {"killed": 0, "survived": 0, "equivalent": 0, "skipped": 0, "incompetent": 0, "pending": 0,
              "killed later": 0}
    survivors = []
    for line in filter(None, dump.splitlines()):
        item, result = json.loads(line)
        mutation = item["mutations"][0]
        text = source[mutation["start_pos"][0] - 1].strip()
        if result is None:
            counts["pending"] += 1
        elif result["worker_outcome"] == "skipped":
            counts["skipped"] += 1
        elif result["test_outcome"] == "incompetent":
            counts["incompetent"] += 1
        elif result["test_outcome"] == "killed":
            counts["killed"] += 1
        elif any(e["operator"] == mutation["operator_name"] and e["line"].strip() == text
                 and e.get("mutated", "") in _added(result.get("diff", "")) for e in equivalent):
            counts["equivalent"] += 1
        else:
            counts["survived"] += 1
            survivors.append({"line": mutation["start_pos"][0], "source": text, "operator": mutation["operator_name"],
                              "occurrence": mutation["occurrence"], "diff": result.get("diff", "")})
    rechecked = work / STATE / f"{name}.recheck.json"
    later = json.loads(rechecked.read_text()) if rechecked.exists() else []
    keys = {(k["line"], k["operator"], k["occurrence"]) for k in later}
    still = [x for x in survivors if (x["line"], x["operator"], x["occurrence"]) not in keys]
    counts["killed later"] = len(survivors) - len(still)
    counts["killed"] += counts["killed later"]
    counts["survived"] -= counts["killed later"]
    survivors = still
    judged = counts["killed"] + counts["survived"]
    score = counts["killed"] / judged if judged else None
    return {"module": config["modules"][name]["path"], **counts, "score": score, "survivors": survivors}


def recheck(work: Path, name: str, config: dict[str, Any], python: str) -> None:
    """Each survivor of ``name``'s session applied alone to a fresh copy of the tree and run through the stages."""
    summary = results(work, name, config)
    if summary is None:
        raise SystemExit(f"[{name}] no session in {work}: run it first")
    scratch = work.with_name(work.name + "-recheck")
    copy_tree(ROOT, scratch)
    path = scratch / config["modules"][name]["path"]
    pristine = path.read_bytes()
    killed = []
    for survivor in summary["survivors"]:
        try:
            subprocess.run([_tool("cosmic-ray"), "apply", config["modules"][name]["path"], survivor["operator"],
                            str(survivor["occurrence"])], cwd=scratch, check=True, capture_output=True)
            code = subprocess.call([python, "scripts/mutation.py", "stage", name, "--python", python], cwd=scratch,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            path.write_bytes(pristine)
        print(f"[{name}] line {survivor['line']} {survivor['operator']}: {'killed' if code else 'survives'}",
              flush=True)
        if code:
            killed.append({k: survivor[k] for k in ("line", "operator", "occurrence")})
    earlier = work / STATE / f"{name}.recheck.json"     # kills by earlier rechecks are kept
    killed += json.loads(earlier.read_text()) if earlier.exists() else []
    earlier.write_text(json.dumps(killed, indent=1))


def _added(diff: str) -> str:
    """The lines a mutant's diff adds: what the mutated line became."""
    return "\n".join(line for line in (diff or "").splitlines() if line.startswith("+") and not line.startswith("+++"))


def report(work: Path, names: list[str], config: dict[str, Any]) -> int:
    out = ROOT / "reports" / "mutation"
    out.mkdir(parents=True, exist_ok=True)
    print(f"{'module':38} {'killed':>6} {'(later)':>7} {'surv.':>6} {'equiv.':>6} {'skip':>6} {'incomp.':>7} "
          f"{'pend.':>6}  score")
    for name in names:
        summary = results(work, name, config)
        if summary is None:
            print(f"{config['modules'][name]['path']:38} (not run)")
            continue
        (out / f"{name}.json").write_text(json.dumps(summary, indent=1))
        score = "-" if summary["score"] is None else f"{summary['score']:.1%}"
        print(f"{summary['module']:38} {summary['killed']:6} {summary['killed later']:7} {summary['survived']:6} "
              f"{summary['equivalent']:6} "
              f"{summary['skipped']:6} {summary['incompetent']:7} {summary['pending']:6}  {score}")
    print(f"survivors and their diffs: {out}/MODULE.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="names from mutation.toml [modules.NAME]")
    parser.add_argument("--all", action="store_true", help="every module in mutation.toml")
    parser.add_argument("--report", action="store_true", help="only print the scores of the sessions so far")
    parser.add_argument("--python", default=sys.executable, help="the Python with torch and TensorFlow for the tests")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "conformance-mutation",
                        help="the scratch copy (default: %(default)s); sessions there are resumed")
    parser.add_argument("--fresh", action="store_true", help="forget earlier sessions of these modules")
    parser.add_argument("--recheck", action="store_true", help="run the survivors again against the current tests")
    args = parser.parse_args(argv)
    if args.modules[:1] == ["stage"]:
        return run_stages(args.modules[1], args.python)
    config = load(ROOT)
    names = list(config["modules"]) if args.all or (args.report and not args.modules) else args.modules
    unknown = [n for n in names if n not in config["modules"]]
    if unknown or not names:
        parser.error(f"unknown or no modules {unknown}; choose from {', '.join(config['modules'])} or --all")
    work = args.workdir.resolve()
    if args.recheck:
        for name in names:
            recheck(work, name, config, args.python)
    elif not args.report:
        work.mkdir(parents=True, exist_ok=True)
        copy_tree(ROOT, work)
        for name in names:
            if args.fresh:
                (work / STATE / f"{name}.sqlite").unlink(missing_ok=True)
                (work / STATE / f"{name}.recheck.json").unlink(missing_ok=True)
            mutate(work, name, config, args.python)
            report(work, [name], config)
    return report(work, names, config)


if __name__ == "__main__":
    sys.exit(main())

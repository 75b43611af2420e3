"""Build the virtual environment of a converter that needs another Python (tox -e peer-onnx2tf runs this).

    python scripts/peer_venv.py --python 3.12 --venv .tox/peer-onnx2tf/py312 \
        --constraint constraints/peer-onnx2tf-py312.txt onnx2tf tensorflow tf-keras

Finds an interpreter of that version (``$CONFORMANCE_PYTHON312`` for 3.12, else ``python3.12`` on the
PATH, else pyenv's versions, else /usr/bin and /usr/local/bin), creates the venv if it does not exist and
installs the packages with the constraints file; a second run only checks what is installed. It exits with a
message naming what it looked for when no such interpreter runs here.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path


def runs(candidate: str, version: str) -> bool:
    """Whether ``candidate`` starts and is Python ``version`` (a pyenv shim of an absent version does not)."""
    try:
        done = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def find_python(version: str) -> tuple[str | None, list[str]]:
    variable = f"CONFORMANCE_PYTHON{version.replace('.', '')}"
    candidates = [os.environ.get(variable, ""), shutil.which(f"python{version}") or ""]
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    candidates += [f"/usr/local/bin/python{version}", f"/usr/bin/python{version}"]
    tried = [c for c in candidates if c]
    return next((c for c in tried if runs(c, version)), None), [variable, *tried]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the version, e.g. 3.12")
    parser.add_argument("--venv", required=True, type=Path)
    parser.add_argument("--constraint", required=True, type=Path)
    parser.add_argument("packages", nargs="+")
    args = parser.parse_args(argv)
    python = args.venv / "bin" / "python"
    if not runs(str(python), args.python):
        found, tried = find_python(args.python)
        if found is None:
            print(f"error: no Python {args.python} runs here (tried ${tried[0]}, then {', '.join(tried[1:]) or '-'});"
                  f" set {tried[0]} to one", file=sys.stderr)
            return 2
        subprocess.run([found, "-m", "venv", "--clear", str(args.venv)], check=True)
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
               "-c", str(args.constraint.resolve()), *args.packages]
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONSTRAINT", "PYTHONPATH")}
    return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())

"""A converter that lives in another Python: its own interpreter, driven as a subprocess worker.

Some converters cannot share a process, or even an interpreter, with the suite: onnx2tf 2.x needs
Python 3.12 (and the registry has no CPU torch for 3.12), litert-torch pins packages that conflict
with ours. Their adapters export what the other side needs (an ONNX file, say) here, then hand it to
a small worker script (shipped in this package, run by the converter's interpreter) that converts
and runs the converted model there.

The protocol is one JSON object per line: a request on the worker's stdin, one reply on the file
descriptor given as its first argument (so that whatever the converter prints, on stdout or from C,
goes to the worker's log instead of the replies). Arrays travel as ``.npz`` files in a scratch
directory, never through the pipe. A reply is ``{"ok": ...}``, ``{"refused": why}`` (the converter
raised or declined: a verdict) or ``{"error": why}`` (the worker itself broke: ours). The worker is
started once per process and reused; a worker that dies or hangs is stopped and the case refused,
with the last lines of its log, and the next case starts a new one.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ConverterError, Refused

HELLO_TIMEOUT_S = 300.0       # the worker imports TensorFlow before it answers (10-60 s on busy cores)
REQUEST_TIMEOUT_S = 600.0     # one conversion; a converter that takes longer is treated as refusing


def interpreter_from(variable: str, purpose: str) -> tuple[str | None, str | None]:
    """The interpreter named by environment variable ``variable``, or why it cannot be used (naming the
    variable): the adapters' ``available()`` returns that reason, and the case is an ``error``."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return None, (f"the environment variable {variable} is not set: it names the Python interpreter of a "
                      f"virtual environment with {purpose} (tox -e peer-* builds one and sets it)")
    path = Path(value).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        return None, f"{variable}={value}: no executable Python interpreter there ({purpose})"
    return str(path), None


def write_arrays(path: Path, arrays: Sequence[np.ndarray]) -> None:
    """``arrays`` in order as ``a0``, ``a1`` ... of an .npz file (the worker reads them back in order)."""
    np.savez(path, **{f"a{i}": np.ascontiguousarray(a) for i, a in enumerate(arrays)})


def read_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[f"a{i}"] for i in range(len(data.files))]


class Worker:
    """One running worker: ``request`` sends a JSON request and returns the ``ok`` reply's payload,
    raises :class:`Refused` for a refusal (or a worker that died or hung on it: the converter's doing)
    and :class:`ConverterError` for the worker's own errors."""

    def __init__(self, python: str, script: Path, label: str) -> None:
        self.label = label
        self.log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115  (open for the worker's whole life)
            prefix=f"conformance-{label}-", suffix=".log", delete=False)
        read_end, write_end = os.pipe()
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
        env.pop("PYTHONPATH", None)      # the worker's interpreter has its own packages, none of ours
        self.process = subprocess.Popen([python, str(script), str(write_end)], stdin=subprocess.PIPE,
                                        stdout=self.log_file, stderr=subprocess.STDOUT, pass_fds=(write_end,),
                                        env=env, text=True)
        os.close(write_end)
        self.replies = os.fdopen(read_end, "r")

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = Path(self.log_file.name).read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(line.strip()[:300] for line in kept)

    def request(self, message: dict[str, Any], timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        if self.process.poll() is not None:
            raise Refused(f"the {self.label} worker had exited (status {self.process.returncode})")
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            last = self.log_tail()
            self.close()
            raise Refused(f"the {self.label} worker died: {last}") from None
        ready, _, _ = select.select([self.replies], [], [], timeout)
        line = self.replies.readline() if ready else ""
        if not line:
            try:                 # the pipe closed: the worker is exiting (or hangs with it closed)
                self.process.wait(timeout=5 if ready else 0.01)
                hung = False
            except subprocess.TimeoutExpired:
                hung = True
                self.process.kill()
            last = self.log_tail()
            self.close()
            what = f"took more than {timeout:.0f} s" if hung else f"died (status {self.process.returncode})"
            raise Refused(f"the {self.label} worker {what} on {message.get('op')}: {last}")
        reply = json.loads(line)
        if "refused" in reply:
            raise Refused(str(reply["refused"]))
        if "error" in reply:
            raise ConverterError(f"the {self.label} worker broke: {reply['error']}")
        return dict(reply.get("ok") or {})

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.replies.close()
        self.log_file.close()
        Path(self.log_file.name).unlink(missing_ok=True)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


_WORKERS: dict[tuple[str, str], Worker] = {}


def worker_for(python: str, script: Path, label: str) -> Worker:
    """The process's worker for this interpreter and script, started (and greeted) on first use."""
    key = (python, str(script))
    worker = _WORKERS.get(key)
    if worker is not None and worker.alive:
        return worker
    worker = Worker(python, script, label)
    try:
        worker.request({"op": "hello"}, timeout=HELLO_TIMEOUT_S)
    except Refused as exc:    # a worker that cannot even start is the environment's problem, not a verdict
        raise ConverterError(f"the {label} worker ({python}) did not start: {exc}") from None
    _WORKERS[key] = worker
    return worker


@atexit.register
def _close_all() -> None:
    for worker in _WORKERS.values():
        worker.close()
    _WORKERS.clear()


def versions_of(python: str, distributions: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``distributions`` in another interpreter (its metadata, no imports: fast)."""
    code = ("import importlib.metadata as m, json, sys\n"
            "def v(d):\n"
            "    try:\n        return m.version(d)\n"
            "    except m.PackageNotFoundError:\n        return 'not installed'\n"
            "print(json.dumps({'python': sys.version.split()[0], **{d: v(d) for d in sys.argv[1:]}}))")
    try:
        done = subprocess.run([python, "-c", code, *distributions], capture_output=True, text=True, timeout=60,
                              check=True)
        return dict(json.loads(done.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


__all__ = ["Worker", "interpreter_from", "read_arrays", "versions_of", "worker_for", "write_arrays"]

"""The adapters whose converters live elsewhere (onnx2tf in a Python 3.12 worker, litert-torch in-process),
tested without those converters installed: the missing interpreter is a named error, the layouts are
declared, the worker protocol carries arrays through .npz files and turns a refusal, a worker's own error,
a crash and a hang into the right verdicts, and the worker's layout matching reads the converted model's
declared shapes. A fake worker (a few lines of numpy run by this interpreter) stands in for onnx2tf.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance import converters
from conformance.cases import load_file
from conformance.converters import Context, ConverterError, Refused
from conformance.converters import worker_client as wc
from conformance.converters.onnx2tf_adapter import PYTHON_VARIABLE, Onnx2Tf
from conformance.converters.peer import run_peer

ROOT = Path(__file__).resolve().parent.parent

FAKE_WORKER = r'''
import json, os, sys, time
import numpy as np
replies = os.fdopen(int(sys.argv[1]), "w")
os.dup2(2, 1)
for line in sys.stdin:
    request = json.loads(line)
    op = request["op"]
    print("fake worker got", op)            # must land in the log, not among the replies
    if op == "hello":
        reply = {"ok": {"python": "fake"}}
    elif op == "run":
        with np.load(request["inputs"]) as data:
            arrays = [data[f"a{i}"] for i in range(len(data.files))]
        np.savez(request["outputs"], a0=np.moveaxis(arrays[0], 1, -1) * 2, a1=arrays[1] + 1)
        reply = {"ok": {"outputs": 2}}
    elif op == "decline":
        reply = {"refused": "no converter for Foo"}
    elif op == "break":
        reply = {"error": "KeyError: 'id'"}
    elif op == "crash":
        print("fatal: about to die"); sys.stdout.flush(); os._exit(3)
    elif op == "hang":
        time.sleep(60); reply = {"ok": {}}
    replies.write(json.dumps(reply) + "\n"); replies.flush()
'''


@pytest.fixture()
def fake(tmp_path: Path) -> Any:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    worker = wc.Worker(sys.executable, script, "fake")
    yield worker
    worker.close()


def test_arrays_go_to_the_worker_and_back_through_npz_files_in_order(fake: Any, tmp_path: Path) -> None:
    image = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    indices = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert fake.request({"op": "hello"}) == {"python": "fake"}
    wc.write_arrays(tmp_path / "in.npz", [image, indices])
    fake.request({"op": "run", "inputs": str(tmp_path / "in.npz"), "outputs": str(tmp_path / "out.npz")})
    first, second = wc.read_arrays(tmp_path / "out.npz")
    np.testing.assert_array_equal(first, np.moveaxis(image, 1, -1) * 2)
    assert second.dtype == np.int64 and np.array_equal(second, indices + 1)
    assert "fake worker got run" in fake.log_tail()      # what the converter prints goes to the log


def test_a_refusal_is_refused_and_the_workers_own_error_is_ours(fake: Any) -> None:
    with pytest.raises(Refused, match="no converter for Foo"):
        fake.request({"op": "decline"})
    with pytest.raises(ConverterError, match="fake worker broke: KeyError"):
        fake.request({"op": "break"})
    assert fake.alive


def test_a_worker_that_dies_or_hangs_is_a_refusal_with_its_last_words(fake: Any, tmp_path: Path) -> None:
    with pytest.raises(Refused, match=r"died \(status 3\).*about to die"):
        fake.request({"op": "crash"})
    assert not fake.alive
    with pytest.raises(Refused, match="had exited"):
        fake.request({"op": "hello"})
    script = tmp_path / "fake_worker.py"
    slow = wc.Worker(sys.executable, script, "fake")
    try:
        with pytest.raises(Refused, match=r"took more than 1 s on hang"):
            slow.request({"op": "hang"}, timeout=1.0)
        assert not slow.alive                      # stopped, so the next case starts a fresh one
    finally:
        slow.close()


def test_a_missing_or_wrong_interpreter_variable_is_a_named_error(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.delenv(PYTHON_VARIABLE, raising=False)
    for name in ("onnx2tf", "onnx2tf-dynamo", "onnx2tf-tflite", "onnx2tf-tflite-dynamo"):
        assert PYTHON_VARIABLE in (converters.get(name).available() or "")
    case = next(c for c in load_file(ROOT / "cases" / "relu.toml") if c.tier == "default")
    result = run_peer(case, "torch->keras", "onnx2tf")
    assert result.outcome == "error"
    assert f"the environment variable {PYTHON_VARIABLE} is not set" in result.message
    assert "Traceback" not in result.message and "tox -e peer-" in result.message
    monkeypatch.setenv(PYTHON_VARIABLE, str(tmp_path / "nowhere" / "python"))
    assert f"{PYTHON_VARIABLE}={tmp_path / 'nowhere' / 'python'}: no executable" in (Onnx2Tf().available() or "")


def test_the_adapters_declare_their_directions_and_layouts() -> None:
    """onnx2tf transposes NCHW to NHWC itself, tensor by tensor: it guesses, so ambiguous cases are skipped
    for it; litert-torch keeps torch's layout at the model's edges."""
    for name, direction in (("onnx2tf", "torch->keras"), ("onnx2tf-dynamo", "torch->keras"),
                            ("onnx2tf-tflite", "torch->tflite"), ("onnx2tf-tflite-dynamo", "torch->tflite")):
        adapter = converters.get(name)
        assert adapter.directions == (direction,)
        assert (adapter.input_layout, adapter.output_layout) == ("guess", "guess")
    litert = converters.get("litert")
    assert litert.directions == ("torch->tflite",)
    assert (litert.input_layout, litert.output_layout) == ("source", "source")


def test_litert_missing_is_an_error_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "litert_torch" else real(name, *a))
    case = next(c for c in load_file(ROOT / "cases" / "relu.toml") if c.tier == "default")
    result = run_peer(case, "torch->tflite", "litert")
    assert result.outcome == "error" and "not installed: litert_torch" in result.message


def test_litert_feeds_inputs_by_signature_number_in_the_declared_dtype() -> None:
    from conformance.converters.litert_adapter import feed
    details = {f"args_{i}": {"shape": np.array([2, i + 1]), "dtype": np.int32 if i == 10 else np.float32}
               for i in range(11)}
    arrays = [np.zeros((2, i + 1), np.float64 if i != 10 else np.int64) for i in range(11)]
    fed = feed(arrays, details)
    assert list(fed) == [f"args_{i}" for i in range(11)]          # args_10 after args_9, not after args_1
    assert fed["args_10"].dtype == np.int32 and fed["args_3"].dtype == np.float32
    with pytest.raises(Refused, match="declared"):
        feed([np.zeros((2, 5))] + arrays[1:], details)
    with pytest.raises(Refused, match="11 inputs"):
        feed(arrays[:3], details)


def _worker_module() -> Any:
    spec = importlib.util.spec_from_file_location("onnx2tf_worker", ROOT / "conformance/converters/onnx2tf_worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)          # numpy only at import: onnx2tf is imported on request
    return module


def test_the_worker_feeds_each_input_in_the_layout_the_converted_model_declares() -> None:
    worker = _worker_module()
    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(worker.conform(image, [None, 4, 5, 3]), np.moveaxis(image, 1, -1))
    assert worker.conform(image, [2, 3, 4, 5]) is image
    sequence = np.zeros((2, 7), np.float32)
    assert worker.conform(sequence, [None, 7]) is sequence
    with pytest.raises(ValueError, match="fits neither"):
        worker.conform(image, [2, 5, 4, 3])
    assert worker.match("input_0", ["serving_default_input_0:0", "input_1"]) == "serving_default_input_0:0"
    with pytest.raises(ValueError, match="no tensor named 'x'"):
        worker.match("x", ["input_0"])


class _Elsewhere(converters.Converter):
    """An adapter whose converted model runs elsewhere: it reports its own conversion time, and the run's
    exception comes back as a refusal (as the worker adapters do)."""
    name, directions, distribution = "test-elsewhere", ("torch->keras",), ""

    def version(self) -> str:
        return "1.0"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        context.timings["convert"] = 0.125

        def run(*arrays: np.ndarray) -> Any:
            raise Refused("the converted model raised when run: Invoke failed")
        return run


def test_a_refusal_when_the_converted_model_runs_is_refused_and_adapter_timings_are_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(converters.BUILTIN, "test-elsewhere", f"{__name__}:_Elsewhere")
    case = next(c for c in load_file(ROOT / "cases" / "relu.toml") if c.tier == "default")
    result = run_peer(case, "torch->keras", "test-elsewhere")
    assert result.outcome == "refused"
    assert "the result raised when run" in result.message and "Invoke failed" in result.message
    assert result.timings["convert"] == 0.125


def test_each_peer_env_pins_torch_to_the_cpu_build_and_the_py312_env_has_none() -> None:
    """pip left to choose a torch takes the registry's multi-GB CUDA build: every peer env's constraints chain
    to constraints.txt (torch==...), and the onnx2tf worker's 3.12 env has no torch at all (there is no CPU
    build for 3.12 on the registry; the suite's process exports the ONNX files)."""
    import configparser
    import re
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    for env in ("peer-onnx2tf", "peer-litert"):
        setenv = tox[f"testenv:{env}"]["setenv"]
        constraint = re.search(r"PIP_CONSTRAINT = \{toxinidir\}/(\S+)", setenv)
        assert constraint is not None, env
        assert "-c ../constraints.txt" in (ROOT / constraint.group(1)).read_text().splitlines(), env
    assert re.search(r"^torch==\d", (ROOT / "constraints.txt").read_text(), re.M)
    py312 = (ROOT / "constraints/peer-onnx2tf-py312.txt").read_text()
    assert re.search(r"^onnx2tf==2\.", py312, re.M) and not re.search(r"^torch\b", py312, re.M)
    assert "CONFORMANCE_ONNX2TF_PYTHON = {envdir}/py312/bin/python" in tox["testenv:peer-onnx2tf"]["setenv"]


class _TfliteFaithful(_Elsewhere):
    """A torch->tflite adapter whose "converted model" is the torch model itself."""
    name, directions = "test-tflite", ("torch->tflite",)

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        import copy

        import torch
        clone = copy.deepcopy(source).eval()

        def run(*arrays: np.ndarray) -> Any:
            with torch.no_grad():
                return clone(*[torch.from_numpy(a) for a in arrays]).numpy()
        return run


def test_a_torch_to_tflite_run_is_a_valid_results_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The third direction is a direction of the results format too (litert and onnx2tf-tflite write it)."""
    from conformance import results
    monkeypatch.setitem(converters.BUILTIN, "test-tflite", f"{__name__}:_TfliteFaithful")
    case = next(c for c in load_file(ROOT / "cases" / "relu.toml") if c.tier == "default")
    result = run_peer(case, "torch->tflite", "test-tflite").to_json()
    assert result["outcome"] == "passed" and result["direction"] == "torch->tflite"
    path = results.write(results.build([result], converter="test-tflite"), tmp_path / "results.json")
    assert results.load(path)["cases"][0]["direction"] == "torch->tflite"
    broken = json.loads(path.read_text())
    broken["cases"][0]["direction"] = "torch->onnx"
    with pytest.raises(results.ResultsError, match="direction"):
        results.check(broken, "results.json")

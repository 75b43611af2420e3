"""The onnx2tf adapters: torch -> ONNX (here) -> onnx2tf (in a Python 3.12 worker) -> TF/Keras or .tflite.

onnx2tf 2.x needs Python 3.12, and the registry has no CPU torch for 3.12 (only the multi-GB CUDA
build), so the two halves run in two interpreters: this process exports the ONNX file with torch's
exporter (both of them, as for onnx2keras: ``dynamo=False`` at opset 17 and ``dynamo=True`` at opset
18), and a worker process, run by the interpreter named in ``CONFORMANCE_ONNX2TF_PYTHON`` (a 3.12
venv with onnx2tf; ``tox -e peer-onnx2tf`` builds one and sets it), converts it and runs the result
(:mod:`conformance.converters.onnx2tf_worker`; the protocol is :mod:`.worker_client`'s).

onnx2tf offers two results, judged as two converters:

- ``onnx2tf`` / ``onnx2tf-dynamo`` (direction ``torch->keras``): the tf-keras model of onnx2tf's
  TensorFlow path, called directly;
- ``onnx2tf-tflite`` / ``onnx2tf-tflite-dynamo`` (direction ``torch->tflite``): the float32 ``.tflite``
  that onnx2tf 2.x writes by default (its own FlatBuffer builder), run with the LiteRT interpreter.

onnx2tf transposes NCHW to NHWC itself and decides per tensor: its layouts are ``guess``. The inputs
are handed over in torch's layout and the worker transposes those the converted model declares
channels-last; the outputs are read as the converter left them and judged in whichever layout
their shape says. A tensor that reads the same both ways cannot be judged, so such cases are skipped.

The conversion time of a case is the ONNX export here plus onnx2tf's conversion, measured inside
the worker: the worker's start (TensorFlow's import) and the file round trips are left out.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import Context, Converter, Refused
from .onnx_routes import _missing, export_onnx
from .worker_client import interpreter_from, read_arrays, versions_of, worker_for, write_arrays

PYTHON_VARIABLE = "CONFORMANCE_ONNX2TF_PYTHON"
WORKER = Path(__file__).with_name("onnx2tf_worker.py")
_VERSIONS: dict[str, dict[str, str]] = {}
_IDS = itertools.count()


def onnx_outputs(path: str) -> list[str]:
    import onnx
    return [o.name for o in onnx.load(path, load_external_data=False).graph.output]


class Onnx2Tf(Converter):
    """torch -> ONNX (TorchScript exporter, opset 17) -> onnx2tf's tf-keras model."""

    name = "onnx2tf"
    directions = ("torch->keras",)
    input_layout = "guess"
    output_layout = "guess"
    distribution = "onnx2tf"
    dynamo = False
    target: ClassVar[str] = "keras"

    def available(self) -> str | None:
        _, why_not = interpreter_from(PYTHON_VARIABLE, "onnx2tf (Python 3.12)")
        return why_not or _missing("onnx", *(("onnxscript",) if self.dynamo else ()))

    def worker_versions(self) -> dict[str, str]:
        python, _ = interpreter_from(PYTHON_VARIABLE, "onnx2tf")
        if python is None:
            return {}
        if python not in _VERSIONS:
            _VERSIONS[python] = versions_of(python, ["onnx2tf", "tensorflow", "ai-edge-litert", "onnx"])
        return _VERSIONS[python]

    def version(self) -> str:
        import torch
        found = self.worker_versions()
        runtime = (f"ai-edge-litert {found.get('ai-edge-litert', '?')}" if self.target == "tflite"
                   else f"tensorflow {found.get('tensorflow', '?')}")
        exporter = "dynamo, opset 18" if self.dynamo else "TorchScript, opset 17"
        return (f"{found.get('onnx2tf', 'not installed')} (Python {found.get('python', '?')}, {runtime}; "
                f"torch {torch.__version__.split('+')[0]} exporter {exporter})")

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        python, why_not = interpreter_from(PYTHON_VARIABLE, "onnx2tf (Python 3.12)")
        if python is None:
            raise Refused(why_not)    # available() said so first; kept for adapters called directly
        path = str(context.workdir / "model.onnx")
        clock = time.perf_counter()
        try:
            names = export_onnx(source, inputs, path, dynamo=self.dynamo)
        except Exception as exc:
            raise Refused(f"torch's ONNX exporter ({'dynamo' if self.dynamo else 'TorchScript'}) "
                          f"refused: {type(exc).__name__}: {str(exc)[:400]}") from None
        exported = time.perf_counter() - clock
        worker = worker_for(python, WORKER, "onnx2tf")
        key = f"m{next(_IDS)}"
        out_dir = context.workdir / "onnx2tf"
        reply = worker.request({"op": "convert", "id": key, "onnx": path, "target": self.target,
                                "workdir": str(out_dir), "inputs": names, "outputs": onnx_outputs(path)})
        context.timings["export"] = exported
        context.timings["convert"] = exported + float(reply["convert_s"])
        context.notes.append(f"onnx2tf declared the inputs {reply.get('input_shapes')}")
        scratch = context.workdir

        def run(*arrays: np.ndarray) -> list[np.ndarray]:
            given, got = scratch / f"{key}-in.npz", scratch / f"{key}-out.npz"
            write_arrays(given, arrays)
            try:
                worker.request({"op": "run", "id": key, "inputs": str(given), "outputs": str(got)})
            finally:
                if worker.alive:
                    worker.request({"op": "drop", "id": key})
            return read_arrays(got)
        return run


class Onnx2TfDynamo(Onnx2Tf):
    """torch -> ONNX (dynamo exporter, opset 18) -> onnx2tf's tf-keras model."""

    name = "onnx2tf-dynamo"
    dynamo = True


class Onnx2TfTflite(Onnx2Tf):
    """torch -> ONNX (TorchScript exporter, opset 17) -> onnx2tf's float32 .tflite, run by LiteRT."""

    name = "onnx2tf-tflite"
    directions = ("torch->tflite",)
    target = "tflite"


class Onnx2TfTfliteDynamo(Onnx2TfTflite):
    """torch -> ONNX (dynamo exporter, opset 18) -> onnx2tf's float32 .tflite, run by LiteRT."""

    name = "onnx2tf-tflite-dynamo"
    dynamo = True


__all__ = ["PYTHON_VARIABLE", "Onnx2Tf", "Onnx2TfDynamo", "Onnx2TfTflite", "Onnx2TfTfliteDynamo"]

"""The onnx2tf worker: run by the Python 3.12 interpreter of the onnx2tf environment, not imported by the suite.

It converts an ONNX file with onnx2tf and runs the result on inputs it reads from .npz files; the
protocol is described in :mod:`conformance.converters.worker_client`. It imports nothing from this
package (the 3.12 environment has onnx2tf, TensorFlow and LiteRT, not the suite), only the standard
library and numpy until a conversion is asked for.

Two targets:

- ``keras``: onnx2tf's TensorFlow path (``tflite_backend="tf_converter"``), which builds a tf-keras
  model and returns it; the model is called directly.
- ``tflite``: onnx2tf's default path in 2.x (``tflite_backend="flatbuffer_direct"``), which writes the
  float32 ``.tflite`` itself; it is run with the LiteRT interpreter (``ai_edge_litert``).

Inputs arrive in the source model's layout (NCHW from torch). onnx2tf turns 3-5 dimensional inputs
channels-last unless told otherwise; the worker reads the converted model's own input shapes and
transposes an input where the model declares the channels-last shape. (Tensors whose shape reads the
same both ways never reach it: the suite skips those cases for a layout-guessing converter.)
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import sys
import time
import traceback
from typing import Any

import numpy as np

MODELS: dict[str, Any] = {}


def to_last(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if len(shape) >= 3 else shape


def conform(array: np.ndarray, declared: list[int | None]) -> np.ndarray:
    """``array`` (source layout) as the converted model declares that input: as is, or channels-last."""
    def fits(shape: tuple[int, ...]) -> bool:
        return len(shape) == len(declared) and all(d in (None, -1) or d == s
                                                   for d, s in zip(declared, shape, strict=True))
    if fits(array.shape) or array.ndim < 3:
        return array
    if fits(to_last(array.shape)):
        return np.ascontiguousarray(np.moveaxis(array, 1, -1))
    raise ValueError(f"input of shape {array.shape} fits neither the model's declared {declared} nor its "
                     "channels-last form")


def read(path: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[f"a{i}"] for i in range(len(data.files))]


def write(path: str, arrays: list[np.ndarray]) -> None:
    np.savez(path, **{f"a{i}": np.asarray(a) for i, a in enumerate(arrays)})


def hello(_: dict[str, Any]) -> dict[str, Any]:
    import onnx2tf  # noqa: F401  (fails here, at start, if the environment lacks it)
    return {"python": sys.version.split()[0]}


def convert(request: dict[str, Any]) -> dict[str, Any]:
    import onnx2tf
    target, workdir = request["target"], request["workdir"]
    printed = io.StringIO()
    clock = time.perf_counter()
    try:
        with contextlib.redirect_stdout(printed):
            if target == "keras":      # the model onnx2tf builds, before it saves anything (no .tflite)
                model = onnx2tf.convert(input_onnx_file_path=request["onnx"], output_folder_path=workdir,
                                        tflite_backend="tf_converter", disable_model_save=True,
                                        non_verbose=True, verbosity="error")
            else:
                model = onnx2tf.convert(input_onnx_file_path=request["onnx"], output_folder_path=workdir,
                                        output_signaturedefs=True, copy_onnx_input_output_names_to_tflite=True,
                                        tflite_backend="flatbuffer_direct", non_verbose=True, verbosity="error")
    except SystemExit as exc:           # onnx2tf reports an unsupported model by sys.exit(1)
        return {"refused": f"onnx2tf exited ({exc.code}): {last_lines(printed.getvalue())}"}
    except Exception as exc:
        return {"refused": f"onnx2tf raised {type(exc).__name__}: {str(exc)[:500]} {last_lines(printed.getvalue())}"}
    seconds = time.perf_counter() - clock
    names, outputs = request["inputs"], request["outputs"]
    if target == "keras":
        if model is None:
            return {"refused": f"onnx2tf returned no Keras model: {last_lines(printed.getvalue())}"}
        shapes = [list(t.shape) for t in model.inputs]
        MODELS[request["id"]] = ("keras", model, shapes)
    else:
        found = sorted(glob.glob(os.path.join(workdir, "*_float32.tflite")))
        if not found:
            return {"refused": f"onnx2tf wrote no float32 .tflite: {last_lines(printed.getvalue())}"}
        from ai_edge_litert.interpreter import Interpreter
        try:
            runner = Interpreter(model_path=found[0], num_threads=1).get_signature_runner()
        except Exception as exc:       # e.g. an operator the interpreter does not have (Flex ops)
            return {"refused": f"the LiteRT interpreter cannot load onnx2tf's .tflite: {type(exc).__name__}: "
                               f"{str(exc)[:500]}"}
        details = runner.get_input_details()
        order = [match(name, list(details)) for name in names]
        shapes = [list(int(d) for d in details[key]["shape"]) for key in order]
        out_keys = list(runner.get_output_details())
        MODELS[request["id"]] = ("tflite", runner, (order, shapes, [match(n, out_keys) for n in outputs]
                                                   if len(outputs) == len(out_keys) else out_keys))
    return {"ok": {"convert_s": seconds, "input_shapes": shapes}}


def match(name: str, keys: list[str]) -> str:
    """The signature key for the ONNX tensor ``name`` (onnx2tf may sanitise names)."""
    if name in keys:
        return name
    close = [k for k in keys if k.replace(":", "_").rstrip("_0").endswith(name) or name in k]
    if len(close) == 1:
        return close[0]
    raise ValueError(f"no tensor named {name!r} in the .tflite signature ({keys})")


def run(request: dict[str, Any]) -> dict[str, Any]:
    kind, model, extra = MODELS[request["id"]]
    arrays = read(request["inputs"])
    try:
        if kind == "keras":
            given = [conform(a, s) for a, s in zip(arrays, extra, strict=True)]
            out = model(given if len(given) > 1 else given[0], training=False)
            got = [np.asarray(o) for o in out] if isinstance(out, list | tuple) else [np.asarray(out)]
        else:
            order, shapes, out_keys = extra
            feed = {key: conform(a, s) for key, a, s in zip(order, arrays, shapes, strict=True)}
            result = model(**feed)
            got = [np.asarray(result[k]) for k in out_keys]
    except Exception as exc:
        return {"refused": f"{type(exc).__name__}: {str(exc)[:500]}"}
    write(request["outputs"], got)
    return {"ok": {"outputs": len(got)}}


def drop(request: dict[str, Any]) -> dict[str, Any]:
    MODELS.pop(request["id"], None)
    return {"ok": {}}


def last_lines(text: str, count: int = 4) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(line[:300] for line in lines[-count:])


def main() -> None:
    replies = os.fdopen(int(sys.argv[1]), "w")
    os.dup2(2, 1)              # anything printed to stdout, from Python or C, goes to the log
    sys.stdout = sys.stderr
    handlers = {"hello": hello, "convert": convert, "run": run, "drop": drop}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            reply = handlers[request["op"]](request)
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
            reply = {"error": f"{type(exc).__name__}: {str(exc)[:500]}{where}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()

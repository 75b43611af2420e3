"""The litert-torch adapter: torch -> .tflite with ``litert_torch.convert``, run by the LiteRT interpreter.

litert-torch (formerly ai-edge-torch) lowers a ``torch.export`` program to a TFLite flatbuffer. It runs
in the suite's process: it needs no TensorFlow of its own, and its interpreter (``ai_edge_litert``)
loads beside the suite's TensorFlow. Its environment (``tox -e peer-litert``,
``constraints/peer-litert.txt``) is the suite's plus litert-torch's tree (jax, transformers, torchao,
ai-edge-quantizer ...); see the README for the one dependency conflict it has and how the env avoids it.

The converted model keeps torch's layout at its inputs and outputs (it transposes inside), so the
layouts are ``source``: nothing is left to guess. The adapter writes the ``.tflite`` file and runs that
file with the interpreter, as a deployment would, rather than litert-torch's in-memory wrapper.
Inputs are fed by the signature's names (``args_0`` ...) and outputs read back in the order of their
names (``output_0`` ...), which follows the flattened outputs of the torch module.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import Context, Converter, Refused, installed_version
from .onnx_routes import _missing


def _numbered(keys: Sequence[str]) -> list[str]:
    """Signature names in the order of their trailing number (``args_10`` after ``args_9``)."""
    def number(key: str) -> tuple[int, str]:
        found = re.search(r"(\d+)$", key)
        return (int(found.group(1)) if found else -1, key)
    return sorted(keys, key=number)


def feed(arrays: Sequence[np.ndarray], details: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """The interpreter's inputs: each array under its signature name, in the dtype the model declares
    (litert-torch narrows int64 indices to int32, for example); a count or shape that does not fit is
    the converted model's problem, raised as a refusal."""
    keys = _numbered(list(details))
    if len(keys) != len(arrays):
        raise Refused(f"the .tflite signature has {len(keys)} inputs ({keys}), the source model {len(arrays)}")
    fed = {}
    for key, array in zip(keys, arrays, strict=True):
        declared = tuple(int(d) for d in details[key]["shape"])
        if declared != tuple(array.shape):
            raise Refused(f"the .tflite input {key} is declared {declared}, the source model's input is {array.shape}")
        fed[key] = np.ascontiguousarray(array.astype(details[key]["dtype"], copy=False))
    return fed


class LiteRT(Converter):
    """torch -> .tflite with litert-torch; the file is run by the LiteRT interpreter."""

    name = "litert"
    directions = ("torch->tflite",)
    input_layout = "source"
    output_layout = "source"
    distribution = "litert-torch"

    def available(self) -> str | None:
        return _missing("litert_torch", "ai_edge_litert")

    def version(self) -> str:
        return f"{super().version()} (ai-edge-litert {installed_version('ai-edge-litert')})"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        import torch
        printed = io.StringIO()
        source.eval()
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)
        path = context.workdir / "model.tflite"
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            import litert_torch
            edge = litert_torch.convert(source, tensors)
            edge.export(str(path))
        from ai_edge_litert.interpreter import Interpreter
        try:
            runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
        except Exception as exc:
            raise Refused(f"the LiteRT interpreter cannot load litert-torch's .tflite: {type(exc).__name__}: "
                          f"{str(exc)[:400]}") from None
        details = runner.get_input_details()
        outputs = _numbered(list(runner.get_output_details()))

        def run(*arrays: np.ndarray) -> list[np.ndarray]:
            fed = feed(arrays, details)
            try:
                result = runner(**fed)
            except Exception as exc:
                raise Refused(f"{type(exc).__name__}: {str(exc)[:400]}") from None
            return [np.asarray(result[key]) for key in outputs]
        return run


__all__ = ["LiteRT", "feed"]

"""Adapters for the converters that go through ONNX.

- ``onnx2keras`` / ``onnx2keras-dynamo``: torch -> ONNX -> Keras 3 (onnx2keras). torch has two
  ONNX exporters, and they emit different graphs: the TorchScript one (``dynamo=False``, opset 17)
  and the torch.export one (``dynamo=True``, opset 18). Each is its own converter name, so the
  scoreboard shows where the exporter, not the converter, decides.
- ``onnx2torch``: Keras -> ONNX (tf2onnx, from the Keras model's call as a tf.function) -> torch
  (onnx2torch).

onnx2keras builds channels-first Keras layers (``change_ordering=False``, its default), so its
model reads and writes the source layout; onnx2torch keeps the Keras model's layout too.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import Context, Converter, Refused, installed_version


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not installed: {', '.join(absent)} (see constraints/peer-*.txt and tox -e peer-*)" if absent else None


def export_onnx(model: Any, inputs: Sequence[np.ndarray], path: str, *, dynamo: bool) -> list[str]:
    """Export a torch module with one of torch's two exporters; returns the ONNX input names."""
    import torch
    names = [f"input_{i}" for i in range(len(inputs))]
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)
    model.eval()
    if dynamo:
        torch.onnx.export(model, tensors, path, input_names=names, opset_version=18, dynamo=True,
                          external_data=False, verbose=False)
    else:
        torch.onnx.export(model, tensors, path, input_names=names, opset_version=17, dynamo=False)
    return names


class Onnx2Keras(Converter):
    """torch -> ONNX (TorchScript exporter, opset 17) -> Keras 3 with onnx2keras."""

    name = "onnx2keras"
    directions = ("torch->keras",)
    input_layout = "source"
    output_layout = "source"
    distribution = "onnx2keras"
    dynamo = False

    def available(self) -> str | None:
        return _missing("onnx", "onnx2keras", *(("onnxscript",) if self.dynamo else ()))

    def version(self) -> str:
        import torch
        return f"{super().version()} (torch {torch.__version__.split('+')[0]} exporter " \
               f"{'dynamo, opset 18' if self.dynamo else 'TorchScript, opset 17'})"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        import keras
        import onnx
        from onnx2keras import onnx_to_keras
        path = str(context.workdir / "model.onnx")
        try:
            names = export_onnx(source, inputs, path, dynamo=self.dynamo)
        except Exception as exc:
            raise Refused(f"torch's ONNX exporter ({'dynamo' if self.dynamo else 'TorchScript'}) "
                          f"refused: {type(exc).__name__}: {str(exc)[:400]}") from None
        proto = onnx.load(path)
        before = keras.backend.image_data_format()
        try:
            model = onnx_to_keras(proto, names, verbose=False, name_policy="renumerate")
        finally:
            keras.backend.set_image_data_format(before)   # onnx2keras switches it globally

        def run(*arrays: np.ndarray) -> Any:
            out = model(list(arrays) if len(arrays) > 1 else arrays[0], training=False)
            return [np.asarray(o) for o in out] if isinstance(out, list | tuple) else np.asarray(out)
        return run


class Onnx2KerasDynamo(Onnx2Keras):
    """torch -> ONNX (torch.export exporter, opset 18) -> Keras 3 with onnx2keras."""

    name = "onnx2keras-dynamo"
    dynamo = True


def declare_torchvision_ops() -> None:
    """Let the registry's torchvision import beside CPU torch.

    The torchvision wheels on the registry are CUDA builds: their C++ ops fail to load against a CPU
    torch, and the import then stops at the fake-tensor registrations of ``torchvision::nms`` and
    ``torchvision::qnms``, which (unlike the other ops) are registered without checking that the
    ops exist. onnx2torch (and nobuco) import torchvision but need its ops only for NMS/RoIAlign
    graphs, so declaring those two schemas first makes the import work; calling the ops still fails,
    loudly, as it should without their kernels.
    """
    import sys

    import torch
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as exc:
        if "does not exist" not in str(exc):
            raise
    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module]
    library = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        with contextlib.suppress(RuntimeError):      # already declared
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(library)               # a Library object undoes its definitions when collected
    import torchvision  # noqa: F401,F811


_KEEP: list[Any] = []


class Onnx2Torch(Converter):
    """Keras -> ONNX (tf2onnx, opset 17) -> torch with onnx2torch."""

    name = "onnx2torch"
    directions = ("keras->torch",)
    input_layout = "source"
    output_layout = "source"
    distribution = "onnx2torch"

    def available(self) -> str | None:
        return _missing("onnx", "onnx2torch", "tf2onnx", "torchvision")

    def version(self) -> str:
        tf2onnx = installed_version("tf2onnx")
        return f"{super().version()} (tf2onnx {tf2onnx}, opset 17)"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        import tensorflow as tf
        declare_torchvision_ops()
        import tf2onnx
        import torch
        from onnx2torch import convert
        signature = [tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype), name=f"input_{i}")
                     for i, a in enumerate(inputs)]

        @tf.function(input_signature=signature)
        def call(*tensors: Any) -> Any:
            return source(list(tensors) if len(tensors) > 1 else tensors[0], training=False)

        try:
            proto, _ = tf2onnx.convert.from_function(call, input_signature=signature, opset=17)
        except Exception as exc:
            raise Refused(f"tf2onnx refused: {type(exc).__name__}: {str(exc)[:400]}") from None
        module = convert(proto)
        module.eval()

        def run(*arrays: np.ndarray) -> Any:
            with torch.no_grad():
                return module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return run


__all__ = ["Onnx2Keras", "Onnx2KerasDynamo", "Onnx2Torch", "declare_torchvision_ops", "export_onnx"]

"""The nobuco adapter: torch -> Keras 2 (``tf-keras``) by tracing the torch model.

nobuco imports ``keras`` and expects Keras 2 there (``keras.src.engine``); the suite runs Keras 3
under that name. ``tf-keras`` is Keras 2 under the name ``tf_keras``, so while nobuco is imported
and while it converts, ``keras`` in ``sys.modules`` points at ``tf_keras``, and the suite's Keras 3
modules are put back afterwards. Modules bind what they imported, so each side keeps its own
Keras: the pairs the suite built stay Keras 3, nobuco's models are tf-keras models.

Inputs and outputs are kept in torch's layout (``ChannelOrder.PYTORCH``): nobuco then transposes
inside the graph, and nothing is left to guess. nobuco prints a trace of the conversion and
"Conversion complete"; the adapter keeps its last lines as notes, not as a verdict.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from . import Context, Converter, installed_version
from .onnx_routes import _missing, declare_torchvision_ops


@contextlib.contextmanager
def keras2_as_keras() -> Iterator[None]:
    """``import keras`` gives tf-keras (Keras 2) inside the block; Keras 3's modules return after it."""
    import tf_keras
    saved = {k: v for k, v in sys.modules.items() if k == "keras" or k.startswith("keras.")}
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    for name in saved:
        del sys.modules[name]
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    sys.modules["keras"] = tf_keras
    for name, module in list(sys.modules.items()):
        if name.startswith("tf_keras."):
            sys.modules["keras." + name[len("tf_keras."):]] = module
    try:
        yield
    finally:
        for name in [k for k in sys.modules if k == "keras" or k.startswith("keras.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous


class Nobuco(Converter):
    """torch -> Keras 2 (tf-keras) with nobuco, torch layout in and out."""

    name = "nobuco"
    directions = ("torch->keras",)
    input_layout = "source"
    output_layout = "source"
    distribution = "nobuco"

    def available(self) -> str | None:
        return _missing("nobuco", "tf_keras", "torchvision")

    def version(self) -> str:
        tf_keras = installed_version("tf-keras")
        return f"{super().version()} (tf-keras {tf_keras})"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        import torch
        declare_torchvision_ops()
        printed = io.StringIO()
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        source.eval()
        with keras2_as_keras(), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            import nobuco
            from nobuco import ChannelOrder
            model = nobuco.pytorch_to_keras(source, args=tensors, inputs_channel_order=ChannelOrder.PYTORCH,
                                            outputs_channel_order=ChannelOrder.PYTORCH)
        text = re.sub(r"\x1b\[[0-9;]*m", "", printed.getvalue())
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        context.notes.extend(line for line in lines[-3:] if "Conversion" in line or "Warning" in line)

        def run(*arrays: np.ndarray) -> Any:
            out = model(list(arrays) if len(arrays) > 1 else arrays[0], training=False)
            return [np.asarray(o) for o in out] if isinstance(out, list | tuple) else np.asarray(out)
        return run


__all__ = ["Nobuco", "keras2_as_keras"]

"""Converters under test: the catalogue judges any PyTorch <-> Keras/TF converter, not only our own.

A converter is a small adapter (:class:`Converter`): a name, a version, a direction
(``torch->keras``, ``keras->torch`` or ``torch->tflite``), the layouts of what it produces, and one
function, :meth:`Converter.convert`, that takes the source model and seeded example inputs and
returns something callable on the target side. The runner builds the source side of each case,
randomises it, converts it, runs the result on the same inputs and compares it with the source
model (:mod:`conformance.converters.peer`).

``transfer_weights`` is the built-in adapter: it is the path every default run takes, so a run
with ``--converter transfer_weights`` is today's run. Other adapters are found through the entry
point group ``conformance.converters`` (a converter's own repository can ship one; the adapters
of this package are registered there too, and also listed here, so that a source checkout finds
them without being installed).

Layouts name how the target side reads and writes tensors of rank >= 3: ``source`` (as the
source model, e.g. NCHW from torch), ``channels_last`` / ``channels_first`` (always so), or
``guess`` (the converter decides per tensor, like onnx2tf). A guessing converter cannot be
judged on a tensor that reads the same both ways (an 8x8x8 map): such cases are skipped for it.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ConformanceError

ENTRY_POINT_GROUP = "conformance.converters"
CONVERTER_DIRECTIONS = ("torch->keras", "keras->torch", "torch->tflite")
LAYOUTS = ("source", "channels_first", "channels_last", "guess")
DEFAULT = "transfer_weights"


class ConverterError(ConformanceError):
    """An adapter that cannot be found, loaded, or is malformed; the message names it."""


class Refused(Exception):  # noqa: N818  (a verdict, not a bug of ours)
    """Raised by an adapter when its converter declined the model, so the case is ``refused``."""


@dataclass
class Context:
    """What an adapter may need beside the source model: the case's pair (the built-in adapter fills
    the other side of it), the direction, a scratch directory for exported files, the case id."""

    pair: Any
    direction: str
    workdir: Path
    case_id: str = ""
    mapping: list[dict[str, Any]] = field(default_factory=list)   # the built-in adapter's weight mapping
    notes: list[str] = field(default_factory=list)                # what the converter printed or decided
    memo: dict[str, Any] | None = None     # the runner's per-pair memo: the second direction reuses the pairing
    # Times the adapter measured itself (seconds), recorded in the result's timings; a "convert" here replaces
    # the runner's clock around convert() (an adapter whose converter runs in a worker process leaves out the
    # worker's start and the file round trips).
    timings: dict[str, float] = field(default_factory=dict)


def installed_version(distribution: str) -> str:
    """An installed distribution's version, or "not installed"."""
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return "not installed"


class Converter:
    """Base class of adapters. Subclasses set the class attributes and implement ``convert``."""

    name: ClassVar[str] = ""
    directions: ClassVar[tuple[str, ...]] = ()
    input_layout: ClassVar[str] = "source"
    output_layout: ClassVar[str] = "source"
    distribution: ClassVar[str] = ""          # the package whose version is reported

    def version(self) -> str:
        return installed_version(self.distribution) if self.distribution else "unknown"

    def available(self) -> str | None:
        """None when the converter can run here, else why not (a missing package, in words)."""
        return None

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        """The target-side callable for ``source``; takes the inputs (in ``input_layout``) as
        positional arrays and returns one output or a list of them. Raise :class:`Refused` (or let the
        converter's own exception through) when the converter declines."""
        raise NotImplementedError

    def fact(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version(), "directions": list(self.directions)}


class TransferWeights(Converter):
    """The built-in adapter: copy the source model's weights into the pair's other side, which was
    built layer for layer by the family (``conformance.transfer.transfer_weights``)."""

    name = DEFAULT
    directions = ("torch->keras", "keras->torch")
    input_layout = "channels_last"     # for the Keras side of spatial families; the runner decides per pair
    output_layout = "channels_last"
    distribution = "conformance"

    def convert(self, source: Any, inputs: Sequence[np.ndarray], context: Context) -> Callable[..., Any]:
        from dataclasses import asdict

        from ..transfer import transfer_between_twins, transfer_weights
        pair = context.pair
        destination = pair.keras if source is pair.torch else pair.torch
        report = (transfer_between_twins(source, destination, context.memo) if context.memo is not None
                  else transfer_weights(source, destination))
        context.mapping = [asdict(row) for row in report]
        return destination


# The adapters of this package: name -> "module:Class". Entry points add (or override) others.
BUILTIN: dict[str, str] = {
    DEFAULT: "conformance.converters:TransferWeights",
    "onnx2keras": "conformance.converters.onnx_routes:Onnx2Keras",
    "onnx2keras-dynamo": "conformance.converters.onnx_routes:Onnx2KerasDynamo",
    "onnx2torch": "conformance.converters.onnx_routes:Onnx2Torch",
    "nobuco": "conformance.converters.nobuco_adapter:Nobuco",
    "onnx2tf": "conformance.converters.onnx2tf_adapter:Onnx2Tf",
    "onnx2tf-dynamo": "conformance.converters.onnx2tf_adapter:Onnx2TfDynamo",
    "onnx2tf-tflite": "conformance.converters.onnx2tf_adapter:Onnx2TfTflite",
    "onnx2tf-tflite-dynamo": "conformance.converters.onnx2tf_adapter:Onnx2TfTfliteDynamo",
    "litert": "conformance.converters.litert_adapter:LiteRT",
}


def registered() -> dict[str, str]:
    """Every adapter name with where it lives: this package's, then the entry points'."""
    table = dict(BUILTIN)
    for point in md.entry_points(group=ENTRY_POINT_GROUP):
        table[point.name] = point.value
    return table


def get(name: str) -> Converter:
    """The adapter called ``name``, instantiated and checked; ConverterError says what is wrong."""
    table = registered()
    if name not in table:
        raise ConverterError(f"--converter {name}: no such converter; known: {', '.join(sorted(table))} "
                             f"(adapters register under the entry point group {ENTRY_POINT_GROUP!r})")
    target = table[name]
    module_name, _, attribute = target.partition(":")
    try:
        adapter_class = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConverterError(f"converter {name}: cannot load {target}: {type(exc).__name__}: {exc}") from None
    adapter = adapter_class()
    if not isinstance(adapter, Converter):
        raise ConverterError(f"converter {name}: {target} is not a conformance.converters.Converter")
    bad = [d for d in adapter.directions if d not in CONVERTER_DIRECTIONS]
    if not adapter.directions or bad:
        raise ConverterError(f"converter {name}: directions {list(adapter.directions)} must be some of "
                             f"{CONVERTER_DIRECTIONS}")
    for which in ("input_layout", "output_layout"):
        if getattr(adapter, which) not in LAYOUTS:
            raise ConverterError(f"converter {name}: {which} {getattr(adapter, which)!r} is not one of {LAYOUTS}")
    return adapter


__all__ = ["CONVERTER_DIRECTIONS", "DEFAULT", "ENTRY_POINT_GROUP", "Context", "Converter", "ConverterError",
           "Refused", "TransferWeights", "get", "registered"]

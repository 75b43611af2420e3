"""Which conformance family covers a layer type, and how that family fared in a results file.

A torch layer type is covered by the families whose ``torch_class`` it is (the registry in
:mod:`conformance.families`). Keras classes are not recorded by the families (a family builds
its Keras side in code), so :data:`KERAS_FAMILIES` lists them here; ``tests/test_files.py``
checks that every family it names exists. A type that a converter moves weights for but no
family measures is reported as such: converted, but with no cases behind it.
Nothing here imports torch or keras.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_RESULTS = Path("reports/latest/results.json")


def _dims(template: str, families: str, dims: Iterable[int] = (1, 2, 3)) -> dict[str, tuple[str, ...]]:
    return {template.format(n=n): tuple(f.format(n=n) for f in families.split()) for n in dims}


KERAS_FAMILIES: dict[str, tuple[str, ...]] = {
    **_dims("Conv{n}D", "conv{n}d"), **_dims("Conv{n}DTranspose", "conv_transpose{n}d"),
    **_dims("DepthwiseConv{n}D", "conv{n}d", (1, 2)), **_dims("SeparableConv{n}D", "separable_conv{n}d", (1, 2)),
    **_dims("MaxPooling{n}D", "max_pool{n}d"), **_dims("AveragePooling{n}D", "avg_pool{n}d"),
    **_dims("GlobalAveragePooling{n}D", "adaptive_avg_pool{n}d"),
    **_dims("GlobalMaxPooling{n}D", "adaptive_max_pool{n}d"),
    "Dense": ("linear",), "Embedding": ("embedding",), "MultiHeadAttention": ("multihead_attention",),
    "LayerNormalization": ("layer_norm",), "GroupNormalization": ("group_norm", "instance_norm1d", "instance_norm2d"),
    "BatchNormalization": ("batch_norm1d", "batch_norm2d", "batch_norm3d"),
    "LSTM": ("lstm",), "GRU": ("gru",), "SimpleRNN": ("rnn",),
    "Flatten": ("flatten",), "Dropout": ("dropout",), "UpSampling2D": ("upsample",), "ZeroPadding2D": ("zero_pad2d",),
    "ReLU": ("relu",), "LeakyReLU": ("leaky_relu",), "ELU": ("elu",), "PReLU": ("prelu",), "Softmax": ("softmax",),
}

# Keras activation names (a layer's ``activation=`` or an ``Activation`` layer) -> family.
ACTIVATION_FAMILIES = {
    "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax", "log_softmax": "log_softmax",
    "gelu": "gelu", "leaky_relu": "leaky_relu", "elu": "elu", "selu": "selu", "silu": "silu", "swish": "silu",
    "hard_swish": "hardswish", "hard_silu": "hardswish", "hard_sigmoid": "hardsigmoid", "softplus": "softplus",
}

# torch classes that are another class under a different name.
TORCH_ALIASES = {"NonDynamicallyQuantizableLinear": "Linear", "UpsamplingNearest2d": "Upsample",
                 "UpsamplingBilinear2d": "Upsample"}


def families_for(framework: str, layer_type: str) -> tuple[list[str], str | None]:
    """The families covering ``layer_type`` (a class name), and a converter name when only it knows the type.

    ``layer_type`` may be ``activation:NAME`` for a Keras activation.
    """
    from .families import converters, families
    if layer_type.startswith("activation:"):
        family = ACTIVATION_FAMILIES.get(layer_type.split(":", 1)[1])
        return ([family] if family else []), None
    if framework == "torch":
        name = TORCH_ALIASES.get(layer_type, layer_type)
        found = [f.name for f in families().values() if f.torch_class == name]
        converter = next((c.name for c in converters() if name in c.torch_types), None)
    else:
        found = list(KERAS_FAMILIES.get(layer_type, ()))
        converter = next((c.name for c in converters() if layer_type in c.keras_types), None)
    return found, (None if found else converter)


@dataclass(frozen=True)
class FamilyResults:
    """One family's results in a run: counts per outcome, and the worst headroom of its passing cases."""

    family: str
    counts: Mapping[str, int]
    worst_headroom: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def verdict(self) -> str:
        if not self.total:
            return "no cases in the results"
        bad = {k: v for k, v in self.counts.items() if k in ("failed", "error", "xpass") and v}
        parts = [f"{v} {k.upper()}" for k, v in bad.items()]
        parts.append(f"{self.counts.get('passed', 0)}/{self.total} passed")
        parts += [f"{self.counts[k]} {label}" for k, label in (("divergence", "recorded divergences"),
                                                               ("unsupported", "recorded refusals"),
                                                               ("skipped", "skipped")) if self.counts.get(k)]
        text = ", ".join(parts)
        if self.worst_headroom is not None:
            text += f"; worst headroom {self.worst_headroom:.2g}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "results": self.total, "counts": dict(self.counts),
                "worst_headroom": self.worst_headroom, "verdict": self.verdict()}


@dataclass(frozen=True)
class ResultsIndex:
    """A results file, summarised by family; ``source`` is what it was read from."""

    source: str
    created: str
    by_family: Mapping[str, FamilyResults]

    def get(self, family: str) -> FamilyResults:
        return self.by_family.get(family, FamilyResults(family, {}, None))


def load_results(path: str | os.PathLike[str] | None) -> ResultsIndex | None:
    """The results to report against: ``path``, else ``reports/latest/results.json`` if it exists.

    A path that was asked for and cannot be read is an error (:class:`FileError`); a missing
    default is "no results".
    """
    from . import results as results_file
    from .files import FileError
    chosen = Path(path) if path is not None else DEFAULT_RESULTS
    if path is None and not chosen.is_file():
        return None
    try:
        document = results_file.load(chosen)
    except results_file.ResultsError as exc:
        raise FileError(str(exc)) from None
    counts: dict[str, Counter[str]] = {}
    worst: dict[str, float] = {}
    for case in document["cases"]:
        family = case.get("family") or case["id"].split("[", 1)[0]
        counts.setdefault(family, Counter())[case["outcome"]] += 1
        headroom = case.get("headroom")
        if case["outcome"] == "passed" and isinstance(headroom, int | float):
            worst[family] = max(worst.get(family, 0.0), float(headroom))
    return ResultsIndex(str(chosen), str(document.get("created", "")),
                        {f: FamilyResults(f, dict(c), worst.get(f)) for f, c in counts.items()})


__all__ = ["ACTIVATION_FAMILIES", "DEFAULT_RESULTS", "KERAS_FAMILIES", "FamilyResults", "ResultsIndex",
           "families_for", "load_results"]

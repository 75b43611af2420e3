"""When a framework refuses to run a case: who refused, with what words, and how to record it.

A refusal is an exception raised inside torch, TensorFlow, Keras or JAX while a case runs (or a
Keras layer that cannot be built for the configuration). Where a case file records it as
``[[unsupported]]`` for this environment it is the ``unsupported`` outcome; anywhere else it
stays an ``error`` whose message names the framework and shows the record to add.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The package a traceback frame belongs to, by the top-level directory under site-packages.
_PACKAGES = {"tensorflow": "tensorflow", "tf_keras": "keras", "keras": "keras", "torch": "torch", "jax": "jax",
             "jaxlib": "jax", "numpy": "", "conformance": ""}
NAMES = {"tensorflow": "TensorFlow", "keras": "Keras", "torch": "PyTorch", "jax": "JAX"}


def plain(text: str) -> str:
    """Text without terminal colour codes (Keras puts bold codes into its exception messages)."""
    return _ANSI.sub("", text)


def _package_of(filename: str) -> str | None:
    parts = PurePath(filename).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in _PACKAGES and (i > 0 and parts[i - 1] in ("site-packages", "dist-packages")
                                      or parts[i] == "conformance"):
            return _PACKAGES[parts[i]]
    return None


@dataclass(frozen=True)
class Refusal:
    """A framework's refusal: which framework raised, on which side of the pair, and its words."""

    framework: str        # tensorflow, keras, torch or jax: the innermost framework frame
    side: str             # "keras" when the Keras model was running (on any backend), else "torch"
    text: str             # the exception's message, without colour codes

    def describe(self) -> str:
        caller = "" if self.framework == self.side or self.framework == "keras" else (
            f" (called by the {'Keras model' if self.side == 'keras' else 'torch module'})")
        text = "\n    ".join(line for line in self.text.splitlines() if line.strip())
        return f"{NAMES[self.framework]}{caller} refuses this configuration: {text}"


def refusal_from(exc: BaseException) -> Refusal | None:
    """The refusal an exception stands for, or None when it was raised by our own code (a bug to fix,
    not a framework limit) or by no framework at all."""
    frames = traceback.extract_tb(exc.__traceback__)
    owners = [_package_of(frame.filename) for frame in frames]
    innermost = next((owner for owner in reversed(owners) if owner is not None), None)
    if not innermost:          # raised in conformance or numpy: ours
        return None
    side = "keras" if "keras" in owners else "torch"
    return Refusal(innermost, side, plain(f"{type(exc).__name__}: {exc}").strip())


def message_key(text: str) -> str:
    """A part of the framework's message to put in a record: its most specific line, without the
    values that change from case to case (shapes, node names)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    specific = [line for line in lines if "Exception encountered when calling" not in line
                and not line.startswith("Arguments received") and not line.startswith("•")]
    line = (specific or lines or [""])[0]
    line = re.sub(r"^\w+(Error|Exception): ", "", line)
    line = re.sub(r"\{\{.*?\}\}", "", line)
    line = re.split(r"\[Op:", line)[0]
    return line.strip().strip(".")[:160]


def record_hint(refusal: Refusal, file: str, params: Mapping[str, Any], facts: Mapping[str, Any]) -> str:
    """The ``[[unsupported]]`` record that would accept this refusal, for the error message."""
    key = message_key(refusal.text).replace('"', "'")
    scope = {"keras_backend": facts.get("keras_backend"), "onednn": facts.get("onednn")}
    env = ", ".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}".replace("'", '"')
                    for k, v in scope.items() if v is not None)
    when = ", ".join(f"{k} = [{_toml(v)}]" for k, v in params.items())
    return ("if this is a limitation of the framework in this environment (not a conversion bug), record it in "
            f"{file or 'the case file'} and narrow `when` and `environment` to what explains it:\n"
            f"    [[unsupported]]\n    when = {{ {when} }}\n    framework = \"{refusal.framework}\"\n"
            f"    message = \"{key}\"\n    environment = {{ {env} }}\n    reason = \"what refuses, where, and why\"")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


__all__ = ["NAMES", "Refusal", "message_key", "plain", "record_hint", "refusal_from"]

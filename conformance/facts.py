"""The environment facts a verdict depends on: CPU, instruction set, oneDNN, Keras backend, device.

One pinned torch and TensorFlow still run different kernels on different machines: TensorFlow
enables oneDNN only on some CPUs (and ``TF_ENABLE_ONEDNN_OPTS`` overrides it), oneDNN picks its
kernels by instruction set (``ONEDNN_MAX_CPU_ISA`` caps it), torch picks its own by
``torch.backends.cpu.get_cpu_capability()``, and each Keras backend is its own implementation.
So the results file records these facts, and divergence and refusal records name the ones that
explain them (``environment = { onednn = true, onednn_isa = ["avx512", "amx"] }``).

The facts a record may be scoped on are :data:`SCOPES`; :func:`collect` gathers everything for
the results file. Facts are read as the frameworks resolved them, not from the environment
variables alone.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from functools import cache
from typing import Any

# Facts a record can be scoped on, with the values each may take (None: any string).
SCOPES: dict[str, tuple[Any, ...] | None] = {
    "keras_backend": ("tensorflow", "torch", "jax"),
    "onednn": (True, False),          # the Keras backend's CPU kernels run on oneDNN
    "onednn_isa": ("none", "sse41", "avx", "avx2", "avx512", "amx"),   # the kernels oneDNN can pick
    "isa": None,                      # torch.backends.cpu.get_cpu_capability(), lower case: avx2, avx512, ...
    "torch_device": ("cpu", "cuda"),
    "machine": None,                  # platform.machine(): x86_64, aarch64, ...
}

# ISA classes in order; oneDNN's ONEDNN_MAX_CPU_ISA names map onto them.
_ISA_ORDER = ("none", "sse41", "avx", "avx2", "avx512", "amx")
_CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    """The CPU's model name and flags (Linux); elsewhere the platform's processor and no flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            text = info.read()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def _cpu_isa_class(flags: set[str]) -> str:
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "amx" if "amx_tile" in flags else "avx512"
    for name, needs in (("avx2", "avx2"), ("avx", "avx"), ("sse41", "sse4_1")):
        if needs in flags:
            return name
    return "none"


def _onednn_cap() -> str | None:
    """The ISA class that ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA) caps oneDNN at."""
    raw = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if not raw or raw == "ALL":
        return None
    if "AMX" in raw:
        return "amx"
    if raw.startswith("AVX512") or raw.startswith("AVX10"):
        return "avx512"
    if raw.startswith("AVX2"):
        return "avx2"
    if raw.startswith("AVX"):
        return "avx"
    return "sse41"


def onednn_isa(flags: set[str]) -> str:
    """The best kernel class oneDNN can use: the CPU's, capped by ONEDNN_MAX_CPU_ISA."""
    best = _cpu_isa_class(flags)
    cap = _onednn_cap()
    if cap is not None and _ISA_ORDER.index(cap) < _ISA_ORDER.index(best):
        return cap
    return best


def keras_backend() -> str:
    import keras
    return str(keras.backend.backend())


def tensorflow_onednn() -> bool | None:
    """Whether TensorFlow resolved oneDNN on (its CPU check and TF_ENABLE_ONEDNN_OPTS together);
    None where TensorFlow is not installed, or not loaded on another Keras backend (importing it
    only to ask would cost seconds and print its start-up notices)."""
    import sys
    if "tensorflow" not in sys.modules and keras_backend() != "tensorflow":
        return None
    try:
        import torch  # noqa: F401  (torch before tensorflow)
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def torch_mkldnn() -> bool:
    import torch
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def backend_onednn(backend: str) -> bool:
    """Whether the Keras backend's CPU kernels run on oneDNN: TensorFlow's resolved switch, torch's
    mkldnn, and never for JAX (XLA's own CPU kernels)."""
    if backend == "tensorflow":
        return bool(tensorflow_onednn())
    if backend == "torch":
        return torch_mkldnn()
    return False


@cache
def scope_facts(torch_device: str = "cpu") -> dict[str, Any]:
    """The facts records are scoped on, for this process. Cached: none of them changes in a run."""
    import torch
    _, flags = _cpuinfo()
    backend = keras_backend()
    return {
        "keras_backend": backend,
        "onednn": backend_onednn(backend),
        "onednn_isa": onednn_isa(flags),
        "isa": str(torch.backends.cpu.get_cpu_capability()).lower(),
        "torch_device": "cuda" if torch_device.startswith("cuda") else "cpu",
        "machine": platform.machine(),
    }


def collect(torch_device: str = "cpu") -> dict[str, Any]:
    """Everything the results file records about the machine, for the report header and the gate."""
    import torch
    model, flags = _cpuinfo()
    facts: dict[str, Any] = dict(scope_facts(torch_device))
    facts["cpu"] = model
    facts["cpu_flags"] = {flag: flag in flags for flag in _CPU_FLAGS}
    facts["tensorflow_onednn"] = tensorflow_onednn()
    facts["torch_mkldnn"] = torch_mkldnn()
    threads: dict[str, Any] = {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                               "cpu_count": os.cpu_count()}
    if facts["keras_backend"] == "tensorflow":
        import tensorflow as tf
        threads["tensorflow_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        threads["tensorflow_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    facts["threads"] = threads
    facts["variables"] = {name: os.environ[name] for name in
                          ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                           "KERAS_BACKEND", "OMP_NUM_THREADS") if name in os.environ}
    facts["class"] = environment_class(facts)
    return facts


def environment_class(facts: Mapping[str, Any]) -> str:
    """A short name for the kernels a run used: the Keras backend and whether it ran on oneDNN,
    ``tensorflow-onednn-on``. Baselines are kept per class, so that the gate compares a run with a
    baseline made on the same kind of kernels; the finer facts (the oneDNN ISA) are compared by
    :mod:`conformance.diff`, record by record."""
    backend = facts.get("keras_backend") or "unknown"
    return f"{backend}-onednn-{'on' if facts.get('onednn') else 'off'}"


def describe(facts: Mapping[str, Any]) -> str:
    """One line for terminals and logs: the facts that explain kernel choices."""
    onednn = f"on (kernels up to {facts.get('onednn_isa', '?')})" if facts.get("onednn") else "off"
    return (f"{facts.get('cpu', '?')}; isa {facts.get('isa', '?')}; Keras backend {facts.get('keras_backend', '?')}; "
            f"oneDNN {onednn}; torch on {facts.get('torch_device')}")


def in_scope(scope: Mapping[str, tuple[Any, ...]], facts: Mapping[str, Any]) -> bool:
    """Whether every fact a record names has one of the record's values here."""
    return all(facts.get(key) in values for key, values in scope.items())


__all__ = ["SCOPES", "collect", "describe", "environment_class", "in_scope", "scope_facts"]

"""Settings for the benchmarks: options, the framework versions in pytest-benchmark's machine info.

Run them apart from the tests (they are not in ``testpaths``)::

    pytest benchmarks --benchmark-json=benchmark.json
    python -m conformance.bench attach reports/latest/results.json benchmark.json --report
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import torch  # noqa: E402  (must be imported before tensorflow)

from conformance.bench import DEFAULT_MODES  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance benchmarks")
    group.addoption("--bench-cases-per-family", type=int, default=1, metavar="N",
                    help="representative cases per family: the first N usable ones of each case file (default 1)")
    group.addoption("--bench-budget", type=float, default=0.1, metavar="SECONDS",
                    help="measuring time per benchmark, warm-up and compilation not counted (default 0.1)")
    group.addoption("--bench-modes", default=DEFAULT_MODES, metavar="LIST",
                    help=f"comma-separated modes to time (default {DEFAULT_MODES}); also 'compiled' "
                         "(torch.compile: slow to compile on a small CPU machine) and 'graph' (Keras tf.function)")
    group.addoption("--bench-threads", type=int, default=1, metavar="N",
                    help="CPU threads for torch and for TensorFlow (default 1: on a small, shared machine "
                         "two-thread torch waits on its OpenMP barrier for milliseconds; 0: each framework's "
                         "own default)")
    group.addoption("--bench-cases", default=None, metavar="DIR", help="the case catalogue (default: cases)")


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption("--bench-threads", None)
    if threads:
        from conformance.bench import set_threads
        set_threads(threads)


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-benchmark, which test_bench.py requires
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    from conformance.runner import installed_versions
    info: dict[str, Any] = dict(installed_versions())
    import tensorflow as tf
    info["torch_threads"] = torch.get_num_threads()
    info["tensorflow_threads"] = tf.config.threading.get_intra_op_parallelism_threads() or "default"
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine_info["conformance"] = info

"""Conversion and inference speed of each family's representative cases, per framework, mode, batch and device.

Ids read ``test_inference[conv2d[o6-k1-...]-keras-xla-b32-cpu]`` and
``test_transfer[conv2d[o6-k1-...]-torch->keras]``. Each benchmark carries its labels in
``extra_info``, which :func:`conformance.bench.summarise` reads. A mode that cannot compile a case
skips with the reason; so does CUDA without a GPU. Times are measured for about
``--bench-budget`` seconds each, after warm-up and compilation.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark", reason="the benchmarks need pytest-benchmark: pip install -e '.[bench]'")

from conformance import bench  # noqa: E402
from conformance.errors import ConformanceError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@cache
def _cases(directory: str, per_family: int) -> list[Any]:
    return bench.representative_cases(directory, per_family=per_family)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    cases = _cases(str(config.getoption("--bench-cases") or ROOT / "cases"),
                   config.getoption("--bench-cases-per-family"))
    if metafunc.definition.name == "test_transfer":
        metafunc.parametrize(("case", "direction"), [
            pytest.param(c, d, id=f"{c.id}-{d}") for c in cases for d in bench.DIRECTIONS])
    elif metafunc.definition.name == "test_inference":
        modes = bench.parse_modes(config.getoption("--bench-modes"))
        sides = [("torch", m, d) for d in bench.DEVICES for m in bench.TORCH_MODES if m in modes]
        sides += [("keras", m, bench.keras_device()) for m in bench.KERAS_MODES if m in modes]
        metafunc.parametrize(("case", "framework", "mode", "batch", "device"), [
            pytest.param(c, f, m, b, d, id=f"{c.id}-{f}-{m}-b{b}-{d}")
            for c in cases for b in bench.BATCHES for f, m, d in sides])


def _pair(case: Any) -> Any:
    try:
        return bench.pair_for(case)
    except ConformanceError as exc:   # Keras cannot express it, or the parameters are invalid
        pytest.skip(f"{case.id}: no pair to time: {exc}")


def _label(benchmark: Any, case: Any, group: str, **labels: Any) -> None:
    benchmark.group = group
    benchmark.extra_info.update(family=case.family, case=case.id, **labels)


def _measure(benchmark: Any, call: Any, config: pytest.Config) -> None:
    rounds, iterations = bench.plan_rounds(call, budget_s=config.getoption("--bench-budget"))
    benchmark.pedantic(call, rounds=rounds, iterations=iterations, warmup_rounds=1)


def test_transfer(benchmark: Any, case: Any, direction: str, pytestconfig: pytest.Config) -> None:
    pair = _pair(case)
    _label(benchmark, case, f"{case.family} transfer", what=f"transfer {direction}", framework="conformance",
           mode="eager", batch=None, device="cpu", device_name=bench.device_name("conformance", "cpu"))
    _measure(benchmark, bench.transfer_callable(pair, direction), pytestconfig)


def test_inference(benchmark: Any, case: Any, framework: str, mode: str, batch: int, device: str,
                   pytestconfig: pytest.Config) -> None:
    reason = bench.device_skip_reason(framework, device)
    if reason:
        pytest.skip(reason)
    pair = _pair(case)
    if bench.batch_axis(case) is None:
        pytest.skip(f"{case.id}: the model is built for one batch size")
    inputs = bench.inputs_for(case, pair, batch)
    try:
        if framework == "torch":
            call = bench.torch_callable(pair.torch, inputs, mode, device)
        else:
            call = bench.keras_callable(pair.keras, inputs, mode, pair.channels_last)
    except bench.BenchError:
        raise
    except Exception as exc:
        if mode == "eager":
            raise
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        pytest.skip(f"{framework} {mode} does not work for {case.id}: {type(exc).__name__}: {first}")
    _label(benchmark, case, f"{case.family} inference b{batch}", what="inference", framework=framework,
           mode=mode, batch=batch, device=device, device_name=bench.device_name(framework, device))
    _measure(benchmark, call, pytestconfig)

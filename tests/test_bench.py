"""conformance.bench without timing anything: the summary, attaching it, the report section, devices."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import tensorflow_backend_only

from conformance import bench
from conformance import results as results_file
from conformance.report import render


def _bench(name: str, stats: tuple[float, float, float], rounds: int = 20, **info: Any) -> dict[str, Any]:
    low, median, high = stats
    return {"group": info.get("family"), "name": name, "fullname": f"benchmarks/test_bench.py::{name}",
            "params": None, "extra_info": info, "options": {"timer": "perf_counter"},
            "stats": {"min": low, "max": high, "median": median, "mean": median * 1.1, "stddev": 1e-6,
                      "rounds": rounds, "iterations": 3, "iqr": 1e-6, "ops": 1 / median, "total": median * rounds}}


def _inference(case: str, framework: str, mode: str, batch: int, stats: tuple[float, float, float],
               device: str = "cpu") -> dict[str, Any]:
    return _bench(f"test_inference[{case}-{framework}-{mode}-b{batch}-{device}]", stats, family=case.split("[")[0],
                  case=case, what="inference", framework=framework, mode=mode, batch=batch, device=device,
                  device_name="cpu (2 cores)" if device == "cpu" else "cuda:0 Example GPU")


CONV = "conv2d[o6-k1-in4x11x12]"
RELU = "relu[in3x5x6]"


@pytest.fixture
def pytest_benchmark_json() -> dict[str, Any]:
    """A small file in pytest-benchmark's format, benchmarks out of order, one without labels."""
    return {
        "machine_info": {"python_version": "3.11.7", "cpu": {"brand_raw": "Example CPU", "count": 2},
                         "conformance": {"torch": "2.13.0", "tensorflow": "2.21.0", "keras": "3.15.1",
                                         "torch_threads": 1, "tensorflow_threads": 1, "cuda": None}},
        "commit_info": {"id": "0123456789abcdef0123", "dirty": True},
        "datetime": "2026-01-02T03:04:05+00:00",
        "version": "5.1.0",
        "benchmarks": [
            _inference(CONV, "keras", "xla", 32, (2e-4, 2.5e-4, 9e-4)),
            _inference(CONV, "torch", "eager", 32, (9e-5, 1e-4, 3e-4)),
            _inference(CONV, "keras", "eager", 1, (1e-3, 1.2e-3, 5e-3)),
            _inference(CONV, "torch", "torchscript", 1, (1e-5, 1.1e-5, 2e-5)),
            _inference(CONV, "torch", "eager", 1, (1e-5, 1e-5, 4e-5)),
            _bench(f"test_transfer[{CONV}-keras->torch]", (9e-4, 1e-3, 2e-3), family="conv2d", case=CONV,
                   what="transfer keras->torch", framework="conformance", mode="eager", batch=None, device="cpu"),
            _bench(f"test_transfer[{CONV}-torch->keras]", (1e-3, 1.2e-3, 3e-3), family="conv2d", case=CONV,
                   what="transfer torch->keras", framework="conformance", mode="eager", batch=None, device="cpu"),
            _inference(RELU, "torch", "eager", 1, (3e-6, 4e-6, 1e-5), device="cuda"),
            _inference(RELU, "keras", "xla", 1, (1e-4, 1.5e-4, 2e-4)),
            _bench("test_something_else", (1e-3, 1e-3, 1e-3)),
        ],
    }


def test_summarise(pytest_benchmark_json: dict[str, Any]) -> None:
    summary = bench.summarise(pytest_benchmark_json)
    assert summary["schema"] == bench.SCHEMA and summary["schema_version"] == bench.SCHEMA_VERSION
    assert summary["created"] == "2026-01-02T03:04:05+00:00" and summary["commit"] == "0123456789ab-dirty"
    assert summary["machine"]["cpu"] == "Example CPU" and summary["machine"]["torch_threads"] == 1
    assert list(summary["families"]) == ["conv2d", "relu", "other"]
    conv = summary["families"]["conv2d"]
    # transfers first, then inference by batch, torch before keras, eager before compiled
    assert [(e["what"], e["framework"], e["mode"], e["batch"]) for e in conv] == [
        ("transfer torch->keras", "conformance", "eager", None),
        ("transfer keras->torch", "conformance", "eager", None),
        ("inference", "torch", "eager", 1), ("inference", "torch", "torchscript", 1),
        ("inference", "keras", "eager", 1), ("inference", "torch", "eager", 32), ("inference", "keras", "xla", 32)]
    xla = conv[-1]
    assert (xla["case"], xla["device"], xla["min"], xla["median"], xla["max"], xla["rounds"]) == (
        CONV, "cpu", 2e-4, 2.5e-4, 9e-4, 20)
    assert xla["throughput"] == pytest.approx(32 / 2.5e-4)
    assert "throughput" not in conv[0]
    assert [e["device"] for e in summary["families"]["relu"]] == ["cpu", "cuda"]   # the CPU first
    relu_cuda = summary["families"]["relu"][1]
    assert relu_cuda["device"] == "cuda" and relu_cuda["device_name"] == "cuda:0 Example GPU"
    other = summary["families"]["other"][0]
    assert other["case"] == "test_something_else" and other["median"] == 1e-3
    json.dumps(summary, allow_nan=False)          # strict JSON, as results.json is


def test_summarise_rejects_other_json() -> None:
    for data in ({}, [], {"benchmarks": "no"}):
        with pytest.raises(ValueError, match="not a pytest-benchmark JSON"):
            bench.summarise(data)   # type: ignore[arg-type]


def _results(tmp_path: Path) -> Path:
    document = {"schema": results_file.SCHEMA, "schema_version": results_file.SCHEMA_VERSION,
                "created": "2026-01-01T00:00:00+00:00", "environment": {"torch": "2.13.0", "keras": "3.15.1"},
                "summary": {"passed": 1, "total": 1}, "divergences": [], "errors": [],
                "cases": [{"id": RELU, "family": "relu", "direction": "torch->keras", "outcome": "passed",
                           "params": {"input_shape": [3, 5, 6]}, "headroom": 0.01, "seed": 1}]}
    return results_file.write(document, tmp_path / "results.json")


def test_attach_round_trip(tmp_path: Path, pytest_benchmark_json: dict[str, Any]) -> None:
    results_path = _results(tmp_path)
    before = results_file.load(results_path)
    raw = tmp_path / "benchmark.json"
    raw.write_text(json.dumps(pytest_benchmark_json))
    document = bench.attach(results_path, raw)
    reloaded = results_file.load(results_path)     # still schema version 1, still loads
    assert reloaded == document and reloaded["benchmarks"] == bench.summarise(pytest_benchmark_json)
    assert {k: v for k, v in reloaded.items() if k != "benchmarks"} == before
    assert not list(tmp_path.glob("*.tmp"))
    # a summary attaches as it is, and replaces the previous one
    summary = copy.deepcopy(reloaded["benchmarks"])
    summary["families"].pop("other")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert bench.attach(results_path, tmp_path / "summary.json")["benchmarks"] == summary


def test_attach_leaves_results_alone_on_bad_input(tmp_path: Path) -> None:
    results_path = _results(tmp_path)
    text = results_path.read_text()
    (tmp_path / "bad.json").write_text("{\"benchmarks\": 3}")
    (tmp_path / "broken.json").write_text("{")
    for path, message in (("bad.json", "not a pytest-benchmark JSON"), ("broken.json", "not a JSON file"),
                          ("missing.json", "cannot read")):
        with pytest.raises(ValueError, match=message):
            bench.attach(results_path, tmp_path / path)
    assert results_path.read_text() == text
    with pytest.raises(results_file.ResultsError):
        bench.attach(tmp_path / "bad.json", tmp_path / "bad.json")
    document = results_file.load(results_path)
    document["benchmarks"] = ["not", "a", "summary"]
    results_file.write(document, tmp_path / "odd.json")
    with pytest.raises(results_file.ResultsError, match="benchmarks"):
        results_file.load(tmp_path / "odd.json")


def test_command_line(tmp_path: Path, pytest_benchmark_json: dict[str, Any],
                      capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "benchmark.json"
    raw.write_text(json.dumps(pytest_benchmark_json))
    assert bench.main(["summary", str(raw), "-o", str(tmp_path / "summary.json")]) == 0
    assert json.loads((tmp_path / "summary.json").read_text()) == bench.summarise(pytest_benchmark_json)
    results_path = _results(tmp_path)
    assert bench.main(["attach", str(results_path), str(tmp_path / "summary.json"), "--report"]) == 0
    assert "id='benchmarks'" in (tmp_path / "report.html").read_text()
    assert bench.main(["attach", str(results_path), str(tmp_path / "nothing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_report_renders_benchmarks(pytest_benchmark_json: dict[str, Any]) -> None:
    document = json.loads(_results_text())
    plain = render(document)
    assert "id='benchmarks'" not in plain
    document["benchmarks"] = bench.summarise(pytest_benchmark_json)
    page = render(document)
    section = re.search(r"<section id='benchmarks'>.*?</section>", page, flags=re.S)
    assert section is not None
    text = section.group(0)
    assert "Example CPU" in text and "torch 2.13.0" in text and "git 0123456789ab-dirty" in text
    for family in ("conv2d", "relu", "other"):
        assert f"<b>{family}</b>" in text
    # per family and batch: torch's best against Keras's best, on one log scale; the device shown
    assert "torch <b>10 µs</b> eager" in text and "keras <b>1.2 ms</b> eager" in text
    assert "torch <b>120×</b> faster" in text
    assert "<td>cuda</td>" in text and "cuda:0 Example GPU" in text
    assert text.count("class='band'") == 7 + 10     # each inference timing in the table, every timing in the list
    assert "min 200 µs, median 250 µs, max 900 µs" in text
    assert "128,000/s" in text                      # throughput = 32 / 250 µs
    assert page.count("</script>") == plain.count("</script>") == 2   # static: no script of its own


def _results_text() -> str:
    return json.dumps({"schema": results_file.SCHEMA, "schema_version": 1, "created": "?", "environment": {},
                       "cases": [], "divergences": [], "errors": []})


@pytest.mark.parametrize("broken", [None, [], {"families": []}, {"families": {"x": [{"min": None}]}},
                                    {"families": {"x": [{"min": 0, "median": 1, "max": 2}, "junk"]}}])
def test_report_ignores_unusable_benchmarks(broken: Any) -> None:
    document = json.loads(_results_text())
    document["benchmarks"] = broken
    assert "id='benchmarks'" not in render(document)


# ---- devices -----------------------------------------------------------------------------------------


def test_cuda_skips_cleanly_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = bench.device_skip_reason("torch", "cuda")
    assert reason is not None and reason.startswith("no CUDA device: torch.cuda.is_available() is False")
    assert bench.device_skip_reason("torch", "cpu") is None
    assert "unknown device" in str(bench.device_skip_reason("torch", "tpu"))
    with pytest.raises(bench.BenchError, match="no CUDA device"):
        bench.torch_callable(torch.nn.ReLU(), [np.zeros((1, 3), np.float32)], "eager", "cuda")


def test_cuda_selected_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.device_skip_reason("torch", "cuda") is None
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        bench.configure_cuda()
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_keras_runs_where_tensorflow_places_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert bench.keras_device() == "cpu" and bench.device_skip_reason("keras", "cpu") is None
    assert bench.device_skip_reason("keras", "cuda") == "Keras runs on TensorFlow's default device here, cpu"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["/physical_device:GPU:0"])
    assert bench.keras_device() == "cuda" and bench.device_skip_reason("keras", "cpu") is not None


# ---- selection and callables -------------------------------------------------------------------------


def test_modes() -> None:
    assert bench.parse_modes(bench.DEFAULT_MODES) == {"eager", "torchscript", "xla"}
    with pytest.raises(ValueError, match="unknown mode 'jit'"):
        bench.parse_modes("eager,jit")


def test_representative_cases(tmp_path: Path) -> None:
    (tmp_path / "relu.toml").write_text('family = "relu"\n[[grid]]\ninput_shape = [[3, 5], [7]]\n')
    (tmp_path / "conv2d.toml").write_text(
        'family = "conv2d"\n[[grid]]\nin_channels = [1, 2]\nout_channels = 2\nkernel_size = 1\n'
        'input_shape = [[1, 4, 4], [2, 4, 4]]\nexclude = [{ in_channels = 1, input_shape = [2, 4, 4] },'
        ' { in_channels = 2, input_shape = [1, 4, 4] }]\n'
        '[[divergence]]\nwhen = { in_channels = [1] }\nreason = "for the test"\n')
    (tmp_path / "broken.toml").write_text('family = "nonesuch"\n')
    chosen = bench.representative_cases(tmp_path)
    assert [c.id for c in chosen] == ["conv2d[o2-k1-s1-p0-d1-g1-bias-in2x4x4]", "relu[in3x5]"]  # not the divergent one
    assert [c.id for c in bench.representative_cases(tmp_path, per_family=2)][-2:] == ["relu[in3x5]", "relu[in7]"]
    assert all(bench.batch_axis(c) == 0 for c in chosen)


@tensorflow_backend_only("XLA compilation through tf.function")
def test_callables_compute_the_same_in_every_mode() -> None:
    import torch  # noqa: F401  (before tensorflow)

    from conformance.cases import load_file
    case = load_file(Path(__file__).resolve().parent.parent / "cases" / "relu.toml")[0]
    pair = bench.pair_for(case)
    inputs = bench.inputs_for(case, pair, 4)
    expected = np.maximum(inputs[0], 0)
    for mode in ("eager", "torchscript"):
        np.testing.assert_array_equal(bench.torch_callable(pair.torch, inputs, mode)().numpy(), expected)
    for mode in ("eager", "xla"):
        out = np.asarray(bench.keras_callable(pair.keras, inputs, mode, pair.channels_last)())
        np.testing.assert_array_equal(np.moveaxis(out, -1, 1) if pair.channels_last else out, expected)
    assert len(bench.transfer_callable(pair, "keras->torch")()) == 0     # relu has no weights
    with pytest.raises(ValueError, match="direction"):
        bench.transfer_callable(pair, "sideways")
    rounds, iterations = bench.plan_rounds(lambda: None, budget_s=0.001)
    assert 5 <= rounds <= 100 and iterations >= 1

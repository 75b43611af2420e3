"""Verdicts that hold on every machine: environment facts, records scoped by them, the `unsupported`
outcome for framework refusals, quiet runs, and a gate that compares like with like."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from conformance import cli, facts
from conformance.cases import load_file
from conformance.diff import diff, scoped_differences
from conformance.quiet import capture_framework_logs
from conformance.refusal import message_key, plain
from conformance.runner import run_case

HERE = facts.scope_facts()


def _toml(value: Any) -> str:
    return json.dumps(value).replace("True", "true") if not isinstance(value, bool) else str(value).lower()


def relu_case(tmp_path: Path, record: str, kind: str = "divergence") -> Any:
    """One relu case with a record of ``kind`` for it, whose other keys are ``record``."""
    (tmp_path / "relu.toml").write_text(f"""
family = "relu"
[[grid]]
input_shape = [[3, 4]]
[[{kind}]]
when = {{ input_shape = [[3, 4]] }}
{record}
""")
    return load_file(tmp_path / "relu.toml")[0]


# ---- facts ---------------------------------------------------------------------------------------------

def test_the_facts_name_cpu_isa_onednn_backend_and_threads() -> None:
    collected = facts.collect()
    for key in ("cpu", "isa", "cpu_flags", "onednn", "onednn_isa", "tensorflow_onednn", "torch_mkldnn",
                "keras_backend", "torch_device", "threads", "class"):
        assert key in collected, key
    assert collected["isa"] == str(torch.backends.cpu.get_cpu_capability()).lower()
    assert set(collected["cpu_flags"]) >= {"avx2", "avx512f", "avx512_vnni", "amx_tile"}
    assert collected["threads"]["torch"] == torch.get_num_threads()
    assert collected["class"] == f"{collected['keras_backend']}-onednn-{'on' if collected['onednn'] else 'off'}"
    if collected["keras_backend"] == "tensorflow":
        from tensorflow.python.util import _pywrap_util_port
        assert collected["onednn"] is bool(_pywrap_util_port.IsMklEnabled())   # as TensorFlow resolved it


@pytest.mark.parametrize(("cap", "flags", "expected"), [
    ("", {"avx2", "avx512f", "avx512bw", "avx512vl", "amx_tile"}, "amx"),
    ("", {"avx2", "avx512f", "avx512bw", "avx512vl"}, "avx512"),
    ("", {"avx", "avx2", "sse4_1"}, "avx2"),
    ("AVX2", {"avx2", "avx512f", "avx512bw", "avx512vl", "amx_tile"}, "avx2"),
    ("AVX512_CORE_VNNI", {"avx2", "avx512f", "avx512bw", "avx512vl", "amx_tile"}, "avx512"),
    ("AVX512_CORE_AMX", {"avx2"}, "avx2"),            # a cap never raises the CPU's own class
])
def test_onednn_isa_is_the_cpu_class_capped_by_onednn_max_cpu_isa(monkeypatch: pytest.MonkeyPatch, cap: str,
                                                                  flags: set[str], expected: str) -> None:
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert facts.onednn_isa(flags) == expected


def test_a_run_records_the_facts_and_prints_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--select", "relu[in7]", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"isa {HERE['isa']}" in out and f"Keras backend {HERE['keras_backend']}" in out
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["schema_version"] == 2
    recorded = document["environment"]["facts"]
    assert {k: recorded[k] for k in HERE} == HERE
    html = (tmp_path / "report.html").read_text()
    assert "environment class" in html and recorded["class"] in html and "ISA (torch)" in html


# ---- records scoped by facts ---------------------------------------------------------------------------

def test_a_record_scoped_to_this_environment_applies_and_is_strict(tmp_path: Path) -> None:
    here = f"environment = {{ onednn = {_toml(HERE['onednn'])}, keras_backend = \"{HERE['keras_backend']}\" }}"
    case = relu_case(tmp_path, f'{here}\nreason = "pretend relu differs here"')
    result = run_case(case, "torch->keras")
    assert result.outcome == "xpass" and not result.ok
    assert "onednn = " in result.message and "relu.toml" in result.message


def test_a_record_scoped_to_another_environment_does_not_apply(tmp_path: Path) -> None:
    case = relu_case(tmp_path, f'environment = {{ onednn = {_toml(not HERE["onednn"])} }}\nreason = "elsewhere"')
    result = run_case(case, "torch->keras")
    assert result.outcome == "passed" and result.divergence is None


def test_a_list_of_values_matches_any_of_them(tmp_path: Path) -> None:
    case = relu_case(tmp_path, 'environment = { onednn_isa = ["none", "sse41", "avx", "avx2", "avx512", "amx"] }\n'
                               'reason = "every ISA"')
    assert case.divergences[0].applies_to({}, HERE)
    assert case.divergences[0].scope_text() == "onednn_isa in none, sse41, avx, avx2, avx512, amx"


@pytest.mark.parametrize(("record", "field", "fragment"), [
    ('environment = { avx = true }\nreason = "r"', "divergence[0].environment.avx", "unknown environment fact"),
    ('environment = { onednn = "yes" }\nreason = "r"', "divergence[0].environment.onednn", "true or false"),
    ('environment = { onednn_isa = "avx1024" }\nreason = "r"', "divergence[0].environment.onednn_isa", "'avx512'"),
    ('environment = { onednn = [] }\nreason = "r"', "divergence[0].environment.onednn", "matches no environment"),
    ('environment = "onednn"\nreason = "r"', "divergence[0].environment", "a table"),
    ('keras_backend = "torch"\nenvironment = { keras_backend = "jax" }\nreason = "r"', "divergence[0].keras_backend",
     "twice"),
])
def test_bad_scopes_name_the_field(tmp_path: Path, record: str, field: str, fragment: str) -> None:
    from conformance.errors import CaseError
    with pytest.raises(CaseError) as info:
        relu_case(tmp_path, record)
    assert info.value.field == field and fragment in str(info.value), str(info.value)
    assert "relu.toml" in str(info.value)


@pytest.mark.parametrize(("record", "field", "fragment"), [
    ('message = "m"\nreason = "r"', "unsupported[0].framework", "name the framework"),
    ('framework = "theano"\nmessage = "m"\nreason = "r"', "unsupported[0].framework", "tensorflow, keras, torch"),
    ('framework = "torch"\nreason = "r"', "unsupported[0].message", "text of the framework's error"),
    ('framework = "torch"\nmessage = "m"', "unsupported[0].reason", "needs a reason"),
])
def test_bad_unsupported_records_name_the_field(tmp_path: Path, record: str, field: str, fragment: str) -> None:
    from conformance.errors import CaseError
    with pytest.raises(CaseError) as info:
        relu_case(tmp_path, record, kind="unsupported")
    assert info.value.field == field and fragment in str(info.value), str(info.value)


# ---- the unsupported outcome ---------------------------------------------------------------------------

def _torch_refuses(*args: Any, **kwargs: Any) -> Any:
    """A real refusal by torch: layer_norm over sizes that are not the input's last axes."""
    return torch.nn.functional.layer_norm(torch.zeros(2, 5, 3), [5])


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    import conformance.comparison
    monkeypatch.setattr(conformance.comparison, "compare", _torch_refuses)


def test_a_recorded_refusal_is_unsupported(tmp_path: Path, refusing: None) -> None:
    case = relu_case(tmp_path, 'framework = "torch"\nmessage = "Given normalized_shape="\nreason = "torch refuses"',
                     kind="unsupported")
    result = run_case(case, "torch->keras")
    assert result.outcome == "unsupported" and result.ok
    assert "PyTorch" in result.message and "expected input with shape" in result.message
    assert result.divergence is not None and result.divergence["kind"] == "unsupported"


def test_an_unrecorded_refusal_is_an_error_that_names_the_framework_and_the_record_to_add(
        tmp_path: Path, refusing: None) -> None:
    (tmp_path / "relu.toml").write_text('family = "relu"\n[[grid]]\ninput_shape = [[3, 4]]\n')
    result = run_case(load_file(tmp_path / "relu.toml")[0], "torch->keras")
    assert result.outcome == "error"
    assert result.message.startswith("PyTorch refuses this configuration: RuntimeError: Given normalized_shape=")
    assert "[[unsupported]]" in result.message and 'framework = "torch"' in result.message
    assert 'message = "Given normalized_shape=[5], expected input with shape [*, 5]' in result.message
    assert str(tmp_path / "relu.toml") in result.message


def test_a_refusal_in_other_words_than_recorded_is_an_error(tmp_path: Path, refusing: None) -> None:
    case = relu_case(tmp_path, 'framework = "torch"\nmessage = "out of memory"\nreason = "r"', kind="unsupported")
    result = run_case(case, "torch->keras")
    assert result.outcome == "error" and "expects PyTorch to refuse with 'out of memory'" in result.message


def test_a_recorded_refusal_that_no_longer_happens_is_xpass(tmp_path: Path) -> None:
    case = relu_case(tmp_path, 'framework = "tensorflow"\nmessage = "m"\nreason = "refused once"', kind="unsupported")
    result = run_case(case, "keras->torch")
    assert result.outcome == "xpass" and "recorded refusal did not happen" in result.message
    assert "[[unsupported]]" in result.message


def test_an_exception_in_our_own_code_is_an_error_without_colour_codes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import conformance.comparison

    def ours(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("\x1b[1mbold\x1b[0m trouble")
    monkeypatch.setattr(conformance.comparison, "compare", ours)
    (tmp_path / "relu.toml").write_text('family = "relu"\n[[grid]]\ninput_shape = [[3, 4]]\n')
    result = run_case(load_file(tmp_path / "relu.toml")[0], "torch->keras")
    assert result.outcome == "error" and "\x1b" not in result.message and "bold trouble" in result.message
    assert "[[unsupported]]" not in result.message     # not a framework's refusal


def test_message_key_keeps_the_words_that_do_not_change() -> None:
    text = ("InvalidArgumentError: Exception encountered when calling Conv1DTranspose.call().\n\n"
            "{{function_node __wrapped__Conv2DBackpropInput_device_/job:localhost}} Current CPU implementations do "
            "not yet support dilation rates larger than 1. [Op:Conv2DBackpropInput] name: \n\nArguments received")
    assert message_key(text) == "Current CPU implementations do not yet support dilation rates larger than 1"
    assert plain("\x1b[1mA\x1b[0m") == "A"


def test_junit_and_summary_keep_unsupported_apart(tmp_path: Path, refusing: None) -> None:
    from conformance import results
    from conformance.report import junit_xml
    case = relu_case(tmp_path, 'framework = "torch"\nmessage = "Given normalized_shape="\nreason = "r"',
                     kind="unsupported")
    document = {"cases": [run_case(case, "torch->keras").to_json()], "environment": {}}
    assert results.summarise(document["cases"])["unsupported"] == 1
    xml = junit_xml(document).decode()
    assert 'type="unsupported"' in xml and "<failure" not in xml and "<error" not in xml


# ---- quiet runs ----------------------------------------------------------------------------------------

def test_framework_log_lines_stay_with_the_case(capsys: pytest.CaptureFixture[str]) -> None:
    with capture_framework_logs() as lines:
        logging.getLogger("tensorflow").warning("5 out of the last 5 calls triggered tf.function retracing")
    assert lines == ["tensorflow: 5 out of the last 5 calls triggered tf.function retracing"]
    assert "retracing" not in capsys.readouterr().err


# ---- the gate compares like with like ------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_with_xpass(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real run holding a passed case, and a stale record (xpass)."""
    directory = tmp_path_factory.mktemp("cases")
    (directory / "relu.toml").write_text('family = "relu"\n[[grid]]\ninput_shape = [[3, 4], [5]]\n[[divergence]]\n'
                                         'when = { input_shape = [[3, 4]] }\nreason = "pretend relu differs"\n')
    out = tmp_path_factory.mktemp("out")
    assert cli.main(["run", "--cases", str(directory), "--output", str(out)]) == 1
    return dict(json.loads((out / "results.json").read_text()))


def test_diff_of_a_file_with_itself_exits_0_and_reports_stale_records(run_with_xpass: dict[str, Any],
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(run_with_xpass))
    assert cli.main(["diff", str(path), str(path)]) == 0
    out = capsys.readouterr().out
    assert "stale in both runs (update the record), for information (2)" in out and "no regressions" in out


def test_a_record_that_becomes_stale_still_fails_the_gate(run_with_xpass: dict[str, Any]) -> None:
    baseline = copy.deepcopy(run_with_xpass)
    for case in baseline["cases"]:
        if case["outcome"] == "xpass":
            case["outcome"] = "divergence"
    changes = diff(baseline, run_with_xpass)
    assert len(changes.stale_divergences) == 2 and not changes.stale_in_both
    assert "remove or narrow its [[divergence]] record in" in changes.format()


def _other_environment(document: dict[str, Any]) -> dict[str, Any]:
    other = copy.deepcopy(document)
    other["environment"]["facts"]["onednn"] = not document["environment"]["facts"]["onednn"]
    other["divergences"].append({"kind": "divergence", "environment": {"onednn": [True]}})
    return other


def test_diff_says_when_the_environments_differ_in_a_scoped_fact(run_with_xpass: dict[str, Any]) -> None:
    other = _other_environment(run_with_xpass)
    before = str(run_with_xpass["environment"]["facts"]["onednn"]).lower()
    after = str(other["environment"]["facts"]["onednn"]).lower()
    assert scoped_differences(run_with_xpass, other) == [f"onednn {before} -> {after}"]
    assert "used different kernels" in diff(run_with_xpass, other).format()
    assert scoped_differences(run_with_xpass, run_with_xpass) == []


def test_headroom_growth_across_different_kernels_is_information_not_a_regression(
        run_with_xpass: dict[str, Any]) -> None:
    baseline = _other_environment(run_with_xpass)
    candidate = copy.deepcopy(run_with_xpass)
    grown = next(c for c in candidate["cases"] if c["outcome"] == "passed")
    old = next(c for c in baseline["cases"] if c["id"] == grown["id"] and c["direction"] == grown["direction"])
    old["headroom"], grown["headroom"] = 0.01, 0.5
    changes = diff(baseline, candidate)
    assert not changes.headroom_grew and len(changes.headroom_info) == 1
    same_kernels = copy.deepcopy(candidate)
    same_kernels_base = copy.deepcopy(run_with_xpass)
    next(c for c in same_kernels_base["cases"] if c["id"] == grown["id"] and
         c["direction"] == grown["direction"])["headroom"] = 0.01
    assert len(diff(same_kernels_base, same_kernels).headroom_grew) == 1


def test_baselines_are_stored_and_found_by_environment_class(run_with_xpass: dict[str, Any], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    clean = copy.deepcopy(run_with_xpass)
    clean["cases"] = [c for c in clean["cases"] if c["outcome"] == "passed"]
    clean["summary"] = {"passed": len(clean["cases"])}
    results_path, baselines = tmp_path / "results.json", tmp_path / "baselines"
    results_path.write_text(json.dumps(clean))
    baselines.mkdir()
    assert cli.main(["baseline", str(results_path), "--output", str(baselines)]) == 0
    stored = baselines / f"{HERE['keras_backend']}-onednn-{'on' if HERE['onednn'] else 'off'}.json"
    assert stored.is_file()
    assert cli.main(["diff", str(baselines), str(results_path)]) == 0
    assert f"baseline:  {stored}" in capsys.readouterr().out
    stored.rename(baselines / "elsewhere.json")
    assert cli.main(["diff", str(baselines), str(results_path)]) == 2
    err = capsys.readouterr().err
    assert "no baseline for the candidate's environment class" in err and "elsewhere" in err


def test_the_committed_baselines_cover_onednn_on_and_off() -> None:
    root = Path(__file__).resolve().parent.parent / "reports" / "baselines"
    classes = {json.loads(p.read_text())["environment"]["facts"]["class"] for p in root.glob("*.json")
               if p.name != "costs.json"}
    assert {"tensorflow-onednn-on", "tensorflow-onednn-off"} <= classes
    for path in (p for p in root.glob("*.json") if p.name != "costs.json"):
        assert json.loads(path.read_text())["environment"]["facts"]["class"] == path.stem


# ---- build_pair takes input_shape for every family -----------------------------------------------------

def test_every_family_accepts_input_shape() -> None:
    from conformance.families import families
    assert all("input_shape" in family.params for family in families().values())


def test_attention_accepts_input_shape_and_agrees_with_seq_len() -> None:
    import conformance
    pair = conformance.build_pair("multihead_attention", embed_dim=16, num_heads=4, batch_first=True,
                                  input_shape=(5, 16))
    same = conformance.build_pair("multihead_attention", embed_dim=16, num_heads=4, batch_first=True, seq_len=5)
    assert pair.params == same.params and pair.input_shape == (5, 16)
    conformance.transfer_weights(pair.torch, pair.keras)
    assert conformance.compare(pair.torch, pair.keras, list(pair.sample_inputs(0, 2))).passed
    for bad, fragment in (({"input_shape": (5, 8)}, "expected (L, 16)"),
                          ({"input_shape": (5, 16), "seq_len": 4}, "seq_len = 4"),
                          ({}, "give seq_len or input_shape")):
        with pytest.raises(conformance.CaseError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            conformance.build_pair("multihead_attention", embed_dim=16, num_heads=4, **bad)

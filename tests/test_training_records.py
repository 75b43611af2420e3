"""[[divergence]] records in training case files: scoped by environment and strict, like a layer case's.

The scope is made to fit (or miss) this machine with the ``machine`` fact, so that each test sees the
record apply, or not, on any machine; the scenario is BatchNorm1d for one step (about a second).
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from conformance.errors import CaseError
from conformance.facts import scope_facts
from conformance.runner import installed_versions
from conformance.training.catalogue import load_file
from conformance.training.run import run_training_case

CASES = Path(__file__).resolve().parent.parent / "cases" / "training"
HERE = platform.machine()
REASON = "pretend that this machine's kernels make BatchNorm disagree, to check the record's strictness"


def one_case(tmp_path: Path, correction: bool, record: str) -> object:
    """The one BatchNorm1d case of a file whose [[divergence]] table holds ``record``."""
    path = tmp_path / "batch_norm_training.toml"
    path.write_text(f"""scenario = "batch_norm_training"
[[grid]]
family = "batch_norm1d"
num_features = 3
input_shape = [[3]]
steps = 1
correction = {str(correction).lower()}

[[divergence]]
{record}
""")
    cases = load_file(path)
    assert len(cases) == 1
    return cases[0]


def scoped(machine: str, tensors: str = '["*"]') -> str:
    return (f'rule = "pretend-kernel-bug"\nwhen = {{ family = ["batch_norm1d"] }}\ntensors = {tensors}\n'
            f'environment = {{ machine = "{machine}" }}\nreason = "{REASON}"\nlink = "tests/x.py"')


def test_a_record_in_scope_that_stops_diverging_fails_and_names_itself(tmp_path: Path) -> None:
    case = one_case(tmp_path, True, scoped(HERE))     # the correction makes the frameworks agree
    result = run_training_case(case)
    assert result.outcome == "xpass" and not result.ok
    assert "pretend-kernel-bug" in result.message and "batch_norm_training.toml" in result.message
    assert "Remove or narrow" in result.message and f"machine = {HERE}" in result.message
    assert result.divergence["rule"] == "pretend-kernel-bug" and result.divergence["link"] == "tests/x.py"


def test_a_record_in_scope_that_reproduces_is_a_divergence_with_its_scope(tmp_path: Path) -> None:
    case = one_case(tmp_path, False, scoped(HERE, '["*running_var"]'))
    result = run_training_case(case)
    assert result.outcome == "divergence"
    assert result.divergence["rule"] == "pretend-kernel-bug"
    assert result.divergence["environment"] == {"machine": [HERE]} and result.divergence["scope"] == f"machine = {HERE}"


def test_a_record_fails_where_the_case_diverges_on_a_tensor_it_does_not_name(tmp_path: Path) -> None:
    case = one_case(tmp_path, False, scoped(HERE, '["weight", "bias"]'))
    result = run_training_case(case)
    assert result.outcome == "failed" and "running_var" in result.message


def test_outside_its_scope_a_record_changes_nothing(tmp_path: Path) -> None:
    agreeing = run_training_case(one_case(tmp_path, True, scoped("no-such-machine")))
    assert agreeing.outcome == "passed" and agreeing.divergence is None
    automatic = run_training_case(one_case(tmp_path, False, scoped("no-such-machine")))
    assert automatic.outcome == "divergence" and automatic.divergence["rule"] == "bn-running-var-unbiased"


@pytest.mark.parametrize(("record", "words"), [
    ('when = { family = ["batch_norm1d"] }\nreason = "' + REASON + '"', "divergence[0].rule.*name the rule"),
    ('rule = "Bad Rule"\nwhen = {}\nreason = "' + REASON + '"', "divergence[0].rule.*lower-case words"),
    ('rule = "r"\nwhen = { learning_rate = [0.1] }\nreason = "' + REASON + '"',
     "divergence[0].when.learning_rate.*no parameter 'learning_rate'"),
    ('rule = "r"\nwhen = { family = ["batch_norm4d"] }\nreason = "' + REASON + '"',
     "divergence[0].when.family.*must be one of"),
    ('rule = "r"\nwhen = { family = ["batch_norm2d"] }\nreason = "' + REASON + '"',
     "divergence[0].when.*matches no case"),
    ('rule = "r"\nwhen = {}\nenvironment = { cpu_speed = "fast" }\nreason = "' + REASON + '"',
     "divergence[0].environment.*unknown environment fact"),
    ('rule = "r"\nwhen = {}\nreason = " "', "divergence[0].reason.*needs a reason"),
])
def test_bad_records_are_refused_naming_the_file_and_field(tmp_path: Path, record: str, words: str) -> None:
    with pytest.raises(CaseError, match=r"batch_norm_training\.toml.*" + words.replace("[", r"\[").replace("]", r"\]")):
        one_case(tmp_path, False, record)


def test_the_avx2_record_covers_the_residual_block_only_on_avx2_kernels() -> None:
    """The fine-tuning record: the eight residual-block cases, and only where the Keras backend's oneDNN runs
    its AVX2 kernels (the raw evidence is tests/test_known_divergences.py's probes in five environments)."""
    cases = load_file(CASES / "fine_tune.toml")
    (record,) = cases[0].divergences
    covered = {c.id for c in cases if record.matches(c.params, c.direction)}
    assert covered == {c.id for c in cases if c.params["model"] == "residual_block"} and len(covered) == 8
    versions = installed_versions()
    seen = versions["tensorflow"].startswith("2.21.") and versions["torch"].startswith("2.13.")
    avx2 = {**scope_facts(), "onednn": True, "onednn_isa": "avx2"}
    for backend in ("tensorflow", "torch"):
        assert record.applies_to(versions, {**avx2, "keras_backend": backend}) == seen
        assert not record.applies_to(versions, {**avx2, "keras_backend": backend, "onednn_isa": "avx512"})
        assert not record.applies_to(versions, {**avx2, "keras_backend": backend, "onednn": False})
    assert not record.applies_to(versions, {**avx2, "keras_backend": "jax"})


def test_file_records_are_listed_once_with_the_file_records_not_as_scenario_records() -> None:
    from conformance.plugin import _scenario_records
    from conformance.results import divergence_records
    cases = load_file(CASES / "fine_tune.toml")
    listed = divergence_records(cases)
    assert [r["rule"] for r in listed] == ["onednn-avx2-1x1-stride2-filter-grad"]
    assert listed[0]["scope"].endswith("onednn_isa = avx2") and listed[0]["family"] == "fine_tune"
    result = {"family": "fine_tune", "file": "f.toml", "mode": "train", "divergence": listed[0]}
    assert _scenario_records({("a", "torch->keras"): result}) == []

"""The proposed training case files load, expand and validate; bad ones are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.errors import CaseError
from conformance.training import run_scenario
from conformance.training.catalogue import load, load_file

CASES = Path(__file__).resolve().parent.parent / "cases" / "training"


def test_training_case_files_expand() -> None:
    cases = load(CASES)
    by_scenario = {s: [c for c in cases if c.scenario == s] for s in ("batch_norm_training", "optimizer_step",
                                                                       "fine_tune")}
    assert len(by_scenario["fine_tune"]) == 12
    assert len(by_scenario["batch_norm_training"]) == 16
    assert len({c.id for c in cases}) == len(cases), "case ids are unique"
    assert "fine_tune[model=residual_block-optimizer=adam-source=keras-correction=true]" in {c.id for c in cases}


def test_a_training_case_runs_from_its_file() -> None:
    case = next(c for c in load_file(CASES / "batch_norm_training.toml")
                if c.params["family"] == "batch_norm1d" and c.params["steps"] == 1 and not c.params["correction"])
    result = case.run()
    assert result.verdict == "divergence" and result.measured["variance_factor"] == pytest.approx(4 / 3, rel=1e-5)


def test_bad_files_name_the_file_case_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('scenario = "fine_tune"\n[[grid]]\nmodel = "lenet"\nlearning_rate = 0.1\n')
    with pytest.raises(CaseError, match="bad.toml.*fine_tune.*learning_rate.*no parameter 'learning_rate'"):
        load_file(bad)
    bad.write_text('[[grid]]\nmodel = "lenet"\n')
    with pytest.raises(CaseError, match="field scenario"):
        load_file(bad)
    bad.write_text('scenario = "fine_tune"\n[[grid]]\nmodel = "lenet"\noptimizer = "rmsprop"\n')
    with pytest.raises(CaseError, match="bad.toml.*fine_tune.*optimizer.*must be one of sgd, adam, got 'rmsprop'"):
        load_file(bad)
    bad.write_text('scenario = "finetune"\n')
    with pytest.raises(CaseError, match="unknown training scenario 'finetune'"):
        load_file(bad)


def test_expect_overrides_the_automatic_record() -> None:
    """A case that says it expects agreement, where stock Keras diverges, fails; an unknown rule is refused."""
    result = run_scenario("batch_norm_training", expect=None, steps=1)
    assert result.verdict == "failed" and result.failing == ("running_var",)
    with pytest.raises(CaseError, match="unknown divergence rule 'nope'"):
        run_scenario("batch_norm_training", expect="nope")


def test_a_training_case_becomes_a_catalogue_result() -> None:
    """The plugin collects cases/training/ beside the layer catalogue; each case is one results record whose
    outcome, worst tensor, record and reproduction come from its scenario."""
    from conformance.plugin import load_any
    from conformance.training.run import run_training_case
    cases = load_any(CASES / "batch_norm_training.toml")
    diverging = next(c for c in cases if c.params["family"] == "batch_norm1d" and c.params["steps"] == 1
                     and not c.params["correction"])
    record = run_training_case(diverging)
    assert (record.outcome, record.direction, record.family) == ("divergence", "torch->keras", "batch_norm_training")
    assert record.divergence["rule"] == "bn-running-var-unbiased" and record.worst["tensor"] == "running_var"
    assert record.mode == "train" and record.training["worst"] == "running_var"
    outside = [t["name"] for t in record.training["compared"] if t["headroom"] > 1]
    assert record.headroom > 1 and outside == ["running_var"]
    text = record.explain()
    assert "running_var: max abs error" in text and 'run_scenario("batch_norm_training"' in text
    # A scenario that cannot run is an error that says why, never a crash of the session.
    broken = type(diverging)(diverging.file, "fine_tune", {"model": "no_such_model"})
    failed = run_training_case(broken)
    assert failed.outcome == "error" and "no_such_model" in failed.message


def test_scenario_divergences_that_applied_are_listed_as_records() -> None:
    from conformance.plugin import _scenario_records
    hit = {"rule": "bn-running-var-unbiased", "reason": "unbiased against biased", "factor": "n/(n-1)"}
    results = {("a", "torch->keras"): {"family": "fine_tune", "file": "f.toml", "mode": "train", "divergence": hit},
               ("b", "keras->torch"): {"family": "fine_tune", "file": "f.toml", "mode": "train", "divergence": hit},
               ("c", "torch->keras"): {"family": "fine_tune", "file": "f.toml", "mode": "train", "divergence": None},
               ("d", "torch->keras"): {"family": "conv2d", "file": "c.toml", "divergence": {"reason": "x"}}}
    records = _scenario_records(results)
    assert [(r["family"], r["rule"], r["reason"]) for r in records] == [
        ("fine_tune", "bn-running-var-unbiased", "unbiased against biased")]
    assert "n/(n-1)" in records[0]["scope"]

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
    bad.write_text('scenario = "finetune"\n')
    with pytest.raises(CaseError, match="unknown training scenario 'finetune'"):
        load_file(bad)


def test_expect_overrides_the_automatic_record() -> None:
    """A case that says it expects agreement, where stock Keras diverges, fails; an unknown rule is refused."""
    result = run_scenario("batch_norm_training", expect=None, steps=1)
    assert result.verdict == "failed" and result.failing == ("running_var",)
    with pytest.raises(CaseError, match="unknown divergence rule 'nope'"):
        run_scenario("batch_norm_training", expect="nope")

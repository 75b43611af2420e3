"""Fine-tuning across frameworks, end to end: LeNet-5 and the residual block, converted in both
directions, then 10 SGD-with-momentum and 10 Adam steps on the same seeded batches in each framework."""

from __future__ import annotations

import fnmatch

import pytest

from conformance.errors import CaseError
from conformance.training import RUNNING_VAR, run_scenario


@pytest.mark.parametrize("source", ["torch", "keras"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lenet_fine_tunes_the_same(optimizer: str, source: str) -> None:
    result = run_scenario("fine_tune", model="lenet", optimizer=optimizer, source=source)
    assert result.verdict == "passed", result.summary()
    assert len(result.tensors) == 10           # 5 layers x (weight, bias)


@pytest.mark.parametrize("source", ["torch", "keras"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_residual_block_fine_tunes_the_same_with_the_correction(optimizer: str, source: str) -> None:
    result = run_scenario("fine_tune", model="residual_block", optimizer=optimizer, source=source, correction=True)
    assert result.verdict == "passed", result.summary()
    assert {t.name for t in result.tensors} >= {"bn1.running_var", "bn2.running_mean", "shortcut.1.running_var"}


@pytest.mark.parametrize(("optimizer", "source"), [("sgd", "torch"), ("adam", "keras")])
def test_residual_block_without_the_correction_is_the_running_var_divergence(optimizer: str, source: str) -> None:
    result = run_scenario("fine_tune", model="residual_block", optimizer=optimizer, source=source)
    assert result.expected is RUNNING_VAR
    assert result.verdict == "divergence", result.summary()
    # Every BatchNorm's running_var differs, and nothing else does: weights and running means agree.
    assert sorted(result.failing) == ["bn1.running_var", "bn2.running_var", "shortcut.1.running_var"]
    assert all(not fnmatch.fnmatchcase(t.name, "*running_var") for t in result.tensors if t.passed)


def test_unknown_scenario_and_model_are_named() -> None:
    with pytest.raises(CaseError, match="unknown training scenario .finetune."):
        run_scenario("finetune")
    with pytest.raises(CaseError, match="model must be one of .*.vgg."):
        run_scenario("fine_tune", model="vgg")

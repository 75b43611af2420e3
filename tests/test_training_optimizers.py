"""One optimizer step, and ten, in both frameworks from the same converted weights; the mapping
``keras_optimizer_for`` and its refusals; the Adam epsilon conventions; planted wrong settings."""

from __future__ import annotations

import math

import keras
import pytest
import torch

from conformance.training import (
    ADAM_EPSILON,
    OptimizerMappingError,
    TorchAdam,
    keras_optimizer_for,
    train_and_compare,
)


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_sgd_and_adam_hyper_parameters_are_mapped() -> None:
    sgd = keras_optimizer_for(torch.optim.SGD(_params(), lr=0.05, momentum=0.8, nesterov=True))
    assert type(sgd) is keras.optimizers.SGD
    assert (float(sgd.learning_rate), sgd.momentum, sgd.nesterov, sgd.weight_decay) == \
        (pytest.approx(0.05), 0.8, True, None)
    plain = keras_optimizer_for(torch.optim.SGD(_params(), lr=0.1, weight_decay=1e-2))
    assert plain.weight_decay == pytest.approx(1e-2) and plain.momentum == 0
    adam = keras_optimizer_for(torch.optim.Adam(_params(), lr=2e-3, betas=(0.8, 0.99), eps=1e-6, amsgrad=True))
    assert type(adam) is TorchAdam
    assert (adam.beta_1, adam.beta_2, adam.epsilon, adam.amsgrad) == (0.8, 0.99, 1e-6, True)
    stock = keras_optimizer_for(torch.optim.Adam(_params()), epsilon="keras")
    assert type(stock) is keras.optimizers.Adam
    adamw = keras_optimizer_for(torch.optim.AdamW(_params(), lr=1e-3, weight_decay=0.05))
    assert adamw.weight_decay == pytest.approx(0.05)


@pytest.mark.parametrize(("optimizer", "parameter"), [
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5), "dampening"),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4), "weight_decay"),
    (lambda p: torch.optim.Adam(p, weight_decay=1e-4), "weight_decay"),
    (lambda p: torch.optim.SGD(p, lr=0.1, maximize=True), "maximize"),
    (lambda p: torch.optim.SGD([{"params": p[:1], "lr": 0.1}, {"params": p[1:], "lr": 0.2}], lr=0.1), "lr"),
    (lambda p: torch.optim.RMSprop(p), "RMSprop"),
])
def test_refusals_name_the_parameter(optimizer, parameter: str) -> None:
    with pytest.raises(OptimizerMappingError, match=parameter):
        keras_optimizer_for(optimizer(_params()))


SCENARIOS = {   # id -> train_and_compare arguments; every one must agree within tolerance
    "sgd-1": dict(optimizer="sgd", lr=0.1, steps=1),
    "sgd-momentum-10": dict(optimizer="sgd", lr=0.1, momentum=0.9, steps=10),
    "sgd-nesterov-10-from-keras": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, steps=10,
                                       source="keras"),
    "sgd-weight-decay-10": dict(optimizer="sgd", lr=0.1, weight_decay=0.1, steps=10),
    "adam-1": dict(optimizer="adam", lr=1e-2, steps=1),
    "adam-10-from-keras": dict(optimizer="adam", lr=1e-2, steps=10, source="keras"),
    "amsgrad-10": dict(optimizer="adam", lr=1e-2, amsgrad=True, steps=10),
    "adamw-10": dict(optimizer="adamw", lr=1e-2, weight_decay=0.1, steps=10),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_optimizer_steps_agree(name: str) -> None:
    result = train_and_compare(**SCENARIOS[name])
    assert result.verdict == "passed", result.summary()
    assert result.headroom < 0.1, result.summary()     # far inside: the steps are the same arithmetic


@pytest.mark.parametrize("steps", [1, 10])
def test_stock_keras_adam_epsilon_is_a_divergence(steps: int) -> None:
    """With eps = 1e-3 (as in some recipes) the convention shows in every weight."""
    result = train_and_compare(optimizer="adam", lr=1e-2, eps=1e-3, steps=steps, epsilon="keras")
    assert result.expected is ADAM_EPSILON
    assert result.verdict == "divergence", result.summary()


def test_adam_epsilon_formula_is_exact_at_step_one() -> None:
    """Keras's eps is torch's eps / sqrt(1 - beta_2**t): at t = 1 a torch eps of eps / sqrt(1 - beta_2)
    makes stock Keras Adam agree; by t = 10 the factor has changed and it no longer does."""
    eps, beta_2, lr = 1e-3, 0.999, 1e-2

    def stock(_: object) -> keras.optimizers.Adam:
        return keras.optimizers.Adam(learning_rate=lr, beta_2=beta_2, epsilon=eps)
    torch_eps = eps / math.sqrt(1 - beta_2)
    one = train_and_compare(optimizer="adam", lr=lr, eps=torch_eps, steps=1, keras_optimizer=stock)
    assert one.verdict == "passed", one.summary()
    ten = train_and_compare(optimizer="adam", lr=lr, eps=torch_eps, steps=10, keras_optimizer=stock)
    assert ten.verdict == "failed", ten.summary()


def test_meta_wrong_momentum_fails() -> None:
    """A Keras SGD given 1 - momentum (the BatchNorm rule applied to the optimizer) is caught."""
    def wrong(_: object) -> keras.optimizers.SGD:
        return keras.optimizers.SGD(learning_rate=0.1, momentum=0.1)
    result = train_and_compare(optimizer="sgd", lr=0.1, momentum=0.9, steps=3, keras_optimizer=wrong)
    assert result.verdict == "failed", result.summary()


def test_sgd_weight_decay_with_momentum_really_differs() -> None:
    """Why keras_optimizer_for refuses it: Keras's decoupled decay differs from torch's L2 once
    momentum carries the decay term."""
    def decoupled(_: object) -> keras.optimizers.SGD:
        return keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.1)
    result = train_and_compare(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.1, steps=10,
                               keras_optimizer=decoupled)
    assert result.verdict == "failed", result.summary()


def test_adam_with_decoupled_weight_decay_maps_like_adamw() -> None:
    optimizer = torch.optim.Adam(_params(), lr=1e-3, weight_decay=0.05, decoupled_weight_decay=True)
    assert keras_optimizer_for(optimizer).weight_decay == pytest.approx(0.05)
    result = train_and_compare(optimizer="adam", lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, steps=5)
    assert result.verdict == "passed", result.summary()


def test_scenarios_are_deterministic() -> None:
    first = train_and_compare(optimizer="adam", lr=1e-2, steps=3, source="keras")
    second = train_and_compare(optimizer="adam", lr=1e-2, steps=3, source="keras")
    assert first.tensors == second.tensors

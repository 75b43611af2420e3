"""Optimizer steps and fine-tuning across frameworks, and the one entry point for every scenario.

``run_scenario(name, **params)`` is what a catalogue case calls; each scenario returns a
:class:`~conformance.training.results.ScenarioResult`.

Tolerance (``training_allowance``): training is judged by its updates. Each parameter may differ
by a fraction of how far it moved in torch over the run, plus a float32 floor of 1e-6 x its size:

- SGD: 1e-3. Both frameworks compute the same steps; only float32 rounding in the forward and
  backward passes differs, measured at <= 3.3e-5 of the movement (LeNet-5, AVX-512 with oneDNN).
- Adam: 1e-2. Adam divides each gradient by its own running size, so elements whose gradient is
  comparable to eps amplify rounding in the gradient: measured <= 4.5e-3 on LeNet-5's first step
  (mostly 1e-5). Stock Keras Adam's epsilon convention errs by up to 0.7 there, far outside.
- BatchNorm running statistics: 1e-4 of their movement. They are averages of forward activations,
  not normalised gradients; measured <= 1.3e-6 with the correction, 1.2e-3 without it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import CaseError
from .batchnorm import RUNNING_VAR, batch_norm_training
from .engine import (
    Allowance,
    Models,
    batches,
    compare_states,
    keras_state_in_torch_layout,
    torch_state,
    train_keras,
    train_torch,
)
from .optimizers import ADAM_EPSILON, SGD_WEIGHT_DECAY, keras_optimizer_for
from .results import Divergence, ScenarioResult

PARAM_RELATIVE = {"sgd": 1e-3, "adam": 1e-2, "adamw": 1e-2}
RUNNING_RELATIVE = 1e-4
FLOOR = 1e-6
MODELS = ("lenet", "residual_block", "flatten_linear")
OPTIMIZER_HYPER = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "betas", "eps", "amsgrad",
                   "decoupled_weight_decay")


def training_allowance(optimizer: str) -> Allowance:
    """Allowed error per tensor: see the module docstring for how each figure was derived."""
    relative = PARAM_RELATIVE[optimizer]

    def allow(name: str, start: np.ndarray, end: np.ndarray) -> tuple[float, float]:
        moved = float(np.abs(end.astype(np.float64) - start).max(initial=0.0))
        size = float(np.abs(end).max(initial=0.0))
        share = RUNNING_RELATIVE if name.endswith(("running_mean", "running_var")) else relative
        return share * moved + FLOOR * max(size, 1.0), 0.0
    return allow


def build_models(model: str, source: str, seed: int, correction: bool = False) -> Models:
    """The model in both frameworks, each framework's default initialisation seeded in ``source``,
    and its weights converted into the other with ``transfer_weights``."""
    import keras
    import torch

    from ..pair import build_pair
    from ..transfer import transfer_weights
    if source not in ("torch", "keras"):
        raise ValueError(f"source must be 'torch' or 'keras', got {source!r}")
    torch.manual_seed(seed)
    keras.utils.set_random_seed(seed)
    if model == "lenet":
        from ..models import TorchLeNet5, keras_lenet5
        models = Models(TorchLeNet5(), keras_lenet5(functional=True), "cross_entropy", (1, 32, 32))
    elif model == "residual_block":
        pair = build_pair("residual_block", out_channels=8, stride=2, input_shape=(4, 8, 10))
        models = Models(pair.torch, pair.keras, "mse", (4, 8, 10))
    elif model == "flatten_linear":
        pair = build_pair("flatten_linear", out_channels=4, kernel_size=3, stride=1, padding=1, merge="none",
                          out_features=10, input_shape=(3, 9, 5))
        models = Models(pair.torch, pair.keras, "cross_entropy", (3, 9, 5))
    else:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if correction:
        from .keras_torch import with_unbiased_batch_norm
        models.keras = with_unbiased_batch_norm(models.keras)
    if source == "torch":
        transfer_weights(models.torch, models.keras)
    else:
        transfer_weights(models.keras, models.torch)
    return models


def torch_optimizer(kind: str, parameters: Any, **hyper: Any) -> Any:
    """``sgd``, ``adam`` or ``adamw`` with torch's own defaults for whatever ``hyper`` leaves out."""
    import torch
    classes = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if kind not in classes:
        raise ValueError(f"optimizer must be one of {', '.join(classes)}, got {kind!r}")
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    return classes[kind](parameters, **hyper)


def train_and_compare(model: str = "flatten_linear", optimizer: str = "sgd", steps: int = 1, source: str = "torch",
                      batch: int = 8, seed: int = 0, epsilon: str = "torch", correction: bool = False,
                      keras_optimizer: Any = None, scenario: str = "optimizer_step", **hyper: Any) -> ScenarioResult:
    """Train the converted model ``steps`` steps on the same seeded batches in both frameworks; compare.

    ``hyper`` are the torch optimizer's arguments (``lr``, ``momentum``, ``nesterov``, ``weight_decay``,
    ``betas``, ``eps``, ``amsgrad``); the Keras optimizer is ``keras_optimizer_for`` of it unless
    ``keras_optimizer`` (a callable taking the torch optimizer) plants another one.
    """
    models = build_models(model, source, seed, correction)
    data = batches(models, steps, batch, seed + 1)
    start = torch_state(models.torch)
    torch_opt = torch_optimizer(optimizer, models.torch.parameters(), **hyper)
    keras_opt = (keras_optimizer or (lambda o: keras_optimizer_for(o, epsilon=epsilon)))(torch_opt)
    train_torch(models, torch_opt, data)
    train_keras(models, keras_opt, data)
    tensors = compare_states(start, torch_state(models.torch), keras_state_in_torch_layout(models),
                             training_allowance(optimizer))
    has_bn = any(name.endswith("running_var") for name in start)
    expected = None
    if optimizer in ("adam", "adamw") and epsilon == "keras" and keras_optimizer is None:
        expected = ADAM_EPSILON
    elif has_bn and not correction:
        expected = RUNNING_VAR
    return ScenarioResult(
        scenario=scenario,
        params=dict(model=model, optimizer=optimizer, steps=steps, source=source, batch=batch, seed=seed,
                    epsilon=epsilon, correction=correction, keras_optimizer=type(keras_opt).__name__, **hyper),
        tensors=tensors, expected=expected,
        tolerance=(f"per tensor: {PARAM_RELATIVE[optimizer]:g} (parameters) or {RUNNING_RELATIVE:g} (running "
                   f"statistics) x its largest change over the run in torch, + {FLOOR:g} x max(|value|, 1)"))


def fine_tune(model: str = "residual_block", optimizer: str = "sgd", source: str = "torch", steps: int = 10,
              correction: bool = False, seed: int = 0, **hyper: Any) -> ScenarioResult:
    """Ten steps of SGD with momentum (lr 0.05, momentum 0.9) or Adam (lr 1e-3) from converted weights,
    BatchNorm in training mode: "can I continue training in the other framework?"."""
    defaults = {"sgd": {"lr": 0.05, "momentum": 0.9}, "adam": {"lr": 1e-3}}[optimizer]
    return train_and_compare(model=model, optimizer=optimizer, steps=steps, source=source, seed=seed,
                             correction=correction, scenario="fine_tune", **{**defaults, **hyper})


SCENARIOS: dict[str, Callable[..., ScenarioResult]] = {
    "batch_norm_training": batch_norm_training,
    "optimizer_step": train_and_compare,
    "fine_tune": fine_tune,
}

# The parameters that name one of a few things, checked when a case file loads (a typo there would
# otherwise surface as a KeyError deep inside a run).
_OPTIMIZERS = ("sgd", "adam", "adamw")
CHOICES: dict[str, dict[str, tuple[Any, ...]]] = {
    "batch_norm_training": {"family": ("batch_norm1d", "batch_norm2d", "batch_norm3d")},
    "optimizer_step": {"model": MODELS, "optimizer": _OPTIMIZERS, "source": ("torch", "keras"),
                       "epsilon": ("torch", "keras")},
    "fine_tune": {"model": MODELS, "optimizer": ("sgd", "adam"), "source": ("torch", "keras")},
}


DIVERGENCES = {record.rule: record for record in (RUNNING_VAR, ADAM_EPSILON, SGD_WEIGHT_DECAY)}


def check_params(scenario: str, params: dict[str, Any]) -> None:
    """Refuse an unknown scenario or parameter with a :class:`CaseError` naming it (the field)."""
    if scenario not in SCENARIOS:
        raise CaseError(f"unknown training scenario {scenario!r}; known: {', '.join(SCENARIOS)}", field="scenario")
    signature = inspect.signature(SCENARIOS[scenario])
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    for name in params:
        if name not in signature.parameters and not (open_ended and name in OPTIMIZER_HYPER):
            known = sorted({*signature.parameters, *(OPTIMIZER_HYPER if open_ended else ())} - {"hyper"})
            raise CaseError(f"scenario {scenario!r} has no parameter {name!r}; known: {', '.join(known)}", field=name)
    for name, allowed in CHOICES[scenario].items():
        if name in params and params[name] not in allowed:
            raise CaseError(f"{name} must be one of {', '.join(map(str, allowed))}, got {params[name]!r}", field=name)


def run_scenario(scenario: str, *, expect: str | Divergence | None = "auto", **params: Any) -> ScenarioResult:
    """Run one training scenario by name with its parameters (a catalogue case's fields).

    ``expect`` is the divergence the case records: ``"auto"`` (the scenario's own rule: the
    running-variance divergence for BatchNorm without the correction, the epsilon convention for
    stock Keras Adam), ``None`` (none: everything must agree), a rule name from :data:`DIVERGENCES`,
    or a :class:`Divergence` (a case file's record that applies here). Raises :class:`CaseError`
    naming the scenario or parameter that is wrong.
    """
    check_params(scenario, params)
    if isinstance(expect, str) and expect != "auto" and expect not in DIVERGENCES:
        raise CaseError(f"unknown divergence rule {expect!r}; known: {', '.join(DIVERGENCES)}", field="expect")
    try:
        result = SCENARIOS[scenario](**params)
    except (ValueError, TypeError) as exc:
        raise CaseError(f"scenario {scenario!r} rejected its parameters {params}: {exc}") from None
    if expect == "auto":
        return result
    if isinstance(expect, str):
        expect = DIVERGENCES[expect]
    return replace(result, expected=expect)

"""Training across frameworks: BatchNorm in training mode, optimizer steps, fine-tuning.

The entry point for the catalogue is :func:`run_scenario`::

    from conformance.training import run_scenario
    result = run_scenario("fine_tune", model="residual_block", optimizer="adam", source="keras")
    result.verdict        # "passed", "failed", "divergence" (expected, reproduced) or "unexpected pass"
    result.passed, result.headroom, result.worst_tensor, result.summary()

Also public: :func:`keras_optimizer_for` (torch optimizer -> Keras optimizer, refusing what it
cannot map), :func:`keras_momentum` (BatchNorm momentum), the opt-in Keras classes
:class:`UnbiasedBatchNormalization` and :class:`TorchAdam`, and the divergence records
:data:`RUNNING_VAR` and :data:`ADAM_EPSILON`. Names load on first use, torch before Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..families.norm import keras_momentum
from ..lazy import lazy_attribute
from .results import Divergence, ScenarioResult, TensorError

if TYPE_CHECKING:
    from .batchnorm import RUNNING_VAR, batch_norm_training
    from .keras_torch import TorchAdam, UnbiasedBatchNormalization, with_unbiased_batch_norm
    from .optimizers import ADAM_EPSILON, SGD_WEIGHT_DECAY, OptimizerMappingError, keras_optimizer_for
    from .scenarios import SCENARIOS, fine_tune, run_scenario, train_and_compare

__all__ = ["ADAM_EPSILON", "RUNNING_VAR", "SCENARIOS", "SGD_WEIGHT_DECAY", "Divergence", "OptimizerMappingError",
           "ScenarioResult", "TensorError", "TorchAdam", "UnbiasedBatchNormalization", "batch_norm_training",
           "fine_tune", "keras_momentum", "keras_optimizer_for", "run_scenario", "train_and_compare",
           "with_unbiased_batch_norm"]

_LAZY = {
    "RUNNING_VAR": "batchnorm", "batch_norm_training": "batchnorm",
    "TorchAdam": "keras_torch", "UnbiasedBatchNormalization": "keras_torch", "with_unbiased_batch_norm": "keras_torch",
    "ADAM_EPSILON": "optimizers", "SGD_WEIGHT_DECAY": "optimizers", "OptimizerMappingError": "optimizers",
    "keras_optimizer_for": "optimizers",
    "SCENARIOS": "scenarios", "fine_tune": "scenarios", "run_scenario": "scenarios", "train_and_compare": "scenarios",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name, globals())

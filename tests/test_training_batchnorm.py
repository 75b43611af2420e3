"""BatchNorm in training mode across frameworks: outputs, running statistics, the n/(n-1) divergence,
the opt-in correction, and a planted unmapped momentum that must be caught."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import conformance
from conformance.families.norm import keras_momentum
from conformance.training import (
    RUNNING_VAR,
    Divergence,
    ScenarioResult,
    TensorError,
    TorchAdam,
    UnbiasedBatchNormalization,
    batch_norm_training,
)

SHAPES = {   # family -> (num_features, per-sample shape, batch): n = batch * prod(shape[1:])
    "batch_norm1d": (3, (3,), 4),           # n = 4: the factor is 4/3, far from 1
    "batch_norm2d": (5, (5, 6, 7), 4),      # n = 168
    "batch_norm3d": (2, (2, 3, 4, 5), 2),   # n = 120
}


def test_momentum_is_mapped_in_one_place() -> None:
    assert keras_momentum(0.1) == pytest.approx(0.9)
    assert keras_momentum(0.01) == pytest.approx(0.99)
    pair = conformance.build_pair("batch_norm2d", num_features=5, momentum=0.01, input_shape=(5, 6, 7))
    layer = next(x for x in pair.keras.layers if isinstance(x, keras.layers.BatchNormalization))
    assert layer.momentum == pytest.approx(1 - pair.torch.momentum)
    residual = conformance.build_pair("residual_block", out_channels=4, input_shape=(4, 9, 9))
    for layer in residual.keras.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.momentum == pytest.approx(1 - 0.1)
    with pytest.raises(ValueError, match="momentum=None"):
        keras_momentum(None)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        keras_momentum(1.5)


@pytest.mark.parametrize("family", sorted(SHAPES))
def test_running_var_diverges_by_exactly_n_over_n_minus_1(family: str) -> None:
    features, shape, batch = SHAPES[family]
    result = batch_norm_training(family, features, shape, batch=batch, steps=1)
    n = batch * math.prod(shape[1:])
    assert result.measured["n"] == n
    # The factor measured from the two frameworks' running_var updates: torch's over Keras's.
    assert result.measured["variance_factor"] == pytest.approx(n / (n - 1), rel=1e-5)
    assert result.verdict == "divergence", result.summary()
    assert result.failing == ("running_var",)          # outputs and running_mean agree
    assert result.passed


@pytest.mark.parametrize("family", sorted(SHAPES))
@pytest.mark.parametrize("steps", [1, 6])
def test_correction_makes_running_statistics_agree(family: str, steps: int) -> None:
    features, shape, batch = SHAPES[family]
    result = batch_norm_training(family, features, shape, batch=batch, steps=steps, correction=True)
    assert result.verdict == "passed", result.summary()
    assert result.measured["variance_factor"] == pytest.approx(1.0, abs=1e-5)
    names = {t.name for t in result.tensors}
    assert {"running_mean", "running_var", *(f"output[{i}]" for i in range(steps))} == names


def test_batch_statistics_output_agrees_after_several_passes() -> None:
    result = batch_norm_training(steps=4, momentum=0.3)
    outputs = [t for t in result.tensors if t.name.startswith("output")]
    assert len(outputs) == 4 and all(t.passed for t in outputs), result.summary()


def test_meta_unmapped_momentum_fails() -> None:
    """torch's 0.1 passed to Keras as is: the running statistics check must fail."""
    for correction in (False, True):
        result = batch_norm_training(steps=3, keras_momentum_override=0.1, correction=correction)
        assert result.verdict == "failed", result.summary()
        assert "running_mean" in result.failing
        assert not result.passed


def test_divergence_is_strict() -> None:
    """An expected divergence that does not show is an unexpected pass, which fails."""
    ok = TensorError("bn.running_var", 0.0, 1e-6, 0.0)
    result = ScenarioResult("x", {}, (ok,), "t", expected=RUNNING_VAR)
    assert result.verdict == "unexpected pass" and not result.passed
    other = TensorError("conv.weight", 1.0, 1e-6, 1e6)
    result = ScenarioResult("x", {}, (ok, other), "t", expected=RUNNING_VAR)
    assert result.verdict == "failed", "a failure outside the divergence's tensors is not the divergence"
    result = ScenarioResult("x", {}, (TensorError("bn.running_var", 1.0, 1e-6, 1e6),), "t",
                            expected=Divergence("r", "why", ("*running_var",)))
    assert result.verdict == "divergence" and result.worst_tensor == "bn.running_var"


def test_corrected_layer_and_torch_adam_save_and_load_in_safe_mode(tmp_path) -> None:
    inputs = keras.Input((6, 7, 5))
    model = keras.Model(inputs, UnbiasedBatchNormalization(momentum=0.9, epsilon=1e-5)(inputs))
    model.compile(optimizer=TorchAdam(learning_rate=1e-3, epsilon=1e-8), loss="mse")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 6, 7, 5)).astype("float32")
    model.train_on_batch(x, x)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded.layers[-1]) is UnbiasedBatchNormalization
    assert type(loaded.optimizer) is TorchAdam
    np.testing.assert_array_equal(loaded.layers[-1].moving_variance, model.layers[-1].moving_variance)


def test_correction_reaches_nested_models_and_keeps_weights() -> None:
    from conformance.training import with_unbiased_batch_norm
    inner = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.BatchNormalization()])
    inputs = keras.Input((4, 4, 3))
    outer = keras.Model(inputs, keras.layers.BatchNormalization()(inner(inputs)))
    inner.layers[0].moving_variance.assign(np.full(3, 2.5, "float32"))
    copy = with_unbiased_batch_norm(outer)
    norms = [layer for layer in copy._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 2 and all(type(layer) is UnbiasedBatchNormalization for layer in norms)
    assert any(np.allclose(layer.moving_variance, 2.5) for layer in norms)

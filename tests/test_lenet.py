"""The headline scenario: LeNet-5 written twice, weights moved through saved files, outputs compared.

Each direction goes through the files a user would have (a torch ``state_dict`` saved with
``torch.save``; a Keras ``.keras`` archive, a legacy ``.h5`` model or a ``.weights.h5`` file),
for the Sequential and the functional Keras model. The naive zip-and-transpose recipe is shown
to pass every shape check and still compute something else, and a transfer between models that
do not correspond is refused without touching the destination.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch  # before keras/tensorflow, always

import conformance
from conformance.models import TorchLeNet5, keras_lenet5, naive_transfer

keras = pytest.importorskip("keras")

SEED = 1234
ATOL = 1e-5
VARIANTS = [pytest.param(False, id="sequential"), pytest.param(True, id="functional")]


def _torch_lenet(seed: int = SEED) -> TorchLeNet5:
    torch.manual_seed(seed)
    return TorchLeNet5().eval()


def _keras_lenet(functional: bool, seed: int = SEED) -> Any:
    keras.utils.set_random_seed(seed)
    return keras_lenet5(functional=functional)


def _inputs(seed: int = SEED, batch: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(batch, 1, 32, 32)).astype(np.float32)


def _torch_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _assert_same_torch_state(before: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"{name} was modified"


def _assert_same_keras_weights(before: list[np.ndarray], model: Any) -> None:
    after = model.get_weights()
    assert len(before) == len(after)
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        assert np.array_equal(b, a), f"keras weight #{i} ({model.weights[i].path}) was modified"


def _assert_close(torch_model: Any, keras_model: Any, label: str) -> conformance.Comparison:
    result = conformance.compare(torch_model, keras_model, _inputs())
    print(f"{label}: {result.summary()}")
    assert result.passed, result.summary()
    assert result.max_abs_error <= ATOL, result.summary()
    return result


# ---- the models themselves


def test_models_package_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = ("import sys, conformance.models; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("functional", VARIANTS)
def test_architectures_agree(functional: bool) -> None:
    torch_model, keras_model = _torch_lenet(), _keras_lenet(functional)
    assert type(keras_model).__name__ == ("Functional" if functional else "Sequential")
    assert tuple(keras_model.inputs[0].shape[1:]) == (32, 32, 1)
    assert tuple(keras_model.outputs[0].shape[1:]) == (10,)
    torch_shapes = [tuple(p.shape) for p in torch_model.parameters()]
    keras_shapes = [tuple(w.shape) for w in keras_model.get_weights()]
    assert sum(np.prod(s) for s in torch_shapes) == sum(np.prod(s) for s in keras_shapes) == 61706
    assert tuple(torch_model(torch.zeros(2, 1, 32, 32)).shape) == (2, 10)


# ---- torch -> keras, through a saved state_dict


@pytest.mark.parametrize("functional", VARIANTS)
def test_torch_to_keras_via_saved_state_dict(tmp_path: Path, functional: bool) -> None:
    path = tmp_path / "lenet5.pt"
    torch.save(_torch_lenet().state_dict(), path)

    restored = TorchLeNet5()
    restored.load_state_dict(torch.load(path, weights_only=True))
    restored.eval()
    keras_model = _keras_lenet(functional, seed=SEED + 1)

    mapping = conformance.transfer_weights(restored, keras_model)
    assert mapping.direction == "torch->keras"
    assert len(mapping) == 10
    _assert_close(restored, keras_model, f"torch->keras ({'functional' if functional else 'sequential'})")


# ---- keras -> torch, through saved Keras files


def _save_and_load(model: Any, tmp_path: Path, fmt: str, functional: bool) -> Any:
    if fmt == "keras":
        path = tmp_path / "lenet5.keras"
        model.save(path)
        return keras.models.load_model(path, safe_mode=True)
    if fmt == "h5":   # the legacy full-model HDF5 format, still readable by Keras 3
        path = tmp_path / "lenet5.h5"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(path)
            return keras.models.load_model(path, safe_mode=True, compile=False)
    if fmt == "weights.h5":   # weights only: Keras 3 requires the .weights.h5 suffix
        path = tmp_path / "lenet5.weights.h5"
        model.save_weights(path)
        fresh = _keras_lenet(functional, seed=SEED + 2)
        fresh.load_weights(path)
        return fresh
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["keras", "h5", "weights.h5"])
@pytest.mark.parametrize("functional", VARIANTS)
def test_keras_to_torch_via_saved_file(tmp_path: Path, functional: bool, fmt: str) -> None:
    original = _keras_lenet(functional)
    loaded = _save_and_load(original, tmp_path, fmt, functional)
    for a, b in zip(original.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    torch_model = _torch_lenet(seed=SEED + 3)
    mapping = conformance.transfer_weights(loaded, torch_model)
    assert mapping.direction == "keras->torch"
    assert len(mapping) == 10
    kind = "functional" if functional else "sequential"
    _assert_close(torch_model, loaded, f"keras->torch ({kind}, {fmt})")


# ---- the naive recipe, and the mapping that explains what it gets wrong


@pytest.mark.parametrize("functional", VARIANTS)
def test_naive_transfer_fits_shapes_but_computes_something_else(functional: bool,
                                                                record_property: Any) -> None:
    torch_model = _torch_lenet()
    keras_model = _keras_lenet(functional, seed=SEED + 1)
    inputs = _inputs()

    naive_transfer(torch_model, keras_model)       # every shape assertion inside passes
    naive = conformance.compare(torch_model, keras_model, inputs)
    print(f"naive transfer: {naive.summary()}")
    record_property("naive_max_abs_error", naive.max_abs_error)
    assert not naive.passed, naive.summary()
    assert naive.max_abs_error > 1e-3
    assert naive.max_abs_error > 10 * naive.allowed_error

    # The naive recipe gets everything right except the first Dense's row order.
    fc1 = keras_model.get_layer("fc1")
    naive_kernel = np.asarray(fc1.kernel.numpy())
    conformance.transfer_weights(torch_model, keras_model)
    proper = conformance.compare(torch_model, keras_model, inputs)
    print(f"proper transfer: {proper.summary()}")
    assert proper.passed, proper.summary()
    assert proper.max_abs_error <= ATOL
    assert not np.array_equal(naive_kernel, np.asarray(fc1.kernel.numpy()))
    again = _keras_lenet(functional, seed=SEED + 5)
    naive_transfer(torch_model, again)
    for name in ("conv1", "conv2", "fc2", "fc3"):
        layer = keras_model.get_layer(name)
        for a, b in zip(layer.get_weights(), again.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("functional", VARIANTS)
def test_mapping_names_the_flatten_reordering(functional: bool) -> None:
    torch_model, keras_model = _torch_lenet(), _keras_lenet(functional)
    mapping = conformance.transfer_weights(torch_model, keras_model)
    print(mapping)
    rows = {row.source: row for row in mapping}
    fc1 = rows["classifier.1.weight"]
    assert fc1.destination == "fc1/kernel"
    assert (fc1.source_shape, fc1.destination_shape) == ((120, 400), (400, 120))
    assert "(C H W)" in fc1.rule and "(H W C)" in fc1.rule
    assert "re-ordered" in fc1.rule
    # Only that kernel is re-ordered; the other Dense kernels are plain transposes.
    for name in ("classifier.3.weight", "classifier.5.weight"):
        assert rows[name].rule == "O I -> I O"
    assert rows["features.0.weight"].rule == "O I H W -> H W I O"
    assert "(C H W)" in str(mapping)

    back = conformance.transfer_weights(keras_model, _torch_lenet(seed=SEED + 1))
    assert "(C H W)" in {r.source: r for r in back}["fc1/kernel"].rule


# ---- models that do not correspond


def _keras_variant(functional: bool, *, fc1_units: int = 120, with_conv2: bool = True) -> Any:
    """A LeNet-like Keras model with one deliberate difference from TorchLeNet5."""
    layers = keras.layers
    stack = [layers.Conv2D(6, 5, activation="relu", name="conv1"), layers.MaxPooling2D(2, name="pool1")]
    if with_conv2:
        stack.append(layers.Conv2D(16, 5, activation="relu", name="conv2"))
    stack += [layers.MaxPooling2D(2, name="pool2"), layers.Flatten(name="flatten"),
              layers.Dense(fc1_units, activation="relu", name="fc1"),
              layers.Dense(84, activation="relu", name="fc2"), layers.Dense(10, name="fc3")]
    keras.utils.set_random_seed(SEED + 7)
    if not functional:
        return keras.Sequential([keras.Input((32, 32, 1)), *stack])
    x = inputs = keras.Input((32, 32, 1))
    for layer in stack:
        x = layer(x)
    return keras.Model(inputs, x)


MISMATCHES = [
    pytest.param(dict(fc1_units=100), ("layer pair #3", "Linear 'classifier.1'", "Dense 'fc1'"),
                 id="fc1-100-units"),
    pytest.param(dict(with_conv2=False), ("layer pair #2", "Conv2d 'features.3'", "Dense 'fc1'"),
                 id="missing-conv2"),
]


@pytest.mark.parametrize("functional", VARIANTS)
@pytest.mark.parametrize(("variant", "expected"), MISMATCHES)
def test_mismatch_torch_to_keras_leaves_keras_untouched(functional: bool, variant: dict,
                                                         expected: tuple) -> None:
    torch_model, keras_model = _torch_lenet(), _keras_variant(functional, **variant)
    before = [w.copy() for w in keras_model.get_weights()]
    with pytest.raises(conformance.ConversionError) as info:
        conformance.transfer_weights(torch_model, keras_model)
    message = str(info.value)
    print(message)
    for fragment in expected:
        assert fragment in message
    _assert_same_keras_weights(before, keras_model)


@pytest.mark.parametrize("functional", VARIANTS)
@pytest.mark.parametrize(("variant", "expected"), MISMATCHES)
def test_mismatch_keras_to_torch_leaves_torch_untouched(functional: bool, variant: dict,
                                                         expected: tuple) -> None:
    keras_model, torch_model = _keras_variant(functional, **variant), _torch_lenet()
    before = _torch_state(torch_model)
    with pytest.raises(conformance.ConversionError) as info:
        conformance.transfer_weights(keras_model, torch_model)
    message = str(info.value)
    print(message)
    for fragment in expected:
        assert fragment in message
    _assert_same_torch_state(before, torch_model)


def test_extra_torch_layer_is_refused() -> None:
    """A Keras LeNet without its last Dense: the torch model's extra layer is named."""
    torch_model = _torch_lenet()
    full = _keras_lenet(False)
    truncated = keras.Model(full.inputs, full.get_layer("fc2").output)
    before = [w.copy() for w in truncated.get_weights()]
    with pytest.raises(conformance.ConversionError, match=r"layer pair #5: torch Linear 'classifier.5'"):
        conformance.transfer_weights(torch_model, truncated)
    _assert_same_keras_weights(before, truncated)

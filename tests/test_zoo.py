"""The twin zoo: keras.applications models against their torch twins (conformance/zoo_models.py).

The catalogue runs each case both ways (cases/zoo.toml, cases/efficientnet_b0.toml); here, twins
with a plausible mistake (PyTorch's own conventions where Keras differs) are caught, by a refusal
at transfer where the structure differs and by the numbers where only the weights' use does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conformance import ConversionError, build_pair, compare, transfer_weights
from conformance.cases import load_file
from conformance.families import converters
from conformance.pair import randomize_keras, randomize_torch
from conformance.runner import use_one_torch_thread
from conformance.zoo_models import KerasPad2d, correct_pad, keras_same_padding

CASES = Path(__file__).resolve().parent.parent / "cases"
ZOO = {case.id: case for case in load_file(CASES / "zoo.toml")}
EFFICIENTNET = {case.id: case for case in load_file(CASES / "efficientnet_b0.toml")}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    use_one_torch_thread()


def _pair(arch: str, shape: tuple[int, int, int] = (3, 32, 32)) -> Any:
    return build_pair("keras_application", arch=arch, input_shape=shape, classes=10, classifier_activation="none")


def _inputs(pair: Any) -> list[np.ndarray]:
    return list(pair.sample_inputs(7, 2))


def _keras_to(pair: Any, twin: Any) -> Any:
    """Seeded Keras weights moved into ``twin``, then the comparison against the Keras model."""
    randomize_keras(pair.keras, 3)
    transfer_weights(pair.keras, twin)
    return compare(twin, pair.keras, _inputs(pair), tolerance=pair.family.tolerance(pair.params),
                   channels_last=True)


# ---- the catalogue's zoo, both directions, through the runner -------------------------------------------


def test_the_zoo_covers_the_five_architectures() -> None:
    archs = {case.params["arch"] for case in [*ZOO.values(), *EFFICIENTNET.values()]}
    assert archs == {"vgg16", "resnet50", "mobilenet_v2", "densenet121", "efficientnet_b0"}


def test_the_normalization_statistics_take_effect_after_transfer(efficientnet: Any) -> None:
    """Keras's Normalization computes its mean and variance tensors once, in finalize_state(); transfer
    calls the converter's after_keras_write, or Keras would keep normalising with the old values."""
    pair = efficientnet
    randomize_torch(pair.torch, 4)
    transfer_weights(pair.torch, pair.keras)
    result = compare(pair.torch, pair.keras, _inputs(pair), tolerance=pair.family.tolerance(pair.params),
                     channels_last=True)
    assert result.passed, result.summary()
    hooks = [layer for layer in pair.keras.get_layer(index=1).layers for c in converters()
             if c.after_keras_write is not None and c.claims_keras(layer)]
    assert [type(layer).__name__ for layer in hooks] == ["Normalization"]


@pytest.fixture(scope="module")
def efficientnet() -> Any:
    return _pair("efficientnet_b0")


def test_deep_init_keeps_the_input_deciding_the_output(efficientnet: Any) -> None:
    """Without calibrated BatchNorm statistics, EfficientNetB0's output varied between inputs by
    3e-4 of its size, and a wrong stem hid inside the tolerance."""
    randomize_torch(efficientnet.torch, 5)
    batch = efficientnet.sample_inputs(8, 16)[0]
    with torch.no_grad():
        out = efficientnet.torch(torch.from_numpy(batch)).double().numpy()
    assert out.std(axis=0).mean() > 0.1 * np.abs(out).mean()


def test_efficientnet_without_its_rescaling_is_refused(efficientnet: Any) -> None:
    twin = efficientnet.family.build_torch(efficientnet.params).eval()
    twin.rescaling = nn.Identity()
    with pytest.raises(ConversionError, match="Rescaling"):
        transfer_weights(efficientnet.keras, twin)


# ---- plausible wrong twins are caught -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet() -> Any:
    return _pair("mobilenet_v2")


def test_mobilenet_with_symmetric_stride2_padding_is_caught(mobilenet: Any) -> None:
    """PyTorch's padding=1 on a stride-2 3x3 gives the same shapes as Keras's correct_pad and
    "same" (bottom/right only, for even sizes), and other numbers."""
    right = _keras_to(mobilenet, mobilenet.family.build_torch(mobilenet.params).eval())
    assert right.passed, right.summary()
    wrong = mobilenet.family.build_torch(mobilenet.params).eval()
    for module in list(wrong.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, KerasPad2d):
                setattr(module, name, nn.ZeroPad2d(1))
    with pytest.raises(ConversionError, match=r"padding as resolved differs: torch pads \(1 before/1 after"):
        _keras_to(mobilenet, wrong)


def test_resnet50_with_torchvisions_stride_placement_is_caught() -> None:
    """torchvision's ResNet50 (v1.5) strides the 3x3, Keras's the first 1x1: same shapes, other numbers."""
    pair = _pair("resnet50")
    wrong = pair.family.build_torch(pair.params).eval()
    moved = 0
    for block in wrong.blocks:
        if block.conv1.stride == (2, 2):
            block.conv1.stride, block.conv2.stride = (1, 1), (2, 2)
            moved += 1
    assert moved == 3
    with pytest.raises(ConversionError, match=r"stride \(1, 1\) vs strides \(2, 2\); set the torch layer's "
                                              r"stride=\(2, 2\)"):
        _keras_to(pair, wrong)


def test_densenet_with_torchs_batchnorm_eps_is_refused() -> None:
    pair = _pair("densenet121")
    wrong = pair.family.build_torch(pair.params).eval()
    for module in wrong.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 1e-5
    with pytest.raises(ConversionError, match=r"eps 1e-05 vs epsilon 1.001e-05"):
        transfer_weights(pair.keras, wrong)


# ---- the preprocessing layers' pairs refuse what would compute something else ---------------------------


def test_a_rescaling_with_another_scale_is_refused() -> None:
    pair = build_pair("rescaling", scale=1 / 255, input_shape=(3, 4, 4))
    pair.torch.scale = 1 / 256
    with pytest.raises(ConversionError, match="scale"):
        transfer_weights(pair.torch, pair.keras)


def test_a_normalization_with_another_epsilon_or_direction_is_refused() -> None:
    pair = build_pair("normalization", num_features=3, input_shape=(3, 4, 4))
    transfer_weights(pair.keras, pair.torch)
    pair.torch.epsilon = 1e-3
    with pytest.raises(ConversionError, match="epsilon"):
        transfer_weights(pair.keras, pair.torch)
    pair.torch.epsilon, pair.torch.invert = 1e-7, True
    with pytest.raises(ConversionError, match="invert"):
        transfer_weights(pair.keras, pair.torch)


# ---- the twins' padding rules are Keras's ---------------------------------------------------------------


@pytest.mark.parametrize("size", [31, 32, 33, 35, 48])
@pytest.mark.parametrize("kernel", [3, 5])
def test_padding_rules_match_keras(size: int, kernel: int) -> None:
    import keras
    from keras.src.applications.imagenet_utils import correct_pad as keras_correct_pad
    x = keras.KerasTensor((None, size, size + 1, 4))
    assert keras_correct_pad(x, kernel) == (correct_pad(size, kernel), correct_pad(size + 1, kernel))
    image = np.random.default_rng(size).normal(size=(1, size, size, 1)).astype(np.float32)
    ones = np.ones((kernel, kernel, 1, 1), np.float32)
    same = keras.ops.conv(image, ones, strides=2, padding="same")
    top, bottom = keras_same_padding(size, kernel, 2)
    padded = np.pad(image, ((0, 0), (top, bottom), (top, bottom), (0, 0)))
    np.testing.assert_allclose(np.asarray(same), np.asarray(keras.ops.conv(padded, ones, strides=2)), rtol=1e-5)


def test_the_efficientnet_twin_for_imagenet_weights_has_kerass_extra_rescaling() -> None:
    """keras.applications.EfficientNetB0(weights="imagenet") adds Rescaling(1 / sqrt(stddev)) after
    its Normalization; nothing is downloaded here, so the pair's check is tested on its own."""
    import math

    import keras

    from conformance.zoo_models import EfficientNetB0
    check = next(c for c in converters() if c.name == "rescaling").check
    assert check is not None
    layer = keras.layers.Rescaling([1.0 / math.sqrt(s) for s in (0.229, 0.224, 0.225)])
    assert check(EfficientNetB0(imagenet=True).imagenet_rescaling, layer) is None
    assert "scale" in (check(EfficientNetB0().rescaling, layer) or "")
    assert EfficientNetB0().imagenet_rescaling is None

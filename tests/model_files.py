"""Model files for the tests of ``conformance inspect`` and ``convert``: LeNet-5 in every format,
a small model with a Flatten head, and malicious files whose payload would create a file.

Torch is imported before Keras, as everywhere in this project.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conformance.models import TorchLeNet5, keras_lenet5

SEED = 1234

# A torch architecture as a user's file: `--torch-model path/to/flatnet.py:build`. The conv output
# is 5 channels x 6 x 7, so a Dense that reads it in the wrong order cannot pass by symmetry.
FLATNET = '''
import torch


def build():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(5 * 6 * 7, 4))
'''

# LeNet variants: the same weights with another forward (verification must fail), another head
# (the weights do not fit), and a factory that raises.
VARIANTS = '''
import torch
from conformance.models.lenet import TorchLeNet5


class TanhLeNet(TorchLeNet5):
    """Another forward with the same weights. (A bare tanh on the logits is refused at transfer by the
    structural check; a scaled one is computed outside its vocabulary and left to the numbers.)"""

    def forward(self, x):
        return torch.tanh(super().forward(x) * 0.5)


def twelve_classes():
    model = TorchLeNet5()
    model.classifier[5] = torch.nn.Linear(84, 12)
    return model


def broken():
    raise RuntimeError("needs a GPU")


NOT_CALLABLE = 3
'''


def keras_flatnet(seed: int) -> Any:
    import keras
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 9, 3))
    x = keras.layers.Conv2D(5, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name="flatnet")


def torch_lenet(seed: int = SEED) -> TorchLeNet5:
    torch.manual_seed(seed)
    return TorchLeNet5().eval()


def write_lenet_files(directory: Path) -> dict[str, Path]:
    """LeNet-5 saved every way a user might have it; the Keras files hold other weights than torch's."""
    import keras
    model = torch_lenet()
    paths = {name: directory / file for name, file in (
        ("pt", "lenet.pt"), ("checkpoint", "checkpoint.pth"), ("torchscript", "lenet_ts.pt"), ("pt2", "lenet.pt2"),
        ("keras", "lenet.keras"), ("h5", "lenet.h5"), ("weights", "lenet.weights.h5"), ("arch", "arch.keras"),
        ("arch_h5", "arch.h5"), ("variants", "variants.py"))}
    torch.save(model.state_dict(), paths["pt"])
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "lr": 0.1}, paths["checkpoint"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript is deprecated, and users still have it
        torch.jit.save(torch.jit.script(model), paths["torchscript"])
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 32, 32),)), paths["pt2"])
    keras.utils.set_random_seed(SEED)
    sequential = keras_lenet5()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sequential.save(paths["keras"])
        sequential.save(paths["h5"])
        sequential.save_weights(paths["weights"])
        keras.utils.set_random_seed(SEED + 1)
        functional = keras_lenet5(functional=True)
        functional.save(paths["arch"])
        functional.save(paths["arch_h5"])
    paths["variants"].write_text(VARIANTS)
    return paths


def lenet_inputs(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (3, 1, 32, 32)).astype(np.float32)


def keras_outputs(model: Any, torch_layout: np.ndarray) -> np.ndarray:
    import keras
    return keras.ops.convert_to_numpy(model(np.moveaxis(torch_layout, 1, -1), training=False))


def torch_outputs(model: Any, torch_layout: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(torch_layout)).numpy()


class Payload:
    """Unpickling this calls ``open(target, "w")``: it creates a file. Only the payload is pickled,
    as ``io.open`` and its arguments, so loading needs nothing from this module."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.target, "w"))


def write_malicious_files(directory: Path, pt2_template: Path, torchscript_template: Path, target: Path
                          ) -> dict[str, Path]:
    """Real malicious files, each of whose payload creates ``target`` when unpickled."""
    import pickle
    paths = {"zip": directory / "evil.pt", "legacy": directory / "evil_legacy.pt",
             "pt2": directory / "evil.pt2", "torchscript": directory / "evil_ts.pt"}
    torch.save({"weight": torch.zeros(3), "payload": Payload(target)}, paths["zip"])
    torch.save({"weight": torch.zeros(3), "payload": Payload(target)}, paths["legacy"],
               _use_new_zipfile_serialization=False)
    buffer = io.BytesIO()
    torch.save(((Payload(target),), {}), buffer)   # torch.export.load unpickles sample inputs with a fallback
    _replace_entry(pt2_template, paths["pt2"], "data/sample_inputs/model.pt", buffer.getvalue())
    _replace_entry(torchscript_template, paths["torchscript"], "/data.pkl", pickle.dumps(Payload(target), 2))
    return paths


def _replace_entry(template: Path, destination: Path, suffix: str, data: bytes) -> None:
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(destination, "w") as out:
        replaced = False
        for info in source.infolist():
            if info.filename.endswith(suffix):
                out.writestr(info, data)
                replaced = True
            else:
                out.writestr(info, source.read(info.filename))
    assert replaced, f"{template} has no entry ending in {suffix}"


def keras_with_lambda(directory: Path) -> dict[str, Path]:
    import keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense"),
                              keras.layers.Lambda(lambda x: x * 2.0, name="double")])
    paths = {"keras": directory / "lambda.keras", "h5": directory / "lambda.h5"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(paths["keras"])
        model.save(paths["h5"])
    return paths


def keras_with_foreign_class(template: Path, destination: Path) -> Path:
    """A .keras file whose config asks Keras to build a class from module ``os``."""
    import json
    with zipfile.ZipFile(template) as source:
        config = json.loads(source.read("config.json"))
    config["config"]["layers"][1].update({"module": "os", "class_name": "system"})
    _replace_entry(template, destination, "config.json", json.dumps(config).encode())
    return destination


def mobilenet_v2():
    """The zoo's MobileNetV2 twin at the size of the Keras file the test saves (10 classes, no softmax)."""
    from conformance.zoo_models import MobileNetV2
    return MobileNetV2(classes=10, classifier_activation=None)

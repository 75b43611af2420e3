"""``conformance inspect`` and ``conformance convert`` on model files as users have them.

LeNet-5 goes through every format in both directions, and a small model with a Flatten head
through a torch state dict and a Keras ``.keras`` file. Each converted file is checked
independently of the tool (loaded back and run against the source with plain NumPy), and a
conversion that does not verify must write nothing. Safety and bad input: test_files_safety.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch  # before keras
from model_files import (
    FLATNET,
    SEED,
    keras_flatnet,
    keras_outputs,
    lenet_inputs,
    torch_lenet,
    torch_outputs,
    write_lenet_files,
)

import conformance
from conformance import cli
from conformance.coverage import ACTIVATION_FAMILIES, KERAS_FAMILIES
from conformance.files import detect
from conformance.layertree import infer_torch_layer
from conformance.models import TorchLeNet5, keras_lenet5

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_lenet_files(tmp_path_factory.mktemp("lenet"))


@pytest.fixture(scope="module")
def results_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small results file with a known verdict per family."""
    cases = [("conv2d", "passed", 0.01), ("conv2d", "failed", 3.0), ("conv2d", "divergence", None),
             ("linear", "passed", 0.02), ("linear", "passed", 0.005), ("max_pool2d", "passed", 0.0)]
    document = {"schema": "conformance-results", "schema_version": 2, "created": "2026-01-01T00:00:00+00:00",
                "cases": [{"id": f"{f}[{i}]", "family": f, "direction": "torch->keras", "outcome": o, "headroom": h}
                          for i, (f, o, h) in enumerate(cases)]}
    path = tmp_path_factory.mktemp("results") / "results.json"
    path.write_text(json.dumps(document))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_formats_are_detected_from_content(lenet: dict[str, Path]) -> None:
    kinds = {name: detect(path).kind for name, path in lenet.items() if name != "variants"}
    assert kinds == {"pt": "torch-save", "checkpoint": "torch-save", "torchscript": "torchscript",
                     "pt2": "torch-export", "keras": "keras", "h5": "keras-h5", "weights": "keras-weights",
                     "arch": "keras", "arch_h5": "keras-h5"}


# ---- inspect


def test_inspect_state_dict_infers_types_and_says_so(lenet: dict[str, Path], results_file: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", lenet["pt"], "--json", "--results", results_file)
    assert code == 0
    report = json.loads(out)
    assert report["format"] == "torch-save" and report["types_inferred"] and report["parameters"] == 61706
    layers = {layer["path"]: layer for layer in report["layers"]}
    conv = layers["features.0"]
    assert conv["inferred"] and conv["candidates"] == ["Conv2d", "ConvTranspose2d"]
    assert conv["tensors"] == {"weight": [6, 1, 5, 5], "bias": [6]} and conv["parameters"] == 156
    assert "4-D kernel" in conv["detail"]
    assert layers["classifier.1"]["candidates"] == ["Linear"] and layers["classifier"]["parameters"] == 59134
    coverage = {row["type"]: row for row in report["coverage"]}
    assert coverage["Conv2d or ConvTranspose2d"]["families"] == ["conv2d", "conv_transpose2d"]
    assert coverage["Conv2d or ConvTranspose2d"]["inferred"]
    verdicts = coverage["Conv2d or ConvTranspose2d"]["results"]
    assert verdicts["conv2d"] == "1 FAILED, 1/3 passed, 1 recorded divergences; worst headroom 0.01"
    assert verdicts["conv_transpose2d"] == "no cases in the results"
    assert coverage["Linear"]["results"] == {"linear": "2/2 passed; worst headroom 0.02"}
    assert report["results"]["source"] == str(results_file)

    code, text, _ = run(capsys, "inspect", lenet["pt"], "--results", results_file)
    assert code == 0
    assert "INFERRED" in text and "Conv2d or ConvTranspose2d (inferred)" in text
    assert "weight (6, 1, 5, 5), bias (6,)" in text and "61,706 parameters" in text


@pytest.mark.parametrize(("name", "conv", "dense", "extra"), [
    ("torchscript", "Conv2d", "Linear", "MaxPool2d"), ("pt2", "Conv2d", "Linear", "MaxPool2d"),
    ("keras", "Conv2D", "Dense", "MaxPooling2D"), ("h5", "Conv2D", "Dense", "MaxPooling2D")])
def test_inspect_typed_formats(lenet: dict[str, Path], results_file: Path, capsys: pytest.CaptureFixture[str],
                               name: str, conv: str, dense: str, extra: str) -> None:
    code, out, _ = run(capsys, "inspect", lenet[name], "--json", "--results", results_file)
    assert code == 0
    report = json.loads(out)
    assert not report["types_inferred"] and report["parameters"] == 61706
    types = [layer["type"] for layer in report["layers"] if not layer["container"]]
    assert types.count(conv) == 2 and types.count(dense) == 3 and types.count(extra) == 2
    coverage = {row["type"]: row for row in report["coverage"]}
    assert coverage[conv]["families"] == ["conv2d"] and coverage[dense]["families"] == ["linear"]
    assert coverage[extra]["results"] == {"max_pool2d": "1/1 passed; worst headroom 0"}
    relu = "ReLU" if name in ("torchscript", "pt2") else "activation:relu"   # Keras: Conv2D(activation="relu")
    assert coverage[relu]["families"] == ["relu"] and len(coverage[relu]["layers"]) == 4
    assert coverage[relu]["results"] == {"relu": "no cases in the results"}


def test_inspect_without_results_and_uncovered_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="dense"),
                              keras.layers.GaussianNoise(0.1, name="noise")])
    model.save(tmp_path / "noisy.keras")
    monkeypatch.chdir(tmp_path)   # no reports/latest/results.json here
    code, out, _ = run(capsys, "inspect", "noisy.keras")
    assert code == 0
    assert "no results" in out
    code, out, _ = run(capsys, "inspect", "noisy.keras", "--json")
    coverage = {row["type"]: row for row in json.loads(out)["coverage"]}
    assert coverage["GaussianNoise"]["status"] == "not covered" and coverage["GaussianNoise"]["families"] == []
    assert coverage["Dense"]["status"] == "covered" and coverage["Dense"]["results"] == {}
    assert json.loads(out)["results"] is None
    code, _, err = run(capsys, "inspect", "noisy.keras", "--results", "missing.json")
    assert code == 2 and "missing.json: cannot read" in err


def test_state_dicts_inside_checkpoints(lenet: dict[str, Path], tmp_path: Path) -> None:
    inspection = conformance.inspect_file(lenet["checkpoint"])
    assert "under key 'state_dict'" in inspection.note and "ignored: epoch, lr" in inspection.note
    assert inspection.parameters == 61706
    state: dict[str, Any] = dict(torch_lenet().state_dict())
    torch.save({**state, "epoch": 3}, tmp_path / "extra.pt")
    assert "ignored, not tensors: epoch" in conformance.inspect_file(tmp_path / "extra.pt").note
    torch.save({"a": state, "b": state}, tmp_path / "two.pt")
    with pytest.raises(conformance.FileError, match="several state dicts"):
        conformance.inspect_file(tmp_path / "two.pt")


def test_inference_from_names_and_shapes() -> None:
    lstm = {"weight_ih_l0": (32, 5), "weight_hh_l0": (32, 8), "bias_ih_l0": (32,), "bias_hh_l0": (32,),
            "weight_ih_l0_reverse": (32, 5), "weight_hh_l0_reverse": (32, 8)}
    assert infer_torch_layer("rnn", lstm)[0] == ("LSTM",)
    assert "bidirectional" in infer_torch_layer("rnn", lstm)[1]
    assert infer_torch_layer("gru", {"weight_ih_l0": (24, 5), "weight_hh_l0": (24, 8)})[0] == ("GRU",)
    bn = {"weight": (6,), "bias": (6,), "running_mean": (6,), "running_var": (6,), "num_batches_tracked": ()}
    assert infer_torch_layer("bn1", bn)[0] == ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
    assert infer_torch_layer("attn", {"in_proj_weight": (24, 8), "in_proj_bias": (24,)})[0] == ("MultiheadAttention",)
    assert infer_torch_layer("token_embedding", {"weight": (100, 8)})[0] == ("Embedding", "Linear")
    assert infer_torch_layer("proj", {"weight": (100, 8)})[0] == ("Linear", "Embedding")
    assert infer_torch_layer("deconv", {"weight": (4, 3, 2, 2)})[0] == ("ConvTranspose2d", "Conv2d")
    assert infer_torch_layer("ln", {"weight": (8,), "bias": (8,)})[0] == ("LayerNorm", "GroupNorm")
    assert infer_torch_layer("scale", {"gamma": (3,)})[0] == ()


def test_keras_family_table_names_real_families() -> None:
    from conformance.families import families
    known = set(families())
    named = {f for names in KERAS_FAMILIES.values() for f in names} | set(ACTIVATION_FAMILIES.values())
    assert named <= known, sorted(named - known)


# ---- convert: LeNet-5 in both directions, through files


def _keras_from(path: Path) -> Any:
    if path.name.endswith(".weights.h5"):
        model = keras_lenet5(functional=True)
        model.load_weights(path)
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras.models.load_model(path, safe_mode=True, compile=False)


@pytest.mark.parametrize(("source", "architecture", "output"), [
    ("pt", "arch", "converted.keras"), ("checkpoint", "arch_h5", "converted.h5"),
    ("torchscript", "arch", "converted.keras"), ("pt2", "arch", "converted.keras"),
    ("pt", "arch", "converted.weights.h5")])
def test_convert_lenet_torch_to_keras(lenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      source: str, architecture: str, output: str) -> None:
    before = digest(lenet[architecture]), digest(lenet[source])
    target = tmp_path / output
    code, out, err = run(capsys, "convert", "--from", lenet[source], "--torch-model",
                         "conformance.models.lenet:TorchLeNet5", "--to-architecture", lenet[architecture],
                         "--output", target)
    assert code == 0, out + err
    assert "weight transfer torch->keras: 10 tensors" in out and "rows re-ordered" in out
    assert f"verified: PASS; written {target}" in out and "headroom" in out
    assert (digest(lenet[architecture]), digest(lenet[source])) == before   # inputs untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [output]          # no temporary file left
    x = lenet_inputs()
    expected = torch_outputs(torch_lenet(), x)
    np.testing.assert_allclose(keras_outputs(_keras_from(target), x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("source", ["keras", "h5"])
def test_convert_lenet_keras_to_torch(lenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      source: str) -> None:
    target = tmp_path / "converted.pt"
    code, out, err = run(capsys, "convert", "--from", lenet[source], "--torch-model",
                         "conformance.models.lenet:TorchLeNet5", "--output", target)
    assert code == 0, out + err
    assert "weight transfer keras->torch: 10 tensors" in out and "verified: PASS" in out
    model = TorchLeNet5()
    model.load_state_dict(torch.load(target, weights_only=True))
    x = lenet_inputs()
    np.testing.assert_allclose(torch_outputs(model, x), keras_outputs(_keras_from(lenet[source]), x), atol=1e-5,
                               rtol=0)
    code, out, _ = run(capsys, "inspect", target, "--json")   # and the result inspects as a state dict
    assert code == 0 and json.loads(out)["parameters"] == 61706


def test_flatten_head_state_dict_and_keras_file_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "flatnet_models.py").write_text(FLATNET)
    namespace: dict[str, Any] = {}
    exec(FLATNET, namespace)
    torch.manual_seed(SEED)
    source = namespace["build"]().eval()
    torch.save(source.state_dict(), tmp_path / "flatnet.pt")
    keras_flatnet(SEED + 1).save(tmp_path / "flatnet_arch.keras")
    x = np.random.default_rng(3).uniform(-1, 1, (4, 3, 8, 9)).astype(np.float32)

    code, out, err = run(capsys, "convert", "--from", tmp_path / "flatnet.pt", "--torch-model",
                         tmp_path / "flatnet_models.py:build", "--to-architecture", tmp_path / "flatnet_arch.keras",
                         "--output", tmp_path / "flatnet.keras")
    assert code == 0, out + err
    assert "O (C H W) -> (H W C) O" in out and "6x7x5 (H,W,C)" in out
    converted = _keras_from(tmp_path / "flatnet.keras")
    np.testing.assert_allclose(keras_outputs(converted, x), torch_outputs(source, x), atol=1e-5, rtol=0)

    # back: the Keras file into the torch architecture, the factory named as package.module:factory
    keras_flatnet(SEED + 2).save(tmp_path / "other.keras")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "convert", "--from", "other.keras", "--torch-model", "flatnet_models:build",
                         "--output", "back.pt", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["direction"] == "keras->torch" and report["written"] and report["verification"]["passed"]
    assert report["verification"]["inputs"] == {"seed": 0, "batch": 4, "shapes": [4, 3, 8, 9], "channels_last": True}
    back = namespace["build"]()
    back.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True))
    np.testing.assert_allclose(torch_outputs(back, x), keras_outputs(_keras_from(tmp_path / "other.keras"), x),
                               atol=1e-5, rtol=0)

    code, out, _ = run(capsys, "inspect", "flatnet.pt", "--json")
    layers = {layer["path"]: layer for layer in json.loads(out)["layers"]}
    assert layers["3"]["candidates"] == ["Linear"] and layers["3"]["tensors"]["weight"] == [4, 210]


def test_failed_verification_writes_nothing(lenet: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Same weights, another forward (tanh on the logits): the transfer succeeds, the numbers do not."""
    target = tmp_path / "converted.keras"
    args = ["convert", "--from", lenet["pt"], "--torch-model", f"{lenet['variants']}:TanhLeNet",
            "--to-architecture", lenet["arch"], "--output", target]
    code, out, _ = run(capsys, *args)
    assert code == 1
    assert "FAILED" in out and f"verified: FAIL; nothing written ({target} does not exist)" in out
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"the user's earlier file")
    code, out, _ = run(capsys, *args, "--force")
    assert code == 1 and "left as it was" in out
    assert target.read_bytes() == b"the user's earlier file" and list(tmp_path.iterdir()) == [target]


def test_architectures_that_do_not_correspond(lenet: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "convert", "--from", lenet["pt"], "--torch-model",
                       f"{lenet['variants']}:twelve_classes", "--to-architecture", lenet["arch"],
                       "--output", tmp_path / "x.keras")
    assert code == 2
    assert "its weights do not fit" in err and "classifier.5.weight (10, 84) in the file, (12, 84) in the model" in err
    code, _, err = run(capsys, "convert", "--from", lenet["keras"], "--torch-model",
                       f"{lenet['variants']}:twelve_classes", "--output", tmp_path / "x.pt")
    assert code == 2
    assert "do not correspond" in err and "layer pair #5" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_input_shape_and_unusable_combinations(lenet: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    base = ["convert", "--torch-model", "conformance.models.lenet:TorchLeNet5"]
    code, out, _ = run(capsys, *base, "--from", lenet["pt"], "--to-architecture", lenet["arch"],
                       "--output", tmp_path / "ok.keras", "--input-shape", "1,32,32", "--batch", "2", "--seed", "9")
    assert code == 0 and "torch layout [2, 1, 32, 32], channels-last for Keras" in out and "seed 9" in out
    refusals = {
        "--input-shape (3, 32, 32) (torch layout) fits the Keras input": [
            "--from", lenet["pt"], "--to-architecture", lenet["arch"], "--input-shape", "3,32,32"],
        "a Keras weights-only file has no architecture": ["--from", lenet["weights"]],
        "needs --to-architecture, a Keras model file": ["--from", lenet["pt"], "--to-architecture", lenet["pt"]],
        "give either --torch-model or a torch --to-architecture file": [
            "--from", lenet["keras"], "--to-architecture", lenet["pt"]],
    }
    for fragment, args in refusals.items():
        output = tmp_path / ("x.pt" if args[1] == lenet["keras"] else "x.keras")
        code, _, err = run(capsys, *base, *args, "--output", output)
        assert code == 2 and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.keras"]


def test_a_trusted_pickled_module_is_its_own_architecture(lenet: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """torch.save(model) needs --trust; then the module is the architecture, and no --torch-model is needed."""
    torch.save(torch_lenet(), tmp_path / "whole.pt")
    code, _, err = run(capsys, "inspect", tmp_path / "whole.pt")
    assert code == 2 and "refused" in err and "conformance.models.lenet.TorchLeNet5" in err
    code, out, _ = run(capsys, "inspect", tmp_path / "whole.pt", "--trust", "--json")
    report = json.loads(out)
    assert code == 0 and not report["types_inferred"] and report["layers"][0]["type"] == "TorchLeNet5"
    code, out, err = run(capsys, "convert", "--from", tmp_path / "whole.pt", "--to-architecture", lenet["arch"],
                         "--output", tmp_path / "whole.keras", "--trust")
    assert code == 0, out + err
    code, out, err = run(capsys, "convert", "--from", lenet["keras"], "--to-architecture", tmp_path / "whole.pt",
                         "--output", tmp_path / "whole_back.pt", "--trust")
    assert code == 0 and "the pickled TorchLeNet5" in out, out + err


# ---- the Python API, and staying lazy


def test_python_api(lenet: dict[str, Path], tmp_path: Path, results_file: Path) -> None:
    report = conformance.convert_file(lenet["pt"], tmp_path / "api.keras", torch_model=TorchLeNet5,
                                      to_architecture=lenet["arch"], seed=5, batch=2)
    assert isinstance(report, conformance.ConversionReport)
    assert report.passed and report.written and len(report.mapping) == 10
    assert report.comparison.max_abs_error < 1e-5 and report.comparison.headroom < 1
    document = report.to_json()
    assert document["verification"]["inputs"]["shapes"] == [2, 1, 32, 32] and document["written"]
    inspection = conformance.inspect_file(tmp_path / "api.keras", results=results_file)
    assert isinstance(inspection, conformance.Inspection) and inspection.parameters == 61706
    with pytest.raises(conformance.FileError, match="already exists"):
        conformance.convert_file(lenet["pt"], tmp_path / "api.keras", torch_model=TorchLeNet5,
                                 to_architecture=lenet["arch"])


def test_help_and_package_import_stay_light() -> None:
    code = ("import sys, conformance, conformance.cli as c; c.build_parser(); "
            "heavy = {'torch', 'tensorflow', 'keras', 'numpy'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "convert", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--from", "--output", "--torch-model", "--to-architecture", "--input-shape", "--force", "--trust"):
        assert flag in proc.stdout


def test_convert_a_zoo_model_both_ways_through_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keras.applications' MobileNetV2 saved as .keras, its torch twin from a factory: inspect both files,
    convert Keras -> torch and back, each verified."""
    import keras
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10,
                                           classifier_activation=None)
    source = tmp_path / "mobilenet.keras"
    model.save(source)
    factory = f"{Path(__file__).with_name('model_files.py')}:mobilenet_v2"
    code, out, _ = run(capsys, "inspect", source)
    assert code == 0 and "DepthwiseConv2D" in out and "BatchNormalization" in out
    code, out, err = run(capsys, "convert", "--from", source, "--torch-model", factory, "--output",
                         tmp_path / "mobilenet.pt")
    assert code == 0, out + err
    assert "verified: PASS" in out and "layers paired by graph" in out
    code, out, _ = run(capsys, "inspect", tmp_path / "mobilenet.pt")
    assert code == 0 and "(inferred)" in out
    code, out, err = run(capsys, "convert", "--from", tmp_path / "mobilenet.pt", "--torch-model", factory,
                         "--to-architecture", source, "--output", tmp_path / "back.keras")
    assert code == 0 and "verified: PASS" in out, out + err

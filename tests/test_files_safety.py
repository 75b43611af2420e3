"""Model files are untrusted input: malicious pickles, Keras Lambda layers, broken files, bad outputs.

Each malicious file here is real: its payload creates a file when unpickled, and the control
tests show that the plain loaders (``torch.load(weights_only=False)``, and ``torch.export.load``,
which falls back to it) do run it. ``inspect`` and ``convert`` must refuse them, and the file
must not appear. Every unusable input gets one line that names the file, no traceback, and
nothing written.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch  # before keras
from model_files import keras_with_foreign_class, keras_with_lambda, write_lenet_files, write_malicious_files

import conformance
from conformance import cli, files

keras = pytest.importorskip("keras")
LENET = "conformance.models.lenet:TorchLeNet5"


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_lenet_files(tmp_path_factory.mktemp("lenet"))


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the malicious payloads would write. Must never exist after a safe load."""
    return tmp_path_factory.mktemp("victim") / "PWNED"


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory, lenet: dict[str, Path], payload: Path) -> dict[str, Path]:
    return write_malicious_files(tmp_path_factory.mktemp("evil"), lenet["pt2"], lenet["torchscript"], payload)


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


# ---- malicious pickles


def test_the_payloads_are_real(tmp_path: Path, lenet: dict[str, Path]) -> None:
    """Controls: the same files, loaded the unsafe way, do create their file."""
    control = tmp_path / "control"
    made = write_malicious_files(tmp_path, lenet["pt2"], lenet["torchscript"], control)
    torch.load(made["zip"], weights_only=False)["payload"].close()
    assert control.exists()
    control.unlink()
    with contextlib.suppress(Exception):   # it falls back to weights_only=False for the sample inputs
        torch.export.load(made["pt2"])
    assert control.exists(), "torch.export.load no longer runs the payload: the control is stale"


@pytest.mark.parametrize("kind", ["zip", "legacy", "pt2", "torchscript"])
def test_inspect_refuses_malicious_files(evil: dict[str, Path], payload: Path, capsys: pytest.CaptureFixture[str],
                                         kind: str) -> None:
    code, out, err = run(capsys, "inspect", evil[kind])
    assert code == 2 and out == ""
    one_line_error(err, str(evil[kind]))
    if kind != "torchscript":   # TorchScript's own reader rejects the unknown global: a plain read error
        assert "refused" in err and "--trust" in err and "io.open" in err
    assert not payload.exists()


@pytest.mark.parametrize("kind", ["zip", "legacy", "pt2", "torchscript"])
def test_convert_refuses_malicious_files(evil: dict[str, Path], lenet: dict[str, Path], payload: Path,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    code, _, err = run(capsys, "convert", "--from", evil[kind], "--torch-model", LENET, "--to-architecture",
                       lenet["arch"], "--output", tmp_path / "out.keras")
    assert code == 2
    one_line_error(err, str(evil[kind]))
    if kind in ("zip", "legacy"):   # as the torch architecture of a keras -> torch conversion
        code, _, err = run(capsys, "convert", "--from", lenet["keras"], "--to-architecture", evil[kind],
                           "--output", tmp_path / "out.pt")
        assert code == 2 and "refused" in err
    assert not payload.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(conformance.UnsafeFileError if kind != "torchscript" else conformance.FileError):
        conformance.convert_file(evil[kind], tmp_path / "out.keras", torch_model=LENET,
                                 to_architecture=lenet["arch"])
    assert not payload.exists()


def test_pt2_load_is_weights_only_even_past_the_scan(evil: dict[str, Path], payload: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: were the archive scan to miss an entry, torch's own fallback stays weights-only."""
    monkeypatch.setattr(files, "_unsafe_pt2_entries", lambda path: [])
    with pytest.raises(conformance.FileError, match="evil.pt2"):
        conformance.inspect_file(evil["pt2"])
    assert not payload.exists()


def test_trust_is_the_only_door(tmp_path: Path, lenet: dict[str, Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "trusted-payload"
    trusted = write_malicious_files(tmp_path, lenet["pt2"], lenet["torchscript"], target)["zip"]
    code, out, _ = run(capsys, "inspect", trusted, "--trust")
    assert target.exists()            # --trust ran the pickle, as it says it would
    assert code == 0 and "ignored, not tensors: payload" in out


def test_subprocess_refusal_has_no_traceback(evil: dict[str, Path], payload: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "inspect", str(evil["zip"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    one_line_error(proc.stderr, "refused", str(evil["zip"]))
    assert not payload.exists()


# ---- Keras files that need unsafe loading


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_lambda_is_refused_unless_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                fmt: str) -> None:
    path = keras_with_lambda(tmp_path)[fmt]
    code, _, err = run(capsys, "inspect", path)
    assert code == 2
    one_line_error(err, str(path), "refused", "double is a Lambda layer", "--trust")
    code, _, err = run(capsys, "convert", "--from", path, "--torch-model", LENET, "--output", tmp_path / "o.pt")
    assert code == 2 and "Lambda" in err and not (tmp_path / "o.pt").exists()
    code, out, _ = run(capsys, "inspect", path, "--trust")
    assert code == 0 and "Lambda" in out


def test_keras_class_from_another_module_is_refused(lenet: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = keras_with_foreign_class(lenet["keras"], tmp_path / "foreign.keras")
    code, _, err = run(capsys, "inspect", path)
    assert code == 2
    one_line_error(err, str(path), "refused", "'system' from module 'os'")


# ---- broken and wrong files


def _bad_file(kind: str, directory: Path, lenet: dict[str, Path]) -> Path:
    if kind in ("truncated-pt", "truncated-keras", "truncated-h5", "truncated-torchscript"):
        source = lenet[{"truncated-pt": "pt", "truncated-keras": "keras", "truncated-h5": "h5",
                        "truncated-torchscript": "torchscript"}[kind]]
        path = directory / source.name
        path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        return path
    path = directory / {"empty": "empty.pt", "text": "notes.pt", "png": "picture.keras", "directory": "model.keras",
                        "missing": "missing.pt"}[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    elif kind == "directory":
        path.mkdir()
    return path


BAD = {"truncated-pt": "truncated or corrupt zip", "truncated-keras": "truncated or corrupt zip",
       "truncated-torchscript": "truncated or corrupt zip", "truncated-h5": "truncated or corrupt HDF5",
       "empty": "empty file (0 bytes)", "text": "not a model file this tool reads: it starts with a text file",
       "png": "not a model file this tool reads", "directory": "is a directory", "missing": "no such file"}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_files_get_one_line_naming_them(kind: str, tmp_path: Path, lenet: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = _bad_file(kind, inputs, lenet)
    code, out, err = run(capsys, "inspect", bad)
    assert code == 2 and out == ""
    one_line_error(err, f"{bad}: ", BAD[kind])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if bad.suffix == ".keras" or kind == "truncated-h5":   # as a Keras source, and as a Keras architecture
        attempts = [["--from", bad, "--torch-model", LENET, "--output", out_dir / "x.pt"],
                    ["--from", lenet["pt"], "--torch-model", LENET, "--to-architecture", bad,
                     "--output", out_dir / "x.keras"]]
    else:
        attempts = [["--from", bad, "--torch-model", LENET, "--to-architecture", lenet["arch"],
                     "--output", out_dir / "x.keras"]]
    for attempt in attempts:
        code, out, err = run(capsys, "convert", *attempt)
        assert code == 2 and out == ""
        one_line_error(err, f"{bad}: ", BAD[kind])
    assert list(out_dir.iterdir()) == []


def test_bad_torch_model_arguments(lenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {"no-colon": ("conformance.models.lenet", "expected MODULE:FACTORY"),
             "no-module": ("no_such_package.models:build", "importing no_such_package.models failed"),
             "no-attribute": (f"{lenet['variants']}:missing", "has no attribute 'missing'"),
             "not-callable": (f"{lenet['variants']}:NOT_CALLABLE", "not callable"),
             "raises": (f"{lenet['variants']}:broken", "calling it failed: RuntimeError: needs a GPU"),
             "no-file": (f"{tmp_path / 'nowhere.py'}:build", "no such Python file")}
    for spec, fragment in cases.values():
        code, _, err = run(capsys, "convert", "--from", lenet["pt"], "--torch-model", spec, "--to-architecture",
                           lenet["arch"], "--output", tmp_path / "x.keras")
        assert code == 2, spec
        one_line_error(err, fragment)
    code, _, err = run(capsys, "convert", "--from", lenet["pt"], "--to-architecture", lenet["arch"],
                       "--output", tmp_path / "x.keras")
    assert code == 2 and "give --torch-model" in err
    assert list(tmp_path.iterdir()) == []


# ---- outputs: never an input, never half-written


def _outputs(tmp_path: Path, lenet: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    existing = tmp_path / "existing.keras"
    existing.write_text("keep me")
    (tmp_path / "a-dir.keras").mkdir()
    link = tmp_path / "link.keras"
    link.symlink_to(lenet["arch"])
    return {"missing-dir": (tmp_path / "no" / "out.keras", "directory"),
            "parent-is-file": (blocker / "out.keras", "is not a directory"),
            "exists": (existing, "already exists; pass --force"),
            "is-a-directory": (tmp_path / "a-dir.keras", "is a directory"),
            "wrong-suffix": (tmp_path / "out.pt", "must end in .keras, .h5, .weights.h5"),
            "the-source": (lenet["pt"], "is the source of this conversion"),
            "the-architecture": (lenet["arch"].parent / ".." / lenet["arch"].parent.name / lenet["arch"].name,
                                 "is the architecture file"),
            "a-link-to-the-architecture": (link, "is the architecture file")}


def test_outputs_that_must_not_be_written(lenet: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cases = _outputs(tmp_path, lenet)
    before = {p: p.stat().st_mtime_ns for p in lenet.values()}
    listing = sorted(tmp_path.rglob("*"))
    for name, (output, fragment) in cases.items():
        flags = ["--force"] if name.startswith(("the-", "a-link")) else []   # --force never overwrites an input
        code, _, err = run(capsys, "convert", "--from", lenet["pt"], "--torch-model", LENET, "--to-architecture",
                           lenet["arch"], "--output", output, *flags)
        assert code == 2, name
        one_line_error(err, str(output), fragment)
    assert sorted(tmp_path.rglob("*")) == listing and (tmp_path / "existing.keras").read_text() == "keep me"
    assert {p: p.stat().st_mtime_ns for p in lenet.values()} == before


def test_read_only_directory(lenet: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if hasattr(os, "geteuid") and os.geteuid() == 0:   # root may write anywhere: let the check see what a user would
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    code, _, err = run(capsys, "convert", "--from", lenet["pt"], "--torch-model", LENET, "--to-architecture",
                       lenet["arch"], "--output", locked / "out.keras")
    assert code == 2
    one_line_error(err, "is not writable")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("direction", ["torch->keras", "keras->torch"])
def test_a_failure_while_writing_leaves_nothing(lenet: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, direction: str) -> None:
    from conformance import convert

    def half_then_fail(obj: object, path: object, *args: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    if direction == "torch->keras":
        monkeypatch.setattr(convert, "_save_keras", half_then_fail)
        output, call = tmp_path / "out.keras", dict(source=lenet["pt"], to_architecture=lenet["arch"])
    else:
        monkeypatch.setattr(torch, "save", half_then_fail)
        output, call = tmp_path / "out.pt", dict(source=lenet["keras"])
    with pytest.raises(conformance.FileError, match="out.* writing failed: OSError: .*No space left on device"):
        conformance.convert_file(output=output, torch_model=LENET, **call)
    assert list(tmp_path.iterdir()) == []

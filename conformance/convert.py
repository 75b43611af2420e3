"""``conformance convert``: move the weights of one model file into another framework's architecture.

The conversion is only as good as its check, so every conversion is verified before anything is
written: the new file is saved under a temporary name beside the output, loaded back the safe
way, and run against the source on seeded inputs with :func:`conformance.compare`. Only a
verified file is renamed into place (an atomic rename), so a failure at any step leaves no
output and no half-written file, and an input is never overwritten.

A state dict has no architecture, and importing user code must be explicit, so the torch
architecture always comes from ``torch_model`` (``--torch-model package.module:factory``), a
callable returning an ``nn.Module``; a pickled whole module can serve instead, with ``trust``.
"""

from __future__ import annotations

import copy
import os
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import FileError, ModelFile, TorchContent, detect, load_torch
from .keras_files import load_keras
from .userimport import build_torch_model, factory_file, load_state_strict, resolve_factory
from .verifyinputs import verification_inputs

TORCH_SUFFIXES = (".pt", ".pth")
KERAS_SUFFIXES = (".keras", ".h5", ".weights.h5")


@dataclass
class ConversionReport:
    """What :func:`convert_file` did: the mapping, the verification, and whether the output was written."""

    source: str
    source_format: str
    output: str
    direction: str
    torch_architecture: str
    keras_architecture: str
    mapping: Any                       # conformance.TransferReport
    comparison: Any                    # conformance.Comparison
    inputs: dict[str, Any]
    against: str
    written: bool
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.comparison.passed)

    def text(self) -> str:
        c = self.comparison
        lines = [f"convert {self.source} ({self.source_format}) -> {self.output}: {self.direction}",
                 f"  torch architecture: {self.torch_architecture}",
                 f"  keras architecture: {self.keras_architecture}", *(f"  note: {n}" for n in self.notes),
                 "", str(self.mapping), "",
                 f"verification: {self.against}, on {self.inputs['batch']} seeded inputs (seed {self.inputs['seed']}, "
                 f"uniform in [-1, 1), torch layout {self.inputs['shapes']}"
                 f"{', channels-last for Keras' if self.inputs['channels_last'] else ''})",
                 f"  {c.summary()}",
                 f"  headroom = observed / allowed error (above 1 fails); tolerance {c.tolerance.reason}"]
        if self.written:
            lines.append(f"verified: PASS; written {self.output}")
        else:
            lines.append(f"verified: FAIL; nothing written ({self.output} "
                         f"{'left as it was' if Path(self.output).exists() else 'does not exist'})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        return {"source": self.source, "source_format": self.source_format, "output": self.output,
                "direction": self.direction, "torch_architecture": self.torch_architecture,
                "keras_architecture": self.keras_architecture, "notes": self.notes,
                "mapping": [{"source": r.source, "destination": r.destination, "source_shape": list(r.source_shape),
                             "destination_shape": list(r.destination_shape), "rule": r.rule} for r in self.mapping],
                "verification": {"passed": bool(c.passed), "against": self.against, "inputs": self.inputs,
                                 "max_abs_error": c.max_abs_error, "max_rel_error": c.max_rel_error,
                                 "headroom": c.headroom, "allowed_error": c.allowed_error,
                                 "tolerance": {"atol": c.tolerance.atol, "rtol": c.tolerance.rtol,
                                               "reason": c.tolerance.reason},
                                 "worst_index": list(c.worst_index) if c.worst_index is not None else None,
                                 "problem": c.problem, "summary": c.summary()},
                "written": self.written}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(output: Path, inputs: dict[str, Path], force: bool, framework: str) -> None:
    """Refuse, before any work, an output that is an input, exists (without ``force``) or cannot be written."""
    for role, path in inputs.items():
        if _same_file(output, path):
            raise FileError(f"{output}: is the {role} of this conversion; inputs are never overwritten, choose a "
                            "new output file")
    suffixes = TORCH_SUFFIXES if framework == "torch" else KERAS_SUFFIXES
    if not output.name.endswith(suffixes):
        raise FileError(f"{output}: the output of a conversion to {framework} must end in "
                        f"{', '.join(suffixes)}")
    if output.is_dir():
        raise FileError(f"{output}: is a directory; give the output file's name")
    if output.exists() and not force:
        raise FileError(f"{output}: already exists; pass --force (force=True) to replace it")
    parent = output.parent
    if not parent.exists():
        raise FileError(f"{output}: cannot write: directory {parent} does not exist")
    if not parent.is_dir():
        raise FileError(f"{output}: cannot write: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FileError(f"{output}: cannot write: directory {parent} is not writable")


def _temporary(output: Path) -> Path:
    """A new hidden file beside ``output`` (same directory, so the final rename is atomic), with its suffix
    (Keras picks the format by suffix) and the permissions a plain new file would get."""
    suffix = ".weights.h5" if output.name.endswith(".weights.h5") else output.suffix
    path = output.parent / f".{output.name}.{secrets.token_hex(4)}.tmp{suffix}"
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise FileError(f"{output}: cannot write: {exc.strerror or exc}") from None
    return path


def _exported_runner(program: Any, like: Any) -> Any:
    """A torch.export program as an ``nn.Module`` for :func:`compare`.

    The program's module refuses ``eval()``, so it is kept out of the module tree; ``like`` (the
    eager model holding the same weights) is registered so that the tolerance sees the fan-in.
    """
    import torch

    class ExportedProgram(torch.nn.Module):
        program_module: Any

        def __init__(self) -> None:
            super().__init__()
            self.like = like
            object.__setattr__(self, "program_module", program.module())

        def forward(self, *args: Any) -> Any:
            return self.program_module(*args)

    return ExportedProgram()


def _program_batch(content: TorchContent, kind: str, batch: int) -> int:
    """A torch.export program is traced at one batch size; verify at that size."""
    if kind != "torch-export":
        return batch
    try:
        args = content.program.example_inputs[0]
        return int(args[0].shape[0])
    except (AttributeError, IndexError, TypeError):
        return batch


def _save_keras(model: Any, path: Path) -> None:
    from .quiet import capture_framework_logs
    with warnings.catch_warnings(), capture_framework_logs():
        warnings.simplefilter("ignore")   # the legacy-format notice for .h5: the user asked for .h5
        if path.name.endswith(".weights.h5"):
            model.save_weights(path)
        else:
            model.save(path)


def convert_file(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                 torch_model: str | Callable[[], Any] | None = None,
                 to_architecture: str | os.PathLike[str] | None = None, trust: bool = False, force: bool = False,
                 seed: int = 0, batch: int = 4, input_shape: tuple[int, ...] | None = None) -> ConversionReport:
    """Convert ``source`` into the other framework and write ``output`` only if the result verifies.

    torch -> keras: ``source`` is a torch.save state dict (or checkpoint), a TorchScript or a
    torch.export file; ``torch_model`` builds the torch architecture; ``to_architecture`` is the
    Keras model file (.keras or .h5) whose weights are replaced; ``output`` ends in .keras, .h5 or
    .weights.h5. keras -> torch: ``source`` is a .keras or .h5 file; ``torch_model`` is the
    architecture; ``output`` ends in .pt or .pth (a state dict).

    Returns a :class:`ConversionReport` (``passed`` False: verification failed, nothing written).
    Raises :class:`FileError` for unusable input (:class:`UnsafeFileError` for files refused by
    safe loading) and :class:`conformance.ConversionError` when the architectures do not correspond.
    """
    source, output = Path(source), Path(output)
    if batch < 1:
        raise FileError(f"{source}: the verification batch must be at least 1, not {batch}")
    src = detect(source)
    if src.kind == "keras-weights":
        raise FileError(f"{src.path}: a Keras weights-only file has no architecture to run or pair; convert the "
                        "model file (.keras or .h5) it belongs to")
    arch = detect(to_architecture) if to_architecture is not None else None
    code = factory_file(torch_model) if torch_model is not None else None
    inputs = {"source": source, **({"architecture file": arch.path} if arch else {}),
              **({"--torch-model file": code} if code else {})}
    check_output(output, inputs, force, "keras" if src.framework == "torch" else "torch")
    # user code is imported only now, once every check that needs no code has passed
    factory, label, _ = resolve_factory(torch_model) if torch_model is not None else (None, "", None)
    from .quiet import import_frameworks_quietly
    import_frameworks_quietly()
    if src.framework == "torch":
        return _torch_to_keras(src, arch, factory, label, output, trust, seed, batch, input_shape)
    return _keras_to_torch(src, arch, factory, label, output, trust, seed, batch, input_shape)


def _torch_to_keras(src: ModelFile, arch: ModelFile | None, factory: Callable[[], Any] | None, label: str,
                    output: Path, trust: bool, seed: int, batch: int, input_shape: tuple[int, ...] | None
                    ) -> ConversionReport:
    import conformance
    if arch is None or arch.framework != "keras":
        got = f"; {arch.path} is a {arch.description}" if arch else ""
        raise FileError(f"{src.path}: converting a torch file to Keras needs --to-architecture, a Keras model file "
                        f"(.keras or .h5) with the destination architecture{got}")
    content = load_torch(src, trust)
    if factory is not None:
        eager = build_torch_model(factory, label)
        load_state_strict(eager, content.state, src.path, label)
        torch_label = f"{label} ({type(eager).__name__})"
    elif content.module is not None:
        eager, torch_label = content.module, f"the pickled {type(content.module).__name__} in {src.path}"
    else:
        why = "holds weights only" if src.kind == "torch-save" else "holds compiled modules, not nn.Module layers"
        raise FileError(f"{src.path}: a {src.description} {why}, so there are no layers to pair with Keras; give "
                        "--torch-model MODULE:FACTORY (a callable returning the nn.Module these weights belong to)")
    keras_model = load_keras(arch, trust)
    arrays, info = verification_inputs(keras_model, _program_batch(content, src.kind, batch), seed, input_shape)
    mapping = conformance.transfer_weights(eager, keras_model, example_inputs=arrays)
    reference, against = eager, "the source's weights in the torch architecture against the written file, reloaded"
    if content.program is not None and content.module is None:
        reference = (_exported_runner(content.program, eager) if src.kind == "torch-export" else content.program)
        against = f"the source file's own {src.description} against the written file, reloaded"
    tmp = _temporary(output)
    try:
        try:
            _save_keras(keras_model, tmp)
        except Exception as exc:
            raise FileError(f"{output}: writing failed: {type(exc).__name__}: {exc}") from None
        if tmp.name.endswith(".weights.h5"):
            reloaded = load_keras(arch, trust)
            reloaded.load_weights(tmp)
        else:
            reloaded = load_keras(ModelFile(tmp, "keras" if tmp.suffix == ".keras" else "keras-h5"), trust)
        comparison = conformance.compare(reference, reloaded, arrays, channels_last=info["channels_last"])
        written = _finish(tmp, output, comparison.passed)
    finally:
        tmp.unlink(missing_ok=True)
    return ConversionReport(str(src.path), f"{src.description}, {content.note}", str(output), mapping.direction,
                            torch_label, f"{arch.path} ({arch.description})", mapping, comparison, info, against,
                            written)


def _keras_to_torch(src: ModelFile, arch: ModelFile | None, factory: Callable[[], Any] | None, label: str,
                    output: Path, trust: bool, seed: int, batch: int, input_shape: tuple[int, ...] | None
                    ) -> ConversionReport:
    import torch

    import conformance
    keras_model = load_keras(src, trust)
    notes = []
    if factory is not None:
        if arch is not None:
            raise FileError(f"{arch.path}: give either --torch-model or a torch --to-architecture file, not both")
        model = build_torch_model(factory, label)
        torch_label = f"{label} ({type(model).__name__})"
    elif arch is not None and arch.framework == "torch":
        content = load_torch(arch, trust)
        if content.module is None:
            raise FileError(f"{arch.path}: a {arch.description} ({content.note}) has no architecture whose layers "
                            "can be paired; give --torch-model MODULE:FACTORY")
        model, torch_label = content.module, f"the pickled {type(content.module).__name__} in {arch.path}"
    else:
        what = f"{arch.path} is a {arch.description}, not torch; " if arch is not None else ""
        raise FileError(f"{src.path}: converting a Keras file to torch needs the torch architecture: {what}give "
                        "--torch-model MODULE:FACTORY (a callable returning the nn.Module)")
    arrays, info = verification_inputs(keras_model, batch, seed, input_shape)
    mapping = conformance.transfer_weights(keras_model, model, example_inputs=arrays)
    fresh = copy.deepcopy(model)
    with torch.no_grad():   # poison every tensor: what verification sees must come from the written file
        for tensor in fresh.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    tmp = _temporary(output)
    try:
        try:
            torch.save(model.state_dict(), tmp)
        except Exception as exc:
            raise FileError(f"{output}: writing failed: {type(exc).__name__}: {exc}") from None
        fresh.load_state_dict(torch.load(tmp, map_location="cpu", weights_only=True), strict=True)
        comparison = conformance.compare(fresh, keras_model, arrays, channels_last=info["channels_last"])
        written = _finish(tmp, output, comparison.passed)
    finally:
        tmp.unlink(missing_ok=True)
    notes.append("the output is a state dict: load it with model.load_state_dict(torch.load(path, "
                 "weights_only=True))")
    return ConversionReport(str(src.path), src.description, str(output), mapping.direction, torch_label,
                            f"{src.path} (the source)", mapping, comparison, info,
                            "the written state dict, reloaded into the torch architecture, against the source file",
                            written, notes)


def _finish(tmp: Path, output: Path, passed: bool) -> bool:
    """Put a verified file in place with one atomic rename; an unverified one is discarded by the caller."""
    if not passed:
        return False
    try:
        os.replace(tmp, output)
    except OSError as exc:
        raise FileError(f"{output}: cannot write: {exc.strerror or exc}") from None
    return True


__all__ = ["ConversionReport", "check_output", "convert_file"]

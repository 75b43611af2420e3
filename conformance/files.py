"""Model files as users have them: what a file is, and loading it without running its code.

A model file is untrusted input. Its format is decided from its bytes (magic numbers and the
names inside a zip archive), never from its suffix alone, so a renamed file cannot pick its own
loader. Every loader is the safe one:

- ``torch.save`` files: ``torch.load(path, weights_only=True)``, which rebuilds tensors and plain
  containers only. A file that pickles anything else (a whole ``nn.Module``, or a payload such as
  ``os.system``) is refused before a byte of it is executed, naming what it references.
- TorchScript: ``torch.jit.load``, torch's C++ reader, which restores TorchScript types and
  tensors, not arbitrary Python objects.
- ``torch.export`` (``.pt2``): ``torch.export.load`` falls back to ``weights_only=False`` and to
  plain ``pickle.loads`` for some entries, so every pickled entry of the archive is checked
  first, and the load itself runs with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``.
- Keras ``.keras`` and legacy ``.h5``: see :mod:`conformance.keras_files` (the config is read as
  JSON and Lambda layers or classes from outside Keras are refused, then ``safe_mode=True``).

``trust=True`` (the CLI's ``--trust``) lifts the refusals; only then can a file run code.
Errors are :class:`FileError`: one line that names the file and says what is wrong.
"""

from __future__ import annotations

import io
import os
import pickletools
import zipfile
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConformanceError

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TRUST_HINT = "pass --trust (trust=True) only if you trust the file's source"


class FileError(ConformanceError):
    """A model file (or an import path, or an output path) that cannot be used. The message names it."""


class UnsafeFileError(FileError):
    """A file that could only be loaded by running code from it; refused unless trusted."""


@dataclass(frozen=True)
class ModelFile:
    """A file whose format is known: ``kind`` is one of :data:`KINDS`."""

    path: Path
    kind: str

    @property
    def framework(self) -> str:
        return "torch" if self.kind.startswith("torch") else "keras"

    @property
    def description(self) -> str:
        return KINDS[self.kind]


KINDS = {
    "torch-save": "PyTorch torch.save file",
    "torchscript": "TorchScript archive",
    "torch-export": "torch.export program (.pt2)",
    "keras": "Keras .keras archive",
    "keras-h5": "Keras legacy HDF5 model (.h5)",
    "keras-weights": "Keras weights-only HDF5 file (no architecture)",
}


def first_line(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message (no traceback)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def detect(path: str | os.PathLike[str]) -> ModelFile:
    """The format of ``path`` from its content; :class:`FileError` for anything unusable."""
    path = Path(path)
    if not path.exists():
        raise FileError(f"{path}: no such file")
    if path.is_dir():
        raise FileError(f"{path}: is a directory, not a model file (TensorFlow SavedModel directories are not "
                        "read; save a .keras file)")
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise FileError(f"{path}: empty file (0 bytes)")
    if head.startswith(ZIP_MAGIC):
        return ModelFile(path, _zip_kind(path))
    if head.startswith(HDF5_MAGIC):
        return ModelFile(path, _hdf5_kind(path))
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return ModelFile(path, "torch-save")   # torch.save's legacy (pre-1.6) format: a pickle stream
    what = "a text file" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else f"bytes {head[:8]!r}"
    if len(head) >= 9 and head[8:9] == b"{":
        what = "what looks like a safetensors file (not read yet)"
    raise FileError(f"{path}: not a model file this tool reads: it starts with {what}; expected a torch.save, "
                    "TorchScript or torch.export zip archive, a .keras archive or a Keras HDF5 file")


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise FileError(f"{path}: truncated or corrupt zip archive (the container of torch.save, TorchScript, "
                        f"torch.export and .keras files): {exc}") from None
    if "config.json" in names and "metadata.json" in names:
        return "keras"
    if any(n.endswith("/archive_format") for n in names) or "serialized_exported_program.json" in names:
        return "torch-export"
    if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "torch-save"
    raise FileError(f"{path}: a zip archive, but not a model file this tool reads (no data.pkl as torch.save "
                    "writes, no config.json as Keras writes)")


def _hdf5_kind(path: Path) -> str:
    import h5py
    try:
        with h5py.File(path, "r") as handle:
            has_config = "model_config" in handle.attrs
    except OSError as exc:
        raise FileError(f"{path}: truncated or corrupt HDF5 file: {first_line(exc)}") from None
    return "keras-h5" if has_config else "keras-weights"


# ---- torch


@dataclass
class TorchContent:
    """What a torch file holds: a state dict, and for some formats the model itself.

    ``program`` is the file's own runnable model (a TorchScript module, a torch.export program, or a
    trusted pickled ``nn.Module``); ``module`` is an eager ``nn.Module`` whose layers can be paired
    (only a trusted pickled module). ``note`` says where the state dict was found.
    """

    state: dict[str, Any]
    program: Any = None
    module: Any = None
    note: str = ""


def load_torch(file: ModelFile, trust: bool = False) -> TorchContent:
    if file.kind == "torch-save":
        return _load_torch_save(file.path, trust)
    if file.kind == "torchscript":
        return _load_torchscript(file.path)
    if file.kind == "torch-export":
        return _load_exported(file.path, trust)
    raise FileError(f"{file.path}: a {file.description}, not a PyTorch file")


def _load_torch_save(path: Path, trust: bool) -> TorchContent:
    import pickle

    import torch
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise FileError(f"{path}: corrupt torch.save file: {first_line(exc)}") from None
        if not trust:
            raise UnsafeFileError(f"{path}: refused: loading it would run code, not just read tensors (it "
                                  f"references {_unsafe_globals(path)}). A pickled whole module (torch.save(model)) "
                                  f"or any other Python object needs that; save model.state_dict() instead, or "
                                  f"{TRUST_HINT}") from None
        obj = _trusted_torch_load(path, trust)
    except Exception as exc:   # truncated archives raise RuntimeError, EOFError, ValueError ...
        raise FileError(f"{path}: cannot be read as a torch.save file (truncated or corrupt?): "
                        f"{first_line(exc)}") from None
    if isinstance(obj, torch.nn.Module):
        return TorchContent(dict(obj.state_dict()), program=obj, module=obj,
                            note=f"a whole pickled {type(obj).__name__} (loaded with --trust)")
    state, note = _find_state_dict(path, obj)
    return TorchContent(state, note=note)


def _trusted_torch_load(path: Path, trust: bool) -> Any:
    """The one unpickling load of a torch.save file, allowed only with the caller's explicit --trust."""
    import torch
    if not trust:
        raise UnsafeFileError(f"{path}: refused: a full unpickling load needs {TRUST_HINT}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise FileError(f"{path}: could not be loaded even with --trust: {first_line(exc)}") from None


def _unsafe_globals(path: Path) -> str:
    """The Python names the pickle would import, found by disassembling it, never by running it."""
    import torch
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:   # legacy (non-zip) format: disassemble the stream ourselves
        try:
            names = sorted(_pickle_globals(path.read_bytes()))
        except Exception:
            names = []
    if not names:
        return "Python objects beyond tensors"
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return shown


def _pickle_globals(data: bytes) -> set[str]:
    """GLOBAL and STACK_GLOBAL references of pickle streams, by disassembly (nothing is executed).

    torch.save's legacy format is several pickles in a row, then raw storage bytes: read pickles
    until the bytes stop parsing. Raises if not even the first one parses.
    """
    stream, found = io.BytesIO(data), set()
    found |= _one_pickle_globals(stream)
    while stream.tell() < len(data):
        try:
            found |= _one_pickle_globals(stream)
        except Exception:
            break
    return found


def _one_pickle_globals(stream: io.BytesIO) -> set[str]:
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name == "GLOBAL":
            found.add(str(arg).replace(" ", "."))
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(str(arg))
        elif opcode.name == "INST":
            found.add(str(arg).replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":   # module and name were pushed as the last two strings (or memoized)
            found.add(".".join(strings[-2:]) if len(strings) >= 2 else "<a global>")
    return found


def _is_tensor_map(obj: Any) -> bool:
    import torch
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _find_state_dict(path: Path, obj: Any) -> tuple[dict[str, Any], str]:
    """A state dict, or one inside a training checkpoint ({"state_dict": ..., "epoch": 3})."""
    if _is_tensor_map(obj):
        return dict(obj), "a state dict"
    import torch
    if isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values()) and not any(
            _is_tensor_map(v) for v in obj.values()):   # a state dict with a few extra entries ("epoch": 3)
        extra = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str))
        return ({k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)},
                f"a state dict (ignored, not tensors: {', '.join(extra)})")
    if isinstance(obj, Mapping):
        nested = [k for k, v in obj.items() if _is_tensor_map(v)]
        preferred = [k for k in ("state_dict", "model_state_dict", "model", "module") if k in nested]
        if len(nested) == 1 or preferred:
            key = preferred[0] if preferred else nested[0]
            others = sorted(str(k) for k in obj if k != key)
            return dict(obj[key]), (f"the state dict under key {key!r} of a checkpoint"
                                    + (f" (ignored: {', '.join(others)})" if others else ""))
        if nested:
            raise FileError(f"{path}: a checkpoint with several state dicts ({', '.join(map(str, nested))}); "
                            "save the one to use on its own")
    raise FileError(f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")


def _load_torchscript(path: Path) -> TorchContent:
    import warnings

    import torch
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # "torch.jit.load is deprecated": the file exists
            program = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise FileError(f"{path}: cannot be read as a TorchScript archive (truncated or corrupt?): "
                        f"{first_line(exc)}") from None
    return TorchContent(dict(program.state_dict()), program=program, note="the TorchScript module's state dict")


@contextmanager
def _weights_only_everywhere() -> Any:
    """torch.load calls made inside torch's own loaders are weights-only too, whatever they ask for."""
    saved = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = saved


def _unsafe_pt2_entries(path: Path) -> list[str]:
    """Entries of a .pt2 archive that torch.export.load would unpickle beyond tensors."""
    import pickle

    import torch
    unsafe = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            base = name.rsplit("/", 1)[-1]
            if base.startswith(("custom_obj_", "opaque_obj_")):
                unsafe.append(f"{name} (a pickled Python object)")
                continue
            data = archive.read(name)
            if data.startswith(ZIP_MAGIC):
                try:
                    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                except pickle.UnpicklingError as exc:
                    if "Weights only load failed" in str(exc):
                        unsafe.append(f"{name} (references {_nested_globals(data)})")
                except Exception:
                    pass   # not a torch.save payload after all: torch.export reads it as raw bytes
            elif data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
                try:
                    names = _pickle_globals(data)
                except Exception:
                    continue   # raw tensor bytes that happen to start like a pickle
                if names:
                    unsafe.append(f"{name} (references {', '.join(sorted(names)[:4])})")
    return unsafe


def _nested_globals(data: bytes) -> str:
    """The globals of a torch.save archive held in memory (an entry of a .pt2 archive), by disassembly."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            pickled = next(n for n in inner.namelist() if n.endswith("data.pkl"))
            names = sorted(_pickle_globals(inner.read(pickled)) - _torch_rebuild_globals())
    except Exception:
        names = []
    return ", ".join(names[:4]) or "Python objects beyond tensors"


def _torch_rebuild_globals() -> set[str]:
    """Names torch.save itself writes for tensors: not worth naming as the problem."""
    return {"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "collections.OrderedDict",
            "torch.FloatStorage", "torch.storage.UntypedStorage"} | {f"torch.{t}Storage" for t in (
                "Double", "Half", "Long", "Int", "Short", "Char", "Byte", "Bool", "BFloat16")}


def _load_exported(path: Path, trust: bool) -> TorchContent:
    import torch
    try:
        unsafe = _unsafe_pt2_entries(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileError(f"{path}: corrupt torch.export archive: {exc}") from None
    if unsafe and not trust:
        raise UnsafeFileError(f"{path}: refused: torch.export.load would unpickle Python objects from "
                              f"{'; '.join(unsafe[:3])}; {TRUST_HINT}")
    try:
        if trust:
            program = torch.export.load(str(path))
        else:
            with _weights_only_everywhere():
                program = torch.export.load(str(path))
    except Exception as exc:
        raise FileError(f"{path}: cannot be read as a torch.export program (truncated or corrupt?): "
                        f"{first_line(exc)}") from None
    return TorchContent(dict(program.state_dict), program=program, note="the exported program's state dict")


__all__ = ["HDF5_MAGIC", "KINDS", "TRUST_HINT", "ZIP_MAGIC", "FileError", "ModelFile", "TorchContent",
           "UnsafeFileError", "detect", "first_line", "load_torch"]

"""Keras model files, loaded without running code from them.

The model config is read as JSON first (from ``config.json`` in a ``.keras`` archive, from the
``model_config`` attribute of a legacy ``.h5`` file), and a Lambda layer (its Python bytecode is
in the file) or a class from a module outside Keras is refused by name. Only then does Keras
load the file, with ``safe_mode=True``, which refuses Lambda layers again: two locks, so that a
gap in one (Keras has had safe-mode bypasses) does not open the door. ``trust=True`` lifts both.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any

from .files import TRUST_HINT, FileError, ModelFile, UnsafeFileError, first_line


def keras_config(file: ModelFile) -> dict[str, Any] | None:
    """The model's config as saved (JSON), read without Keras: for the safety check and the tree."""
    try:
        if file.kind == "keras":
            with zipfile.ZipFile(file.path) as archive:
                text: Any = archive.read("config.json")
        elif file.kind == "keras-h5":
            import h5py
            with h5py.File(file.path, "r") as handle:
                text = handle.attrs["model_config"]
        else:
            return None
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (KeyError, OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileError(f"{file.path}: its model config cannot be read (truncated or corrupt?): "
                        f"{first_line(exc)}") from None


def unsafe_keras_entries(config: Any, where: str = "") -> list[str]:
    """Lambda layers and classes from outside Keras: what safe loading must not deserialize."""
    found: list[str] = []
    if isinstance(config, dict):
        cls, module = config.get("class_name"), config.get("module")
        name = (config.get("config") or {}).get("name") if isinstance(config.get("config"), dict) else None
        label = f"{where}{name or cls}"
        if cls == "Lambda":
            return [f"layer {label} is a Lambda layer (its Python bytecode is in the file)"]
        if cls == "__lambda__":
            return ["a serialized Python lambda"]
        if isinstance(module, str) and module != "keras" and not module.startswith("keras."):
            found.append(f"{label} is {cls!r} from module {module!r}, not from Keras (loading would import it)")
        for value in config.values():
            found.extend(unsafe_keras_entries(value, where))
    elif isinstance(config, list):
        for value in config:
            found.extend(unsafe_keras_entries(value, where))
    return found


def load_keras(file: ModelFile, trust: bool = False) -> Any:
    """A Keras model from a .keras or legacy .h5 file, in safe mode unless trusted."""
    if file.kind == "keras-weights":
        raise FileError(f"{file.path}: a Keras weights-only file: it has no architecture to load (save the model "
                        "with model.save('model.keras'), or load these weights into your model first)")
    if file.framework != "keras":
        raise FileError(f"{file.path}: a {file.description}, not a Keras model file")
    config = keras_config(file)
    unsafe = unsafe_keras_entries(config)
    if unsafe and not trust:
        raise UnsafeFileError(f"{file.path}: refused: loading it would run code from the file: "
                              f"{'; '.join(unsafe[:3])}; {TRUST_HINT}")
    import warnings

    import keras
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.models.load_model(file.path, safe_mode=not trust, compile=False)
    except Exception as exc:
        if "safe_mode" in str(exc) and not trust:
            raise UnsafeFileError(f"{file.path}: refused by Keras's safe mode: {first_line(exc)}; "
                                  f"{TRUST_HINT}") from None
        raise FileError(f"{file.path}: Keras cannot load it (truncated or corrupt, or custom classes that are "
                        f"not importable?): {first_line(exc)}") from None


def keras_weight_shapes(file: ModelFile) -> dict[str, tuple[int, ...]]:
    """Every dataset of a weights-only HDF5 file, by path: its content without an architecture."""
    import h5py
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with h5py.File(file.path, "r") as handle:
            handle.visititems(lambda name, obj: shapes.__setitem__(name, tuple(obj.shape))
                              if isinstance(obj, h5py.Dataset) else None)
    except OSError as exc:
        raise FileError(f"{file.path}: corrupt HDF5 file: {first_line(exc)}") from None
    return shapes


__all__ = ["keras_config", "keras_weight_shapes", "load_keras", "unsafe_keras_entries"]

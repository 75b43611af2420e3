"""embedding: PyTorch ``nn.Embedding`` against Keras ``Embedding``.

The table has the same layout on both sides (``weight (V, D)`` is ``embeddings (V, D)``), and a
lookup selects rows, so outputs must match exactly. What differs is around the lookup:
- ``padding_idx`` changes only training (torch zeroes that row's gradient) and the initial value
  of the row (zeros). At inference the row is looked up like any other, whatever it holds, so a
  plain Keras ``Embedding`` matches. Keras's ``mask_zero`` is a different thing: it reserves index
  0 and attaches a mask for downstream layers, and changes no value; it is not used here;
- ``max_norm``: at every lookup torch rescales, *in place in its weight*, each looked-up row whose
  ``norm_type``-norm exceeds ``max_norm`` by ``max_norm / (norm + 1e-7)``. Keras has no such
  option (``embeddings_constraint=MaxNorm`` runs only after optimizer steps), so the Keras side
  applies the same rescaling to the looked-up rows with ``keras.ops``. The outputs agree; the side
  effect does not: torch's weight has changed after the call and Keras's has not, so converting
  after running the torch model moves the renormalised rows (tests/test_attention.py shows it);
- ``scale_grad_by_freq`` and ``sparse`` change only gradients; they are accepted to show that.

Indices are int64 on both sides (the Keras Input takes the input's dtype), of any per-sample
shape: ``[]`` is one index per sample, an input of rank 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..layout import Layout
from ..rules import Context, Converter, WeightRule
from .base import Family, Param, Params, Tolerance, boolean, integer, invalid, optional, real

TABLE = Layout("V D -> V D")
RENORM_EPS = 1e-7          # torch's embedding_renorm_: scale = max_norm / (norm + 1e-7)


def _index_shape(value: Any) -> tuple[int, ...]:
    """One sample's index shape: rank 0 to 2 (the input is rank 1 to 3 with the batch)."""
    if not isinstance(value, list | tuple) or len(value) > 2:
        raise ValueError(f"expected a list of 0 to 2 sizes (one sample's indices), got {value!r}")
    return tuple(integer(1)(v) for v in value)


PARAMS = {
    "num_embeddings": Param(integer(1), abbrev="n"),
    "embedding_dim": Param(integer(1), abbrev="d"),
    "padding_idx": Param(optional(integer(-(2 ** 31))), default=None, abbrev="pad"),
    "max_norm": Param(optional(real(0.0, exclusive=True)), default=None, abbrev="maxnorm"),
    "norm_type": Param(real(0.0, exclusive=True), default=2.0, abbrev="p"),
    "scale_grad_by_freq": Param(boolean, default=False, abbrev="sgf"),
    "sparse": Param(boolean, default=False, abbrev="sparse"),
    "input_shape": Param(_index_shape, abbrev="in"),
}


def _check(p: Params) -> None:
    n, pad = p["num_embeddings"], p["padding_idx"]
    if pad is not None and not -n <= pad < n:
        raise invalid("padding_idx", f"must be within num_embeddings ({-n} <= padding_idx < {n}), got {pad}")


def _build_torch(p: Params) -> Any:
    import torch
    return torch.nn.Embedding(p["num_embeddings"], p["embedding_dim"], padding_idx=p["padding_idx"],
                              max_norm=p["max_norm"], norm_type=p["norm_type"],
                              scale_grad_by_freq=p["scale_grad_by_freq"], sparse=p["sparse"])


def _build_keras(p: Params, x: Any) -> Any:
    import keras
    ops = keras.ops
    rows = keras.layers.Embedding(p["num_embeddings"], p["embedding_dim"])(x)
    if p["max_norm"] is None:
        return rows
    norm = _vector_norm(ops, rows, p["norm_type"])
    scale = ops.where(ops.greater(norm, p["max_norm"]), ops.divide(p["max_norm"], ops.add(norm, RENORM_EPS)),
                      1.0)
    return ops.multiply(rows, scale)


def _vector_norm(ops: Any, rows: Any, order: float) -> Any:
    """The ``order``-norm over the last axis, from element-wise ops. Not ``ops.norm``: inside a functional
    model on the JAX backend (Keras 3.15) its Operation keeps the axis as a list, which jnp.linalg.norm's
    jit refuses as an unhashable static argument ("Non-hashable static arguments are not supported")."""
    magnitude = ops.abs(rows)
    if math.isinf(order):
        return ops.max(magnitude, axis=-1, keepdims=True)
    return ops.power(ops.sum(ops.power(magnitude, order), axis=-1, keepdims=True), 1.0 / order)


def _make_inputs(p: Params, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
    """int64 indices over the whole table; a quarter of them are padding_idx when it is set."""
    n = p["num_embeddings"]
    indices = rng.integers(0, n, size=(batch, *p["input_shape"]), dtype=np.int64)
    if p["padding_idx"] is not None:
        flat = indices.reshape(-1)
        flat[rng.choice(flat.size, max(1, flat.size // 4), replace=False)] = p["padding_idx"] % n
    return (indices,)


def renorm_rows(rows: np.ndarray, max_norm: float, norm_type: float) -> np.ndarray:
    """torch's embedding_renorm_ applied to looked-up rows, in float64."""
    magnitude = np.abs(rows)
    norm = magnitude.max(axis=-1, keepdims=True) if math.isinf(norm_type) else \
        (magnitude ** norm_type).sum(axis=-1, keepdims=True) ** (1.0 / norm_type)
    return rows * np.where(norm > max_norm, max_norm / (norm + RENORM_EPS), 1.0)


def _reference(x: Any, w: Any, p: Params) -> Any:
    rows = w["weight"][np.asarray(x)]
    return rows if p["max_norm"] is None else renorm_rows(rows, p["max_norm"], p["norm_type"])


def _tolerance(p: Params) -> Tolerance:
    if p["max_norm"] is None:
        return Tolerance.exact()
    return Tolerance.elementwise()


FAMILIES = [Family(
    name="embedding", torch_class="Embedding", params=PARAMS, build_torch=_build_torch, build_keras=_build_keras,
    check=_check, reference=_reference, tolerance=_tolerance, make_inputs=_make_inputs,
    weight_layouts={"weight": str(TABLE)},
)]


def _rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    note = "same layout"
    if module.max_norm is not None:
        note += (f"; torch renormalises looked-up rows to max_norm={module.max_norm:g} in place at every lookup, "
                 "so the Keras graph must rescale the rows it looks up")
    return [WeightRule("weight", "embeddings", TABLE, note=note)]


CONVERTERS = [Converter("embedding", ("Embedding",), ("Embedding",), _rules)]

"""Writing converted weights at close to memory speed, in both directions, with one routine.

The obvious route, NumPy transpose then ``variable.assign(array)``, copies every byte three or
four times and runs 12-17x slower than a memcpy of the same bytes. Here the bytes cross between
torch and TensorFlow by DLPack without a copy, and the one copy a layout change needs is the
cache-blocked transpose of :mod:`conformance.blockcopy` (also a plain copy where a rule does not
move axes, so that the two models never share memory):

- torch -> Keras: the transpose writes a fresh buffer (huge pages where the OS offers them), and
  ``assign`` adopts it through DLPack without a copy. The buffer must be fresh: TensorFlow adopts
  a DLPack buffer even while torch still holds it, so a reused buffer would alias the variable.
- Keras -> torch: the transpose writes straight into the torch tensor's own, already mapped
  memory (what ``copy_`` and ``load_state_dict`` do), which saves the page faults of a fresh
  buffer: those alone cost 3-7x a memcpy on the 2-core development VM. A non-contiguous tensor
  adopts a fresh buffer instead.

Which routine transposes was chosen by measurement (README, transfer speed): the compiled copy
loop of :mod:`conformance.blockcopy` (SIMD 16 x 16 blocks, both cores) wherever it was built; it
beat TensorFlow's own transpose, oneDNN's JIT-compiled reorder included, on every stack (dense,
conv, VGG's Flatten->Dense, both directions; AVX-512 development machine, oneDNN on). Where the
package was installed without a C compiler, the NumPy tiles copy element by element, and where
TensorFlow runs oneDNN its transpose is the faster of the two: there TensorFlow transposes, and
the result is adopted in either direction.

The Flatten->Dense rule ``O (C H W) -> (H W C) O`` is one pass like any other: its plan is the
3-axis transpose ``(O, C, HW) -> (HW, C, O)``, rows re-ordered and transposed together. Anything
unusual (another Keras backend, a GPU tensor, dtypes that differ between the two sides) takes the
NumPy route, which uses the same blocked transpose but copies once more on the way in or out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import blockcopy
from .facts import tensorflow_onednn
from .layout import Plan

_INT_OF_SIZE = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def _tensorflow() -> Any:
    import keras
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    return tf


def _numpy(tensor: Any) -> np.ndarray:
    """A NumPy view of a contiguous CPU torch tensor (no copy); dtypes NumPy lacks (bfloat16) as integers."""
    import torch
    try:
        return tensor.numpy()
    except TypeError:
        return tensor.view(getattr(torch, _INT_OF_SIZE[tensor.element_size()])).numpy()


def _fast(tensor: Any, variable: Any) -> Any:
    """TensorFlow where the fast path applies: CPU, the same dtype on both sides, a movable item size."""
    tf = _tensorflow()
    dtype = str(tensor.dtype).removeprefix("torch.")
    if tf is None or tensor.device.type != "cpu" or dtype != variable.dtype \
            or tensor.element_size() not in _INT_OF_SIZE or tensor.is_complex():
        return None
    return tf


def _tensorflow_transposes(plan: Plan | None) -> bool:
    """Whether TensorFlow's own transpose (oneDNN's reorder) should move this plan's axes: only where
    the compiled copy loop is missing."""
    return plan is not None and plan.transposes and blockcopy.compiled() is None and bool(tensorflow_onednn())


def _tf_rearranged(tf: Any, x: Any, plan: Plan) -> Any:
    """A new TensorFlow buffer holding ``x`` rearranged by the transposing ``plan``."""
    if tuple(x.shape) != plan.elementary:
        x = tf.reshape(x, plan.elementary)
    perm, last = list(plan.perm), plan.perm[-1]
    if last != len(perm) - 1 and plan.elementary[last] < 16:
        # A short axis that becomes the innermost one (a 3x3 kernel's taps, keras->torch) makes one
        # transpose write rows of a few floats. Moving it last first, then permuting whole rows, was
        # 12% faster on the 104 MB conv stack (interleaved runs: median 3.14x -> 2.76x memcpy).
        first = [axis for axis in range(len(perm)) if axis != last] + [last]
        x = tf.transpose(x, first)
        perm = [first.index(axis) for axis in perm]
    y = tf.transpose(x, perm)
    return y if tuple(y.shape) == plan.result else tf.reshape(y, plan.result)


def _plan_of(plan: Plan | None, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(elementary shape, perm, result shape), an identity plan where there is none."""
    if plan is None:
        return shape, tuple(range(len(shape))), shape
    return plan.elementary, plan.perm, plan.result


def _assign(tf: Any, variable: Any, value: Any) -> None:
    """``variable.assign(value)`` for a TensorFlow tensor of the variable's own shape and dtype.

    Keras's assign converts, casts and re-reads the value: 0.35-0.5 ms a call on the development VM,
    9 ms of the conv stack's 49 ms torch->keras transfer (22 variables). TensorFlow's assign op alone
    takes 0.1-0.2 ms, and adopts the buffer just the same. Anything else (a stateless scope, a
    distributed, mirrored or not yet created variable, another dtype or shape) takes Keras's assign.
    """
    inner = getattr(variable, "_value", None)
    if type(inner).__name__ != "ResourceVariable" or not isinstance(inner, tf.Variable) \
            or inner.dtype != value.dtype or tuple(inner.shape) != tuple(value.shape) or _in_stateless_scope():
        variable.assign(value)
        return
    tf.raw_ops.AssignVariableOp(resource=inner.handle, value=value)


def _in_stateless_scope() -> bool:
    """Whether Keras collects assignments instead of making them (keras.StatelessScope); True where
    this Keras cannot say, so that its own assign decides."""
    try:
        from keras.src.backend.common.stateless_scope import in_stateless_scope
    except ImportError:                                  # pragma: no cover - another Keras layout
        return True
    return bool(in_stateless_scope())


def write_keras(variable: Any, tensor: Any, plan: Plan | None) -> None:
    """``variable`` (Keras) takes the torch ``tensor`` rearranged by ``plan``."""
    source = tensor.detach()
    tf = _fast(source, variable)
    if tf is None:
        array = source.cpu().numpy()
        elementary, perm, _ = _plan_of(plan, tuple(array.shape))
        value = blockcopy.permuted(array.reshape(elementary), perm)
        variable.assign(value.reshape(tuple(variable.shape)))   # a 0-d count stays 0-d on every backend
        return
    import torch.utils.dlpack
    source = source.contiguous()
    if _tensorflow_transposes(plan):
        assert plan is not None
        shared = tf.experimental.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(source))
        _assign(tf, variable, _tf_rearranged(tf, shared, plan))   # a fresh tensor nothing else holds: adopted
        return
    elementary, perm, result = _plan_of(plan, tuple(source.shape))
    array = _numpy(source)
    buffer = blockcopy.empty(array.nbytes)
    blockcopy.permute_into(array.reshape(elementary), perm, buffer.view(array.dtype))
    fresh = torch.from_numpy(buffer).view(source.dtype).reshape(result)
    _assign(tf, variable, tf.experimental.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(fresh)))   # adopted


def write_torch(tensor: Any, variable: Any, plan: Plan | None) -> None:
    """The torch ``tensor`` takes the Keras ``variable`` rearranged by ``plan``."""
    import torch
    tf = _fast(tensor, variable)
    if tf is None:
        array = np.asarray(variable.numpy())
        elementary, perm, _ = _plan_of(plan, tuple(array.shape))
        value = torch.from_numpy(blockcopy.permuted(array.reshape(elementary), perm))
        with torch.no_grad():
            tensor.copy_(value.reshape(tensor.shape))   # the torch backend hands a 0-d variable back as (1,)
        return
    import torch.utils.dlpack
    if _tensorflow_transposes(plan):
        assert plan is not None
        value = _tf_rearranged(tf, tf.convert_to_tensor(variable.value), plan)
        tensor.data = torch.utils.dlpack.from_dlpack(tf.experimental.dlpack.to_dlpack(value))   # adopted
        return
    shared = torch.utils.dlpack.from_dlpack(tf.experimental.dlpack.to_dlpack(tf.convert_to_tensor(variable.value)))
    elementary, perm, result = _plan_of(plan, tuple(shared.shape))
    source = _numpy(shared.contiguous()).reshape(elementary)
    if tensor.is_contiguous() and tuple(tensor.shape) == tuple(result):
        blockcopy.permute_into(source, perm, _numpy(tensor.detach()))
        torch.autograd.graph.increment_version(tensor)   # as copy_ would: a stale autograd graph notices
        return
    buffer = blockcopy.empty(source.nbytes).view(source.dtype)
    blockcopy.permute_into(source, perm, buffer)
    fresh = torch.from_numpy(buffer.view(np.uint8)).view(shared.dtype)
    tensor.data = fresh.reshape(tuple(tensor.shape))   # adopt the new buffer: no second copy

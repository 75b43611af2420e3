"""Writing converted weights at close to memory speed.

The obvious route, NumPy transpose then ``variable.assign(array)``, copies every byte three or
four times (a strided transpose, a conversion into a TensorFlow tensor, the assignment) and
runs about 12x slower than a memcpy of the same bytes. Here the bytes cross between torch and
TensorFlow by DLPack without a copy, TensorFlow's multi-threaded transpose makes the one copy
that a layout change needs, and the result is handed over without another: ``assign`` adopts a
tensor that nothing else holds, and a torch tensor can adopt the transposed buffer as its
storage. Where a rule does not rearrange data, an explicit copy keeps the two models from
sharing memory. Anything unusual (another Keras backend, a GPU tensor, another dtype) takes the
plain NumPy route, which is slower but always correct.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layout import Plan


def _tensorflow() -> Any:
    import keras
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    return tf


def _rearranged(tf: Any, x: Any, plan: Plan | None) -> Any:
    """A new TensorFlow buffer holding ``x`` rearranged by ``plan`` (never an alias of ``x``)."""
    if plan is None or not plan.transposes:
        y = tf.raw_ops.DeepCopy(x=x)
        return y if plan is None else tf.reshape(y, plan.result)
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


def write_keras(variable: Any, tensor: Any, plan: Plan | None) -> None:
    """``variable`` (Keras) takes the torch ``tensor`` rearranged by ``plan``."""
    tf = _tensorflow()
    source = tensor.detach()
    if tf is None or source.device.type != "cpu" or str(source.dtype).removeprefix("torch.") != variable.dtype:
        array = source.cpu().numpy()
        array = np.ascontiguousarray(array if plan is None else plan.apply(array))
        variable.assign(array.reshape(tuple(variable.shape)))   # a 0-d count stays 0-d on every backend
        return
    import torch.utils.dlpack
    shared = tf.experimental.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(source.contiguous()))
    variable.assign(_rearranged(tf, shared, plan))


def write_torch(tensor: Any, variable: Any, plan: Plan | None) -> None:
    """The torch ``tensor`` takes the Keras ``variable`` rearranged by ``plan``."""
    import torch
    tf = _tensorflow()
    if tf is None or tensor.device.type != "cpu" or str(tensor.dtype).removeprefix("torch.") != variable.dtype:
        array = np.asarray(variable.numpy())
        value = torch.from_numpy(np.ascontiguousarray(array if plan is None else plan.apply(array)))
        with torch.no_grad():
            tensor.copy_(value.reshape(tensor.shape))   # the torch backend hands a 0-d variable back as (1,)
        return
    import torch.utils.dlpack
    value = torch.utils.dlpack.from_dlpack(tf.experimental.dlpack.to_dlpack(_rearranged(tf, variable.value, plan)))
    tensor.data = value   # adopt the new buffer: no second copy

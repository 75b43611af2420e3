"""Raw-framework probes behind the recorded divergences and refusals: no conversion code involved.

Run as a script in a child process with the environment under test (``TF_ENABLE_ONEDNN_OPTS``,
``ONEDNN_MAX_CPU_ISA``, ``KERAS_BACKEND``); it prints one JSON object: the environment facts that
process resolved, and per probe either the largest error against an einsum reference or the
framework's refusal. tests/test_known_divergences.py checks each record's scope against them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch  # torch before tensorflow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RNG_SEED = 0


class Crashed(Exception):
    """The probe's own process died (heap corruption in a kernel): as wrong as it gets, not a refusal."""


def _outcome(run: Callable[[], float]) -> dict[str, Any]:
    try:
        error = float(run())
    except Crashed as exc:
        return {"error": float("inf"), "crashed": str(exc)}
    except Exception as exc:  # a refusal is the observation
        return {"refused": f"{type(exc).__name__}: {exc}"}
    return {"error": error if error == error else float("inf")}   # garbage can hold NaN: as wrong as it gets


def _conv_inputs(shape: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    return rng.uniform(-1, 1, shape).astype(np.float32), rng.uniform(-1, 1, kernel).astype(np.float32)


def tf_conv2d_one_channel() -> float:
    """tf.nn.conv2d, one input channel, stride (1, 3), a one-column output (cases/conv2d.toml)."""
    import tensorflow as tf
    x, kernel = _conv_inputs((2, 5, 4, 1), (1, 3, 1, 1))                    # N H W C, H W I O
    ours = tf.nn.conv2d(x, kernel, strides=[1, 1, 3, 1], padding="VALID").numpy()
    expected = np.einsum("nhwc,kwco->nho", x[:, :, :3, :], kernel)[:, :, None, :]
    return float(np.abs(ours - expected).max())


def _conv3d_reference() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, kernel = _conv_inputs((2, 3, 5, 4, 1), (1, 1, 3, 1, 2))              # N D H W C, D H W I O
    return x, kernel, np.einsum("ndhwc,wco->ndho", x[:, :, :, :3, :], kernel[0, 0])[:, :, :, None, :]


def tf_conv3d_one_channel() -> float:
    """tf.nn.conv3d, one input channel, stride (1, 1, 3), a one-column output (cases/conv3d.toml)."""
    import tensorflow as tf
    x, kernel, expected = _conv3d_reference()
    ours = tf.nn.conv3d(x, kernel, strides=[1, 1, 1, 3, 1], padding="VALID").numpy()
    return float(np.abs(ours - expected).max())


def torch_conv3d_one_channel() -> float:
    """The same geometry through torch's conv3d, on a channels-last view as Keras's torch backend passes it."""
    x, kernel, expected = _conv3d_reference()
    out = torch.nn.functional.conv3d(torch.from_numpy(x).permute(0, 4, 1, 2, 3),
                                     torch.from_numpy(kernel).permute(4, 3, 0, 1, 2), stride=(1, 1, 3))
    return float(np.abs(out.permute(0, 2, 3, 4, 1).numpy() - expected).max())


def tf_dilated_conv2d_transpose() -> float:
    """tf.nn.conv2d_transpose with dilation 2 (cases/conv_transpose*.toml), against torch's."""
    import tensorflow as tf
    x, kernel = _conv_inputs((1, 4, 4, 2), (3, 3, 3, 2))                    # N H W C, H W O I
    ours = tf.nn.conv2d_transpose(x, kernel, output_shape=[1, 8, 8, 3], strides=1, padding="VALID",
                                  dilations=2).numpy()
    theirs = torch.nn.functional.conv_transpose2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                                                  torch.from_numpy(kernel).permute(3, 2, 0, 1), dilation=2)
    return float(np.abs(ours - theirs.permute(0, 2, 3, 1).numpy()).max())


def tf_depthwise_unequal_strides() -> float:
    """tf.nn.depthwise_conv2d with strides (1, 2) (cases/separable_conv2d.toml), against torch's."""
    import tensorflow as tf
    x, kernel = _conv_inputs((1, 5, 7, 2), (1, 3, 2, 1))                    # N H W C, H W C M
    ours = tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 2, 1], padding="VALID").numpy()
    theirs = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                                        torch.from_numpy(kernel).permute(2, 3, 0, 1), stride=(1, 2), groups=2)
    return float(np.abs(ours - theirs.permute(0, 2, 3, 1).numpy()).max())


def keras_layer_norm_inner_axes() -> float:
    """keras.layers.LayerNormalization over axes (1, 2) of a channels-last map (cases/layer_norm.toml)."""
    import keras
    x = np.random.default_rng(RNG_SEED).uniform(-1, 1, (2, 5, 6, 4)).astype(np.float32)
    layer = keras.layers.LayerNormalization(axis=[1, 2], epsilon=1e-5, center=False, scale=False)
    ours = keras.ops.convert_to_numpy(layer(x))
    mean = x.mean(axis=(1, 2), keepdims=True)
    expected = (x - mean) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
    return float(np.abs(ours - expected).max())


# The residual block's projection shortcut (cases/training/fine_tune.toml): the weight gradient of a 1x1
# convolution, stride 2, 4 input channels, channels-last, against float64. {grad} computes it once.
# (N = 1 is left out: at oneDNN's AVX-512 kernels TensorFlow's gradient then corrupted the heap in 4 of 5 runs.)
_FILTER_GRAD = """
import numpy as np, torch
{setup}
rng = np.random.default_rng({seed})
worst = 0.0
for n, h, w, o in [(8, 8, 8, 8), (8, 8, 10, 8), (8, 8, 10, 16), (4, 8, 10, 8), (2, 8, 10, 8)] * {rounds}:
    x = rng.uniform(-1, 1, (n, h, w, 4)).astype(np.float32)                      # N H W C
    kernel = rng.uniform(-1, 1, (1, 1, 4, o)).astype(np.float32)                 # H W I O
    upstream = rng.uniform(-1, 1, (n, h // 2, w // 2, o)).astype(np.float32)    # the loss's gradient
    expected = np.einsum("nhwc,nhwo->co", x[:, ::2, ::2].astype(np.float64), upstream)
{grad}
    worst = max(worst, float(np.abs(grad - expected).max()))
print(worst)
"""
_TF_SETUP = "import tensorflow as tf\ntf.config.threading.set_intra_op_parallelism_threads(2)"
_TF_GRAD = """    k = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.nn.conv2d(x, k, strides=2, padding="VALID") * upstream)
    grad = tape.gradient(loss, k).numpy()[0, 0]"""
_TORCH_SETUP = "torch.set_num_threads(2)"
_TORCH_GRAD = """    k = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    y = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), k, stride=2)   # a channels-last view
    (y * torch.from_numpy(upstream).permute(0, 3, 1, 2)).sum().backward()
    grad = k.grad.permute(2, 3, 1, 0).numpy()[0, 0]"""


def _in_own_process(code: str) -> float:
    """Run ``code`` in a process of its own: a kernel that corrupts the heap kills that process only, and
    the crash (a signal, or a hang) is the observation (:class:`Crashed`); a Python error is not."""
    import subprocess
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise Crashed("hung for 120 s (heap corruption?)") from None
    if proc.returncode < 0:
        raise Crashed(f"killed by signal {-proc.returncode}: {proc.stderr.strip()[-300:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def tf_conv2d_1x1_stride2_filter_grad() -> float:
    """tf.nn.conv2d's weight gradient (GradientTape), 50 calls over five shapes, TensorFlow on two threads.

    On oneDNN's AVX2 kernels (jit_1x1:avx2 backward_weights; oneDNN 3.7.3 in TensorFlow 2.21) it is wrong on
    some calls and right on others (measured 2 to 39 of 50 wrong, errors up to 9), as if it read memory it
    never wrote; on one thread it corrupts the heap (an abort, or a hang). So it runs in its own process, and
    a crash counts as wrong (infinite error)."""
    return _in_own_process(_FILTER_GRAD.format(setup=_TF_SETUP, seed=RNG_SEED, rounds=10, grad=_TF_GRAD))


def torch_conv2d_1x1_stride2_filter_grad() -> float:
    """The same through torch's conv2d on a channels-last view (as Keras's torch backend passes it), which runs
    torch's own oneDNN (3.12.0 in torch 2.13): the same kernel, measured 9 to 40 of 50 calls wrong."""
    return _in_own_process(_FILTER_GRAD.format(setup=_TORCH_SETUP, seed=RNG_SEED, rounds=10, grad=_TORCH_GRAD))


PROBES = {f.__name__: f for f in (tf_conv2d_one_channel, tf_conv3d_one_channel, torch_conv3d_one_channel,
                                  tf_dilated_conv2d_transpose, tf_depthwise_unequal_strides,
                                  keras_layer_norm_inner_axes, tf_conv2d_1x1_stride2_filter_grad,
                                  torch_conv2d_1x1_stride2_filter_grad)}


def main() -> None:
    from conformance import facts
    from conformance.runner import installed_versions
    probes = {name: _outcome(probe) for name, probe in PROBES.items()}   # first: they load TensorFlow
    resolved = {**facts.scope_facts(), "tensorflow_onednn": facts.tensorflow_onednn(),
                "torch_mkldnn": facts.torch_mkldnn()}
    print(json.dumps({"facts": resolved, "versions": installed_versions(), "probes": probes}))


if __name__ == "__main__":
    main()
    sys.exit(0)

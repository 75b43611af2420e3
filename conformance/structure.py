"""Structural checks at transfer: what decides the output beyond the weights, compared before writing.

Identical weights in differently built layers still give different outputs: a stride-2 conv
with ``padding=1`` against Keras' ``"same"`` (which pads 0 before and 1 after on an even input),
a ``Dense(activation="relu")`` against a bare ``Linear``, max pooling against average pooling.
For each paired unit this module compares, in one vocabulary for both frameworks:

- the weightless ops on its input since the previous node (activations, pooling, zero padding),
  where each framework's own terms are normalised (``nn.ReLU``, ``F.relu``, ``torch.relu`` and a
  fused ``activation="relu"`` are all ``relu``);
- for convolutions, stride and the padding *as resolved*: the layer's own (``"same"`` resolved
  on the real input size) plus any zero padding right before it;
- the number of values per sample that reach it, which catches a different stride, pooling,
  ``ceil_mode`` or ``return_sequences`` upstream.

A difference is a :class:`Mismatch` whose fix names the destination: the model being written into
is the one to change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_ACTIVATIONS = {"relu": "relu", "relu_": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
                "tanh": "tanh", "tanh_": "tanh", "silu": "silu", "swish": "silu", "elu": "elu", "selu": "selu",
                "softplus": "softplus", "hardswish": "hardswish", "hard_swish": "hardswish", "hard_silu": "hardswish",
                "hardsilu": "hardswish", "hardsigmoid": "hardsigmoid", "hard_sigmoid": "hardsigmoid", "mish": "mish",
                "softmax": "softmax", "log_softmax": "log_softmax", "logsoftmax": "log_softmax",
                "softsign": "softsign"}


@dataclass(frozen=True)
class Mismatch:
    """Two paired layers that would differ even with identical weights, and how to fix either side."""

    what: str
    torch_fix: str
    keras_fix: str

    def message(self, into_torch: bool) -> str:
        return f"{self.what}; {self.torch_fix if into_torch else self.keras_fix}"


# ---- the vocabulary ----------------------------------------------------------------------------------

def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def _bound(args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    bound = dict(zip(names, args, strict=False))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    return bound


# Ops that only move, select or drop values at inference: they change no number that matters here.
_TORCH_BENIGN = {"view", "reshape", "flatten", "contiguous", "permute", "transpose", "t", "squeeze", "unsqueeze",
                 "dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d",
                 "size", "dim", "clone", "detach", "to", "float", "type_as", "expand", "expand_as", "movedim",
                 "moveaxis", "view_as", "reshape_as", "__get__", "numel", "identity", "__len__", "__iter__",
                 "__format__", "__bool__", "item", "tolist"}
_TORCH_SELECT = {"__getitem__", "narrow", "select", "chunk", "split", "unbind", "index_select", "gather"}
_KERAS_BENIGN = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                 "GaussianDropout", "AlphaDropout", "Flatten", "Reshape", "Permute", "Identity",
                 "ActivityRegularization", "Masking", "Transpose", "Squeeze", "ExpandDims", "Cast"}
_KERAS_SELECT = {"GetItem", "Slice", "Take", "TakeAlongAxis", "Cropping1D", "Cropping2D", "Cropping3D"}


def _pool(kind: str, kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[Any, ...]:
    """A pooling window; a 1-wide window only subsamples (``x[:, :, ::2]`` does the same)."""
    if all(k == 1 for k in kernel):
        return ("select", f"every {stride} value")
    return ("pool", kind, kernel, stride)


def torch_op(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """A torch function call in the common vocabulary: None for ops that change no number that matters
    (views, dropout at inference), ("other", name) for ops outside the vocabulary."""
    if name in _TORCH_BENIGN:
        return None
    if name in _TORCH_SELECT:
        return ("select", name)
    base = name.lstrip("_")
    if base in _ACTIVATIONS:
        return ("act", _ACTIVATIONS[base])
    if base == "gelu":
        return ("act", "gelu_tanh" if kwargs.get("approximate", "none") == "tanh" else "gelu")
    if base in ("hardtanh", "hardtanh_"):
        low, high = _bound(args, kwargs, ("input", "min_val", "max_val")).get("min_val", -1.0), \
            _bound(args, kwargs, ("input", "min_val", "max_val")).get("max_val", 1.0)
        return ("act", "relu6") if (low, high) == (0.0, 6.0) else ("act", f"hardtanh({low:g},{high:g})")
    if base in ("leaky_relu", "leaky_relu_"):
        slope = _bound(args, kwargs, ("input", "negative_slope")).get("negative_slope", 0.01)
        return ("act", f"leaky_relu({slope:g})")
    for kind in ("max", "avg"):
        for n in (1, 2, 3):
            if base in (f"{kind}_pool{n}d", f"{kind}_pool{n}d_with_indices"):
                p = _bound(args, kwargs, ("input", "kernel_size", "stride", "padding"))
                kernel = _tuple(p.get("kernel_size"), n)
                return _pool(kind, kernel, _tuple(p.get("stride"), n) or kernel)
    if base == "pad":
        p = _bound(args, kwargs, ("input", "pad", "mode", "value"))
        if p.get("mode", "constant") != "constant" or (p.get("value") or 0) != 0:
            return ("other", f"pad ({p.get('mode')}, value {p.get('value')})")
        flat = [int(v) for v in p.get("pad", ())]
        if any(v < 0 for v in flat):
            return ("select", "crop") if all(v <= 0 for v in flat) else ("other", "pad and crop")
        return ("pad", tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))[::-1]) if any(flat) else None
    return ("other", name)


_FUSED = ("Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv", "SeparableConv", "Conv1DTranspose",
          "Conv2DTranspose", "Conv3DTranspose")


def keras_activation(layer: Any) -> tuple[Any, ...] | None:
    """The activation fused into a Keras layer's output (``Dense(activation="relu")``), or None for linear.
    Recurrent layers' ``activation`` is inside the cell, not on the output."""
    if not type(layer).__name__.startswith(_FUSED):
        return None
    return _activation_of(layer)


def _activation_of(layer: Any) -> tuple[Any, ...] | None:
    function = getattr(layer, "activation", None)
    name = getattr(function, "__name__", None)
    if name is None or name == "linear":
        return None
    if name == "gelu":
        return ("act", "gelu")
    if name == "leaky_relu":
        return ("act", "leaky_relu(0.2)")
    return ("act", _ACTIVATIONS.get(name, name))


def keras_op(op: Any, source: Any) -> tuple[Any, ...] | None:
    """A weightless Keras layer or keras.ops operation in the common vocabulary: None for layers that change
    no number that matters, ("other", name) outside the vocabulary."""
    name = type(op).__name__
    if name in _KERAS_BENIGN:
        return None
    if name in _KERAS_SELECT:
        return ("select", name)
    if name == "ReLU":
        if getattr(op, "max_value", None) == 6 and not getattr(op, "negative_slope", 0):
            return ("act", "relu6")
        if getattr(op, "negative_slope", 0):
            return ("act", f"leaky_relu({op.negative_slope:g})")
        return ("act", "relu")
    if name == "LeakyReLU":
        return ("act", f"leaky_relu({op.negative_slope:g})")
    if name in ("Activation", "ELU", "Softmax"):
        return _activation_of(op) if name == "Activation" else ("act", name.lower())
    if name.startswith(("MaxPooling", "AveragePooling")) and name[-2:] in ("1D", "2D", "3D"):
        n = int(name[-2])
        kernel = _tuple(op.pool_size, n)
        return _pool("max" if name.startswith("Max") else "avg", kernel, _tuple(op.strides, n) or kernel)
    if name.startswith("ZeroPadding"):
        raw = op.padding if not isinstance(op.padding[0], int) else (op.padding,)   # ZeroPadding1D: (before, after)
        pads = tuple(tuple(int(v) for v in pair) for pair in raw)
        return ("pad", pads) if any(v for pair in pads for v in pair) else None
    if type(op).__module__.startswith("keras.src.ops.nn"):
        lowered = name.lower()
        if lowered == "gelu":
            return ("act", "gelu" if not getattr(op, "approximate", True) else "gelu_tanh")
        if lowered == "leakyrelu":
            return ("act", f"leaky_relu({getattr(op, 'negative_slope', 0.2):g})")
        if lowered in _ACTIVATIONS:
            return ("act", _ACTIVATIONS[lowered])
    return ("other", name)


def describe(ops: Sequence[tuple[Any, ...]]) -> str:
    if not ops:
        return "nothing"
    words = []
    for op in ops:
        if op[0] == "act":
            words.append(op[1])
        elif op[0] == "pool":
            words.append(f"{op[1]} pooling (kernel {op[2]}, stride {op[3]})")
        elif op[0] == "pad":
            words.append(f"zero padding {op[1]}")
        else:
            words.append(str(op[1]))
    return ", then ".join(words)


# ---- the checks --------------------------------------------------------------------------------------

def _split_pads(ops: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[tuple[tuple[int, int], ...]]]:
    """The ops, and the zero paddings that come last (right before the unit)."""
    rest, pads = list(ops), []   # type: list[tuple[Any, ...]], list[tuple[tuple[int, int], ...]]
    while rest and rest[-1][0] == "pad" and isinstance(rest[-1][1], tuple) and \
            all(isinstance(p, tuple) for p in rest[-1][1]):
        pads.insert(0, rest.pop()[1])
    return rest, pads


def _padding_sum(pads: list[tuple[tuple[int, int], ...]], n: int) -> list[list[int]]:
    total = [[0, 0] for _ in range(n)]
    for pad in pads:
        last = pad[-n:]                        # a pad of fewer axes than the conv's covers its last ones
        for i, (before, after) in enumerate(last, start=n - len(last)):
            total[i][0] += before
            total[i][1] += after
    return total


def _same(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """Keras/TensorFlow "same": the total padding that gives ceil(size / stride) outputs, extra after."""
    span = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _torch_conv_padding(module: Any, n: int) -> list[list[int]] | None:
    padding = module.padding
    if isinstance(padding, str):
        if padding == "valid":
            return [[0, 0] for _ in range(n)]
        kernel, dilation = _tuple(module.kernel_size, n), _tuple(module.dilation, n)
        return [[(k - 1) * d // 2, (k - 1) * d - (k - 1) * d // 2] for k, d in zip(kernel, dilation, strict=True)]
    return [[p, p] for p in _tuple(padding, n)]


def _keras_conv_padding(layer: Any, n: int, in_shape: tuple[int, ...] | None) -> list[list[int]] | None:
    mode = getattr(layer, "padding", "valid")
    if mode == "valid":
        return [[0, 0] for _ in range(n)]
    kernel, stride = _tuple(layer.kernel_size, n), _tuple(layer.strides, n)
    dilation = _tuple(getattr(layer, "dilation_rate", 1), n)
    if mode == "causal":
        return [[(kernel[0] - 1) * dilation[0], 0]]
    if in_shape is None or len(in_shape) < n + 1:
        return None
    spatial = in_shape[:n] if getattr(layer, "data_format", "channels_last") == "channels_last" else in_shape[1:]
    return [list(_same(size, k, s, d)) for size, k, s, d in zip(spatial, kernel, stride, dilation, strict=True)]


def _is_conv(module: Any, layer: Any) -> bool:
    return (hasattr(module, "padding") and hasattr(module, "stride") and hasattr(layer, "strides")
            and not getattr(module, "transposed", False) and getattr(module, "weight", None) is not None
            and module.weight.ndim >= 3)


def eps_mismatch(module: Any, layer: Any) -> Mismatch | None:
    """eps against epsilon (PyTorch defaults to 1e-5, Keras to 1e-3, keras.applications' DenseNet uses
    1.001e-5): the fix is on the side being written into."""
    if math.isclose(module.eps, layer.epsilon, rel_tol=1e-6):
        return None
    return Mismatch(f"eps {module.eps:g} vs epsilon {layer.epsilon:g} (PyTorch defaults to 1e-5, Keras to 1e-3)",
                    f"set torch.nn.{type(module).__name__}(eps={layer.epsilon:g})",
                    f"build the Keras layer with epsilon={module.eps:g}")


def check_pair(module: Any, layer: Any, t_node: Any, k_node: Any) -> Mismatch | None:
    """The first structural difference between a paired torch module and Keras layer, or None.
    ``t_node`` and ``k_node`` are their nodes in :mod:`conformance.graph` (None where unknown)."""
    t_rest, t_pads = _split_pads(t_node.pre if t_node else [])
    k_rest, k_pads = _split_pads(k_node.pre if k_node else [])
    if t_node is not None and k_node is not None:
        problem = compare_ops(t_rest, k_rest, "before it")
        if problem:
            return problem
    if _is_conv(module, layer):
        n = module.weight.ndim - 2
        t_stride, k_stride = _tuple(module.stride, n), _tuple(layer.strides, n)
        if t_stride != k_stride and _plain(t_node and t_node.post) and _plain(k_node and k_node.post):
            return Mismatch(f"stride {t_stride} vs strides {k_stride}", f"set the torch layer's stride={k_stride}",
                            f"build the Keras layer with strides={t_stride}")
        if t_node is not None and k_node is not None and _plain(t_rest) and _plain(k_rest):
            own_t = _torch_conv_padding(module, n)
            own_k = _keras_conv_padding(layer, n, k_node.in_shape)
            if own_t is not None and own_k is not None:
                t_total = [[a + b for a, b in zip(x, y, strict=True)] for x, y in zip(own_t, _padding_sum(t_pads, n),
                                                                                       strict=True)]
                k_total = [[a + b for a, b in zip(x, y, strict=True)] for x, y in zip(own_k, _padding_sum(k_pads, n),
                                                                                       strict=True)]
                if t_total != k_total:
                    t_text, k_text = _pads_text(t_total), _pads_text(k_total)
                    return Mismatch(
                        f"padding as resolved differs: torch pads {t_text}, Keras pads {k_text} "
                        f"(padding={module.padding!r} against padding={layer.padding!r}"
                        f"{' after ZeroPadding' if k_pads else ''})",
                        f"pad the torch input by {k_text} before the conv (nn.ZeroPad{n}d, then padding=0)"
                        if any(a != b for a, b in k_total) else
                        f"set the torch layer's padding={tuple(a for a, _ in k_total)}",
                        f"pad by {t_text} with ZeroPadding{n}D before a padding='valid' Keras layer"
                        if t_text != k_text else "")
    plain = not any(op[0] in ("pad", "select", "other") for op in (*t_node.pre, *k_node.pre)) \
        if t_node is not None and k_node is not None else False
    if plain and t_node.in_ratio and k_node.in_ratio and \
            not math.isclose(t_node.in_ratio, k_node.in_ratio, rel_tol=1e-9):
        return Mismatch(f"it reads {t_node.in_ratio:.4g} values per value of the model's input in torch but "
                        f"{k_node.in_ratio:.4g} in Keras (one sample: torch {t_node.in_shape}, Keras "
                        f"{k_node.in_shape}): a layer before it differs (stride, padding, pooling, "
                        "ceil_mode or return_sequences)",
                        "make the torch model's earlier layers match the Keras model's",
                        "make the Keras model's earlier layers match the torch model's")
    return None


def _plain(ops: Sequence[tuple[Any, ...]] | None) -> bool:
    """Known and free of selections (a strided slice is a stride too; ops.pad is padding too): judgeable."""
    return ops is not None and not any(op[0] in ("select", "other") for op in ops)


def compare_ops(t_ops: Sequence[tuple[Any, ...]], k_ops: Sequence[tuple[Any, ...]], where: str) -> Mismatch | None:
    """Activations, pooling and zero padding between two places, in order, must be the same. Where either
    side computes something outside this vocabulary (``x * 0.5``, a Lambda), nothing is claimed: the
    numeric comparison judges it."""
    t_ops, k_ops = _judged(t_ops), _judged(k_ops)
    if t_ops == k_ops or any(op[0] == "other" for op in (*t_ops, *k_ops)):
        return None
    return Mismatch(f"{where}, torch applies {describe(t_ops)} but Keras applies {describe(k_ops)} "
                    "(fused activations included)",
                    f"make the torch model apply {describe(k_ops)} there",
                    f"make the Keras model apply {describe(t_ops)} there (a fused activation= counts)")


def _judged(ops: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The ops compared: selections are dropped (they change which values flow, not how they are computed),
    and so is zero padding right before a pooling, whose padding rules (-inf, counted or not, ceil_mode) the
    numeric comparison judges."""
    kept = [op for op in ops if op[0] != "select"]
    return [op for i, op in enumerate(kept) if not (op[0] == "pad" and i + 1 < len(kept) and kept[i + 1][0] == "pool")]


def _pads_text(total: list[list[int]]) -> str:
    return "(" + ", ".join(f"{a} before/{b} after" for a, b in total) + ")"


__all__ = ["Mismatch", "check_pair", "compare_ops", "describe", "eps_mismatch", "keras_activation", "keras_op",
           "torch_op"]

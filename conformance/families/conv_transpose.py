"""conv_transpose1d/2d/3d: PyTorch ``nn.ConvTransposeNd`` against Keras ``ConvNDTranspose``.

Rules of correspondence (pitfall 16), each checked by the catalogue on the installed versions:
- kernels are ``I O/g *S`` in torch and ``*S O I`` in Keras: ``I O H W -> H W O I``, no flip;
- torch computes the full ("valid") transposed convolution, then crops ``padding`` at both ends
  and gives back ``output_padding`` at the end. While ``output_padding <= padding`` those are real
  computed positions (the end crop is just smaller); past the full output they hold the bias
  only. So Keras runs ``"valid"``, then ``CroppingND`` (padding, padding - output_padding). The
  positions past the full output come from Keras's own ``output_padding``, which appends exactly
  such bias-only positions, but Keras needs it ``< strides``; at stride 1 (torch allows
  output_padding < dilation) the input gets that many zeros at its end instead;
- Keras's ``"valid"`` with ``output_padding=None`` is not the full output: it appends
  ``max(k_eff, s) - k_eff`` bias-only positions, so ``output_padding`` is always given explicitly;
- Keras refuses ``strides > 1`` with ``dilation_rate > 1``; the exact equivalent is a stride-1
  transposed convolution of the input with ``s - 1`` zeros inserted between elements
  (``keras.ops`` expand_dims, pad, reshape);
- Keras has no grouped transposed convolution (no ``groups`` argument). Two exact Keras forms
  pair with a grouped torch layer: one dense layer whose kernel is block-diagonal (zeros off the
  blocks; keras->torch refuses non-zero off-block entries, which no grouped torch layer has), and
  ``groups`` layers over channel slices joined by a Concatenate. The family builds the split
  form, because the catalogue's keras->torch direction starts from random Keras weights, which a
  dense kernel would fill off the blocks; ``transfer_weights`` accepts either form.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..layout import Layout
from ..rules import Context, Converter, WeightRule, spatial_axes
from .base import Family, Param, Params, Tolerance, boolean, choice, integer, ints, invalid, shape


def transpose_layout(n: int) -> Layout:
    """I O *spatial -> *spatial O I, e.g. ``I O H W -> H W O I``."""
    axes = " ".join(spatial_axes(n))
    return Layout(f"I O {axes} -> {axes} O I")


def output_length(length: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """PyTorch's ConvTranspose output size."""
    return (length - 1) * s - 2 * p + d * (k - 1) + op + 1


def _params(n: int) -> dict[str, Param]:
    return {
        "in_channels": Param(integer(1), abbrev=None),
        "out_channels": Param(integer(1), abbrev="o"),
        "kernel_size": Param(ints(n, 1), abbrev="k"),
        "stride": Param(ints(n, 1), default=(1,) * n, abbrev="s"),
        "padding": Param(ints(n, 0), default=(0,) * n, abbrev="p"),
        "output_padding": Param(ints(n, 0), default=(0,) * n, abbrev="op"),
        "dilation": Param(ints(n, 1), default=(1,) * n, abbrev="d"),
        "groups": Param(integer(1), default=1, abbrev="g"),
        "bias": Param(boolean, default=True, abbrev="bias"),
        "padding_mode": Param(choice("zeros"), default="zeros", abbrev=None),
        "input_shape": Param(shape(rank=n + 1), abbrev="in"),
    }


def _dims(p: Params) -> list[tuple[int, ...]]:
    """Per spatial dim: (length, k, s, p, op, d)."""
    return list(zip(p["input_shape"][1:], p["kernel_size"], p["stride"], p["padding"], p["output_padding"],
                    p["dilation"], strict=True))


def _check(p: Params) -> None:
    c, o, g = p["in_channels"], p["out_channels"], p["groups"]
    if p["input_shape"][0] != c:
        raise invalid("input_shape", f"has {p['input_shape'][0]} channels but in_channels is {c}")
    if c % g or o % g:
        raise invalid("groups", f"groups={g} must divide in_channels={c} and out_channels={o}")
    for length, k, s, pad, op, d in _dims(p):
        if op >= max(s, d):
            raise invalid("output_padding", f"output_padding {op} must be smaller than stride {s} or "
                                            f"dilation {d}; PyTorch refuses it")
        if output_length(length, k, s, pad, op, d) < 1:
            raise invalid("padding", f"padding {pad} crops away the whole output (input {length}, kernel {k}, "
                                     f"stride {s}, dilation {d})")


def _build_torch(n: int) -> Any:
    def build(p: Params) -> Any:
        import torch
        cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}[n]
        return cls(p["in_channels"], p["out_channels"], p["kernel_size"], stride=p["stride"],
                   padding=p["padding"], output_padding=p["output_padding"], groups=p["groups"],
                   bias=p["bias"], dilation=p["dilation"], padding_mode=p["padding_mode"])
    return build


def _layer(n: int, name: str) -> Any:
    import keras
    return getattr(keras.layers, name.replace("N", str(n)))


def _arg(n: int, pairs: list[tuple[int, int]]) -> Any:
    """A Cropping/ZeroPadding argument: one pair in 1-D, a tuple of pairs otherwise."""
    return pairs[0] if n == 1 else tuple(pairs)


def _zero_insert(x: Any, stride: tuple[int, ...]) -> Any:
    """Insert ``s - 1`` zeros after every element along each spatial axis (channels-last).

    A stride-s transposed convolution equals a stride-1 one over this input, with the trailing
    ``s - 1`` zeros of each axis still to be removed by the caller.
    """
    import keras
    ops = keras.ops
    for axis, s in enumerate(stride, start=1):
        if s == 1:
            continue
        x = ops.expand_dims(x, axis + 1)
        widths = [(0, 0)] * len(x.shape)
        widths[axis + 1] = (0, s - 1)
        x = ops.pad(x, widths)
        sizes = list(x.shape)
        merged = [*sizes[1:axis], sizes[axis] * s, *sizes[axis + 2:]]
        x = ops.reshape(x, (-1, *merged))
    return x


def _build_keras(n: int) -> Any:
    def build(p: Params, x: Any) -> Any:
        import keras
        dims, stride = _dims(p), p["stride"]
        extra = [max(0, op - pad) for _, _, _, pad, op, _ in dims]   # bias-only positions past the full output
        if any(s > 1 for s in stride) and any(d > 1 for d in p["dilation"]):
            # Zero insertion makes each axis S*s long; stride 1 wants (S-1)*s + 1, plus the extra zeros.
            x = _zero_insert(x, stride)
            change = [e - (s - 1) for s, e in zip(stride, extra, strict=True)]
            strides, keras_op = (1,) * n, (0,) * n
        else:
            # Keras's output_padding gives the extra positions where it may (< strides); at stride 1
            # zeros at the end of the input do.
            change = [e if s == 1 else 0 for s, e in zip(stride, extra, strict=True)]
            strides, keras_op = stride, tuple(e if s > 1 else 0 for s, e in zip(stride, extra, strict=True))
        if any(c > 0 for c in change):
            x = _layer(n, "ZeroPaddingND")(_arg(n, [(0, max(c, 0)) for c in change]))(x)
        if any(c < 0 for c in change):
            x = _layer(n, "CroppingND")(_arg(n, [(0, max(-c, 0)) for c in change]))(x)
        g = p["groups"]
        parts = keras.ops.split(x, g, axis=-1) if g > 1 else [x]
        parts = [_layer(n, "ConvNDTranspose")(filters=p["out_channels"] // g, kernel_size=p["kernel_size"],
                                              strides=strides, padding="valid", output_padding=keras_op,
                                              dilation_rate=p["dilation"], use_bias=p["bias"])(part)
                 for part in parts]
        x = keras.layers.Concatenate(axis=-1)(parts) if g > 1 else parts[0]
        crops = [(pad, max(0, pad - op)) for _, _, _, pad, op, _ in dims]
        if any(a or b for a, b in crops):
            x = _layer(n, "CroppingND")(_arg(n, crops))(x)
        return x
    return build


def conv_transpose_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *,
                             stride: tuple[int, ...], padding: tuple[int, ...], output_padding: tuple[int, ...],
                             dilation: tuple[int, ...], groups: int) -> np.ndarray:
    """Float64 transposed convolution as a direct scatter, like torch.nn.functional.conv_transposeNd.

    Input element i, kernel tap t lands on output position ``i*s + t*d - padding``; positions past
    the full output (from output_padding) receive nothing but the bias.
    """
    x, w = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    batch, c_in, *spatial = x.shape
    kernel = w.shape[2:]
    c_out = w.shape[1] * groups
    out = [output_length(L, k, s, p, op, d) for L, k, s, p, op, d in
           zip(spatial, kernel, stride, padding, output_padding, dilation, strict=True)]
    full = [max((L - 1) * s + d * (k - 1) + 1, p + o) for L, k, s, d, p, o in
            zip(spatial, kernel, stride, dilation, padding, out, strict=True)]
    xg = x.reshape(batch, groups, c_in // groups, *spatial)
    wg = w.reshape(groups, c_in // groups, c_out // groups, *kernel)
    y = np.zeros((batch, groups, c_out // groups, *full))
    for tap in itertools.product(*(range(k) for k in kernel)):
        contribution = np.einsum("ngc...,gco->ngo...", xg, wg[(slice(None),) * 3 + tap])
        where: tuple[Any, ...] = (Ellipsis, *(slice(t * d, t * d + (L - 1) * s + 1, s) for t, d, L, s in
                                               zip(tap, dilation, spatial, stride, strict=True)))
        y[where] += contribution
    kept: tuple[Any, ...] = (Ellipsis, *(slice(p, p + o) for p, o in zip(padding, out, strict=True)))
    y = y[kept]
    y = y.reshape(batch, c_out, *out)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(1, c_out, *([1] * len(out)))
    return y


def _reference(x: Any, w: Any, p: Params) -> Any:
    return conv_transpose_reference(x, w["weight"], w.get("bias"), stride=p["stride"], padding=p["padding"],
                                    output_padding=p["output_padding"], dilation=p["dilation"],
                                    groups=p["groups"])


def _tolerance(p: Params) -> Tolerance:
    # Each output sums at most (in_channels / groups) * prod(kernel) products.
    return Tolerance.reduction(p["in_channels"] // p["groups"] * math.prod(p["kernel_size"]))


def _family(n: int) -> Family:
    return Family(
        name=f"conv_transpose{n}d", torch_class=f"ConvTranspose{n}d", params=_params(n), channels_first=True,
        build_torch=_build_torch(n), build_keras=_build_keras(n), check=_check, reference=_reference,
        tolerance=_tolerance,
        # groups > 1: each split Keras layer's kernel (or each block of the dense one) follows this rule.
        weight_layouts={"weight": str(transpose_layout(n))},
    )


FAMILIES = [_family(1), _family(2), _family(3)]


# ---- weight rules


@dataclass(frozen=True)
class GroupedTransposeKernel(WeightRule):
    """A grouped torch kernel ``(I, O/g, *k)`` as a dense block-diagonal Keras kernel ``(*k, O, I)``.

    Keras's transposed convolutions have no groups, so input channel block ``gi`` connects only to
    output channel block ``gi``: every other entry of the dense kernel is zero. The inverse reads
    the blocks back and refuses a kernel with non-zero entries off them, which no grouped torch
    layer can represent. to_torch(to_keras(w)) == w exactly, and to_keras(to_torch(k)) == k for
    every kernel that to_torch accepts.
    """

    bijective = False

    groups: int = 1

    def _dense_layout(self, ndim: int) -> Layout:
        return transpose_layout(ndim - 2)

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        g = self.groups
        i_total, o_group = array.shape[:2]
        i_group = i_total // g
        dense = np.zeros((i_total, o_group * g, *array.shape[2:]), dtype=array.dtype)
        for b in range(g):
            dense[b * i_group:(b + 1) * i_group, b * o_group:(b + 1) * o_group] = array[b * i_group:(b + 1) * i_group]
        return self._dense_layout(array.ndim).apply(dense)

    def gradient_to_torch(self, keras_gradient: np.ndarray) -> np.ndarray:
        """The adjoint of writing blocks into zeros: read the blocks, whatever lies off them (the
        gradient of an entry that is always zero is not zero)."""
        return self._blocks(keras_gradient, refuse=False)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        return self._blocks(array, refuse=True)

    def _blocks(self, array: np.ndarray, refuse: bool) -> np.ndarray:
        g = self.groups
        dense = self._dense_layout(array.ndim).invert(array)
        i_total, o_total = dense.shape[:2]
        if i_total % g or o_total % g:
            raise ValueError(f"the Keras kernel's {i_total} input and {o_total} output channels do not split "
                             f"into {g} groups")
        i_group, o_group = i_total // g, o_total // g
        off_block = np.ones((i_total, o_total), dtype=bool)
        blocks = []
        for b in range(g):
            rows, cols = slice(b * i_group, (b + 1) * i_group), slice(b * o_group, (b + 1) * o_group)
            off_block[rows, cols] = False
            blocks.append(dense[rows, cols])
        stray = np.abs(dense[off_block])
        if refuse and stray.size and stray.max() != 0:
            raise ValueError(f"the Keras model cannot be represented by a grouped torch layer: its dense kernel "
                             f"has {int((stray != 0).sum())} non-zero entries (largest {stray.max():.3g}) off the "
                             f"{g} group blocks, where groups={g} has no connection")
        return np.concatenate(blocks, axis=0)

    def describe(self) -> str:
        return (f"{self.layout} per group, dense block-diagonal over {self.groups} groups "
                f"(zeros off the blocks; keras->torch refuses non-zero off-block entries)")


@dataclass(frozen=True)
class GroupBlock(WeightRule):
    """Group ``block`` of a grouped torch tensor <-> the Keras layer that computes that group alone.

    A grouped layer in Keras is ``groups`` transposed convolutions over channel slices, joined by
    a Concatenate. torch->keras takes block ``block`` along axis 0 (input channels of the kernel,
    output channels of the bias). keras->torch needs every block to rebuild the one torch tensor,
    so each rule carries all the Keras blocks (read when the transfer is planned) and returns
    their concatenation: the ``groups`` rules write the same value.
    """

    block: int = 0
    groups: int = 1
    parts: tuple[np.ndarray, ...] = ()

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        return WeightRule.to_keras(self, np.split(array, self.groups, axis=0)[self.block])

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        return np.concatenate([WeightRule.to_torch(self, part) for part in self.parts], axis=0)

    def describe(self) -> str:
        rule = "copy" if self.layout is None else str(self.layout)
        return f"group {self.block} of {self.groups}: torch block {self.block} along axis 0, {rule}"


def _is_split(module: Any, layers: list[Any]) -> bool:
    """The next ``groups`` Keras layers each hold one group: kernel (*k, O/g, I/g)."""
    g = module.groups
    if g == 1 or len(layers) < g:
        return False
    expected = (*module.kernel_size, module.out_channels // g, module.in_channels // g)
    return all(_is_transpose(layer) and tuple(getattr(getattr(layer, "kernel", None), "shape", ())) == expected
               for layer in layers[:g])


def _is_transpose(layer: Any) -> bool:
    return any(cls.__name__ in _KERAS_TYPES for cls in type(layer).__mro__)


_KERAS_TYPES = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


@dataclass(frozen=True)
class TransposeConverter(Converter):
    """Pairs a grouped torch layer with ``groups`` split Keras layers when they are there, else one."""

    def matches(self, modules: list[Any], layers: list[Any]) -> tuple[int, int] | None:
        one = super().matches(modules, layers)
        if one is not None and _is_split(modules[0], layers):
            return 1, modules[0].groups
        return one


def _rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    n, g = module.weight.ndim - 2, module.groups
    layout = transpose_layout(n)
    if isinstance(layer, tuple):    # one Keras layer per group
        kernels = tuple(np.asarray(part.kernel.numpy()) for part in layer)
        biases = tuple(np.asarray(part.bias.numpy()) for part in layer if part.bias is not None)
        rules: list[WeightRule] = []
        for b in range(g):
            rules.append(GroupBlock("weight", f"{b}/kernel", layout, block=b, groups=g, parts=kernels))
            rules.append(GroupBlock("bias", f"{b}/bias", optional=True, block=b, groups=g, parts=biases))
        return rules
    bias = WeightRule("bias", "bias", optional=True)
    if g == 1:
        return [WeightRule("weight", "kernel", layout), bias]
    return [GroupedTransposeKernel("weight", "kernel", layout, groups=g), bias]


def _check_pair(module: Any, layer: Any) -> str | None:
    for one in layer if isinstance(layer, tuple) else (layer,):
        problem = _check_one(module, one)
        if problem:
            return problem
    return None


def _check_one(module: Any, layer: Any) -> str | None:
    if tuple(module.dilation) != tuple(layer.dilation_rate):
        return f"dilation {tuple(module.dilation)} vs dilation_rate {tuple(layer.dilation_rate)}"
    stride, strides = tuple(module.stride), tuple(layer.strides)
    # Stride > 1 with dilation > 1 runs in Keras as stride 1 over a zero-inserted input.
    upsampled = all(s == 1 for s in strides) and any(d > 1 for d in module.dilation)
    if stride != strides and not upsampled:
        return f"stride {stride} vs strides {strides}"
    if layer.data_format != "channels_last":
        return f"data_format {layer.data_format!r}: only channels_last layers are paired"
    return None


CONVERTERS = [
    TransposeConverter("conv transpose", ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"), _KERAS_TYPES,
                       _rules, _check_pair),
]

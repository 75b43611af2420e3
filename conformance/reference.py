"""Independent float64 NumPy references for PyTorch layer semantics.

Used as a third party when PyTorch and Keras disagree: both frameworks are compared against these.
All arrays use PyTorch's layout (batch first, channels second, then spatial dims) and every result is
float64. Only NumPy is imported, so the references cannot inherit a bug from either framework.
Spatial rank n (1, 2 or 3) is inferred from the weight (conv) or input (pools) rank.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

IntOrSeq = int | Sequence[int]

__all__ = [
    "activation",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "avg_pool",
    "batch_norm",
    "conv",
    "linear",
    "max_pool",
]


def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _tup(value: IntOrSeq, n: int, name: str) -> tuple[int, ...]:
    """Expand an int (or a 1-element sequence) to n ints, as torch's _single/_pair/_triple do."""
    vals = (value,) * n if isinstance(value, (int, np.integer)) else tuple(value)
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise ValueError(f"{name} must be an int or {n} ints, got {value!r}")
    return tuple(int(v) for v in vals)


def _windows(xp: np.ndarray, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
             out: Sequence[int]) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Yield (kernel offset, strided view of the trailing spatial dims) for each kernel offset."""
    for off in itertools.product(*(range(k) for k in kernel)):
        sl = tuple(slice(o * d, o * d + s * (m - 1) + 1, s)
                   for o, d, s, m in zip(off, dilation, stride, out, strict=True))
        index: tuple[Any, ...] = (Ellipsis, *sl)
        yield off, xp[index]


def _spatial(x: np.ndarray) -> int:
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"expected (N, C, *spatial) with 1-3 spatial dims, got shape {x.shape}")
    return x.ndim - 2


def conv(x: Any, weight: Any, bias: Any | None = None, *, stride: IntOrSeq = 1,
         padding: IntOrSeq | str = 0, dilation: IntOrSeq = 1, groups: int = 1) -> np.ndarray:
    """N-d cross-correlation like torch.nn.functional.conv{1,2,3}d (zero padding).

    padding="same" follows torch: stride must be 1, total pad dilation*(k-1) per dim, the left side
    gets total//2 and the right side the rest (so odd totals put the extra element on the right).
    """
    x, w = _f64(x), _f64(weight)
    n = w.ndim - 2
    if x.ndim != n + 2 or not 1 <= n <= 3:
        raise ValueError(f"input shape {x.shape} does not match weight shape {w.shape}")
    s, d = _tup(stride, n, "stride"), _tup(dilation, n, "dilation")
    k = w.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * n
        elif padding == "same":
            if any(v != 1 for v in s):
                raise ValueError("padding='same' requires stride 1 (as in torch)")
            totals = [di * (ki - 1) for di, ki in zip(d, k, strict=True)]
            pads = [(t // 2, t - t // 2) for t in totals]
        else:
            raise ValueError(f"padding string must be 'valid' or 'same', got {padding!r}")
    else:
        pads = [(p, p) for p in _tup(padding, n, "padding")]
    batch, c_in = x.shape[:2]
    c_out = w.shape[0]
    if groups < 1 or c_in % groups or c_out % groups or w.shape[1] * groups != c_in:
        raise ValueError(f"groups={groups} incompatible with input channels {c_in}, weight {w.shape}")
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    out = [(xp.shape[2 + i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(n)]
    if min(out) < 1:
        raise ValueError(f"kernel {k} with dilation {d} is larger than padded input {xp.shape[2:]}")
    cg = c_in // groups
    xg = xp.reshape(batch, groups, cg, *xp.shape[2:])
    wg = w.reshape(groups, c_out // groups, cg, *k)
    y = np.zeros((batch, groups, c_out // groups, *out))
    for off, patch in _windows(xg, k, s, d, out):
        y += np.einsum("ngc...,goc->ngo...", patch, wg[(slice(None),) * 3 + off])
    y = y.reshape(batch, c_out, *out)
    if bias is not None:
        y += _f64(bias).reshape(1, c_out, *([1] * n))
    return y


def linear(x: Any, weight: Any, bias: Any | None = None) -> np.ndarray:
    """y = x @ weight.T + bias over the last axis, like torch.nn.functional.linear."""
    y = _f64(x) @ _f64(weight).T
    return y + _f64(bias) if bias is not None else y


def batch_norm(x: Any, running_mean: Any, running_var: Any, weight: Any | None = None,
               bias: Any | None = None, *, eps: float = 1e-5) -> np.ndarray:
    """Inference-mode batch norm over channel axis 1 using the running statistics."""
    x = _f64(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm needs at least (N, C), got shape {x.shape}")
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = (x - _f64(running_mean).reshape(shape)) / np.sqrt(_f64(running_var).reshape(shape) + eps)
    if weight is not None:
        y = y * _f64(weight).reshape(shape)
    if bias is not None:
        y = y + _f64(bias).reshape(shape)
    return y


def _pool_args(x: np.ndarray, kernel_size: IntOrSeq, stride: IntOrSeq | None, padding: IntOrSeq,
               dilation: IntOrSeq, ceil_mode: bool) -> tuple[tuple[int, ...], ...]:
    """Normalise pool arguments and compute torch's output size (incl. its ceil_mode rule)."""
    n = _spatial(x)
    k = _tup(kernel_size, n, "kernel_size")
    s = k if stride is None else _tup(stride, n, "stride")
    p, d = _tup(padding, n, "padding"), _tup(dilation, n, "dilation")
    if any(pi > ki // 2 for pi, ki in zip(p, k, strict=True)):
        raise ValueError(f"padding {p} must be at most half of kernel_size {k} (as in torch)")
    out = []
    for size, ki, si, pi, di in zip(x.shape[2:], k, s, p, d, strict=True):
        span = size + 2 * pi - di * (ki - 1) - 1
        o = (span + (si - 1 if ceil_mode else 0)) // si + 1
        if ceil_mode and (o - 1) * si >= size + pi:
            o -= 1  # the last window must start inside the input or the left padding
        if o < 1:
            raise ValueError(f"output size would be {o} for input {x.shape[2:]}, kernel {k}")
        out.append(o)
    return k, s, p, d, tuple(out)


def _pad_for(x: np.ndarray, p: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int],
             out: Sequence[int], value: float) -> np.ndarray:
    """Pad left by p and right far enough for every window (ceil_mode may need more than p)."""
    right = [max(0, (o - 1) * si + di * (ki - 1) + 1 - size - pi)
             for size, pi, ki, si, di, o in zip(x.shape[2:], p, k, s, d, out, strict=True)]
    return np.pad(x, [(0, 0), (0, 0), *zip(p, right, strict=True)], constant_values=value)


def max_pool(x: Any, kernel_size: IntOrSeq, stride: IntOrSeq | None = None, padding: IntOrSeq = 0,
             dilation: IntOrSeq = 1, ceil_mode: bool = False) -> np.ndarray:
    """Max pooling like torch.nn.functional.max_pool{1,2,3}d; padding counts as -inf, NaN propagates.

    As in torch, padding larger than kernel_size // 2 is rejected.
    """
    x = _f64(x)
    k, s, p, d, out = _pool_args(x, kernel_size, stride, padding, dilation, ceil_mode)
    xp = _pad_for(x, p, k, s, d, out, -np.inf)
    y = np.full(x.shape[:2] + out, -np.inf)
    for _, patch in _windows(xp, k, s, d, out):
        y = np.maximum(y, patch)
    return y


def avg_pool(x: Any, kernel_size: IntOrSeq, stride: IntOrSeq | None = None, padding: IntOrSeq = 0,
             ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None) -> np.ndarray:
    """Average pooling like torch.nn.functional.avg_pool{1,2,3}d.

    The divisor per dim is min(start + k, L + p) - start with count_include_pad (zero padding counts,
    positions that only ceil_mode added do not), else the number of real elements; dims multiply.
    torch's avg_pool1d has no divisor_override argument; here it is accepted for every rank. torch's
    avg_pool3d also rejects inputs smaller than the kernel before padding; this function does not.
    """
    x = _f64(x)
    k, s, p, d, out = _pool_args(x, kernel_size, stride, padding, 1, ceil_mode)
    xp = _pad_for(x, p, k, s, d, out, 0.0)
    y = np.zeros(x.shape[:2] + out)
    for _, patch in _windows(xp, k, s, d, out):
        y += patch
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError("divisor_override must be non-zero")
        return y / divisor_override
    sizes = []
    for size, ki, si, pi, o in zip(x.shape[2:], k, s, p, out, strict=True):
        start = np.arange(o) * si - pi
        if count_include_pad:
            sizes.append(np.minimum(start + ki, size + pi) - start)
        else:
            sizes.append(np.minimum(start + ki, size) - np.maximum(start, 0))
    return y / functools.reduce(np.multiply.outer, sizes)


def _adaptive_out(x: np.ndarray, output_size: int | None | Sequence[int | None]) -> list[int]:
    n = _spatial(x)
    sizes = [output_size] * n if output_size is None or isinstance(output_size, (int, np.integer)) \
        else list(output_size)
    if len(sizes) != n:
        raise ValueError(f"output_size {output_size!r} does not match {n} spatial dims")
    out = [x.shape[2 + i] if o is None else int(o) for i, o in enumerate(sizes)]
    if min(out) < 1:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    return out


def _adaptive(x: Any, output_size: int | None | Sequence[int | None], reduce: str) -> np.ndarray:
    """Adaptive pooling is separable: reduce one spatial axis at a time over torch's bins
    [floor(i*L/o), ceil((i+1)*L/o)), gathering every bin padded to the widest bin."""
    y = _f64(x)
    for axis, o in enumerate(_adaptive_out(y, output_size), start=2):
        size = y.shape[axis]
        i = np.arange(o)
        start, end = (i * size) // o, -((-(i + 1) * size) // o)
        width = int((end - start).max())
        idx = start[:, None] + np.arange(width)[None, :]
        valid = idx < end[:, None]
        g = np.take(y, np.minimum(idx, end[:, None] - 1), axis=axis)  # axis -> (o, width)
        if reduce == "max":
            y = g.max(axis=axis + 1)  # repeated last element of short bins does not change the max
        else:
            mask = valid.reshape(valid.shape + (1,) * (y.ndim - axis - 1))
            y = np.where(mask, g, 0.0).sum(axis=axis + 1) / (end - start).reshape(
                (o,) + (1,) * (y.ndim - axis - 1))
    return y


def adaptive_avg_pool(x: Any, output_size: int | None | Sequence[int | None]) -> np.ndarray:
    """Like torch.nn.functional.adaptive_avg_pool{1,2,3}d; None entries keep the input size."""
    return _adaptive(x, output_size, "avg")


def adaptive_max_pool(x: Any, output_size: int | None | Sequence[int | None]) -> np.ndarray:
    """Like torch.nn.functional.adaptive_max_pool{1,2,3}d (values only, no indices)."""
    return _adaptive(x, output_size, "max")


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))  # overflow-free 1 / (1 + exp(-x))


def _softmax_dim(x: np.ndarray, dim: int | None) -> int:
    # torch's legacy implicit dim (nn.Softmax(dim=None)): 0 for 0-, 1- and 3-d input, else 1.
    return (0 if x.ndim in (0, 1, 3) else 1) if dim is None else dim


def _log_softmax(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    dim = _softmax_dim(x, dim)
    z = x - x.max(axis=dim, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=dim, keepdims=True))


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "none":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")


def _softplus(x: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    # torch reverts to the identity where beta * x > threshold.
    return np.where(beta * x > threshold, x, np.logaddexp(0.0, beta * x) / beta)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

_ACTIVATIONS: dict[str, Callable[..., np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softmax": lambda x, dim=None: np.exp(_log_softmax(x, dim)),
    "log_softmax": _log_softmax,
    "gelu": _gelu,
    "leaky_relu": lambda x, negative_slope=0.01: np.where(x > 0, x, x * negative_slope),
    "elu": lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x * _sigmoid(x),
    "hardswish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hardsigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "softplus": _softplus,
}


def activation(name: str, x: Any, **params: Any) -> np.ndarray:
    """Apply torch activation `name` (torch.nn.functional's keyword names and defaults) in float64.

    softmax/log_softmax with dim=None use torch's legacy implicit dim (0 for 1-d/3-d input, else 1).
    """
    fn = _ACTIVATIONS.get(name)
    if fn is None:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(_ACTIVATIONS))}")
    return fn(_f64(x), **params)

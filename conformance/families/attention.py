"""multihead_attention: PyTorch ``nn.MultiheadAttention`` against Keras ``MultiHeadAttention``.

Rules of correspondence, each checked by the catalogue:
- torch packs the three input projections in ``in_proj_weight (3E, E)`` and ``in_proj_bias (3E)``;
  Keras keeps a ``(E, heads, head_dim)`` kernel and a ``(heads, head_dim)`` bias per projection.
  Each third is ``(H D) E -> E H D`` (the head index is the slow one), and the output projection
  is ``O (H D) -> H D O``. Splitting the packed tensor is :class:`PackedThird`; keras->torch joins
  the query, key and value kernels back into one tensor;
- masks are inverted: torch's boolean ``key_padding_mask`` and ``attn_mask`` say True = ignore,
  Keras's ``key_mask`` and ``attention_mask`` say True = attend. A 0/-inf float mask is a boolean
  mask in disguise and maps to ``isfinite``. Keras's attention mask is *not* additive (its Softmax
  keeps positions where the mask is > 0.5), so an arbitrary additive float mask is built from
  standard parts instead: four ``EinsumDense`` layers (the ones Keras's layer holds) and
  ``keras.ops`` einsum/softmax, paired with torch by the second converter below;
- a per-head mask ``(N*heads, L, S)`` reshapes to Keras's ``(N, heads, L, S)``; the key padding
  mask is then folded in by hand, because Keras would AND its ``(N, 1, S)`` key mask with the
  rank-4 mask by trailing-axis broadcasting, pairing the batch axis with the heads axis;
- torch's ``is_causal`` is only a hint and needs the causal mask too; the wrapper builds it
  (top-left aligned, as Keras's ``use_causal_mask`` is, also when L != S).

Layout of the inputs. Keras's batch axis is always axis 0 and a Keras model cannot take torch's
``(L, N, E)`` sequence-first input without treating L as its batch. So the pair's inputs are
batch-first on both sides; for ``batch_first=False`` the torch wrapper moves them to ``(L, N, E)``
before the real module and the output back after (the attention weights are batch-first in torch
either way), just as ``compare`` moves NCHW to NHWC for Keras. A mask shared across the batch,
``attn_mask (L, S)``, has no batch axis; Keras's Input reads its L axis as a batch axis, and the
model adds a leading axis of size one that broadcasts over the real batch.

Inputs never contain a fully masked query row (key 0 is never masked) unless ``pad_all_keys``
asks for one: sample 0 then pads every key. For such a row torch's weight-returning path and its
fused self-attention fast path give NaN and its SDPA path zero weights (output = output bias);
Keras's weight-returning Softmax gives zero weights, its fused dot_product_attention uniform
weights (recorded divergences; tests/test_attention.py shows each path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from ..layout import Layout
from ..rules import Context, Converter, WeightRule
from .base import (
    Family,
    Param,
    Params,
    Tolerance,
    boolean,
    choice,
    integer,
    invalid,
    length_or_input_shape,
    optional,
    real,
    shape,
)

QKV = Layout("(H D) E -> E H D")        # each input projection; E is that input's feature size
QKV_BIAS = Layout("(H D) -> H D")
OUT = Layout("O (H D) -> H D O")
ROLES = ("query", "key", "value")


def _kv_len(value: Any) -> Any:
    if value == "self":
        return value
    try:
        return integer(1)(value)
    except ValueError:
        raise ValueError(f"expected 'self' (key = value = query) or a length >= 1, got {value!r}") from None


def _false(name: str, why: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if boolean(value):
            raise ValueError(f"{name}=True is not covered: {why}")
        return False
    return check


PARAMS = {
    "embed_dim": Param(integer(1), abbrev="e"),
    "num_heads": Param(integer(1), abbrev="h"),
    "bias": Param(boolean, default=True, abbrev="bias"),
    "batch_first": Param(boolean, default=False, abbrev="bf"),
    "kdim": Param(optional(integer(1)), default=None, abbrev="kd"),
    "vdim": Param(optional(integer(1)), default=None, abbrev="vd"),
    "dropout": Param(real(0.0), default=0.0, abbrev="drop"),
    "add_bias_kv": Param(_false("add_bias_kv", "Keras MultiHeadAttention has no learned extra key/value"),
                         default=False, abbrev=None),
    "add_zero_attn": Param(_false("add_zero_attn", "Keras MultiHeadAttention has no zero attention slot"),
                           default=False, abbrev=None),
    "seq_len": Param(optional(integer(1)), default=None, abbrev="L"),   # or input_shape = (L, embed_dim)
    "input_shape": Param(optional(shape(rank=2)), default=None, abbrev=None),   # the query's, (L, E)
    "kv_len": Param(_kv_len, default="self", abbrev="kv"),      # "self": key = value = query
    "key_padding_mask": Param(boolean, default=False, abbrev="kpm"),
    "pad_all_keys": Param(boolean, default=False, abbrev="padall"),   # sample 0: every key padded
    "attn_mask": Param(choice("none", "bool", "neg_inf", "additive"), default="none", abbrev="am"),
    "attn_mask_3d": Param(boolean, default=False, abbrev="m3d"),  # (N*heads, L, S) instead of (L, S)
    "is_causal": Param(boolean, default=False, abbrev="causal"),
    "need_weights": Param(boolean, default=True, abbrev="nw"),
    "average_attn_weights": Param(boolean, default=True, abbrev="avg"),
}


def _check(p: Params) -> None:
    e, h = p["embed_dim"], p["num_heads"]
    length_or_input_shape(p, "seq_len", e)
    if e % h:
        raise invalid("num_heads", f"embed_dim={e} must be divisible by num_heads={h} (torch asserts it)")
    if not p["dropout"] < 1.0:
        raise invalid("dropout", f"must be < 1 (Keras Dropout refuses rate 1), got {p['dropout']}")
    if p["kv_len"] == "self":
        for name in ("kdim", "vdim"):
            if p[name] not in (None, e):
                raise invalid(name, f"{name}={p[name]} != embed_dim needs cross-attention: set kv_len")
    if p["is_causal"] and p["attn_mask"] != "none":
        raise invalid("is_causal", "torch's is_causal is a hint that attn_mask is the causal mask, which the "
                                   "pair builds itself; use attn_mask = 'none' with is_causal")
    if p["pad_all_keys"] and not (p["key_padding_mask"] and p["attn_mask"] == "none" and not p["is_causal"]):
        raise invalid("pad_all_keys", "needs key_padding_mask = true and no other mask")
    if p["attn_mask_3d"] and p["attn_mask"] == "none":
        raise invalid("attn_mask_3d", "a per-head mask needs attn_mask set")


def _lengths(p: Params) -> tuple[int, int, int, int]:
    """(L, S, kdim, vdim) with the defaults filled in."""
    e = p["embed_dim"]
    s = p["seq_len"] if p["kv_len"] == "self" else p["kv_len"]
    return p["seq_len"], s, p["kdim"] or e, p["vdim"] or e


def _split_inputs(p: Params, xs: list[Any]) -> tuple[Any, Any, Any, Any, Any]:
    """(query, key, value, key_padding_mask, attn_mask) from the pair's flat input list."""
    it = iter(xs)
    q = next(it)
    k, v = (q, q) if p["kv_len"] == "self" else (next(it), next(it))
    kpm = next(it) if p["key_padding_mask"] else None
    mask = next(it) if p["attn_mask"] != "none" else None
    return q, k, v, kpm, mask


def _make_inputs(p: Params, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
    """Batch-first q (and k, v), then masks; key 0 is never masked, so no query row is fully masked."""
    e, h = p["embed_dim"], p["num_heads"]
    length, s, kdim, vdim = _lengths(p)
    arrays = [rng.uniform(-1, 1, (batch, length, e)).astype(np.float32)]
    if p["kv_len"] != "self":
        arrays += [rng.uniform(-1, 1, (batch, s, kdim)).astype(np.float32),
                   rng.uniform(-1, 1, (batch, s, vdim)).astype(np.float32)]
    if p["key_padding_mask"]:
        kpm = rng.random((batch, s)) < 0.3
        if s > 1:   # every sample pads at least one key, so an ignored mask shows
            kpm[np.arange(batch), rng.integers(1, s, batch)] = True
        kpm[:, 0] = False
        kpm[0] |= p["pad_all_keys"]
        arrays.append(kpm)
    if p["attn_mask"] != "none":
        shape = (batch * h, length, s) if p["attn_mask_3d"] else (length, s)
        masked = rng.random(shape) < 0.3
        masked[..., 0] = False
        if p["attn_mask"] == "bool":
            arrays.append(masked)
        else:
            values = rng.uniform(-3, 3, shape) if p["attn_mask"] == "additive" else np.zeros(shape)
            arrays.append(np.where(masked, -np.inf, values).astype(np.float32))
    return tuple(arrays)


# ---- torch side


@cache
def _wrapper_class() -> type:
    import torch

    class MultiheadAttentionCall(torch.nn.Module):
        """Calls the real ``nn.MultiheadAttention`` (child ``mha``) the way one case says."""

        def __init__(self, mha: Any, p: Params) -> None:
            super().__init__()
            self.mha = mha
            self.p = dict(p)

        def forward(self, *inputs: Any) -> Any:
            p = self.p
            q, k, v, kpm, mask = _split_inputs(p, list(inputs))
            if p["is_causal"]:
                mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).triu(1)
            if kpm is not None and mask is not None and mask.is_floating_point():
                # torch deprecates a bool key_padding_mask beside a float attn_mask; pass the
                # float mask torch itself would make of it.
                kpm = torch.zeros(kpm.shape, dtype=mask.dtype).masked_fill(kpm, -math.inf)
            if not p["batch_first"]:
                q, k, v = (t.transpose(0, 1) for t in (q, k, v))
            if p["kv_len"] == "self":
                k = v = q   # the same tensor, so torch may take its self-attention fast path
            out, weights = self.mha(q, k, v, key_padding_mask=kpm, need_weights=p["need_weights"],
                                    attn_mask=mask, average_attn_weights=p["average_attn_weights"],
                                    is_causal=p["is_causal"])
            if not p["batch_first"]:
                out = out.transpose(0, 1)
            return (out, weights) if p["need_weights"] else out

    return MultiheadAttentionCall


def _build_torch(p: Params) -> Any:
    import torch
    mha = torch.nn.MultiheadAttention(p["embed_dim"], p["num_heads"], dropout=p["dropout"], bias=p["bias"],
                                      kdim=p["kdim"], vdim=p["vdim"], batch_first=p["batch_first"])
    return _wrapper_class()(mha, p).eval()


# ---- keras side


def _keras_masks(p: Params, kpm: Any, mask: Any) -> tuple[Any, Any]:
    """Torch's True = ignore masks as Keras's True = attend: (attention_mask, key_mask)."""
    from keras import ops
    length, s, _, _ = _lengths(p)
    attend = key_mask = None
    if mask is not None:
        attend = ops.logical_not(mask) if p["attn_mask"] == "bool" else ops.isfinite(mask)
        attend = ops.reshape(attend, (-1, p["num_heads"], length, s)) if p["attn_mask_3d"] else \
            ops.expand_dims(attend, 0)
    if kpm is not None:
        key_mask = ops.logical_not(kpm)
        if p["attn_mask_3d"]:   # fold by hand: Keras would broadcast (N, 1, S) against (N, h, L, S)
            attend = ops.logical_and(attend, ops.expand_dims(ops.expand_dims(key_mask, 1), 1))
            key_mask = None
    return attend, key_mask


def _build_keras(p: Params, x: Any) -> Any:
    import keras
    q, k, v, kpm, mask = _split_inputs(p, list(x) if isinstance(x, list | tuple) else [x])
    if p["attn_mask"] == "additive":
        return _build_additive(p, q, k, v, kpm, mask)
    attend, key_mask = _keras_masks(p, kpm, mask)
    layer = keras.layers.MultiHeadAttention(p["num_heads"], p["embed_dim"] // p["num_heads"],
                                            dropout=p["dropout"], use_bias=p["bias"])
    result = layer(q, v, k, key_mask=key_mask, attention_mask=attend, use_causal_mask=p["is_causal"],
                   return_attention_scores=p["need_weights"])
    if not p["need_weights"]:
        return result
    out, scores = result
    return [out, keras.ops.mean(scores, axis=1) if p["average_attn_weights"] else scores]


def _build_additive(p: Params, q: Any, k: Any, v: Any, kpm: Any, mask: Any) -> Any:
    """Attention with an arbitrary additive float mask, from EinsumDense layers and keras.ops."""
    import keras
    ops = keras.ops
    h, e = p["num_heads"], p["embed_dim"]
    d = e // h
    length, s, _, _ = _lengths(p)

    def project(role: str, t: Any) -> Any:
        return keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, h, d),
                                        bias_axes="de" if p["bias"] else None, name=role)(t)

    qh = ops.multiply(project("query", q), 1.0 / math.sqrt(d))
    kh, vh = project("key", k), project("value", v)
    scores = ops.einsum("bthd,bshd->bhts", qh, kh)
    mask = ops.reshape(mask, (-1, h, length, s) if p["attn_mask_3d"] else (1, 1, length, s))
    # scores + mask, written as a subtraction: Keras's TF ops.add turns an operand that squeezes to
    # a vector into tf.nn.bias_add, on the wrong axis when that vector is not last (a (1, 1, L, 1)
    # mask with L == heads); see the divergence in cases/multihead_attention.toml.
    scores = ops.subtract(scores, ops.negative(mask))
    if kpm is not None:
        scores = ops.where(ops.expand_dims(ops.expand_dims(kpm, 1), 1), -math.inf, scores)
    probs = ops.softmax(scores, axis=-1)
    context = ops.einsum("bhts,bshd->bthd", probs, vh)
    out = keras.layers.EinsumDense("abcd,cde->abe", output_shape=(None, e), bias_axes="e" if p["bias"] else None,
                                   name="attention_output")(context)
    if not p["need_weights"]:
        return out
    return [out, ops.mean(probs, axis=1) if p["average_attn_weights"] else probs]


# ---- float64 reference (torch semantics; inputs batch-first as the pair feeds them)


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; a fully masked (all -inf) row gives zeros, as torch's SDPA
    (``_safe_softmax``) and Keras's Softmax do, where torch's weight-returning path gives NaN."""
    top = x.max(axis=-1, keepdims=True)
    z = np.exp(x - np.where(np.isfinite(top), top, 0.0))
    total = z.sum(axis=-1, keepdims=True)
    return np.divide(z, total, out=np.zeros_like(z), where=total > 0)


def _reference(x: Any, w: Any, p: Params) -> Any:
    xs = list(x) if isinstance(x, tuple | list) else [x]
    q, k, v, kpm, mask = _split_inputs(p, xs)
    h, e = p["num_heads"], p["embed_dim"]
    d = e // h
    length, s, _, _ = _lengths(p)
    n = q.shape[0]
    if "mha.in_proj_weight" in w:
        weights = np.split(w["mha.in_proj_weight"], 3)
    else:
        weights = [w[f"mha.{r}_proj_weight"] for r in "qkv"]
    biases = np.split(w["mha.in_proj_bias"], 3) if "mha.in_proj_bias" in w else [0.0, 0.0, 0.0]
    qh, kh, vh = ((t @ wt.T + b).reshape(n, -1, h, d) for t, wt, b in zip((q, k, v), weights, biases,
                                                                          strict=True))
    scores = np.einsum("nlhd,nshd->nhls", qh, kh) / math.sqrt(d)
    if mask is not None:
        additive = np.where(mask, -np.inf, 0.0) if mask.dtype == bool else mask.astype(np.float64)
        scores = scores + additive.reshape((n, h, length, s) if p["attn_mask_3d"] else (1, 1, length, s))
    if p["is_causal"]:
        scores = scores + np.where(np.triu(np.ones((length, s), bool), 1), -np.inf, 0.0)
    if kpm is not None:
        scores = scores + np.where(kpm[:, None, None, :], -np.inf, 0.0)
    probs = _softmax(scores)
    context = np.einsum("nhls,nshd->nlhd", probs, vh).reshape(n, length, e)
    out = context @ w["mha.out_proj.weight"].T + w.get("mha.out_proj.bias", 0.0)
    if not p["need_weights"]:
        return out
    return out, probs.mean(axis=1) if p["average_attn_weights"] else probs


def _tolerance(p: Params) -> Tolerance:
    """Errors add up through three projections, the scores and the weighted sum."""
    length, s, kdim, vdim = _lengths(p)
    return Tolerance.reduction(max(p["embed_dim"], kdim, vdim) + s)


FAMILIES = [Family(
    name="multihead_attention", torch_class="MultiheadAttention", params=PARAMS,
    build_torch=_build_torch, build_keras=_build_keras, check=_check, reference=_reference,
    tolerance=_tolerance, make_inputs=_make_inputs,
    weight_layouts={"in_proj_weight (each third: q, k, v)": str(QKV),
                    "q_proj_weight, k_proj_weight, v_proj_weight (kdim or vdim != embed_dim)": str(QKV),
                    "in_proj_bias (each third: q, k, v)": str(QKV_BIAS),
                    "out_proj.weight": str(OUT), "out_proj.bias": "O -> O"},
)]


# ---- weight rules


@dataclass(frozen=True)
class PackedThird(WeightRule):
    """One third of a packed ``(3E, ...)`` torch tensor against one Keras variable.

    torch->keras takes rows ``part*E:(part+1)*E`` through ``layout``. keras->torch must write the
    whole packed tensor, so it joins all three Keras variables (``siblings``, read with ``read``);
    each of the three rules writes the same joined tensor.
    """

    part: int = 0
    siblings: tuple[str, ...] = ()
    read: Callable[[str], np.ndarray] | None = field(default=None, compare=False, repr=False)

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        return super().to_keras(np.split(array, 3)[self.part])

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        assert self.read is not None
        parts = [array if i == self.part else self.read(name) for i, name in enumerate(self.siblings)]
        return np.concatenate([super(PackedThird, self).to_torch(a) for a in parts])

    def describe(self) -> str:
        return f"{ROLES[self.part]} third, rows {self.part}E:{self.part + 1}E: {super().describe()}"


def _variables(layers: Any) -> dict[str, Any]:
    """Keras variables by path relative to the layer; ``0/kernel`` ... for a span of layers."""
    def own(layer: Any) -> dict[str, Any]:
        return {v.path[len(layer.path) + 1:]: v for v in layer.weights}
    if not isinstance(layers, tuple):
        return own(layers)
    return {f"{i}/{k}": v for i, layer in enumerate(layers) for k, v in own(layer).items()}


def _mha_rules(module: Any, names: dict[str, str], read: Callable[[str], np.ndarray]) -> list[WeightRule]:
    """``names`` maps query/key/value/attention_output to the Keras prefix of each projection."""
    heads = {"H": module.num_heads}
    rules: list[WeightRule] = []
    kernels = tuple(f"{names[r]}/kernel" for r in ROLES)
    if module._qkv_same_embed_dim:
        rules += [PackedThird("in_proj_weight", kernels[i], QKV, heads, part=i, siblings=kernels, read=read)
                  for i in range(3)]
    else:
        rules += [WeightRule(f"{r[0]}_proj_weight", kernels[i], QKV, heads, note=f"{r} projection")
                  for i, r in enumerate(ROLES)]
    biases = tuple(f"{names[r]}/bias" for r in ROLES)
    rules += [PackedThird("in_proj_bias", biases[i], QKV_BIAS, heads, optional=True, part=i, siblings=biases,
                          read=read) for i in range(3)]
    out = names["attention_output"]
    return [*rules, WeightRule("out_proj.weight", f"{out}/kernel", OUT, heads),
            WeightRule("out_proj.bias", f"{out}/bias", optional=True)]


def _reader(layers: Any) -> Callable[[str], np.ndarray]:
    variables = _variables(layers)
    return lambda name: np.asarray(variables[name].numpy())


def _layer_rules(module: Any, layer: Any, context: Context) -> list[WeightRule]:
    return _mha_rules(module, {r: r for r in (*ROLES, "attention_output")}, _reader(layer))


def _common_check(module: Any) -> str | None:
    if module.bias_k is not None:
        return "torch add_bias_kv=True has no Keras counterpart"
    if module.add_zero_attn:
        return "torch add_zero_attn=True has no Keras counterpart"
    return None


def _check_layer(module: Any, layer: Any) -> str | None:
    config = layer.get_config()
    if module.num_heads != layer.num_heads:
        return f"num_heads {module.num_heads} vs {layer.num_heads}"
    value_dim = layer.value_dim or layer.key_dim
    if (layer.key_dim, value_dim) != (module.head_dim, module.head_dim):
        return (f"key_dim {layer.key_dim} and value_dim {value_dim} must both be torch's head_dim "
                f"{module.head_dim} (embed_dim / num_heads), which also sets the 1/sqrt(head_dim) scale")
    if config.get("output_shape") not in (None, module.embed_dim, (module.embed_dim,), [module.embed_dim]):
        return f"output_shape {config['output_shape']} vs embed_dim {module.embed_dim}"
    if layer.attention_axes not in (None, (1,), [1]):
        return f"attention_axes {layer.attention_axes}: torch attends over the sequence axis only"
    if config.get("use_gate") or config.get("sliding_window") is not None:
        return "Keras use_gate / sliding_window have no torch counterpart"
    return _common_check(module)


def _roles(layers: tuple[Any, ...]) -> dict[str, int] | str:
    """Which of four EinsumDense layers is which projection, from their names."""
    found: dict[str, int] = {}
    for i, layer in enumerate(layers):
        role = next((r for r in ("attention_output", *ROLES) if layer.name == r or layer.name.endswith("_" + r)),
                    None)
        if role is None or role in found:
            return (f"EinsumDense layers {[x.name for x in layers]}: name them ...query, ...key, ...value and "
                    "...attention_output so each pairs with its torch projection")
        found[role] = i
    return found


def _span_rules(module: Any, layers: Any, context: Context) -> list[WeightRule]:
    roles = _roles(layers)
    assert isinstance(roles, dict)
    return _mha_rules(module, {r: str(i) for r, i in roles.items()}, _reader(layers))


def _check_span(module: Any, layers: Any) -> str | None:
    roles = _roles(layers)
    return roles if isinstance(roles, str) else _common_check(module)


CONVERTERS = [
    Converter("multi-head attention", ("MultiheadAttention",), ("MultiHeadAttention",), _layer_rules,
              _check_layer),
    # The additive-mask form: query, key, value and output EinsumDense layers around keras.ops.
    Converter("multi-head attention (EinsumDense)", ("MultiheadAttention",), ("EinsumDense",), _span_rules,
              _check_span, keras_span=lambda module: 4),
]

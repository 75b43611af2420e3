"""lstm, gru, rnn: PyTorch ``nn.LSTM``/``GRU``/``RNN`` against Keras ``LSTM``/``GRU``/``SimpleRNN``.

Rules of correspondence, each checked by the catalogue:
- kernels are ``(G H) I`` in torch and ``I (G H)`` in Keras, G gates of H units; LSTM gates are
  (i, f, g, o) on both sides, GRU gates are (r, z, n) in torch and (z, r, h) in Keras, so GRU
  kernels and biases are re-ordered gate by gate;
- torch has two biases per cell. LSTM and SimpleRNN have one: ``bias = b_ih + b_hh``, whose
  inverse is not unique (keras->torch puts the whole bias in ``b_ih`` and zeros in ``b_hh``,
  so keras->torch->keras reproduces the Keras weights exactly). Keras GRU with
  ``reset_after=True`` keeps both, stacked as a (2, 3H) bias, and that is the only GRU variant
  torch computes (the reset gate multiplies ``W_hn h + b_hn``);
- ``num_layers`` stacked torch layers are one module and a stack of Keras layers; bidirectional
  layers are ``Bidirectional(merge_mode="concat")``, forward half first, as torch concatenates.

Outputs are torch's, flattened: ``(output, h_n)`` or ``(output, h_n, c_n)``, with the states in
torch's ``(num_layers * num_directions, N, H)`` layout (index ``layer * D + direction``); the
Keras model stacks its returned states with ``keras.ops`` into the same layout.

Design note, ``batch_first=False``: torch then reads ``(L, N, H_in)``, and the pair's Keras model
takes that same array and transposes it to batch-major inside (``keras.ops.transpose``). A
``keras.Input`` always leaves its *leading* axis free, so for a time-major model that axis is
the sequence length and N is a fixed dimension of the model. The pair is therefore built for
one batch size, :data:`TIME_MAJOR_BATCH`, and ``make_inputs`` uses it for time-major cases
instead of the case's ``batch``. The model still accepts any sequence length.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ..layout import Layout
from ..rules import Context, Converter, WeightRule
from .base import Family, Param, Params, Tolerance, boolean, choice, integer, invalid, real, shape

TIME_MAJOR_BATCH = 3   # N of time-major pairs: Keras cannot leave a non-leading axis free

KERNEL = Layout("(G H) I -> I (G H)")


@dataclass(frozen=True)
class Kind:
    """One recurrent family: its classes, its gates on each side and its states."""

    name: str
    torch_class: str
    keras_class: str
    torch_gates: tuple[str, ...]
    keras_gates: tuple[str, ...]
    states: tuple[str, ...]            # torch's returned states, in order
    order: tuple[int, ...]             # Keras gate j is torch gate order[j]

    @property
    def reordered(self) -> bool:
        return self.order != tuple(range(len(self.order)))

    @property
    def gate_text(self) -> str:
        return f"gates {' '.join(self.torch_gates)} -> {' '.join(self.keras_gates)}"


KINDS = {
    "lstm": Kind("lstm", "LSTM", "LSTM", ("i", "f", "g", "o"), ("i", "f", "c", "o"), ("h_n", "c_n"),
                 (0, 1, 2, 3)),
    "gru": Kind("gru", "GRU", "GRU", ("r", "z", "n"), ("z", "r", "h"), ("h_n",), (1, 0, 2)),
    "rnn": Kind("rnn", "RNN", "SimpleRNN", ("h",), ("h",), ("h_n",), (0,)),
}


# ---- parameters


def _zero_only(field_name: str, why: str) -> Callable[[Any], Any]:
    number = real(0.0) if field_name == "dropout" else integer(0)

    def check(value: Any) -> Any:
        value = number(value)
        if value:
            raise ValueError(f"{field_name}={value} is not supported: {why}")
        return value
    return check


def _params(kind: Kind) -> dict[str, Param]:
    params = {
        "input_size": Param(integer(1), abbrev=None),
        "hidden_size": Param(integer(1), abbrev="h"),
        "num_layers": Param(integer(1), default=1, abbrev="l"),
    }
    if kind.name == "rnn":
        params["nonlinearity"] = Param(choice("tanh", "relu"), default="tanh", abbrev="")
    params |= {
        "bias": Param(boolean, default=True, abbrev="bias"),
        "batch_first": Param(boolean, default=False, abbrev="bf"),
        "dropout": Param(_zero_only("dropout", "inter-layer dropout acts only in training and the "
                                               "catalogue compares inference"), default=0.0, abbrev=None),
        "bidirectional": Param(boolean, default=False, abbrev="bi"),
    }
    if kind.name == "lstm":
        params["proj_size"] = Param(_zero_only("proj_size", "Keras LSTM has no output projection"),
                                    default=0, abbrev=None)
    # (L, H_in): one sequence's length and features; the batch axis goes first or second by batch_first.
    params["input_shape"] = Param(shape(rank=2), abbrev="in")
    return params


def _check(p: Params) -> None:
    if p["input_shape"][-1] != p["input_size"]:
        raise invalid("input_shape", f"has {p['input_shape'][-1]} features but input_size is "
                                     f"{p['input_size']} (input_shape is (sequence length, input_size))")


def directions(p: Params) -> int:
    return 2 if p["bidirectional"] else 1


def make_inputs(p: Params, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
    """Uniform [-1, 1] in torch's layout: (N, L, H_in) with batch_first, else (L, N, H_in)."""
    length, features = p["input_shape"]
    size = (batch, length, features) if p["batch_first"] else (length, TIME_MAJOR_BATCH, features)
    return (rng.uniform(-1.0, 1.0, size=size).astype(np.float32),)


def _tolerance(p: Params) -> Tolerance:
    """Each step reduces over (layer input + hidden) terms; rounding then travels through the steps.

    A cell's pre-activation is a dot product over ``fan_in = max(input_size, D*hidden) + hidden``
    terms, so one step carries the usual ``1e-5*sqrt(fan_in)``. Saturating gates keep the
    recurrence contracting, so independent per-step errors add up like a random walk over the
    longest path through the unrolled network, ``L + num_layers - 1`` cells: ``sqrt`` of it.
    That assumption fails where the recurrence expands: relu (the state grows about
    ``sqrt(hidden/3)`` per step under weights uniform in [-1, 1]) and wide tanh states (tanh RNN
    at 32 units over 50 steps, GRU at 64 over 30: chaotic, rounding grows to O(1e-2..1)). No
    element-wise float32 tolerance is meaningful there, so the catalogue stays out of it.
    """
    fan_in = max(p["input_size"], directions(p) * p["hidden_size"]) + p["hidden_size"]
    steps = p["input_shape"][0] + p["num_layers"] - 1
    return Tolerance(1e-5 * math.sqrt(fan_in * steps), 1e-4,
                     f"recurrence: fan-in {fan_in} per step over {steps} steps: "
                     f"atol 1e-5*sqrt({fan_in}*{steps}), rtol 1e-4")


# ---- builders


@cache
def _wrapper() -> type:
    import torch

    class RecurrentOutputs(torch.nn.Module):
        """``(output, h_n[, c_n])`` flat; torch returns ``(output, h_n)`` or ``(output, (h_n, c_n))``."""

        def __init__(self, rnn: torch.nn.Module) -> None:
            super().__init__()
            self.rnn = rnn

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            output, state = self.rnn(x)
            return (output, *state) if isinstance(state, tuple) else (output, state)

    return RecurrentOutputs


def _build_torch(kind: Kind) -> Callable[[Params], Any]:
    def build(p: Params) -> Any:
        import torch
        kwargs = dict(num_layers=p["num_layers"], bias=p["bias"], batch_first=p["batch_first"],
                      dropout=p["dropout"], bidirectional=p["bidirectional"])
        if kind.name == "rnn":
            kwargs["nonlinearity"] = p["nonlinearity"]
        if kind.name == "lstm":
            kwargs["proj_size"] = p["proj_size"]
        module = getattr(torch.nn, kind.torch_class)(p["input_size"], p["hidden_size"], **kwargs)
        return _wrapper()(module)
    return build


def keras_layer(kind: Kind, p: Params) -> Any:
    """One Keras layer equivalent to one torch layer (both directions), returning its states."""
    import keras
    options = dict(return_sequences=True, return_state=True, use_bias=p["bias"])
    if kind.name == "rnn":
        layer = keras.layers.SimpleRNN(p["hidden_size"], activation=p["nonlinearity"], **options)
    elif kind.name == "gru":
        layer = keras.layers.GRU(p["hidden_size"], activation="tanh", recurrent_activation="sigmoid",
                                 reset_after=True, **options)
    else:
        layer = keras.layers.LSTM(p["hidden_size"], activation="tanh", recurrent_activation="sigmoid",
                                  **options)
    return keras.layers.Bidirectional(layer, merge_mode="concat") if p["bidirectional"] else layer


def _build_keras(kind: Kind) -> Callable[[Params, Any], Any]:
    def build(p: Params, x: Any) -> list[Any]:
        import keras
        if not p["batch_first"]:
            x = keras.ops.transpose(x, (1, 0, 2))          # (L, N, H_in) -> (N, L, H_in)
        states: list[list[Any]] = [[] for _ in kind.states]
        n = len(kind.states)
        for _ in range(p["num_layers"]):
            x, *returned = keras_layer(kind, p)(x)
            for d in range(directions(p)):                 # Bidirectional: forward states, then backward
                for s in range(n):
                    states[s].append(returned[d * n + s])
        if not p["batch_first"]:
            x = keras.ops.transpose(x, (1, 0, 2))
        return [x, *(keras.ops.stack(s, axis=0) for s in states)]   # each (num_layers * D, N, H)
    return build


# ---- float64 reference: torch's documented equations, step by step


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _step(kind: Kind, p: Params, gx: np.ndarray, h: np.ndarray, c: np.ndarray, w_hh: np.ndarray,
          b_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One cell step given the input projection ``gx = x W_ih^T + b_ih``."""
    gh = h @ w_hh.T + b_hh
    if kind.name == "rnn":
        z = gx + gh
        return (np.tanh(z) if p["nonlinearity"] == "tanh" else np.maximum(z, 0.0)), c
    if kind.name == "gru":
        (xr, xz, xn), (hr, hz, hn) = np.split(gx, 3, axis=-1), np.split(gh, 3, axis=-1)
        r, u = _sigmoid(xr + hr), _sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        return (1.0 - u) * n + u * h, c
    i, f, g, o = np.split(gx + gh, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _reference(kind: Kind) -> Any:   # returns (output, h_n[, c_n])
    def reference(x: np.ndarray, weights: Any, p: Params) -> tuple[np.ndarray, ...]:
        w = {key.rsplit(".", 1)[-1]: np.asarray(v, dtype=np.float64) for key, v in weights.items()}
        seq = np.asarray(x, dtype=np.float64)
        seq = seq.transpose(1, 0, 2) if p["batch_first"] else seq      # (L, N, H_in)
        length, batch, hidden = seq.shape[0], seq.shape[1], p["hidden_size"]
        finals: list[list[np.ndarray]] = [[], []]
        for layer in range(p["num_layers"]):
            outputs = []
            for d in range(directions(p)):
                name = f"l{layer}{'_reverse' if d else ''}"
                zeros = np.zeros(w[f"weight_ih_{name}"].shape[0])
                gx = seq @ w[f"weight_ih_{name}"].T + w.get(f"bias_ih_{name}", zeros)
                h = c = np.zeros((batch, hidden))
                out = np.empty((length, batch, hidden))
                for t in (reversed(range(length)) if d else range(length)):
                    h, c = _step(kind, p, gx[t], h, c, w[f"weight_hh_{name}"],
                                 w.get(f"bias_hh_{name}", zeros))
                    out[t] = h
                outputs.append(out)
                finals[0].append(h)
                finals[1].append(c)
            seq = np.concatenate(outputs, axis=-1)
        output = seq.transpose(1, 0, 2) if p["batch_first"] else seq
        return (output, *(np.stack(f) for f in finals[:len(kind.states)]))
    return reference


def _weight_layouts(kind: Kind) -> dict[str, str]:
    """For docs and case files; gate re-orders and bias sums are not axis moves, so the names say them."""
    if kind.reordered:
        gates = kind.gate_text
        return {f"weight_ih_l{{k}} ({gates})": str(KERNEL), f"weight_hh_l{{k}} ({gates})": str(KERNEL),
                f"[bias_ih_l{{k}}, bias_hh_l{{k}}] stacked ({gates})": "S (G H) -> S (G H)"}
    return {"weight_ih_l{k}": str(KERNEL), "weight_hh_l{k}": str(KERNEL),
            "bias_ih_l{k} + bias_hh_l{k}": "(G H) -> (G H)"}


def _family(kind: Kind) -> Family:
    return Family(name=kind.name, torch_class=kind.torch_class, params=_params(kind),
                  build_torch=_build_torch(kind), build_keras=_build_keras(kind), check=_check,
                  tolerance=_tolerance, reference=_reference(kind), make_inputs=make_inputs,
                  weight_layouts=_weight_layouts(kind))


FAMILIES = [_family(KINDS["lstm"]), _family(KINDS["gru"]), _family(KINDS["rnn"])]


# ---- weight rules


@dataclass(frozen=True, kw_only=True)
class FunctionRule(WeightRule):
    """A rule that is not a pure axis move (a gate re-order, a bias sum): explicit functions both ways.

    ``to_keras(to_torch(k))`` must equal ``k`` exactly, so that keras->torch->keras reproduces the
    Keras weights; torch->keras->torch may differ where the inverse is not unique (the bias sum).
    """

    forward: Callable[[np.ndarray], np.ndarray]
    backward: Callable[[np.ndarray], np.ndarray]
    text: str
    adjoint: Callable[[np.ndarray], np.ndarray] | None = None   # for gradients, where backward is no inverse

    @property
    def bijective(self) -> bool:   # type: ignore[override]
        return self.adjoint is None

    def gradient_to_torch(self, keras_gradient: np.ndarray) -> np.ndarray | None:
        return None if self.adjoint is None else self.adjoint(keras_gradient)

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        return self.forward(array)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        return self.backward(array)

    def describe(self) -> str:
        return f"{self.text} ({self.note})" if self.note else self.text


def _gates(order: tuple[int, ...]) -> tuple[Callable[[np.ndarray], np.ndarray], ...]:
    """Re-order the gate blocks of axis 0 (torch -> Keras order), and the inverse."""
    inverse = tuple(int(i) for i in np.argsort(order))

    def move(array: np.ndarray, to: tuple[int, ...]) -> np.ndarray:
        return array.reshape(len(to), -1, *array.shape[1:])[list(to)].reshape(array.shape)
    return (lambda a: move(a, order)), (lambda a: move(a, inverse))


def _is_bidirectional(layer: Any) -> bool:
    return hasattr(layer, "forward_layer") and hasattr(layer, "backward_layer")


def _halves(layer: Any) -> list[Any]:
    return [layer.forward_layer, layer.backward_layer] if _is_bidirectional(layer) else [layer]


def _kernel_rule(kind: Kind, torch_name: str, keras_path: str) -> WeightRule:
    if not kind.reordered:
        return WeightRule(torch_name, keras_path, KERNEL, sizes={"G": len(kind.order)})
    to_keras, to_torch = _gates(kind.order)
    return FunctionRule(torch_name, keras_path, text=f"{KERNEL}, {kind.gate_text}",
                        forward=lambda a: to_keras(a).T, backward=lambda k: to_torch(k.T))


def _bias_rules(kind: Kind, module: Any, suffix: str, keras_path: str) -> list[WeightRule]:
    """torch's two biases against Keras's one variable; each rule reads the other torch bias live."""
    ih, hh = f"bias_ih_{suffix}", f"bias_hh_{suffix}"

    def live(name: str) -> np.ndarray:   # read while planning torch->keras, before anything is written
        return getattr(module, name).detach().cpu().numpy()

    if kind.reordered:   # Keras GRU reset_after=True: bias (2, 3H) = [input bias, recurrent bias]
        to_keras, to_torch = _gates(kind.order)
        return [FunctionRule(ih, keras_path, optional=True, text=f"row 0 of (2, 3H), {kind.gate_text}",
                             forward=lambda b: np.stack([to_keras(b), to_keras(live(hh))]),
                             backward=lambda k: to_torch(k[0])),
                FunctionRule(hh, keras_path, optional=True, text=f"row 1 of (2, 3H), {kind.gate_text}",
                             forward=lambda b: np.stack([to_keras(live(ih)), to_keras(b)]),
                             backward=lambda k: to_torch(k[1]))]
    note = "inverse not unique: keras->torch puts the whole bias in b_ih and zeros in b_hh"
    # The sum's adjoint: each torch bias gets the whole gradient of the Keras bias.
    return [FunctionRule(ih, keras_path, optional=True, text="b_ih + b_hh", note=note,
                         forward=lambda b: b + live(hh), backward=lambda k: k.copy(), adjoint=np.copy),
            FunctionRule(hh, keras_path, optional=True, text="b_ih + b_hh", note=note,
                         forward=lambda b: live(ih) + b, backward=np.zeros_like, adjoint=np.copy)]


def _cell_rules(kind: Kind, module: Any, suffix: str, cell: Any,
                path: Callable[[Any], str]) -> list[WeightRule]:
    """One direction of one torch layer (``suffix`` such as ``l1_reverse``) against its Keras cell."""
    bias = path(cell.bias) if getattr(cell, "bias", None) is not None else "bias"
    return [_kernel_rule(kind, f"weight_ih_{suffix}", path(cell.kernel)),
            _kernel_rule(kind, f"weight_hh_{suffix}", path(cell.recurrent_kernel)),
            *_bias_rules(kind, module, suffix, bias)]


def _as_tuple(layers: Any) -> tuple[Any, ...]:
    return layers if isinstance(layers, tuple) else (layers,)


def _rules(kind: Kind) -> Callable[[Any, Any, Context], list[WeightRule]]:
    def rules(module: Any, layers: Any, context: Context) -> list[WeightRule]:
        layers = _as_tuple(layers)
        out: list[WeightRule] = []
        for k, layer in enumerate(layers):
            prefix = f"{k}/" if len(layers) > 1 else ""

            def path(variable: Any, layer: Any = layer, prefix: str = prefix) -> str:
                return prefix + variable.path[len(layer.path) + 1:]

            for d, half in enumerate(_halves(layer)):
                out += _cell_rules(kind, module, f"l{k}{'_reverse' if d else ''}", half.cell, path)
        return out
    return rules


def _check_half(kind: Kind, module: Any, half: Any, backward: bool) -> str | None:
    cell = half.cell
    expected = {"activation": getattr(module, "nonlinearity", "tanh")}
    if kind.name != "rnn":
        expected["recurrent_activation"] = "sigmoid"
    if not any(c.__name__ == kind.keras_class for c in type(half).__mro__):
        return f"torch {kind.torch_class} against Keras {type(half).__name__}"
    if half.units != module.hidden_size:
        return f"hidden_size {module.hidden_size} vs units {half.units}"
    if bool(cell.use_bias) != bool(module.bias):
        return f"bias={module.bias} vs use_bias={cell.use_bias}"
    for attribute, name in expected.items():
        actual = getattr(getattr(cell, attribute), "__name__", str(getattr(cell, attribute)))
        if actual != name:
            return f"{attribute} {actual!r}, but torch {kind.torch_class} uses {name!r}"
    if kind.name == "gru" and not cell.reset_after:
        return "reset_after=False: torch's GRU resets after the recurrent matmul, as reset_after=True does"
    if bool(half.go_backwards) != backward:
        return f"go_backwards={half.go_backwards} on the {'backward' if backward else 'forward'} direction"
    if half.stateful:
        return "stateful=True carries states across calls; torch starts every call from zeros"
    return None


def _check_pair(kind: Kind) -> Callable[[Any, Any], str | None]:
    def check(module: Any, layers: Any) -> str | None:
        if getattr(module, "proj_size", 0):
            return f"proj_size={module.proj_size}: Keras LSTM has no output projection"
        for k, layer in enumerate(_as_tuple(layers)):
            where = f"torch layer {k} vs Keras layer '{layer.name}': "
            if _is_bidirectional(layer) != bool(module.bidirectional):
                return (f"{where}torch bidirectional={module.bidirectional}, Keras layer is "
                        f"{'' if _is_bidirectional(layer) else 'not '}Bidirectional")
            if _is_bidirectional(layer) and layer.merge_mode != "concat":
                return f"{where}merge_mode={layer.merge_mode!r}; torch concatenates the directions"
            for d, half in enumerate(_halves(layer)):
                problem = _check_half(kind, module, half, backward=bool(d))
                if problem:
                    return where + problem
        return None
    return check


CONVERTERS = [Converter(f"recurrent {kind.name}", (kind.torch_class,), (kind.keras_class, "Bidirectional"),
                        _rules(kind), _check_pair(kind), keras_span=lambda module: module.num_layers)
              for kind in KINDS.values()]

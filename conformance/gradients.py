"""Training mode (``mode = "train"`` cases): gradients compared across the frameworks.

Converted models are fine-tuned, and inference never shows what backward does. For a train case,
after the runner has transferred the weights, both models run in training mode (torch
``.train()``, Keras ``training=True``) on the case's seeded inputs and are reduced to one scalar
loss, ``sum(out * R)`` with ``R`` a seeded uniform [-1, 1] projection per output: a plain sum
would hide a permutation (the gradient of a sum is the same everywhere), a projection does not.
Then the outputs, the gradients with respect to every float input and the gradients with respect
to every trainable weight are compared.

Weight gradients are mapped by the transfer's own rules, because a gradient has its weight's
layout: in the torch->keras direction torch's gradients go into Keras's layout, keras->torch the
other way, exactly as the weights went (the same pairing, the same Flatten re-order, the same
gate order). Where a rule is no bijection (an LSTM's two biases summed into one, a separable
convolution's folded bias, a grouped transposed kernel written as a dense one with zeros) the
gradient moves by the rule's adjoint instead (:meth:`conformance.rules.WeightRule.gradient_to_torch`),
and is compared in torch's layout in both directions.

Tolerance: the forward tolerance for the outputs; for gradients the policy for reductions
(:meth:`Tolerance.reduction`), over the number of output elements that the loss sums, or the
forward reduction if that is longer, scaled as the forward one is.

Deep models with BatchNorm in training mode (``Family.conditioned_gradients``: the twin zoo) are too
ill-conditioned for that policy: their gradients are judged against the torch twin in float64, with an
allowance of K sigmas of each tensor's measured float32 sensitivity (:mod:`conformance.conditioning`).

Families whose training behaviour is random (dropout, attention dropout) are judged
statistically instead: :mod:`conformance.train_stats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .comparison import Comparison, _move_channels, compare_arrays, flatten_nested
from .families.base import Tolerance

PROJECTION_SEED = 104729       # mixed into the case seed: the loss's projection differs from the inputs


@dataclass
class Gradients:
    """One framework's side of a training step, in that framework's own layout."""

    outputs: list[np.ndarray]
    inputs: list[np.ndarray | None]          # None: an integer input (token ids) has no gradient
    weights: dict[int, np.ndarray]            # id(torch Parameter) or id(Keras variable) -> gradient


def projections(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    """The loss's fixed random projections, in torch's layout, one per output."""
    rng = np.random.default_rng(seed ^ PROJECTION_SEED)
    return [rng.uniform(-1.0, 1.0, size=shape).astype(np.float32) for shape in shapes]


def _dense(grad: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A torch gradient as an array: sparse ones (Embedding(sparse=True)) densified, a missing one zeros."""
    if grad is None:
        return np.zeros(shape, np.float32)
    return (grad.to_dense() if grad.is_sparse else grad).detach().cpu().numpy()


def torch_gradients(model: Any, inputs: list[np.ndarray], seed: int) -> tuple[Gradients, list[np.ndarray]]:
    """Run ``model`` in training mode, back-propagate ``sum(out * R)``; the gradients and the projections."""
    import torch

    from .comparison import _device_of
    device = _device_of(model)
    xs = [torch.tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in inputs]
    model.train()
    model.zero_grad(set_to_none=True)
    outs = flatten_nested(model(*xs))
    shapes = [tuple(o.shape) for o in outs]
    rs = projections(shapes, seed)
    loss = sum((o * torch.from_numpy(r).to(device)).sum() for o, r in zip(outs, rs, strict=True))
    loss.backward()
    model.eval()
    weights = {id(p): _dense(p.grad, tuple(p.shape)) for p in model.parameters() if p.requires_grad}
    return Gradients([o.detach().cpu().numpy() for o in outs],
                     [x.grad.detach().cpu().numpy() if x.grad is not None else
                      (np.zeros(x.shape, np.float32) if x.requires_grad else None) for x in xs], weights), rs


def keras_gradients(model: Any, inputs: list[np.ndarray], rs: list[np.ndarray], to_last: bool) -> Gradients:
    """Keras's side, ``training=True``, on the same loss; outputs and input gradients come back in torch's layout."""
    import keras
    first_ndim = inputs[0].ndim
    feed = [_move_channels(a, True) if to_last and a.dtype.kind == "f" else a for a in inputs]
    floats = [a.dtype.kind == "f" for a in feed]

    def moved(ndim: int) -> bool:
        return to_last and ndim >= 3 and ndim == first_ndim

    keras_rs = [_move_channels(r, True) if moved(r.ndim) else r for r in rs]
    variables = list(model.trainable_variables)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        xs = [tf.constant(a) for a in feed]
        with tf.GradientTape() as tape:
            for x, f in zip(xs, floats, strict=True):
                if f:
                    tape.watch(x)
            outs = flatten_nested(model(xs[0] if len(xs) == 1 else xs, training=True))
            loss = tf.add_n([tf.reduce_sum(o * r) for o, r in zip(outs, keras_rs, strict=True)])
        watched = [x for x, f in zip(xs, floats, strict=True) if f]
        grads = tape.gradient(loss, watched + variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    elif backend == "torch":
        import torch
        xs = [torch.tensor(a, requires_grad=f) for a, f in zip(feed, floats, strict=True)]
        outs = flatten_nested(model(xs[0] if len(xs) == 1 else xs, training=True))
        loss = sum((o * torch.from_numpy(r).to(o.device)).sum() for o, r in zip(outs, keras_rs, strict=True))
        watched = [x for x, f in zip(xs, floats, strict=True) if f]
        grads = torch.autograd.grad(loss, watched + [v.value for v in variables], allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in
                 zip(grads, watched + [v.value for v in variables], strict=True)]
    elif backend == "jax":
        import jax
        import jax.numpy as jnp
        non_trainable = [v.value for v in model.non_trainable_variables]
        xs = [jnp.asarray(a) for a in feed]
        watched = [x for x, f in zip(xs, floats, strict=True) if f]

        def loss_of(float_inputs: list[Any], trainable: list[Any]) -> tuple[Any, list[Any]]:
            """JAX differentiates functions, not tapes: the model as a pure function of inputs and weights."""
            given = iter(float_inputs)
            full = [next(given) if f else x for x, f in zip(xs, floats, strict=True)]
            out, _ = model.stateless_call(trainable, non_trainable, full[0] if len(full) == 1 else full,
                                          training=True)
            flat = flatten_nested(out)
            return sum(jnp.sum(o * r) for o, r in zip(flat, keras_rs, strict=True)), flat

        (_, outs), (input_grads_j, weight_grads) = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(
            watched, [v.value for v in variables])
        grads = list(input_grads_j) + list(weight_grads)
    else:
        from .errors import UnsupportedError
        raise UnsupportedError(f"train mode computes Keras gradients on the tensorflow, torch and jax backends, "
                               f"not {backend}")
    grads = [keras.ops.convert_to_numpy(g) for g in grads]
    input_grads: list[np.ndarray | None] = []
    it = iter(grads[:len(watched)])
    for f in floats:
        input_grads.append(None if not f else _move_channels(next(it), False) if to_last else next(it))
    outputs = [keras.ops.convert_to_numpy(o) for o in outs]
    outputs = [_move_channels(o, False) if moved(o.ndim) else o for o in outputs]
    return Gradients(outputs, input_grads, {id(v): g for v, g in zip(variables, grads[len(watched):], strict=True)})


def gradient_tolerance(forward: Tolerance, output_elements: int) -> Tolerance:
    """The reduction policy for a backward pass: each gradient element sums up to ``output_elements``
    terms of the loss (or the forward reduction's length, if that is longer)."""
    from_loss = 1e-5 * math.sqrt(max(output_elements, 1))
    return Tolerance(max(forward.atol, from_loss), max(forward.rtol, 1e-4),
                     f"gradients: reduction over {output_elements} loss terms (atol 1e-5*sqrt), "
                     f"or the forward tolerance: {forward.reason}", scaled=forward.scaled)


@dataclass
class Compared:
    name: str
    comparison: Comparison
    rule: str = ""


def weight_comparisons(pair: Any, direction: str, torch_side: Gradients, keras_side: Gradients,
                       tolerance: Tolerance | Callable[[int], Tolerance], pairing: Any = None) -> list[Compared]:
    """Every trainable weight's gradient, mapped by the transfer's rules as the weights were (see the module).
    ``tolerance`` may depend on the weight (a function of the torch parameter's id: conformance.conditioning)."""
    import torch
    tolerance_of = tolerance if callable(tolerance) else (lambda key: tolerance)

    from .transfer import _keras_units, _paired_order, _plan, _torch_units
    to_keras = direction == "torch->keras"
    if pairing is None:   # the transfer's own, when the runner passes it: the torch graph is traced once
        pairing = _paired_order(pair.torch, pair.keras, _torch_units(pair.torch), _keras_units(pair.keras), None)
    found: list[Compared] = []
    seen: set[int] = set()
    # The adjoints of rules that are no bijection, planned on the real weights (a folded bias needs W1).
    writes, _, _ = _plan(pair.torch, pair.keras, to_keras, None, pairing)
    for write in writes:
        if write.rule is None or write.rule.bijective:
            continue
        param, variable = (write.source, write.destination) if to_keras else (write.destination, write.source)
        if id(param) not in torch_side.weights or id(variable) not in keras_side.weights:
            continue
        seen.update((id(param), id(variable)))
        expected = write.rule.gradient_to_torch(keras_side.weights[id(variable)])
        if expected is None:
            continue
        name = f"{write.row.source} -> {write.row.destination} (adjoint, in torch's layout)"
        found.append(Compared(name, compare_arrays(torch_side.weights[id(param)], expected, tolerance_of(id(param))),
                              write.row.rule))
    # The bijections: the source's gradients stand in for its weights while the transfer is planned again,
    # so that every rule (and every value a rule reads while planning) sees gradients.
    source_grads = torch_side.weights if to_keras else keras_side.weights
    dest_grads = keras_side.weights if to_keras else torch_side.weights
    saved = _swap_in(pair, to_keras, source_grads)
    try:
        writes, _, _ = _plan(pair.torch, pair.keras, to_keras, None, pairing, gradients=True)
        for write in writes:
            if write.rule is not None and not write.rule.bijective:
                continue
            if id(write.destination) not in dest_grads:
                continue     # a running statistic: not trained
            source = (write.source.detach().cpu().numpy() if to_keras else np.asarray(write.source.numpy()))
            mapped = (write.value if write.value is not None else
                      write.plan.apply(source) if write.plan is not None else source)
            observed = dest_grads[id(write.destination)]
            seen.update((id(write.source), id(write.destination)))
            weight = tolerance_of(id(write.source if to_keras else write.destination))
            if to_keras:   # torch's gradient mapped into Keras's layout against Keras's own
                comparison = compare_arrays(mapped, observed, weight)
            else:          # torch's own against Keras's mapped into torch's layout
                comparison = compare_arrays(observed, mapped, weight)
            found.append(Compared(f"{write.row.source} -> {write.row.destination}", comparison, write.row.rule))
    finally:
        with torch.no_grad():
            _restore(pair, to_keras, saved)
    names = {id(p): f"torch {n}" for n, p in pair.torch.named_parameters()}
    names.update({id(v): f"keras {v.path}" for v in pair.keras.trainable_variables})
    for key in [*torch_side.weights, *keras_side.weights]:
        if key not in seen:   # a trained weight that no rule maps: its gradient would go unchecked
            found.append(Compared(names.get(key, "a weight"), Comparison(
                False, math.inf, math.inf, tolerance_of(key), math.inf, 0.0,
                problem="trained, but no transfer rule maps its gradient, so it was not compared")))
    return found


def _swap_in(pair: Any, to_keras: bool, grads: dict[int, np.ndarray]) -> list[tuple[Any, Any]]:
    """Write gradients into the source model's trainable weights; what to restore afterwards."""
    import torch
    saved: list[tuple[Any, Any]] = []
    if to_keras:
        with torch.no_grad():
            for p in pair.torch.parameters():
                if id(p) in grads:
                    saved.append((p, p.detach().clone()))
                    p.copy_(torch.from_numpy(np.ascontiguousarray(grads[id(p)])).to(p.device))
    else:
        for v in pair.keras.trainable_variables:
            if id(v) in grads:
                saved.append((v, np.asarray(v.numpy()).copy()))
                v.assign(np.ascontiguousarray(grads[id(v)], dtype=np.asarray(v.numpy()).dtype))
    return saved


def _restore(pair: Any, to_keras: bool, saved: list[tuple[Any, Any]]) -> None:
    for target, value in saved:
        if to_keras:
            target.copy_(value)
        else:
            target.assign(value)


def compare_training(pair: Any, case: Any, direction: str, forward: Tolerance, inputs: list[np.ndarray],
                     pairing: Any = None) -> tuple[list[Compared], dict[str, Any]]:
    """Outputs, input gradients and weight gradients of one training step, compared; and what was done."""
    to_last = bool(pair.channels_last)
    torch_side, rs = torch_gradients(pair.torch, inputs, case.seed)
    keras_side = keras_gradients(pair.keras, inputs, rs, to_last)
    elements = sum(r.size for r in rs)
    tolerance = gradient_tolerance(forward, elements)
    found: list[Compared] = []
    if len(torch_side.outputs) != len(keras_side.outputs):
        raise ValueError(f"torch returned {len(torch_side.outputs)} outputs in training mode, keras "
                         f"{len(keras_side.outputs)}")
    for i, (t, k) in enumerate(zip(torch_side.outputs, keras_side.outputs, strict=True)):
        found.append(Compared(f"output {i} (training mode)", compare_arrays(t, k, forward)))
    conditioned: dict[str, Any] = {}
    per_weight: Tolerance | Callable[[int], Tolerance] = tolerance
    input_tolerances = [tolerance] * len(torch_side.inputs)
    if pair.family.conditioned_gradients:   # deep models: the float64 twin judges (conformance.conditioning)
        from . import conditioning
        ref = conditioning.reference(pair.torch, inputs, rs, case.seed, torch_side)
        problem, conditioned = conditioning.discrimination(ref)
        if problem:
            found.append(Compared("conditioning", Comparison(False, math.inf, math.inf, tolerance, math.inf, 0.0,
                                                             problem=problem)))
        torch_side = Gradients(torch_side.outputs, ref.inputs, ref.weights)
        per_weight = conditioning.tolerance_for(ref, tolerance)
        input_tolerances = [conditioning.allowance(tolerance, s) for s in ref.input_sigma]
    for i, (t_grad, k_grad) in enumerate(zip(torch_side.inputs, keras_side.inputs, strict=True)):
        if t_grad is not None and k_grad is not None:
            found.append(Compared(f"d loss / d input {i}", compare_arrays(t_grad, k_grad, input_tolerances[i])))
    found.extend(weight_comparisons(pair, direction, torch_side, keras_side, per_weight, pairing))
    trained = sum(1 for _ in pair.torch.parameters())
    info = {"loss": "sum(out * R), R uniform [-1, 1] per output, seeded",
            "projection_seed": case.seed ^ PROJECTION_SEED,
            "loss_terms": elements, "gradient_tolerance": {"atol": tolerance.atol, "rtol": tolerance.rtol,
                                                          "reason": tolerance.reason},
            "torch_parameters": trained, "keras_trainable_variables": len(keras_side.weights)}
    if conditioned:
        info["conditioning"] = conditioned
    return found, info


def _snapshot(pair: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
    return ({k: v.detach().clone() for k, v in pair.torch.state_dict().items()},
            [np.array(w, copy=True) for w in pair.keras.get_weights()])


def judge_training(pair: Any, case: Any, direction: str, result: Any, forward: Tolerance,
                   inputs: list[np.ndarray], memo: dict[str, Any] | None = None) -> None:
    """Fill ``result`` for a train case (the runner judges it as any other): the worst comparison's numbers,
    and under ``training`` every comparison or statistic. Both models are left as the transfer left them."""
    import time

    from .train_stats import statistical_judge
    clock = time.perf_counter()
    saved = _snapshot(pair)
    try:
        verdict = statistical_judge(pair, case, inputs)
        if verdict is not None:
            result.headroom, result.message, statistics = verdict
            result.training = {"judged": "statistically", **statistics}
            return
        found, info = compare_training(pair, case, direction, forward, inputs, (memo or {}).get("pairing"))
    finally:
        pair.torch.load_state_dict(saved[0])
        pair.keras.set_weights(saved[1])
        pair.torch.eval()
        result.timings["compare"] = time.perf_counter() - clock
    worst = max(found, key=lambda c: c.comparison.headroom)
    w = worst.comparison
    result.tolerance = {"atol": w.tolerance.atol, "rtol": w.tolerance.rtol, "reason": w.tolerance.reason}
    result.max_abs_error = max(c.comparison.max_abs_error for c in found)
    result.max_rel_error = max(c.comparison.max_rel_error for c in found)
    result.allowed_error, result.headroom = w.allowed_error, w.headroom
    if w.worst_index is not None:
        result.worst = {"index": list(w.worst_index), "torch": w.torch_value, "keras": w.keras_value,
                        "output": None, "gradient": worst.name}
    problems = [f"{c.name}: {c.comparison.problem}" for c in found if c.comparison.problem]
    result.message = "; ".join(problems)
    result.training = {"judged": "gradients", **info, "worst": worst.name,
                       "compared": [{"name": c.name, "rule": c.rule, "max_abs_error": c.comparison.max_abs_error,
                                     "allowed_error": c.comparison.allowed_error, "headroom": c.comparison.headroom}
                                    for c in found]}

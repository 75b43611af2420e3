"""Pairing by data flow: both models as graphs of weighted units, put in one canonical order.

Registration order, creation order and branch order are heuristics: Keras' ResNet50 creates a
block's projection shortcut before its main path, a hand-written torch block registers the main
path first. The data-flow graph is the truth. Each side becomes a small graph whose nodes are
the weighted units a converter claims, the model inputs, and the merges (a node with several
inputs: add, multiply, concatenate, attention); every weightless op in between is collapsed
into the edge it sits on. Both graphs are then walked the same way, from the outputs back,
post-order, so a unit comes after everything it reads:

- the inputs of an ordered merge (concatenate, subtract, a unit with several inputs) in their
  argument order, which is part of the model's meaning;
- the inputs of a commutative merge (add, multiply, average, maximum, minimum), whose argument
  order is arbitrary, by the number of weights on each branch, then by argument order for ties
  (equal branches are interchangeable under a commutative merge).

The torch graph comes from running the module once on example inputs (given, or made from
the Keras model's inputs) under a ``TorchFunctionMode`` that records which tensors every torch
function reads and writes, with claimed modules as opaque leaves. The Keras graph is the
functional graph, nested models included. Where either cannot be read, callers fall back to
order-based pairing and say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

COMMUTATIVE = {"add", "mul", "average", "maximum", "minimum"}
_KERAS_MERGES = {"Add": "add", "Multiply": "mul", "Average": "average", "Maximum": "maximum", "Minimum": "minimum",
                 "Concatenate": "cat", "Subtract": "sub", "Dot": "dot", "Matmul": "dot"}
_TORCH_MERGES = {"add": "add", "__add__": "add", "__radd__": "add", "__iadd__": "add", "add_": "add",
                 "mul": "mul", "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul", "mul_": "mul",
                 "maximum": "maximum", "max": "maximum", "minimum": "minimum", "min": "minimum",
                 "cat": "cat", "concat": "cat", "concatenate": "cat", "stack": "cat", "sub": "sub", "__sub__": "sub",
                 "__rsub__": "sub", "__isub__": "sub", "sub_": "sub", "matmul": "dot", "bmm": "dot",
                 "__matmul__": "dot", "einsum": "dot"}


class GraphUnavailable(Exception):
    """The model's data flow could not be read; the caller pairs by order instead."""


@dataclass
class Node:
    kind: str                      # "input", "unit" or a merge kind ("add", "cat", ...)
    preds: list[int] = field(default_factory=list)
    unit: Any = None               # the unit object (a torch module or a keras layer) for "unit" nodes
    weights: int = 0               # number of float weights of the unit
    pre: list[tuple[Any, ...]] = field(default_factory=list)   # weightless ops on its first input since the
    #                                                             previous node (conformance.structure's terms)
    in_shape: tuple[int, ...] | None = None   # one sample's shape of its first input, as the unit reads it
    in_ratio: float | None = None   # values of its first input per value of the model's first input: the
    #                                 same in both frameworks whatever the batch size or the batch axis
    post: list[tuple[Any, ...]] | None = None   # the ops on its output up to its one consumer (None: several)


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    output_pre: list[list[tuple[Any, ...]]] = field(default_factory=list)   # the ops after each output's node

    def finish(self) -> Graph:
        """Give each node the trail of ops to its one consumer (or to the output it is), when it has one."""
        consumers: dict[int, list[int]] = {}
        for index, node in enumerate(self.nodes):
            for pred in node.preds:
                consumers.setdefault(pred, []).append(index)
        for index, node in enumerate(self.nodes):
            users = consumers.get(index, [])
            outputs = [k for k, o in enumerate(self.outputs) if o == index]
            if len(users) == 1 and not outputs and self.nodes[users[0]].preds[0] == index:
                node.post = self.nodes[users[0]].pre
            elif not users and len(outputs) == 1:
                node.post = self.output_pre[outputs[0]]
        return self

    def node_of(self, unit: Any) -> Node | None:
        """The (first) node of a unit."""
        return next((n for n in self.nodes if n.kind == "unit" and n.unit is unit), None)

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def merge(self, kind: str, preds: Sequence[int | None]) -> int | None:
        """A node for an op with several inputs; one live input passes through (``x * 0.5``, ``x * sigmoid(x)``)."""
        live = [p for p in preds if p is not None]
        if not live:
            return None
        if len(set(live)) == 1:
            return live[0]
        return self.add(Node(kind, live))

    def canonical_units(self) -> list[tuple[Any, int]]:
        """Every unit once, in the canonical order, with its depth (weighted units on the longest path from
        an input, itself included)."""
        import sys
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20 * len(self.nodes) + 1000))   # the walks recurse along the graph
        try:
            return self._canonical_units()
        finally:
            sys.setrecursionlimit(limit)

    def _canonical_units(self) -> list[tuple[Any, int]]:
        below = self._weights_below()
        order: list[tuple[Any, int]] = []
        seen: set[int] = set()
        placed: set[int] = set()
        depth: dict[int, int] = {}

        def visit(index: int) -> int:
            if index in seen:
                return depth[index]
            seen.add(index)
            node = self.nodes[index]
            preds = node.preds
            if node.kind in COMMUTATIVE:
                preds = [p for _, p in sorted(enumerate(preds), key=lambda ip: (below[ip[1]], ip[0]))]
            d = max((visit(p) for p in preds), default=0)
            if node.kind == "unit":
                d += 1
                if id(node.unit) not in placed:
                    placed.add(id(node.unit))
                    order.append((node.unit, d))
            depth[index] = d
            return d

        for output in self.outputs:
            visit(output)
        return order

    def _weights_below(self) -> list[int]:
        """For each node, the number of weights among the units it reads from, itself included."""
        memo: dict[int, frozenset[int]] = {}

        def units_below(index: int) -> frozenset[int]:
            if index not in memo:
                node = self.nodes[index]
                found = frozenset().union(*(units_below(p) for p in node.preds)) if node.preds else frozenset()
                memo[index] = found | {index} if node.kind == "unit" else found
            return memo[index]

        return [sum(self.nodes[i].weights for i in units_below(n)) for n in range(len(self.nodes))]


# ---- torch -------------------------------------------------------------------------------------------

@contextmanager
def traced_run(model: Any, hooks: Sequence[Any]) -> Iterator[None]:
    """One forward pass to watch: eval mode, no gradients, and PyTorch's fused attention fast path off so
    that sub-modules are really called; the model's mode, the fast-path switch and ``hooks`` are restored
    or removed afterwards, whatever happens."""
    import torch
    was_training, fastpath = model.training, torch.backends.mha.get_fastpath_enabled()
    try:
        model.eval()
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
        for hook in hooks:
            hook.remove()


def torch_graph(model: Any, units: Sequence[Any], example_inputs: Sequence[Any]) -> Graph:
    """Run ``model`` once on ``example_inputs`` and record the data flow between ``units`` (claimed modules)."""
    import torch
    from torch.overrides import TorchFunctionMode

    from .meta_memo import MetaMemo
    from .structure import torch_op

    graph = Graph()
    producer: dict[int, int] = {}        # id(tensor) -> node
    trail: dict[int, list[tuple[Any, ...]]] = {}   # id(tensor) -> weightless ops since its node
    keep: list[Any] = []                 # tensors stay alive, so their ids are not reused during the trace
    inside = [0]
    own = [False]                        # our hooks' own tensor calls (shapes, sizes): not the model's, not recorded
    weights_of = {id(m): sum(p.numel() for p in m.parameters() if p.is_floating_point()) for m in units}

    def direct(func: Any, args: Any, kwargs: Any) -> Any:
        return func(*args, **kwargs)
    run: list[Callable[..., Any]] = [direct]      # a MetaMemo for a pass on the meta device

    def node_of(value: Any) -> int | None:
        return producer.get(id(value)) if isinstance(value, torch.Tensor) else None

    def tensors_in(value: Any) -> list[Any]:
        if isinstance(value, torch.Tensor):
            return [value]
        if isinstance(value, list | tuple):
            return [t for v in value for t in tensors_in(v)]
        if isinstance(value, dict):
            return [t for v in value.values() for t in tensors_in(v)]
        return []

    def mark(value: Any, node: int | None, ops: list[tuple[Any, ...]] | None = None) -> None:
        if node is None:
            return
        for tensor in tensors_in(value):
            producer[id(tensor)] = node
            trail[id(tensor)] = ops or []
            keep.append(tensor)

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if own[0]:
                return func(*args, **(kwargs or {}))
            result = run[0](func, args, kwargs or {})
            if inside[0] == 0:
                live = [t for t in tensors_in(list(args) + list((kwargs or {}).values())) if node_of(t) is not None]
                name = getattr(func, "__name__", "")
                node = graph.merge(_TORCH_MERGES.get(name, "op"), [node_of(t) for t in live])
                ops = None
                if live and node == node_of(live[0]):          # passed through: one more op on the trail
                    op = torch_op(name, args, kwargs or {})
                    ops = trail.get(id(live[0]), []) + ([op] if op else [])
                mark(result, node, ops)
            return result

    @contextmanager
    def untraced() -> Iterator[None]:
        own[0] = True
        try:
            yield
        finally:
            own[0] = False

    def before(module: Any, args: Any, kwargs: Any) -> None:
        with untraced():
            live = [t for t in tensors_in(list(args) + list(kwargs.values())) if node_of(t) is not None]
            module._conformance_preds = ([node_of(t) for t in live], list(trail.get(id(live[0]), [])) if live else [],
                                         tuple(live[0].shape[1:]) if live else None,
                                         live[0].numel() / max(tensors[0].numel(), 1) if live else None)
        inside[0] += 1

    def after(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        inside[0] -= 1
        preds, pre, shape, ratio = module._conformance_preds
        with untraced():
            mark(output, graph.add(Node("unit", preds, module, weights_of[id(module)], pre, shape, ratio)))
        del module._conformance_preds

    def trace(inputs: Sequence[Any], call: Any) -> Any:
        """One traced pass of ``call(inputs)``, recorded from scratch (hooks are removed after each pass)."""
        run[0] = MetaMemo() if inputs and inputs[0].device.type == "meta" else direct
        for container in (graph.nodes, graph.outputs, graph.output_pre, producer, trail, keep):
            container.clear()
        inside[0] = 0              # a pass that failed inside a unit never left it
        for tensor in inputs:
            producer[id(tensor)] = graph.add(Node("input"))
        keep.extend(inputs)
        hooks = []
        for module in units:
            hooks.append(module.register_forward_pre_hook(before, with_kwargs=True))
            hooks.append(module.register_forward_hook(after, with_kwargs=True))
        try:
            with traced_run(model, hooks), Recorder():
                return call(inputs)
        finally:
            for module in units:            # a pass that failed inside a unit leaves no mark on the user's model
                module.__dict__.pop("_conformance_preds", None)

    device = next((p.device for p in model.parameters()), None)
    tensors = [torch.as_tensor(x, device=device) for x in example_inputs]
    def real_pass() -> Any:
        return trace(tensors, lambda inputs: model(*inputs))

    try:
        if sum(p.numel() for p in model.parameters()) < META_FROM:
            output = real_pass()            # small: cheaper than functional_call's swap
        else:
            try:      # without data: the graph needs shapes, not numbers (see _meta_pass)
                output = trace(*_meta_pass(model, tensors))
            except Exception:               # data-dependent code, or a tensor made on the CPU inside forward
                output = real_pass()
    except Exception as exc:
        raise GraphUnavailable(f"the torch model did not run on example inputs of shapes "
                               f"{[tuple(t.shape) for t in tensors]}: {type(exc).__name__}: {exc}") from None
    graph.outputs = [n for n in (node_of(t) for t in tensors_in(output)) if n is not None]
    graph.output_pre = [list(trail.get(id(t), [])) for t in tensors_in(output) if node_of(t) is not None]
    if not graph.outputs:
        raise GraphUnavailable("the torch model's outputs do not depend on its inputs")
    return graph.finish()


# Models with at least this many parameters are traced on the meta device. Below it the real pass is the
# cheaper one: on 24 catalogue cases (GRU, Conv2d) the meta pass's functional_call added about 6 ms per
# transfer, while a 26M-parameter conv stack's real pass spent 58% of its transfer in convolutions.
META_FROM = 1_000_000


def _meta_pass(model: Any, tensors: Sequence[Any]) -> tuple[list[Any], Any]:
    """Inputs and a call for the traced pass with every weight, buffer and input on PyTorch's meta device:
    shapes and dtypes propagate, no arithmetic runs. Pairing a 104 MB conv stack spent 58% of its CPU in the
    convolutions of this one pass, and a zoo model's pass costs more than moving its weights. The weights
    are swapped in by ``functional_call`` for the pass only; the model is not changed. The pass raises where
    the model needs numbers (data-dependent control flow, ``.item()``) or mixes in a CPU tensor of its own;
    the caller then traces on the real inputs."""
    import itertools

    import torch
    from torch.func import functional_call

    named = itertools.chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    state = {name: torch.empty_like(value, device="meta") for name, value in named}
    inputs = [torch.empty_like(t, device="meta") for t in tensors]
    return inputs, lambda inputs: functional_call(model, state, tuple(inputs), strict=False, tie_weights=True)


def torch_example_inputs(keras_model: Any, torch_model: Any, units: Sequence[Any]) -> Iterator[list[Any]]:
    """Candidate torch inputs made from the Keras model's inputs: channels moved first for feature maps
    (the usual layout difference), then as they are. Integer inputs (token ids) are zeros. Made one at a
    time: the first usually pairs, and a large model's inputs are not free to draw."""
    import numpy as np
    try:
        specs = [(tuple(t.shape[1:]), str(t.dtype)) for t in keras_model.inputs]
    except (AttributeError, ValueError, TypeError):
        raise GraphUnavailable("the Keras model has no symbolic inputs") from None
    if not specs or any(d is None for shape, _ in specs for d in shape):
        raise GraphUnavailable("the Keras model's input shape is not fully known; pass example_inputs=")

    def make(move: bool) -> list[Any]:
        arrays = []
        for shape, dtype in specs:
            if "int" in dtype:
                arrays.append(np.zeros((2, *shape), dtype=np.int64))
                continue
            torch_shape = (shape[-1], *shape[:-1]) if move and len(shape) >= 2 else shape
            arrays.append(np.random.default_rng(0).uniform(-1, 1, (2, *torch_shape)).astype(np.float32))
        return arrays

    yield make(True)
    yield make(False)


# ---- keras -------------------------------------------------------------------------------------------

def keras_graph(model: Any, is_unit: Callable[[Any], bool]) -> Graph:
    """The functional graph of ``model`` (nested models entered), units being the layers ``is_unit`` claims.

    Each tensor is known by its node and its trail: the weightless ops since that node, in
    :mod:`conformance.structure`'s terms (a unit's fused activation first). A merge whose inputs all
    come from one node (``ops.where(x > t, x, f(x))``, a max over crops of one map) is no node of its
    own, as on the torch side, and leaves an op that is not judged on the trail.
    """
    from .structure import keras_activation, keras_op
    graph = Graph()
    memo: dict[tuple[int, int, int], tuple[int | None, list[tuple[Any, ...]]]] = {}
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise GraphUnavailable("the Keras model has no functional graph (a subclassed or unbuilt model)")
    input_nodes = {id(t): graph.add(Node("input")) for t in inputs}
    first_shape = tuple(inputs[0].shape[1:])
    model_size = math.prod(first_shape) if all(d is not None for d in first_shape) else None

    def history(tensor: Any) -> Any:
        found = getattr(tensor, "_keras_history", None)
        if found is None:
            raise GraphUnavailable(f"a tensor without Keras history ({tensor!r})")
        return found

    def visit(tensor: Any, links: dict[int, Any]) -> tuple[int | None, list[tuple[Any, ...]]]:
        if id(tensor) in input_nodes:
            return input_nodes[id(tensor)], []
        op, node_index, tensor_index = history(tensor)
        key = (id(op), node_index, tensor_index)
        if key in memo:
            return memo[key]
        memo[key] = (None, [])                          # guards against cycles
        node = op._inbound_nodes[node_index]
        name = type(op).__name__
        if name == "InputLayer":
            outer = links.get(id(op))
            result = visit(outer, links) if outer is not None else (None, [])
        elif getattr(op, "layers", None) is not None and getattr(op, "outputs", None) and not is_unit(op):
            inner_links = dict(links)                   # a nested model: enter through its outputs
            for inner, outer in zip(op.inputs, node.input_tensors, strict=False):
                inner_links[id(history(inner).operation)] = outer
            result = visit(op.outputs[tensor_index], inner_links)
        else:
            found = [visit(t, links) for t in node.input_tensors]
            live = [(n, trail) for n, trail in found if n is not None]
            if is_unit(op):
                weights = sum(int(math.prod(v.shape)) for v in op.weights if "float" in str(v.dtype))
                first = node.input_tensors[0] if node.input_tensors else None
                shape = tuple(int(d) for d in first.shape[1:]) if first is not None and \
                    all(d is not None for d in first.shape[1:]) else None
                ratio = math.prod(shape) / model_size if shape is not None and model_size else None
                fused = keras_activation(op)
                result = (graph.add(Node("unit", [n for n, _ in live], op, weights, found[0][1] if found else [],
                                         shape, ratio)), [fused] if fused else [])
            else:
                merged = graph.merge(_KERAS_MERGES.get(name, "op"), [n for n, _ in live])
                if live and merged == live[0][0]:        # passed through: one more op on the trail
                    described = keras_op(op, node.input_tensors[0]) if len(live) == 1 else ("other", name)
                    result = (merged, live[0][1] + ([described] if described else []))
                else:
                    result = (merged, [])
        memo[key] = result
        return result

    visited = [visit(t, {}) for t in outputs]
    graph.outputs = [n for n, _ in visited if n is not None]
    graph.output_pre = [trail for n, trail in visited if n is not None]
    return graph.finish()


__all__ = ["Graph", "GraphUnavailable", "keras_graph", "torch_example_inputs", "torch_graph"]

"""Model-level weight transfer between a ``torch.nn.Module`` and a ``keras.Model``, either way.

Both models are reduced to an ordered list of weighted units: torch leaf modules that a
converter claims (in registration order, which is execution order for ``nn.Sequential`` and for
the usual hand-written module), and Keras layers (in the model's topological order, nested
models included). Units are paired by position. Every destination array is computed and
checked before anything is written, so a mismatch anywhere leaves the destination untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConversionError
from .families import converters
from .fastcopy import write_keras, write_torch
from .keras_graph import execution_order, nested_inputs
from .layout import Plan
from .rules import Context, Converter, WeightRule
from .structure import Mismatch, check_pair, compare_ops


@dataclass(frozen=True)
class MappingRow:
    """One weight moved: where from, where to, and the rule that moved it."""

    source: str
    destination: str
    source_shape: tuple[int, ...]
    destination_shape: tuple[int, ...]
    rule: str
    position: str = ""       # the pair's place in the data-flow graph: "pair 3 of 12, depth 2"


@dataclass(frozen=True)
class TransferReport:
    """What :func:`transfer_weights` did, readable as a table (``print(report)``)."""

    direction: str
    rows: tuple[MappingRow, ...]
    pairing: str = "graph"   # "graph", or "order (why the graph could not be read)"

    def __iter__(self) -> Iterator[MappingRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        header = ("position", "source", "destination", "source shape", "dest shape", "rule")
        table = [header] + [(r.position, r.source, r.destination, str(r.source_shape), str(r.destination_shape),
                             r.rule) for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(5)]
        lines = [f"weight transfer {self.direction}: {len(self.rows)} tensors, layers paired by {self.pairing}"]
        for row in table:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=False))
                         + "  " + row[5])
        return "\n".join(lines)


@dataclass(frozen=True)
class _TorchUnit:
    name: str
    module: Any


@dataclass(frozen=True)
class _KerasUnit:
    name: str
    layer: Any


def _is_torch(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.") and c.__name__ == "Module" for c in type(obj).__mro__)


def _is_keras(obj: Any) -> bool:
    return any(c.__module__.startswith("keras") and c.__name__ == "Layer" for c in type(obj).__mro__)


def _torch_units(model: Any) -> list[_TorchUnit]:
    claimed = converters()
    units: list[_TorchUnit] = []

    def walk(module: Any, name: str) -> None:
        if any(c.claims_torch(module) for c in claimed):
            units.append(_TorchUnit(name or type(module).__name__, module))
            return
        own = [k for k, v in module._parameters.items() if v is not None]
        if own:
            raise ConversionError(f"torch module {name or '<root>'} ({type(module).__name__}) has weights "
                                  f"{own} but no converter knows this layer type")
        for child_name, child in module.named_children():
            walk(child, f"{name}.{child_name}" if name else child_name)

    walk(model, "")
    return units


def _in_call_order(model: Any, units: list[_TorchUnit], example_inputs: Any) -> list[_TorchUnit]:
    """Units re-ordered by their first call in a forward pass on ``example_inputs``.

    For modules that register sub-modules in another order than they use them
    (``nn.TransformerEncoderLayer`` registers linear1 and linear2 before norm1). Runs in eval
    mode without gradients, with PyTorch's fused attention fast path off so that sub-modules are
    really called; units that are never called keep their registration order, at the end.
    """
    import torch
    calls: dict[int, int] = {}

    def recorder(index: int) -> Any:
        def record(module: Any, args: Any) -> None:   # must return None, or it replaces the arguments
            calls.setdefault(index, len(calls))
        return record

    hooks = [unit.module.register_forward_pre_hook(recorder(i)) for i, unit in enumerate(units)]
    arrays = example_inputs if isinstance(example_inputs, list | tuple) else [example_inputs]
    tensors = [torch.as_tensor(np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)) for a in arrays]
    from .graph import traced_run
    try:
        with traced_run(model, hooks):
            model(*tensors)
    except Exception as exc:
        raise ConversionError(f"the torch model could not run on example_inputs to find its call order: "
                              f"{type(exc).__name__}: {exc}") from None
    order = sorted(range(len(units)), key=lambda i: (calls.get(i, len(units) + i)))
    return [units[i] for i in order]


def _keras_units(model: Any) -> list[_KerasUnit]:
    claimed = converters()
    units: list[_KerasUnit] = []

    def walk(layer: Any) -> None:
        if any(c.claims_keras(layer) for c in claimed):
            units.append(_KerasUnit(layer.name, layer))
            return
        if getattr(layer, "layers", None) is not None:   # a Sequential or functional model, root or nested
            for child in execution_order(layer):
                walk(child)
            return
        if layer.weights:
            raise ConversionError(f"keras layer {layer.name} ({type(layer).__name__}) has weights "
                                  f"{[v.name for v in layer.weights]} but no converter knows this layer type")

    walk(model)
    return units


def _keras_variables(layer: Any) -> dict[str, Any]:
    prefix = f"{layer.path}/"
    return {(v.path[len(prefix):] if v.path.startswith(prefix) else v.name): v for v in layer.weights}


def _describe(unit: _TorchUnit | _KerasUnit) -> str:
    obj = unit.module if isinstance(unit, _TorchUnit) else unit.layer
    side = "torch" if isinstance(unit, _TorchUnit) else "keras"
    return f"{side} {type(obj).__name__} '{unit.name}'"


def _converter_for(t_units: list[_TorchUnit], k_units: list[_KerasUnit], index: int
                   ) -> tuple[Converter, int, int]:
    modules, layers = [u.module for u in t_units], [u.layer for u in k_units]
    for converter in converters():
        span = converter.matches(modules, layers)
        if span is not None:
            return converter, *span
    raise ConversionError(f"layer pair #{index + 1}: {_describe(t_units[0])} does not correspond to "
                          f"{_describe(k_units[0])} (if the torch module registers its sub-modules in another "
                          "order than its forward pass calls them, pass example_inputs= to pair in call order)")


def _joined(units: list[Any], side: str) -> tuple[Any, dict[str, Any], str]:
    """One unit as itself; several as a tuple, with their weights prefixed by position."""
    objects = [u.module if side == "torch" else u.layer for u in units]
    weights = [dict(o.state_dict(keep_vars=True)) if side == "torch" else _keras_variables(o) for o in objects]
    name = "+".join(u.name for u in units)
    if len(units) == 1:
        return objects[0], weights[0], name
    sep = "." if side == "torch" else "/"
    return tuple(objects), {f"{i}{sep}{k}": v for i, w in enumerate(weights) for k, v in w.items()}, name


@dataclass
class _Pairing:
    torch: list[_TorchUnit]
    keras: list[_KerasUnit]
    depths: list[int]
    how: str
    graphs: tuple[Any, Any] | None = None      # (torch graph, keras graph) when paired by graph


def _paired_order(torch_model: Any, keras_model: Any, t_units: list[_TorchUnit], k_units: list[_KerasUnit],
                  example_inputs: Any) -> _Pairing:
    """Both unit lists in the canonical data-flow order (see :mod:`conformance.graph`), the depth of each
    torch unit, and how they were paired. Falls back to order-based pairing, saying why."""
    from .graph import GraphUnavailable, keras_graph, torch_example_inputs, torch_graph
    claimed = converters()
    try:
        k_graph = keras_graph(keras_model, lambda layer: any(c.claims_keras(layer) for c in claimed))
        if example_inputs is not None:
            arrays = example_inputs if isinstance(example_inputs, list | tuple) else [example_inputs]
            candidates: Iterable[list[Any]] = [[np.asarray(a.detach().cpu() if hasattr(a, "detach") else a)
                                                for a in arrays]]
        else:
            candidates = torch_example_inputs(keras_model, torch_model, [u.module for u in t_units])
        problems = []
        for candidate in candidates:
            try:
                t_graph = torch_graph(torch_model, [u.module for u in t_units], candidate)
                break
            except GraphUnavailable as exc:
                problems.append(str(exc))
        else:
            raise GraphUnavailable(problems[-1])
    except GraphUnavailable as exc:
        if example_inputs is not None:
            t_units = _in_call_order(torch_model, t_units, example_inputs)
        return _Pairing(t_units, k_units, [0] * len(t_units), f"order, not graph: {exc}")
    t_by_id = {id(u.module): u for u in t_units}
    k_by_id = {id(u.layer): u for u in k_units}
    t_ordered = [(t_by_id[id(m)], d) for m, d in t_graph.canonical_units() if id(m) in t_by_id]
    k_ordered = [k_by_id[id(layer)] for layer, _ in k_graph.canonical_units() if id(layer) in k_by_id]
    t_seen, k_seen = {id(u.module) for u, _ in t_ordered}, {id(u.layer) for u in k_ordered}
    t_list = [u for u, _ in t_ordered] + [u for u in t_units if id(u.module) not in t_seen]   # never called
    depths = [d for _, d in t_ordered] + [0] * (len(t_list) - len(t_ordered))
    k_list = k_ordered + [u for u in k_units if id(u.layer) not in k_seen]
    return _Pairing(t_list, k_list, depths, "graph", (t_graph, k_graph))


def _plan(torch_model: Any, keras_model: Any, to_keras: bool, example_inputs: Any = None,
          paired: _Pairing | None = None, gradients: bool = False) -> tuple[list[_Write], str, list[tuple[Any, Any]]]:
    """Every write the transfer will make, computed and checked before any is made; how layers paired; and
    the hooks to call on Keras layers after writing into them (Normalization recomputes its statistics).
    With ``gradients`` (the Keras model holds gradients, :mod:`conformance.gradients`), keras->torch values
    of rules that are no bijection are their adjoints, which never refuse."""
    if paired is None:
        paired = _paired_order(torch_model, keras_model, _torch_units(torch_model), _keras_units(keras_model),
                               example_inputs)
    t_units, k_units, depths, pairing = paired.torch, paired.keras, paired.depths, paired.how
    t_graph, k_graph = paired.graphs or (None, None)
    context = Context(keras_links=nested_inputs(keras_model))
    writes: list[_Write] = []
    after: list[tuple[Any, Any]] = []
    i = j = pair = 0
    while i < len(t_units) and j < len(k_units):
        converter, n_torch, n_keras = _converter_for(t_units[i:], k_units[j:], pair)
        t_span, k_span = t_units[i:i + n_torch], k_units[j:j + n_keras]
        module, tensors, t_name = _joined(t_span, "torch")
        layer, variables, k_name = _joined(k_span, "keras")
        where = f"layer pair #{pair + 1} ({_describe(t_span[0])} <-> {_describe(k_span[0])})"
        problem: str | Mismatch | None = converter.check(module, layer) if converter.check is not None else None
        if not problem:
            t_node = t_graph.node_of(t_span[0].module) if t_graph else None
            problem = check_pair(t_span[0].module, k_span[0].layer, t_node,
                                 k_graph.node_of(k_span[0].layer) if k_graph else None)
        if problem:
            text = problem.message(into_torch=not to_keras) if isinstance(problem, Mismatch) else problem
            raise ConversionError(f"{where}: configured differently: {text}")
        if not all(getattr(unit.layer, "built", True) for unit in k_span):
            raise ConversionError(f"{where}: the Keras layer is not built yet, so it has no weights; build the "
                                  "model (keras.Input, or call it once) before transferring")
        rules = converter.rules(module, layer, context)
        position = f"pair {pair + 1}" + (f", depth {depths[i]}" if depths[i] else "")
        for rule in rules:
            writes.extend(_plan_rule(rule, t_name, k_name, tensors, variables, to_keras, where, position,
                                     gradients))
        if converter.after_keras_write is not None:
            after.extend((converter.after_keras_write, unit.layer) for unit in k_span)
        ignored = {k for k in tensors if k.split(".")[-1] in converter.ignore_torch}
        left_torch = set(tensors) - {r.torch for r in rules} - ignored
        left_keras = set(variables) - {r.keras for r in rules}
        if left_torch or left_keras:
            raise ConversionError(f"{where}: weights with no rule: torch {sorted(left_torch)}, "
                                  f"keras {sorted(left_keras)}")
        i, j, pair = i + n_torch, j + n_keras, pair + 1
    if t_graph is not None and k_graph is not None and i == len(t_units) and j == len(k_units) \
            and len(t_graph.outputs) == len(k_graph.outputs) == 1:    # several outputs: often made differently
        for t_ops, k_ops in zip(t_graph.output_pre, k_graph.output_pre, strict=True):
            mismatch = compare_ops(t_ops, k_ops, "after the last layer")
            if mismatch:
                raise ConversionError("the models differ at their outputs: "
                                      f"{mismatch.message(into_torch=not to_keras)}")
    if i < len(t_units) or j < len(k_units):
        extra = t_units[i] if i < len(t_units) else k_units[j]
        raise ConversionError(f"layer pair #{pair + 1}: {_describe(extra)} has no counterpart: the torch model "
                              f"has {len(t_units)} weighted layers and the keras model {len(k_units)} "
                              f"(paired by {pairing})")
    return writes, pairing, after


def _label(unit_name: str, weight: str, sep: str) -> str:
    """``features.0.weight``; for spanned units ("a+b", "1.weight") the weight's own unit: ``b.weight``."""
    names = unit_name.split("+")
    head, _, rest = weight.partition(sep)
    if len(names) > 1 and head.isdigit() and int(head) < len(names):
        return f"{names[int(head)]}{sep}{rest}"
    return f"{unit_name}{sep}{weight}"


@dataclass(frozen=True)
class _Write:
    """One planned write: either a pure rearrangement (``plan``) or a value computed ahead (``value``)."""

    destination: Any
    source: Any
    plan: Plan | None
    value: np.ndarray | None
    row: MappingRow
    rule: WeightRule | None = None       # for gradients (conformance.gradients): rules that are no bijection


def _is_rearrangement(rule: WeightRule) -> bool:
    """Rules that only move data can take the fast path; others compute their values with NumPy."""
    return type(rule).to_keras is WeightRule.to_keras and type(rule).to_torch is WeightRule.to_torch


def _described_inverse(rule: WeightRule) -> str:
    """The rule as applied keras -> torch: a layout rule inverted; a rule with its own text as it says."""
    return rule.describe(inverse=True) if type(rule).describe is WeightRule.describe else rule.describe()


def _plan_rule(rule: WeightRule, t_name: str, k_name: str, tensors: dict[str, Any], variables: dict[str, Any],
               to_keras: bool, where: str, position: str = "", gradients: bool = False) -> list[_Write]:
    tensor, variable = tensors.get(rule.torch), variables.get(rule.keras)
    if tensor is None and variable is None and rule.optional:
        return []
    if tensor is None and variable is None:
        raise ConversionError(f"{where}: neither torch's '{rule.torch}' nor Keras's '{rule.keras}' exists, and the "
                              "rule is not optional")
    if tensor is None or variable is None:
        have, lack = ("torch", "keras") if tensor is not None else ("keras", "torch")
        name = rule.torch if tensor is not None else rule.keras
        raise ConversionError(f"{where}: {have} has '{name}' but {lack} has no "
                              f"'{rule.keras if tensor is not None else rule.torch}' (bias or affine settings differ)")
    t_shape, k_shape = tuple(tensor.shape), tuple(variable.shape)
    t_label, k_label = _label(t_name, rule.torch, "."), _label(k_name, rule.keras, "/")
    if to_keras:
        source, target, row = (rule.torch, t_shape), (rule.keras, k_shape), \
            MappingRow(t_label, k_label, t_shape, k_shape, rule.describe(), position)
    else:
        source, target, row = (rule.keras, k_shape), (rule.torch, t_shape), \
            MappingRow(k_label, t_label, k_shape, t_shape, _described_inverse(rule), position)
    plan, value = None, None
    try:
        if _is_rearrangement(rule):
            layout = None if rule.layout is None else rule.layout if to_keras else rule.layout.inverse
            plan = None if layout is None else layout.plan(source[1], **rule.sizes)
            result = source[1] if plan is None else plan.result
        else:
            if to_keras:
                value = rule.to_keras(tensor.detach().cpu().numpy())
            else:
                array = np.asarray(variable.numpy())
                adjoint = rule.gradient_to_torch(array) if gradients and not rule.bijective else None
                value = rule.to_torch(array) if adjoint is None else adjoint
            result = tuple(value.shape)
    except ValueError as exc:
        raise ConversionError(f"{where}: {rule.torch} {t_shape} and {rule.keras} {k_shape} do not fit "
                              f"the rule {rule.describe()}: {exc}") from None
    if tuple(result) != target[1]:
        raise ConversionError(f"{where}: {source[0]} {source[1]} becomes {tuple(result)} under "
                              f"{rule.describe()}, but {target[0]} is {target[1]}")
    return [_Write(variable if to_keras else tensor, tensor if to_keras else variable, plan, value, row, rule)]


def transfer_weights(src: Any, dst: Any, *, example_inputs: Any = None) -> TransferReport:
    """Copy every weight of ``src`` into ``dst``: a torch module into a Keras model, or back.

    Returns the mapping that was applied. Raises :class:`ConversionError`, naming the first
    layer pair that differs, when the models do not correspond; ``dst`` is then unchanged.
    Layers pair by their place in the data-flow graph (:mod:`conformance.graph`), whatever order
    they were created, registered or branched in. The torch graph is traced by running the module
    once, on ``example_inputs`` (torch layout) when given, else on inputs made from the Keras
    model's input shapes. Where a graph cannot be read, layers pair in order (Keras layers in
    call order, torch modules in registration order, or in call order with ``example_inputs``),
    and the report's ``pairing`` says so.
    """
    return _transfer(src, dst, example_inputs, None)


def transfer_between_twins(src: Any, dst: Any, memo: dict[str, Any]) -> TransferReport:
    """:func:`transfer_weights` for a runner that moves weights both ways between one pair of models that
    it built itself and never restructures: the data-flow pairing, which costs a traced forward pass,
    is computed on the first call and kept in ``memo`` (one dict per pair) for the next. Not for
    users' models, whose structure may change between calls."""
    return _transfer(src, dst, None, memo)


def _transfer(src: Any, dst: Any, example_inputs: Any, memo: dict[str, Any] | None) -> TransferReport:
    if _is_torch(src) and _is_keras(dst):
        torch_model, keras_model, to_keras = src, dst, True
    elif _is_keras(src) and _is_torch(dst):
        torch_model, keras_model, to_keras = dst, src, False
    else:
        raise ConversionError(f"transfer_weights needs one torch.nn.Module and one keras.Model, got "
                              f"{type(src).__name__} and {type(dst).__name__}")
    paired = memo.get("pairing") if memo is not None else None
    if memo is not None and paired is None:
        paired = memo["pairing"] = _paired_order(torch_model, keras_model, _torch_units(torch_model),
                                                 _keras_units(keras_model), example_inputs)
    writes, pairing, after = _plan(torch_model, keras_model, to_keras, example_inputs, paired)
    import torch
    with torch.no_grad():
        for write in writes:
            if write.value is not None:
                _write_value(write, to_keras)
            elif to_keras:
                write_keras(write.destination, write.source, write.plan)
            else:
                write_torch(write.destination, write.source, write.plan)
    if to_keras:
        for hook, layer in after:
            hook(layer)
    return TransferReport("torch->keras" if to_keras else "keras->torch", tuple(w.row for w in writes), pairing)


def _write_value(write: _Write, to_keras: bool) -> None:
    import torch
    assert write.value is not None
    if to_keras:
        write.destination.assign(np.ascontiguousarray(write.value, dtype=write.destination.dtype))
    else:
        write.destination.copy_(torch.from_numpy(np.ascontiguousarray(write.value)))

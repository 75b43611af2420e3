"""The layer tree of a model file: each layer's path, type, parameter count and tensors.

Where the file records types (an ``nn.Module``, TorchScript's ``original_name``, torch.export's
``nn_module_stack``, a Keras model), the tree shows them. A bare state dict records only names
and shapes, so its types are *inferred* from them (``conv1.weight (6, 1, 5, 5)`` is a 4-D kernel:
a Conv2d, or a ConvTranspose2d) and every such node says so: a guess presented as a fact would
send a user to the wrong family of cases.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]

# Entries of a torch state dict that are buffers, not parameters, whatever the module.
TORCH_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class LayerNode:
    """One layer (or container) of the tree, in pre-order with its depth."""

    path: str
    type: str
    parameters: int
    depth: int
    tensors: dict[str, Shape] = field(default_factory=dict)   # this layer's own tensors
    container: bool = False
    inferred: bool = False
    candidates: tuple[str, ...] = ()     # layer types to look up for coverage: (type,) unless inferred
    activation: str | None = None        # a Keras layer's built-in activation ("relu")
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "parameters": self.parameters, "depth": self.depth,
                "tensors": {k: list(v) for k, v in self.tensors.items()}, "container": self.container,
                "inferred": self.inferred, "candidates": list(self.candidates), "activation": self.activation,
                "detail": self.detail}


def _count(shapes: Iterable[Shape]) -> int:
    return sum(math.prod(s) for s in shapes)


def torch_tree(module: Any, type_of: Callable[[Any], str] | None = None) -> list[LayerNode]:
    """An ``nn.Module`` or TorchScript module; ``type_of`` names a module's class."""
    name_of = type_of or (lambda m: getattr(m, "original_name", None) or type(m).__name__)
    nodes: list[LayerNode] = []

    def walk(m: Any, path: str, depth: int) -> None:
        own = {k: tuple(v.shape) for k, v in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]}
        children = list(m.named_children())
        kind = name_of(m)
        nodes.append(LayerNode(path or "(model)", kind, sum(p.numel() for p in m.parameters()), depth, own,
                               container=bool(children), candidates=() if children else (kind,)))
        for name, child in children:
            walk(child, f"{path}.{name}" if path else name, depth + 1)

    walk(module, "", 0)
    return nodes


def _tree_from_paths(paths: Iterable[str], tensors: Mapping[str, Mapping[str, Shape]],
                     describe: Callable[[str, Mapping[str, Shape]], tuple[str, tuple[str, ...], str, bool]],
                     root_type: str, parameter_of: Callable[[str], bool] = lambda name: True) -> list[LayerNode]:
    """Nodes for dotted module paths (parents made as needed), in first-appearance pre-order.

    ``describe(path, own tensors)`` gives (type, candidates, detail, inferred) for a path.
    """
    children: dict[str, list[str]] = {"": []}
    for path in paths:
        parts = path.split(".") if path else []
        for i in range(1, len(parts) + 1):
            child, parent = ".".join(parts[:i]), ".".join(parts[:i - 1])
            if child not in children:
                children[child] = []
                children[parent].append(child)

    def total(path: str) -> int:
        own = tensors.get(path, {})
        return _count(s for k, s in own.items() if parameter_of(k)) + sum(total(c) for c in children[path])

    nodes: list[LayerNode] = []

    def walk(path: str, depth: int) -> None:
        own = dict(tensors.get(path, {}))
        candidates: tuple[str, ...]
        if children[path] and not own:
            kind, candidates, detail, inferred = (root_type if not path else "(group)"), (), "", False
        else:
            kind, candidates, detail, inferred = describe(path, own)
        nodes.append(LayerNode(path or "(model)", kind, total(path), depth, own, container=bool(children[path]),
                               inferred=inferred, candidates=candidates, detail=detail))
        for child in children[path]:
            walk(child, depth + 1)

    walk("", 0)
    return nodes


def _split(key: str) -> tuple[str, str]:
    module, _, name = key.rpartition(".")
    return module, name


def state_dict_tree(shapes: Mapping[str, Shape]) -> list[LayerNode]:
    """A bare state dict: the module tree from the key names, each module's type inferred."""
    grouped: dict[str, dict[str, Shape]] = {}
    for key, shape in shapes.items():
        module, name = _split(key)
        grouped.setdefault(module, {})[name] = shape

    def describe(path: str, own: Mapping[str, Shape]) -> tuple[str, tuple[str, ...], str, bool]:
        candidates, detail = infer_torch_layer(path, own)
        return (" or ".join(candidates) if candidates else "unknown"), candidates, detail, True

    return _tree_from_paths(grouped, grouped, describe, "(state dict)",
                            parameter_of=lambda name: name not in TORCH_BUFFERS)


def _hinted(path: str, options: list[str], hints: Mapping[str, str]) -> tuple[str, ...]:
    """Order ``options`` so that one the module's name points to comes first (``embed`` -> Embedding)."""
    last = path.rsplit(".", 1)[-1].lower()
    first = [t for pattern, t in hints.items() if re.search(pattern, last) and t in options]
    return tuple(dict.fromkeys([*first, *options]))


def infer_torch_layer(path: str, own: Mapping[str, Shape]) -> tuple[tuple[str, ...], str]:
    """Candidate torch layer types for one module of a state dict, and the evidence in words."""
    names = set(own)
    weight = own.get("weight")
    if "weight_ih_l0" in names and "weight_hh_l0" in names:
        w_ih, w_hh = own["weight_ih_l0"], own["weight_hh_l0"]
        hidden = w_hh[1] if len(w_hh) == 2 else 0
        gates = w_ih[0] // hidden if hidden else 0
        kind = {4: "LSTM", 3: "GRU", 1: "RNN"}.get(gates)
        layers = len({m.group(1) for k in names if (m := re.match(r"weight_ih_l(\d+)", k))})
        bidirectional = any(k.endswith("_reverse") for k in names)
        detail = (f"weight_ih_l0 {w_ih}, weight_hh_l0 {w_hh}: {gates or '?'} gate block(s) of hidden size {hidden}, "
                  f"{layers} layer(s){', bidirectional' if bidirectional else ''}")
        return ((kind,) if kind else ()), detail
    if "in_proj_weight" in names or "q_proj_weight" in names:
        embed = own.get("in_proj_weight", own.get("q_proj_weight", (0, 0)))[-1]
        return ("MultiheadAttention",), f"in_proj_weight {own.get('in_proj_weight')}: embed_dim {embed}"
    if "running_mean" in names and "running_var" in names:
        features = own["running_mean"][0] if own["running_mean"] else "?"
        return (("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
                f"running statistics over {features} features (the input rank decides 1d/2d/3d)")
    if weight is None:
        return (), f"tensors {', '.join(f'{k} {v}' for k, v in own.items())}: no rule recognises them"
    rank = len(weight)
    if rank in (3, 4, 5):
        n = rank - 2
        kernel = "x".join(map(str, weight[2:]))
        detail = (f"{rank}-D kernel {weight}: as Conv{n}d {weight[0]} out, {weight[1]} in per group, {kernel}; "
                  f"as ConvTranspose{n}d {weight[0]} in, {weight[1]} out per group")
        return _hinted(path, [f"Conv{n}d", f"ConvTranspose{n}d"], {"deconv|transpose|up": f"ConvTranspose{n}d"}), detail
    if rank == 2:
        if "bias" in names:
            return ("Linear",), f"2-D weight {weight} with bias: {weight[1]} in, {weight[0]} out"
        return (_hinted(path, ["Linear", "Embedding"], {"emb|token|vocab": "Embedding"}),
                f"2-D weight {weight} without bias: Linear ({weight[1]} in, {weight[0]} out) or Embedding "
                f"({weight[0]} entries of {weight[1]})")
    if rank == 1:
        hints = {"bn|batch": "BatchNorm2d", "ln|layer": "LayerNorm", "gn|group": "GroupNorm", "prelu": "PReLU"}
        options = ["LayerNorm", "GroupNorm"] if "bias" in names else ["PReLU", "LayerNorm"]
        return _hinted(path, options, hints), f"1-D weight {weight}{' and bias' if 'bias' in names else ''}"
    return (), f"weight {weight}: no rule for rank {rank}"


def exported_tree(program: Any) -> list[LayerNode]:
    """A torch.export program: module types from each graph node's ``nn_module_stack``."""
    types: dict[str, str] = {}
    for node in program.graph.nodes:
        for entry in (node.meta.get("nn_module_stack") or {}).values():
            path, kind = entry[0], entry[1]
            path = re.sub(r"^L\['self'\]\.?", "", str(path))
            types.setdefault(path, str(getattr(kind, "__name__", kind)).rsplit(".", 1)[-1])
    grouped: dict[str, dict[str, Shape]] = {}
    state = {**program.state_dict, **{k: v for k, v in program.constants.items() if hasattr(v, "shape")}}
    for key, value in state.items():
        module, name = _split(key)
        grouped.setdefault(module, {})[name] = tuple(value.shape)
    buffers = set(program.graph_signature.buffers)

    def describe(path: str, own: Mapping[str, Shape]) -> tuple[str, tuple[str, ...], str, bool]:
        if path in types:
            return types[path], (types[path],), "", False
        candidates, detail = infer_torch_layer(path, own)
        return (" or ".join(candidates) or "unknown"), candidates, detail, True

    nodes = _tree_from_paths([*types, *grouped], grouped, describe, "(exported program)")
    for node in nodes:   # parameters, not buffers: recount with the program's own signature
        prefix = "" if node.path == "(model)" else node.path + "."
        node.parameters = _count(tuple(v.shape) for k, v in program.state_dict.items()
                                 if k.startswith(prefix) and k not in buffers)
    return nodes


def keras_tree(model: Any) -> list[LayerNode]:
    """A Keras model: nested models are containers; other layers are leaves with their weights."""
    nodes: list[LayerNode] = []

    def walk(layer: Any, path: str, depth: int) -> None:
        kind = type(layer).__name__
        sub = getattr(layer, "layers", None)
        container = sub is not None
        own: dict[str, Shape] = {}
        if not container:
            prefix = f"{layer.path}/"
            own = {(v.path[len(prefix):] if v.path.startswith(prefix) else v.name): tuple(v.shape)
                   for v in layer.weights}
        config = _safe_config(layer)
        raw = config.get("activation")
        activation = raw if isinstance(raw, str) and raw != "linear" else None
        candidates: tuple[str, ...] = (kind,)
        detail = ""
        if kind == "Bidirectional":
            inner = type(layer.forward_layer).__name__
            candidates, detail = (inner,), f"wraps {inner}"
        elif kind == "InputLayer":
            candidates, detail = (), f"input shape {tuple(config.get('batch_shape') or ())}"
        if activation:
            detail = f"activation {activation}" + (f"; {detail}" if detail else "")
        count = layer.count_params() if getattr(layer, "built", False) else 0
        nodes.append(LayerNode(path, kind, count, depth, own, container=container,
                               candidates=() if container else candidates, activation=activation, detail=detail))
        for child in sub or ():
            walk(child, f"{path}/{child.name}", depth + 1)

    walk(model, model.name, 0)
    return nodes


def _safe_config(layer: Any) -> dict[str, Any]:
    try:
        config = layer.get_config()
    except Exception:   # subclassed layers without get_config: the tree still shows the type
        return {}
    return config if isinstance(config, dict) else {}


def keras_weights_tree(shapes: Mapping[str, Shape]) -> list[LayerNode]:
    """A weights-only HDF5 file: variable paths and shapes, layer types inferred from kernel ranks."""
    grouped: dict[str, dict[str, Shape]] = {}
    for key, shape in shapes.items():
        module, _, name = key.rpartition("/")
        module = module.removesuffix("/vars").removeprefix("layers/")   # Keras 3: layers/<name>/vars/<index>
        grouped.setdefault(module.replace(".", "_").replace("/", "."), {})[name] = shape

    def describe(path: str, own: Mapping[str, Shape]) -> tuple[str, tuple[str, ...], str, bool]:
        kernel = own.get("0") or own.get("kernel:0") or own.get("kernel") or next(iter(own.values()), ())
        rank = len(kernel)
        options = {2: ("Dense", "Embedding"), 3: ("Conv1D",), 4: ("Conv2D", "Conv2DTranspose"),
                   5: ("Conv3D",)}.get(rank, ())
        return (" or ".join(options) or "unknown"), options, f"first variable {kernel}", True

    return _tree_from_paths(grouped, grouped, describe, "(weights file)")


__all__ = ["LayerNode", "exported_tree", "infer_torch_layer", "keras_tree", "keras_weights_tree",
           "state_dict_tree", "torch_tree"]

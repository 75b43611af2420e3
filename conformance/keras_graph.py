"""Reading a Keras model's graph: which feature map does a Dense layer read through a Flatten?

torch flattens C,H,W; Keras flattens whatever order its tensor has, H,W,C for channels-last
feature maps. To re-order a Dense kernel correctly we need the axes of the tensor that the
Flatten consumed. We walk back from the Dense through layers that do not change the layout
(dropout, activations, normalisation) to the Flatten, then on to the layer that fixed the
feature map's layout: a convolution, pooling, padding or resampling layer (by its
``data_format``), a ``Permute`` (which re-labels the axes), or the model's input (a rank >= 4
input is taken to be a channels-last image). The layout propagates through layers that keep it
(activations, dropout, normalisation, element-wise ``keras.ops``, a Reshape, whose Flatten reads
the same memory order) and through merges, whose inputs must agree. Recurrent, embedding,
attention and global pooling layers end the walk: their outputs are laid out alike in both
frameworks. Any other layer is unknown, and the transfer refuses rather than assume torch's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .layout import Layout

_PASSTHROUGH = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "Activation", "ReLU",
                "LeakyReLU", "ELU", "PReLU", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity",
                "ActivityRegularization", "BatchNormalization", "Softmax"}
_SPATIAL_PREFIXES = ("Conv", "DepthwiseConv", "SeparableConv", "MaxPooling", "AveragePooling", "ZeroPadding",
                     "Cropping", "UpSampling", "LocallyConnected")


@dataclass(frozen=True)
class FeatureMap:
    """The flattened tensor's axes in torch order and in Keras order, with their sizes."""

    torch_axes: tuple[str, ...]
    keras_axes: tuple[str, ...]
    sizes: dict[str, int]

    @property
    def layout(self) -> Layout:
        return Layout(f"O ({' '.join(self.torch_axes)}) -> ({' '.join(self.keras_axes)}) O")

    def describe(self) -> str:
        return "x".join(str(self.sizes[a]) for a in self.keras_axes) + f" ({','.join(self.keras_axes)})"


def _producer(tensor: Any) -> Any:
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def _input_of(layer: Any) -> Any:
    try:
        return layer.input
    except (AttributeError, ValueError, RuntimeError):
        return None


def nested_inputs(model: Any) -> dict[int, Any]:
    """For every model nested in ``model``: its InputLayer (by id) -> the outer tensor fed to it.

    A walk back through the graph that reaches a nested model's input continues outside it.
    """
    links: dict[int, Any] = {}
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None) is None:
            continue
        links.update(nested_inputs(layer))
        try:
            inner = list(layer.inputs)
            outer = list(layer._inbound_nodes[0].input_tensors)
        except (AttributeError, IndexError, ValueError, TypeError):
            continue
        for inner_tensor, outer_tensor in zip(inner, outer, strict=False):
            op = _producer(inner_tensor)
            if op is not None:
                links[id(op)] = outer_tensor
    return links


def _walk_back(tensor: Any, links: dict[int, Any]) -> tuple[Any, Any]:
    """From ``tensor``, skip layers that keep the layout and nested-model boundaries."""
    op = _producer(tensor)
    while op is not None:
        if type(op).__name__ in _PASSTHROUGH:
            tensor = _input_of(op)
        elif type(op).__name__ == "InputLayer" and id(op) in links:
            tensor = links[id(op)]          # leave a nested model through its input
        elif getattr(op, "layers", None) is not None and getattr(op, "outputs", None):
            index = tensor._keras_history.tensor_index
            tensor = op.outputs[index]      # enter a nested model through its output
        else:
            break
        op = _producer(tensor)
    return tensor, op


def flatten_layout(dense: Any, links: dict[int, Any] | None = None) -> FeatureMap | None:
    """The feature map a Dense layer reads through a Flatten, when its rows must be re-ordered.

    ``links`` comes from :func:`nested_inputs` of the outermost model.
    """
    links = links or {}
    tensor, op = _walk_back(_input_of(dense), links)
    if op is None or type(op).__name__ != "Flatten":
        return None
    flatten = op
    source = _input_of(flatten)
    if source is None or len(source.shape) <= 2:
        return None
    dims = [int(d) for d in source.shape[1:]]
    spatial = ["D", "H", "W"][3 - (len(dims) - 1):] if len(dims) <= 4 else [f"S{i}" for i in range(len(dims) - 1)]
    channels_last = (*spatial, "C")
    labels = _layout_of(source, channels_last, links)
    if labels is None:
        return None
    sizes = dict(zip(labels, dims, strict=True))
    if getattr(flatten, "data_format", "channels_last") == "channels_first":
        labels = (*labels[1:], labels[0])     # Keras moves axis 1 last before flattening
    torch_axes = ("C", *spatial)
    if labels == torch_axes:
        return None
    return FeatureMap(torch_axes, labels, sizes)


# How each Keras layer treats the axis order of a feature map, for the Flatten -> Dense question.
# Layout-preserving layers pass their input's layout on; merges pass it on when all inputs agree;
# spatial layers fix it by data_format; these end the question with "no spatial map" (the sequence
# and feature layouts are the same in both frameworks); anything else is unknown and refused.
_PRESERVING = _PASSTHROUGH | {"LayerNormalization", "GroupNormalization", "UnitNormalization", "Rescaling",
                              "Normalization", "Dense", "EinsumDense", "ThresholdedReLU", "Masking", "Reshape"}
_MERGES = {"Add", "Multiply", "Average", "Maximum", "Minimum", "Subtract", "Concatenate"}
_NO_SPATIAL_MAP = {"Embedding", "LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "MultiHeadAttention",
                   "GroupedQueryAttention", "Attention", "AdditiveAttention", "Flatten", "GlobalAveragePooling1D",
                   "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
                   "GlobalMaxPooling3D", "TextVectorization", "CategoryEncoding"}
_AXIS_MOVING_OPS = {"Transpose", "Swapaxes", "Moveaxis", "Reshape", "Squeeze", "ExpandDims", "Tile", "Repeat",
                    "Take", "TakeAlongAxis", "GetItem", "Slice", "Flip", "Roll", "Einsum", "Matmul", "Dot"}


def _is_elementwise_op(op: Any, tensor: Any) -> bool:
    """A keras.ops operation in a functional model (ops.relu(x), x * 2) that keeps its input's shape and
    moves no axis: it keeps the layout. User Lambda layers and custom layers are not trusted this way."""
    module = type(op).__module__
    if not module.startswith("keras.src.ops.") or type(op).__name__ in _AXIS_MOVING_OPS:
        return False
    source = _input_of(op)
    return source is not None and not isinstance(source, list | tuple) and \
        tuple(getattr(source, "shape", ())) == tuple(getattr(tensor, "shape", ()))


def _inputs_of(op: Any, tensor: Any) -> list[Any]:
    history = getattr(tensor, "_keras_history", None)
    try:
        return list(op._inbound_nodes[history.node_index].input_tensors)   # type: ignore[union-attr]
    except (AttributeError, IndexError, TypeError):
        found = _input_of(op)
        return list(found) if isinstance(found, list | tuple) else [found]


def _layout_of(tensor: Any, channels_last: tuple[str, ...], links: dict[int, Any]) -> tuple[str, ...] | None:
    """Axis labels of a feature map; None when it has no spatial layout to reorder (a sequence or feature
    vector, laid out alike in both frameworks). Raises ConversionError where the layout cannot be known."""
    from .errors import ConversionError
    tensor, op = _walk_back(tensor, links)
    if op is None:
        return None
    name = type(op).__name__
    if name == "InputLayer":
        return channels_last if len(tensor.shape) >= 4 else None
    if name == "Permute":
        inner = _layout_of(_input_of(op), channels_last, links)
        if inner is None:
            return None
        return tuple(inner[d - 1] for d in op.dims)
    if name.startswith(_SPATIAL_PREFIXES):
        if getattr(op, "data_format", "channels_last") == "channels_first":
            return (channels_last[-1], *channels_last[:-1])
        return channels_last
    if name in _NO_SPATIAL_MAP:
        return None
    if name in _PRESERVING or _is_elementwise_op(op, tensor):
        return _layout_of(_input_of(op), channels_last, links)
    if name in _MERGES or (type(op).__module__.startswith("keras.src.ops.") and len(_inputs_of(op, tensor)) > 1
                           and name not in _AXIS_MOVING_OPS):
        sources = [t for t in _inputs_of(op, tensor) if hasattr(t, "_keras_history")]
        layouts = [_layout_of(t, channels_last, links) for t in sources]
        if any(layout != layouts[0] for layout in layouts):
            described = ", ".join(f"{_producer_name(t)}: {' '.join(layout) if layout else 'no spatial map'}"
                                  for t, layout in zip(sources, layouts, strict=True))
            raise ConversionError(f"{name} '{op.name}' merges feature maps laid out differently ({described}); "
                                  "a Flatten after it has no single torch order")
        return layouts[0] if layouts else None
    raise ConversionError(f"cannot tell the axis order of the feature map that a Flatten reads: it comes from "
                          f"{name} '{getattr(op, 'name', '?')}', whose effect on the layout is unknown, so the "
                          "Dense rows after the Flatten cannot be re-ordered safely (conformance never assumes "
                          "torch's order). Put a known layer there (a Permute, a convolution) or transfer the "
                          "layers around it separately")


def _producer_name(tensor: Any) -> str:
    op = _producer(tensor)
    return f"{type(op).__name__} '{op.name}'" if op is not None else "input"


def execution_order(model: Any) -> list[Any]:
    """A model's layers in the order a hand-written forward pass would call them.

    Keras lists a functional model's layers by graph depth, which interleaves parallel branches
    (a residual block's shortcut convolution comes before the main path's second BatchNorm).
    torch modules are usually registered, and called, one branch at a time. So walk the graph
    depth first from the inputs, following each tensor's consumers in the order they were
    created, and take a merge (Add, Concatenate) only once all its inputs are done. Falls back
    to Keras's own order when the graph cannot be read (a Sequential that was never built).
    """
    layers = list(getattr(model, "layers", []))
    try:
        members = {id(op) for op in getattr(model, "operations", layers)}
        stack = [t._keras_history.operation._inbound_nodes[0] for t in reversed(model.inputs)]
        done: set[int] = set()
        layer_ids = {id(layer) for layer in layers}
        placed: set[int] = set()
        order: list[Any] = []
        while stack:
            node = stack.pop()
            if id(node) in done or not all(id(parent) in done for parent in node.parent_nodes):
                continue
            done.add(id(node))
            op = node.operation
            if id(op) in layer_ids and id(op) not in placed:
                order.append(op)
                placed.add(id(op))
            stack.extend(reversed([child for child in op._outbound_nodes if id(child.operation) in members]))
    except (AttributeError, IndexError, TypeError, ValueError):
        return layers
    return order + [layer for layer in layers if id(layer) not in placed]

"""Weight rules: how one framework's weights become the other's, layer by layer.

A :class:`WeightRule` moves one tensor; it is a layout rule (a pure function and its exact
inverse) or a plain copy. A :class:`Converter` says which PyTorch modules correspond to which
Keras layers and lists the rules for a given pair. Converters are declared by the family
modules next to the layers they build; :mod:`conformance.transfer` applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .layout import Layout


@dataclass(frozen=True)
class WeightRule:
    """Move the torch tensor ``torch`` (a state_dict key) to the Keras variable ``keras``."""

    torch: str
    keras: str
    layout: Layout | None = None
    sizes: Mapping[str, int] = field(default_factory=dict)
    optional: bool = False          # e.g. bias: absent on both sides is fine, on one side is not
    note: str = ""                  # why the rule is what it is, shown in the mapping

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        return array if self.layout is None else self.layout.apply(array, **self.sizes)

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        return array if self.layout is None else self.layout.invert(array, **self.sizes)

    bijective = True                # False: gradients move by gradient_to_torch, not as the weights do

    def gradient_to_torch(self, keras_gradient: np.ndarray) -> np.ndarray | None:
        """The gradient with respect to this torch tensor, given the Keras variable's, where the rule is
        not a bijection (a sum of two biases, a folded bias, a dense kernel with zeros off its group
        blocks): the rule's adjoint, which is not its weight inverse there. ``None`` for bijections,
        whose gradients move exactly as their weights do (a permutation's adjoint is its inverse)."""
        return None

    def describe(self, inverse: bool = False) -> str:
        """The rule as applied: torch -> keras, or with ``inverse`` keras -> torch."""
        text = "copy" if self.layout is None else str(self.layout.inverse if inverse else self.layout)
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Context:
    """What a rule may need beyond the layer pair: links across nested Keras models."""

    keras_links: Mapping[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Converter:
    """Which torch modules pair with which Keras layers, and their weight rules.

    ``rules(module, layer, context)`` returns the rules for one concrete pair; it may read the
    layer's configuration and the feature-map shape before it. ``check(module, layer)`` returns a
    sentence when the two are configured so that outputs would differ even with identical
    weights (BatchNorm eps, say), and ``None`` when they agree.
    """

    name: str
    torch_types: tuple[str, ...]
    keras_types: tuple[str, ...]
    rules: Callable[[Any, Any, Context], list[WeightRule]]
    check: Callable[[Any, Any], Any] | None = None      # -> None, a sentence, or a structure.Mismatch
    ignore_torch: tuple[str, ...] = ()   # state_dict keys that Keras has no place for
    # A pair may span several units: a separable convolution is two torch convolutions and one
    # Keras layer; a 2-layer LSTM is one torch module and two Keras layers. Spanned units are
    # passed to ``rules`` and ``check`` as tuples, and their weights are named "0.weight",
    # "1.weight" (torch) and "0/kernel", "1/kernel" (Keras).
    torch_span: int = 1
    keras_span: Callable[[Any], int] | None = None      # from the first torch module
    # For Keras layers that cache values derived from their variables, so that assigning the
    # variables alone changes nothing: Keras's Normalization computes its mean and variance
    # tensors once, in finalize_state(), which its own load_own_variables() calls after loading.
    # The transfer must call this on the Keras layer of a pair after writing its weights.
    after_keras_write: Callable[[Any], None] | None = None

    def matches(self, modules: list[Any], layers: list[Any]) -> tuple[int, int] | None:
        """How many torch modules and Keras layers this converter takes from the heads of the lists."""
        if not modules or not _is_a(modules[0], self.torch_types, TORCH_PACKAGES):
            return None
        n_torch = self.torch_span
        n_keras = self.keras_span(modules[0]) if self.keras_span else 1
        if len(modules) < n_torch or len(layers) < n_keras:
            return None
        if all(_is_a(m, self.torch_types, TORCH_PACKAGES) for m in modules[:n_torch]) and all(
                _is_a(layer, self.keras_types, "keras") for layer in layers[:n_keras]):
            return n_torch, n_keras
        return None

    def claims_torch(self, module: Any) -> bool:
        return _is_a(module, self.torch_types, TORCH_PACKAGES)

    def claims_keras(self, layer: Any) -> bool:
        return _is_a(layer, self.keras_types, "keras")


# Where the torch classes a converter names may come from: torch, and this package, which defines
# torch twins of Keras layers that torch has no class for (conformance.zoo_models.Rescaling,
# Normalization).
TORCH_PACKAGES = ("torch", "conformance.")


def _is_a(obj: Any, names: tuple[str, ...], package: str | tuple[str, ...]) -> bool:
    """Class-name match along the MRO, so user subclasses of nn.Conv2d still count."""
    return any(cls.__name__ in names and cls.__module__.startswith(package) for cls in type(obj).__mro__)


def spatial_axes(n: int) -> list[str]:
    return ["D", "H", "W"][3 - n:]


def kernel_layout(n: int) -> Layout:
    """O I *spatial -> *spatial I O, e.g. ``O I H W -> H W I O``."""
    axes = " ".join(spatial_axes(n))
    return Layout(f"O I {axes} -> {axes} I O")


def depthwise_layout(n: int) -> Layout:
    """(C M) 1 *spatial -> *spatial C M: torch output channel c*M + m is Keras (c, m)."""
    axes = " ".join(spatial_axes(n))
    return Layout(f"(C M) 1 {axes} -> {axes} C M")


DENSE = Layout("O I -> I O")

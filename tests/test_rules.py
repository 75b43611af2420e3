"""rules.py on stand-in classes (no torch, no Keras): which units a converter takes, what a rule without
weights on either side means, and that the context handed to rules cannot be rebound. Mutation testing's
fast stage runs it; docs/mutation.md says which survivors it was written for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conformance.errors import ConversionError
from conformance.layout import Layout
from conformance.rules import Context, Converter, WeightRule
from conformance.transfer import _plan_rule


def _stand_in(name: str, module: str) -> object:
    """An instance of a class called ``name`` that seems to come from ``module`` (converters match by name)."""
    return type(name, (), {"__module__": module})()


CONV = lambda: _stand_in("Conv2d", "torch.nn.modules.conv")  # noqa: E731
SEPARABLE = lambda: _stand_in("SeparableConv2D", "keras.src.layers")  # noqa: E731
PAIR = Converter("separable", ("Conv2d",), ("SeparableConv2D",), rules=lambda m, layer, c: [], torch_span=2)


def test_a_converter_takes_its_whole_span_or_nothing() -> None:
    assert PAIR.matches([CONV(), CONV()], [SEPARABLE()]) == (2, 1)
    assert PAIR.matches([CONV()], [SEPARABLE()]) is None              # one torch unit short
    assert PAIR.matches([CONV(), CONV()], []) is None                 # no Keras layer
    assert PAIR.matches([CONV(), _stand_in("Linear", "torch.nn")], [SEPARABLE()]) is None
    stack = Converter("stack", ("LSTM",), ("LSTM",), rules=lambda m, layer, c: [],
                      keras_span=lambda module: module.num_layers)      # read from the first torch unit
    two, one = _stand_in("LSTM", "torch.nn"), _stand_in("LSTM", "torch.nn")
    two.num_layers, one.num_layers = 2, 1   # type: ignore[attr-defined]
    keras_lstms = [_stand_in("LSTM", "keras.src") for _ in range(3)]
    assert stack.matches([two, one], keras_lstms) == (1, 2)
    assert stack.matches([one, two], keras_lstms) == (1, 1)
    assert stack.matches([two], keras_lstms[:1]) is None


def test_classes_match_by_name_and_package_along_the_mro() -> None:
    base = type("Conv2d", (), {"__module__": "torch.nn"})
    mine = type("MyConv", (base,), {"__module__": "user"})()
    assert PAIR.claims_torch(mine) and not PAIR.claims_keras(mine)
    assert not PAIR.claims_torch(_stand_in("Conv2d", "tensorflow"))
    assert PAIR.claims_keras(SEPARABLE())


def test_a_weight_missing_on_both_sides_is_an_error_unless_optional() -> None:
    with pytest.raises(ConversionError, match="neither torch's 'weight' nor Keras's 'kernel'"):
        _plan_rule(WeightRule("weight", "kernel"), "t", "k", {}, {}, True, "pair 1")
    assert _plan_rule(WeightRule("bias", "bias", optional=True), "t", "k", {}, {}, True, "pair 1") == []
    with pytest.raises(ConversionError, match="keras has 'bias' but torch has no 'bias'"):
        _plan_rule(WeightRule("bias", "bias", optional=True), "t", "k", {}, {"bias": np.zeros(2)}, True, "pair 1")


def test_rules_describe_themselves_in_both_directions() -> None:
    rule = WeightRule("weight", "kernel", Layout("O I -> I O"), note="dense")
    assert rule.describe() == "O I -> I O (dense)" and rule.describe(inverse=True) == "I O -> O I (dense)"
    assert WeightRule("bias", "bias").describe() == "copy"
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(rule.to_torch(rule.to_keras(x)), x)


def test_the_context_and_the_rules_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Context().keras_links = {}  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        WeightRule("a", "b").optional = True  # type: ignore[misc]

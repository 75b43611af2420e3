"""Meta-tests for train mode: plant a wrong training mapping, and the catalogue's train cases must fail.

The style of tests/test_meta.py: each test monkeypatches one builder or rule into a classic mistake,
runs named *catalogue* train cases through :func:`conformance.runner.run_case` in both directions,
and asserts outcome ``failed`` with a finite headroom above 1 (the statistic or the gradients
decided, not a crash). Mistakes that inference cannot see, since dropout is the identity there and
a gradient mapping is never used:

- a dropout rate passed to Keras as a keep-probability, ``Dropout(1 - p)``;
- the attention dropout left out on the Keras side (``MultiHeadAttention(dropout=0)``), and on both;
- an LSTM whose bias-sum gradient is mapped as its weight inverse (b_hh gets zeros), not its adjoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from test_meta import cases, plant_builder

from conformance import runner
from conformance.cases import DIRECTIONS
from conformance.families import _load as registry
from conformance.families import recurrent


@pytest.fixture(autouse=True)
def fresh_pairs() -> Iterator[None]:
    runner._PAIRS.clear()
    yield
    runner._PAIRS.clear()


def assert_caught(selected: list[Any]) -> None:
    for case in selected:
        for direction in DIRECTIONS:
            result = runner.run_case(case, direction)
            assert result.outcome == "failed", f"the planted bug was not caught:\n{result.explain()}"
            assert result.headroom is not None and result.headroom > 1, result.explain()


DROPOUT = ("dropout[p0.1-in8x32x32-train]", "dropout[p0.3-in8x32x32-train]", "dropout[p0.7-in8x32x32-train]")
ATTENTION = tuple(f"multihead_attention[e16-h4-bias-bf-kdnone-vdnone-drop{p}-L5-kvself-nokpm-nopadall-amnone-nom3d-"
                  f"nocausal-{nw}-avg-train]" for p in ("0.1", "0.3") for nw in ("nw", "nonw"))


def test_the_dropout_train_cases_pass_unplanted() -> None:
    for case in cases("dropout", *DROPOUT) + cases("multihead_attention", *ATTENTION[:1]):
        result = runner.run_case(case, "torch->keras")
        assert result.outcome == "passed", result.explain()


def test_dropout_rate_passed_as_keep_probability_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def keep_probability(original: Any, p: dict[str, Any], x: Any) -> Any:
        return keras.layers.Dropout(1.0 - p["p"])(x)
    plant_builder(monkeypatch, "dropout", keep_probability)
    assert_caught(cases("dropout", *DROPOUT))


def test_attention_dropout_left_out_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    plant_builder(monkeypatch, "multihead_attention", lambda original, p, x: original({**p, "dropout": 0.0}, x))
    assert_caught(cases("multihead_attention", *ATTENTION))


def test_attention_dropout_as_keep_probability_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    plant_builder(monkeypatch, "multihead_attention",
                  lambda original, p, x: original({**p, "dropout": 1.0 - p["dropout"]}, x))
    assert_caught(cases("multihead_attention", *ATTENTION))


def test_attention_dropout_left_out_on_both_sides_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    plant_builder(monkeypatch, "multihead_attention", lambda original, p, x: original({**p, "dropout": 0.0}, x))
    families = registry()[0]
    planted = families["multihead_attention"]
    monkeypatch.setitem(families, "multihead_attention",
                        replace(planted, build_torch=lambda p: planted.build_torch({**p, "dropout": 0.0})))
    assert_caught(cases("multihead_attention", *ATTENTION[:2]))


def test_a_bias_sum_gradient_mapped_as_its_weight_inverse_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def inverse_not_adjoint(self: Any, keras_gradient: Any) -> Any:
        return None if self.adjoint is None else self.backward(keras_gradient)
    monkeypatch.setattr(recurrent.FunctionRule, "gradient_to_torch", inverse_not_adjoint)
    assert_caught(cases("lstm", "lstm[h4-l1-bias-bf-nobi-in5x5-train]", "lstm[h4-l2-bias-bf-bi-in5x5-train]"))

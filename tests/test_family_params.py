"""Family parameters as the case schema reads them: defaults, lower bounds and the messages for shapes that
do not fit. Written for the survivors of mutation testing of conformance/families/dense.py, whose weight
rules were all caught but whose parameter checks were not (docs/mutation.md). No torch, no Keras."""

from __future__ import annotations

import pytest

from conformance.errors import CaseError
from conformance.families import get_family


def test_linear_defaults_and_bounds() -> None:
    linear = get_family("linear")
    assert linear.normalise({"in_features": 1, "out_features": 1, "input_shape": [1]}) == {
        "in_features": 1, "out_features": 1, "bias": True, "input_shape": (1,)}
    for field, value in (("in_features", 0), ("out_features", 0)):
        raw = {"in_features": 1, "out_features": 1, "input_shape": [1], field: value}
        with pytest.raises(CaseError, match="must be >= 1, got 0") as caught:
            linear.normalise(raw)
        assert caught.value.field == field


@pytest.mark.parametrize("last", [3, 9])
def test_linear_input_must_end_in_in_features(last: int) -> None:
    with pytest.raises(CaseError, match=f"last dimension {last} != in_features 6") as caught:
        get_family("linear").normalise({"in_features": 6, "out_features": 2, "input_shape": [2, 4, last]})
    assert caught.value.field == "input_shape"


def test_flatten_linear_refuses_maps_it_cannot_build() -> None:
    family = get_family("flatten_linear")
    base = {"out_channels": 2, "kernel_size": 3, "out_features": 4}
    with pytest.raises(CaseError, match="expected \\(C, L\\), \\(C, H, W\\) or \\(C, D, H, W\\)"):
        family.normalise({**base, "input_shape": [3, 4, 4, 4, 4]})
    with pytest.raises(CaseError, match="too small for kernel 3"):
        family.normalise({**base, "input_shape": [3, 2, 5]})
    assert family.normalise({**base, "input_shape": [3, 3, 5]})["merge"] == "none"

"""What the pooling families build on the Keras side, for configurations the catalogue does not hold."""

from __future__ import annotations

import numpy as np
import pytest

import conformance


@pytest.mark.parametrize("dimensions", [1, 2])
def test_a_dilated_max_pool_with_a_kernel_of_one_is_one_strided_tap(dimensions: int) -> None:
    """Dilation with kernel 1 reads one element per window: a single crop, no Maximum of one input."""
    shape = (2,) + (7,) * dimensions
    pair = conformance.build_pair(f"max_pool{dimensions}d", kernel_size=1, stride=2, dilation=2, input_shape=shape)
    kinds = [type(layer).__name__ for layer in pair.keras.layers]
    assert "Maximum" not in kinds and kinds.count(f"MaxPooling{dimensions}D") == 1
    x = np.random.default_rng(0).uniform(-1, 1, (3, *shape)).astype(np.float32)
    result = conformance.compare(pair.torch, pair.keras, x)
    assert result.passed, result.summary()
    assert result.max_abs_error == 0.0

"""Known divergences: the evidence that they are real, and that the records are strict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conformance.cases import DIRECTIONS, load_file
from conformance.runner import run_case

CASES = Path(__file__).resolve().parent.parent / "cases"


def test_tensorflow_conv2d_single_channel_row_stride_one_is_wrong_without_our_code() -> None:
    """Evidence for the conv2d record: raw tf.nn.conv2d against torch's conv2d, no conversion involved."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 5, 4, 1)).astype(np.float32)          # N H W C
    kernel = rng.uniform(-1, 1, (1, 3, 1, 1)).astype(np.float32)     # H W I O
    ours = tf.nn.conv2d(x, kernel, strides=[1, 1, 3, 1], padding="VALID").numpy()
    theirs = torch.nn.functional.conv2d(torch.from_numpy(np.moveaxis(x, -1, 1)),
                                        torch.from_numpy(kernel.transpose(3, 2, 0, 1)), stride=(1, 3)).numpy()
    expected = np.einsum("nhwc,kwco->nho", x[:, :, :3, :], kernel)[:, :, None, :]   # the one output column
    np.testing.assert_allclose(np.moveaxis(theirs, 1, -1), expected, atol=1e-5)
    assert np.abs(ours - expected).max() > 1e-2, "TensorFlow now computes this correctly: update the record"


def test_the_same_geometry_with_two_input_channels_is_correct() -> None:
    import tensorflow as tf
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 5, 4, 2)).astype(np.float32)
    kernel = rng.uniform(-1, 1, (1, 3, 2, 1)).astype(np.float32)
    ours = tf.nn.conv2d(x, kernel, strides=[1, 1, 3, 1], padding="VALID").numpy()
    expected = np.einsum("nhwc,kwco->nho", x[:, :, :3, :], kernel)[:, :, None, :]
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def relu_case(tmp_path: Path, record: str) -> Any:
    """One relu case with a [[divergence]] record for it, whose other keys are ``record``."""
    (tmp_path / "relu.toml").write_text(f"""
family = "relu"
[[grid]]
input_shape = [[3, 4]]
[[divergence]]
when = {{ input_shape = [[3, 4]] }}
{record}
""")
    return load_file(tmp_path / "relu.toml")[0]


def test_a_divergence_that_stops_diverging_fails_the_run(tmp_path: Path) -> None:
    case = relu_case(tmp_path, 'direction = "keras->torch"\nreason = "pretend relu differs"')
    outcomes = {d: run_case(case, d) for d in DIRECTIONS}
    assert outcomes["torch->keras"].outcome == "passed"
    stale = outcomes["keras->torch"]
    assert stale.outcome == "xpass" and not stale.ok
    assert "no longer diverges" in stale.message and "relu.toml" in stale.message


def test_a_divergence_outside_its_version_range_does_not_apply(tmp_path: Path) -> None:
    case = relu_case(tmp_path, 'tensorflow = "<1.0"\nreason = "only on ancient TensorFlow"')
    result = run_case(case, "torch->keras")
    assert result.outcome == "passed" and result.divergence is None


def test_a_divergence_for_another_keras_backend_does_not_apply(tmp_path: Path) -> None:
    case = relu_case(tmp_path, 'keras_backend = "jax"\nreason = "only on the JAX backend"')
    assert case.divergences[0].applies_to({}, "tensorflow") is False
    assert case.divergences[0].applies_to({}, "jax") is True


@pytest.mark.parametrize("name", sorted(p.name for p in CASES.glob("*.toml")))
def test_every_recorded_divergence_has_a_reason_and_matches_cases(name: str) -> None:
    cases = load_file(CASES / name)
    for case in cases:
        for record in case.divergences:
            assert len(record.reason) > 40, "a reason a reader can act on"

"""compare()'s plumbing on real torch modules: inputs go to the device the model lives on, only float
inputs move to channels-last for Keras (masks and token ids stay as they are), outputs are counted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import conformance
from conformance.comparison import _device_of


def test_inputs_go_where_the_torch_model_lives() -> None:
    assert _device_of(nn.Linear(2, 2, device="meta")).type == "meta"
    assert _device_of(nn.BatchNorm1d(3, affine=False, device="meta")).type == "meta"   # buffers only
    bare = nn.ReLU()
    assert _device_of(bare).type == "cpu"
    bare.conformance_device = torch.device("meta")
    assert _device_of(bare).type == "meta"


class _Masked(nn.Module):
    """An image, an integer map of the same rank and a per-sample integer weight."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return image * mask * weight.sum(dim=1).view(-1, 1, 1, 1)


class _RecordingKeras:
    """Stands in for a Keras model: records what it is called with and answers channels-last."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def __call__(self, inputs: Any, training: bool = False) -> np.ndarray:
        self.seen = [np.asarray(a) for a in inputs]
        image, mask, weight = self.seen
        return image * np.moveaxis(mask, 1, -1) * weight.sum(axis=1).reshape(-1, 1, 1, 1)


def test_only_float_inputs_move_to_channels_last_and_the_first_input_decides() -> None:
    """The integer map stays channels-first; the output moves back because it has the first input's rank."""
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32)
    mask, weight = rng.integers(0, 2, (2, 3, 4, 5)), rng.integers(1, 3, (2, 6))
    keras_like = _RecordingKeras()
    result = conformance.compare(_Masked(), keras_like, [image, mask, weight], channels_last=True)
    assert [a.shape for a in keras_like.seen] == [(2, 4, 5, 3), (2, 3, 4, 5), (2, 6)]
    assert result.passed, result.summary()


class _Two(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def test_a_different_number_of_outputs_fails_before_any_value_is_compared() -> None:
    x = np.ones((2, 3), np.float32)
    result = conformance.compare(_Two(), lambda inputs, training=False: inputs, x)
    assert not result.passed and result.problem == "torch returned 2 outputs, keras 1"
    assert result.allowed_error == 0 and result.headroom == float("inf") and result.max_abs_error == float("inf")


def test_fewer_torch_outputs_than_keras_outputs_fail_the_same_way() -> None:
    x = np.ones((2, 3), np.float32)
    result = conformance.compare(nn.Identity(), lambda inputs, training=False: [inputs, inputs], x)
    assert not result.passed and result.problem == "torch returned 1 outputs, keras 2"


def test_a_single_output_names_no_output_index() -> None:
    x = np.ones((2, 3), np.float32)
    result = conformance.compare(nn.Identity(), lambda inputs, training=False: inputs, x)
    assert result.passed and result.output is None and "worst in output" not in result.summary()


class _AddAxis(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., None]


def test_an_output_of_another_rank_than_the_input_is_compared_as_it_is() -> None:
    """Only outputs with the first input's rank are feature maps to move back; a Keras model that answers
    (N, C, L, 1) for an (N, C, L) input already answers in torch's layout."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 5)).astype(np.float32)
    result = conformance.compare(_AddAxis(), lambda inputs, training=False: np.moveaxis(inputs, -1, 1)[..., None], x,
                                 channels_last=True)
    assert result.passed, result.summary()


class _Masking(nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image * mask


def test_boolean_masks_stay_channels_first_and_options_are_keywords() -> None:
    rng = np.random.default_rng(2)
    image, mask = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32), rng.random((2, 3, 4, 5)) < 0.5
    seen: list[Any] = []

    def keras_like(inputs: Any, training: bool = False) -> np.ndarray:
        seen.extend(np.asarray(a) for a in inputs)
        return inputs[0] * np.moveaxis(np.asarray(inputs[1]), 1, -1)
    assert conformance.compare(_Masking(), keras_like, [image, mask], channels_last=True).passed
    assert seen[1].shape == (2, 3, 4, 5)
    with pytest.raises(TypeError):
        conformance.compare(_Masking(), keras_like, [image, mask], None, True)  # type: ignore[misc]

"""Training the same converted weights in both frameworks, step for step, and comparing the result.

The models, batches, loss and optimizer settings are the same on both sides; only the framework
differs. Batches are seeded NumPy arrays in PyTorch's layout, moved to channels-last for Keras.
Keras trains with ``train_on_batch`` (eagerly, no XLA), so that the arithmetic is Keras's own
optimizer code on the active backend. After training, the Keras weights are transferred into a
copy of the torch model (``conformance.transfer_weights``, the rules the catalogue verifies) and
compared tensor by tensor under their torch names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..comparison import _move_channels
from .results import TensorError, tensor_error

Batch = tuple[np.ndarray, np.ndarray]   # (inputs, targets), torch layout


@dataclass
class Models:
    """A torch module and a Keras model holding the same converted weights, and how to train them."""

    torch: Any
    keras: Any
    loss: str                   # "cross_entropy" (integer labels) or "mse" (a target like the output)
    input_shape: tuple[int, ...]   # one sample, torch layout
    channels_last: bool = True


def batches(models: Models, steps: int, batch: int, seed: int) -> list[Batch]:
    """``steps`` seeded batches: inputs uniform in [-1, 1]; labels, or targets shaped like the output."""
    import torch
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1, 1, (batch, *models.input_shape)).astype(np.float32) for _ in range(steps)]
    if models.loss == "cross_entropy":
        with torch.no_grad():
            classes = int(models.torch.eval()(torch.from_numpy(xs[0])).shape[-1])
        return [(x, rng.integers(0, classes, batch).astype(np.int64)) for x in xs]
    with torch.no_grad():
        out_shape = tuple(models.torch.eval()(torch.from_numpy(xs[0])).shape)
    return [(x, rng.uniform(-1, 1, out_shape).astype(np.float32)) for x in xs]


def train_torch(models: Models, optimizer: Any, data: Sequence[Batch]) -> None:
    """One optimizer step per batch, in training mode (BatchNorm on batch statistics)."""
    import torch
    loss_fn = torch.nn.CrossEntropyLoss() if models.loss == "cross_entropy" else torch.nn.MSELoss()
    models.torch.train()
    for x, y in data:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(models.torch(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        optimizer.step()
    models.torch.eval()


def train_keras(models: Models, optimizer: Any, data: Sequence[Batch]) -> None:
    """The same steps with Keras's own training step (``train_on_batch``: ``training=True``)."""
    import keras
    loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=True) if models.loss == "cross_entropy"
            else keras.losses.MeanSquaredError())
    models.keras.compile(optimizer=optimizer, loss=loss, run_eagerly=True, jit_compile=False)
    last = models.channels_last
    for x, y in data:
        models.keras.train_on_batch(_move_channels(x, True) if last else x,
                                    _move_channels(y, True) if last and models.loss != "cross_entropy" else y)


def torch_state(module: Any) -> dict[str, np.ndarray]:
    """Every float parameter and buffer by its torch name (``num_batches_tracked`` is a counter)."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in module.state_dict().items()
            if tensor.is_floating_point()}


def keras_state_in_torch_layout(models: Models) -> dict[str, np.ndarray]:
    """The Keras weights, moved by ``transfer_weights`` into a copy of the torch model, by torch name."""
    from ..transfer import transfer_weights
    mirror = copy.deepcopy(models.torch)
    transfer_weights(models.keras, mirror)
    return torch_state(mirror)


Allowance = Callable[[str, np.ndarray, np.ndarray], tuple[float, float]]   # (name, start, end) -> (atol, rtol)


def compare_states(start: dict[str, np.ndarray], torch_end: dict[str, np.ndarray],
                   keras_end: dict[str, np.ndarray], allowance: Allowance) -> tuple[TensorError, ...]:
    """Each tensor's torch and Keras values after training, against the allowance for that tensor."""
    errors = []
    for name, value in torch_end.items():
        atol, rtol = allowance(name, start[name], value)
        errors.append(tensor_error(name, value, keras_end[name], atol, rtol))
    return tuple(errors)

"""compare() feeds the torch model on the device it lives on: its first parameter's, else its first
buffer's, else the device the runner marked on a module without either (``conformance_device``)."""

from __future__ import annotations

import torch
from torch import nn

from conformance.comparison import _device_of


def test_inputs_go_where_the_torch_model_lives() -> None:
    assert _device_of(nn.Linear(2, 2, device="meta")).type == "meta"
    assert _device_of(nn.BatchNorm1d(3, affine=False, device="meta")).type == "meta"   # buffers only
    bare = nn.ReLU()
    assert _device_of(bare).type == "cpu"
    bare.conformance_device = torch.device("meta")
    assert _device_of(bare).type == "meta"

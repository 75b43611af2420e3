"""The pairing trace's memo of shape propagation on the meta device (conformance/meta_memo.py).

A repeated slow call is run once and answered with an empty meta tensor of the recorded shape,
strides and dtype; anything that writes to or returns its arguments, or that it cannot describe,
runs every time. The data-flow graph must be the same with and without it.
"""

from __future__ import annotations

import math
import time

import keras
import pytest
import torch

import conformance
from conformance import graph, meta_memo
from conformance.meta_memo import MetaMemo


class Slow:
    """A function slow enough to be memoised, counting its calls."""

    def __init__(self, result: object = None) -> None:
        self.calls, self.result, self.__name__ = 0, result, "slow"

    def __call__(self, x: torch.Tensor, *args: object, **kwargs: object) -> object:
        self.calls += 1
        time.sleep(2 * meta_memo.WORTH_S)
        return self.result if self.result is not None else torch.empty(x.shape[0], 3, device=x.device).t()

    def __hash__(self) -> int:
        return id(self)


def test_a_repeated_slow_call_runs_once_and_keeps_shape_strides_and_dtype() -> None:
    memo, slow = MetaMemo(), Slow()
    x = torch.empty(5, 4, device="meta")
    first = memo(slow, (x, 2), {"mode": "a"})
    again = memo(slow, (torch.empty(5, 4, device="meta"), 2), {"mode": "a"})
    assert slow.calls == 1
    assert again is not first and again.shape == first.shape and again.stride() == first.stride()
    assert again.dtype == first.dtype and again.device.type == "meta"
    memo(slow, (torch.empty(6, 4, device="meta"), 2), {"mode": "a"})         # another shape
    memo(slow, (x, 3), {"mode": "a"})                                         # another argument
    memo(slow, (x, 2), {"mode": "b"})
    memo(slow, (x.t(), 2), {"mode": "a"})                                     # other strides
    assert slow.calls == 5


@pytest.mark.parametrize("kwargs", [{"inplace": True}, {"out": None}])
def test_calls_that_may_write_run_every_time(kwargs: dict[str, object]) -> None:
    memo, slow = MetaMemo(), Slow()
    x = torch.empty(5, 4, device="meta")
    for _ in range(3):
        memo(slow, (x,), kwargs)
    assert slow.calls == 3


def test_a_result_that_is_an_argument_cpu_tensors_and_unknown_arguments_run_every_time() -> None:
    x = torch.empty(5, 4, device="meta")
    memo, same = MetaMemo(), Slow(result=x)
    assert all(memo(same, (x,), {}) is x for _ in range(2)) and same.calls == 2
    memo, slow = MetaMemo(), Slow()
    for _ in range(2):
        memo(slow, (torch.empty(5, 4),), {})
        memo(slow, (x, object()), {})
    assert slow.calls == 4


def test_fast_functions_are_not_described(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meta_memo, "WORTH_S", math.inf)      # every function counts as fast
    memo, x = MetaMemo(), torch.empty(2, 3, device="meta")
    memo(torch.relu, (x,), {})
    assert torch.relu in memo._fast and not memo._known


def _repeated_blocks() -> tuple[torch.nn.Module, keras.Model]:
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear, self.norm = torch.nn.Linear(16, 16), torch.nn.LayerNorm(16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.nn.functional.gelu(self.norm(self.linear(x)))

    torch_model = torch.nn.Sequential(*[Block() for _ in range(3)], torch.nn.Linear(16, 4))
    inputs = keras.Input((16,))
    x = inputs
    for _ in range(3):
        x = keras.layers.Add()([x, keras.layers.Activation("gelu")(
            keras.layers.LayerNormalization(epsilon=1e-5)(keras.layers.Dense(16)(x)))])
    return torch_model, keras.Model(inputs, keras.layers.Dense(4)(x))


def test_the_meta_trace_pairs_as_the_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated residual blocks traced on meta (memoised) and on real inputs give the same canonical order,
    and the transferred models agree."""
    torch_model, keras_model = _repeated_blocks()
    orders = []
    for threshold in (0, 10**9):
        monkeypatch.setattr(graph, "META_FROM", threshold)
        units = [m for m in torch_model.modules() if isinstance(m, torch.nn.Linear | torch.nn.LayerNorm)]
        traced = graph.torch_graph(torch_model, units, [torch.randn(2, 16).numpy()])
        orders.append([id(m) for m, _ in traced.canonical_units()])
        report = conformance.transfer_weights(torch_model, keras_model)
        assert report.pairing.startswith("graph"), report.pairing
    assert orders[0] == orders[1]
    x = torch.randn(3, 16)
    with torch.no_grad():
        expected = torch_model(x).numpy()
    assert abs(keras_model(x.numpy()).numpy() - expected).max() < 1e-4

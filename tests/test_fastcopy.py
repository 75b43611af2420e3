"""The transfer's fast path (conformance/fastcopy.py), both directions, both transpose engines.

Each test runs with TensorFlow's transpose (what oneDNN-on machines use) and with the blocked
tiles (oneDNN off), whatever this machine has, by forcing the choice. The written weights must
equal NumPy's rearrangement exactly and must never share memory with the source: changing the
source afterwards leaves the destination as it was.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

import conformance
from conformance import blockcopy, fastcopy
from conformance.layout import Layout


@pytest.fixture(params=["tensorflow", "tiles"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(fastcopy, "tensorflow_onednn", lambda: request.param == "tensorflow")
    monkeypatch.setattr(blockcopy, "TILE_BYTES", 1 << 10)      # many tiles and both threads even on small weights
    monkeypatch.setattr(blockcopy, "PARALLEL_FROM", 1 << 10)
    blockcopy._blocks.cache_clear()
    yield request.param
    blockcopy._blocks.cache_clear()


RULES = [("O I -> I O", (37, 23), {}), ("O I H W -> H W I O", (6, 5, 3, 2), {}),
         ("O (C H W) -> (H W C) O", (11, 4 * 3 * 5), {"C": 4, "H": 3}), ("C -> C", (19,), {})]


def _torch(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype))


@pytest.mark.parametrize(("rule", "shape", "sizes"), RULES)
def test_torch_to_keras_is_exact_and_unaliased(rule: str, shape: tuple[int, ...], sizes: dict[str, int],
                                               engine: str) -> None:
    tensor = _torch(shape)
    plan = Layout(rule).plan(shape, **sizes)
    variable = keras.Variable(np.zeros(plan.result, np.float32))
    fastcopy.write_keras(variable, tensor, plan)
    expected = plan.apply(tensor.detach().numpy().copy())
    np.testing.assert_array_equal(variable.numpy(), expected)
    with torch.no_grad():
        tensor.add_(1.0)                                       # the source changes after the transfer
    np.testing.assert_array_equal(variable.numpy(), expected)


@pytest.mark.parametrize(("rule", "shape", "sizes"), RULES)
def test_keras_to_torch_is_exact_and_unaliased(rule: str, shape: tuple[int, ...], sizes: dict[str, int],
                                               engine: str) -> None:
    layout = Layout(rule)
    plan = layout.plan(shape, **sizes)
    source = np.random.default_rng(1).standard_normal(plan.result).astype(np.float32)
    variable = keras.Variable(source)
    tensor = _torch(shape)
    fastcopy.write_torch(tensor, variable, layout.inverse.plan(plan.result, **sizes))
    np.testing.assert_array_equal(tensor.detach().numpy(), layout.invert(source, **sizes))
    written = tensor.detach().numpy().copy()
    with torch.no_grad():
        tensor.mul_(2.0)                                       # the destination changes without the source
    np.testing.assert_array_equal(variable.numpy(), source)
    variable.assign(source + 1.0)                              # and the source without the destination
    np.testing.assert_array_equal(tensor.detach().numpy(), written * 2.0)


def test_a_contiguous_torch_tensor_is_written_in_place(engine: str) -> None:
    """The blocked path writes torch's own memory, as copy_ would, and bumps the version counter."""
    tensor = _torch((8, 6))
    pointer, version = tensor.data_ptr(), tensor._version
    plan = Layout("I O -> O I").plan((6, 8))
    fastcopy.write_torch(tensor, keras.Variable(np.ones((6, 8), np.float32)), plan)
    np.testing.assert_array_equal(tensor.detach().numpy(), np.ones((8, 6)))
    if engine == "tiles":
        assert tensor.data_ptr() == pointer and tensor._version > version


def test_a_non_contiguous_torch_tensor_adopts_a_fresh_buffer(engine: str) -> None:
    tensor = torch.nn.Parameter(torch.zeros(6, 8).t())       # (8, 6), not contiguous
    value = np.arange(48, dtype=np.float32).reshape(8, 6)
    fastcopy.write_torch(tensor, keras.Variable(value), None)
    np.testing.assert_array_equal(tensor.detach().numpy(), value)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_dtypes_numpy_lacks_or_that_are_wide_take_the_fast_path_both_ways(dtype: str, engine: str) -> None:
    tensor = _torch((7, 5, 3, 3), getattr(torch, dtype))
    plan = Layout("O I H W -> H W I O").plan((7, 5, 3, 3))
    variable = keras.Variable(np.zeros(plan.result), dtype=dtype)
    fastcopy.write_keras(variable, tensor, plan)
    as_float = tensor.detach().float().numpy()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.cast(variable, "float32")),
                                  plan.apply(as_float))
    back = _torch((7, 5, 3, 3), getattr(torch, dtype), seed=5)
    fastcopy.write_torch(back, variable, Layout("O I H W -> H W I O").inverse.plan(plan.result))
    assert torch.equal(back, tensor)


def test_different_dtypes_on_the_two_sides_take_the_numpy_route(engine: str) -> None:
    """float64 torch against a float32 variable: converted, transposed by the same tiles, never aliased."""
    tensor = _torch((9, 4), torch.float64)
    plan = Layout("O I -> I O").plan((9, 4))
    variable = keras.Variable(np.zeros((4, 9), np.float32))
    fastcopy.write_keras(variable, tensor, plan)
    np.testing.assert_allclose(variable.numpy(), tensor.detach().numpy().T.astype(np.float32))
    fastcopy.write_torch(tensor, keras.Variable(np.full((4, 9), 2.0, np.float32)),
                         Layout("O I -> I O").inverse.plan((4, 9)))
    assert tensor.dtype == torch.float64 and torch.equal(tensor.detach(), torch.full((9, 4), 2.0, dtype=torch.float64))


def test_a_flatten_dense_model_round_trips_through_transfer_weights(engine: str) -> None:
    """The VGG-head reorder at a small scale, end to end: outputs agree, and a round trip is exact."""
    torch_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 4, 5))
    keras_model = keras.Sequential([keras.Input((3, 4, 6)), keras.layers.Flatten(), keras.layers.Dense(5)])
    report = conformance.transfer_weights(torch_model, keras_model)
    assert "(H W C) O" in str(report)
    x = np.random.default_rng(2).standard_normal((2, 6, 3, 4)).astype(np.float32)
    expected = torch_model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(keras_model(x.transpose(0, 2, 3, 1)).numpy(), expected, rtol=1e-5, atol=1e-5)
    before = {k: v.clone() for k, v in torch_model.state_dict().items()}
    with torch.no_grad():
        for p in torch_model.parameters():
            p.zero_()
    conformance.transfer_weights(keras_model, torch_model)
    assert all(torch.equal(before[k], v) for k, v in torch_model.state_dict().items())


def test_reused_memory_never_aliases_a_live_keras_variable(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch->Keras buffers come from empty()'s pool. Transferred again and again into two models (one still
    holding its buffers while the other's are released and reused), every variable keeps its own values
    and its own memory."""
    monkeypatch.setattr(blockcopy, "HUGE_FROM", 1 << 12)       # small weights take the pooled route too
    torch_models = [torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.Linear(48, 32)) for _ in range(3)]
    keras_models = [keras.Sequential([keras.Input((64,)), keras.layers.Dense(48), keras.layers.Dense(32)])
                    for _ in range(2)]
    last: dict[int, int] = {}
    for step in range(7):
        last[step % 2] = step % 3
        conformance.transfer_weights(torch_models[step % 3], keras_models[step % 2])
        for k, t in last.items():
            kernels = [w.numpy() for w in keras_models[k].weights[::2]]
            expected = [p.detach().numpy().T for p in torch_models[t].parameters() if p.ndim == 2]
            assert all(np.array_equal(a, b) for a, b in zip(kernels, expected, strict=True)), (step, k, t)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        from torch.utils import dlpack
        addresses = [dlpack.from_dlpack(tf.experimental.dlpack.to_dlpack(tf.convert_to_tensor(w.value)))
                     .data_ptr() for m in keras_models for w in m.weights]
        assert len(set(addresses)) == len(addresses)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's assign op")
def test_a_plain_variable_is_assigned_by_tensorflows_op_and_anything_else_by_keras(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast route skips Keras's assign (a third of a conv stack's transfer) only for a plain
    TensorFlow variable outside a stateless scope; in one, Keras collects the update and the variable
    keeps its values, as Keras's own assign would have it."""
    tensor = _torch((7, 5))
    plan = Layout("O I -> I O").plan((7, 5))
    variable = keras.Variable(np.zeros((5, 7), np.float32))
    calls: list[object] = []
    original = type(variable).assign
    monkeypatch.setattr(type(variable), "assign", lambda self, value: calls.append(value) or original(self, value))
    fastcopy.write_keras(variable, tensor, plan)
    np.testing.assert_array_equal(variable.numpy(), tensor.detach().numpy().T)
    assert calls == []
    with keras.StatelessScope() as scope:
        fastcopy.write_keras(variable, tensor * 2, plan)
    assert len(calls) == 1
    np.testing.assert_array_equal(variable.numpy(), tensor.detach().numpy().T)        # unchanged
    np.testing.assert_array_equal(np.asarray(scope.get_current_value(variable)), 2 * tensor.detach().numpy().T)

"""The cache-blocked transpose every weight transfer goes through (conformance/blockcopy.py).

Compared with NumPy's own transpose on shapes that do not divide into tiles, empty and 1-row
arrays, 3-D and 4-D permutations, dtypes NumPy moves as raw words, and a tile size forced small
so that even small arrays are cut into many tiles split between threads. Every test runs twice:
through the compiled copy loop (conformance/_permute.c) and through the NumPy tiles it falls back
to where the package was installed without a C compiler.
"""

from __future__ import annotations

import itertools
import os
import signal
import time

import numpy as np
import pytest

from conformance import blockcopy


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def copy_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The compiled loop, or the NumPy tiles (the compiled module hidden, as in a build without a compiler)."""
    if request.param == "numpy":
        monkeypatch.setattr(blockcopy, "_native", None)
    elif blockcopy._native is None:
        pytest.skip("conformance._permute was not compiled in this install")
    return str(request.param)


def test_the_compiled_loop_is_built_where_ci_requires_it() -> None:
    """tox sets CONFORMANCE_REQUIRE_COMPILED: there a failed build must not pass unseen as skips."""
    if os.environ.get("CONFORMANCE_REQUIRE_COMPILED") != "1":
        pytest.skip("CONFORMANCE_REQUIRE_COMPILED is not set")
    import importlib
    try:
        importlib.import_module("conformance._permute")
    except ImportError as exc:
        pytest.fail(f"conformance._permute did not build (is a C compiler installed?): {exc}")


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch):
    """Tiles of 1 KB and threads from 1 KB: a few hundred tiles, shared between threads, on small arrays."""
    monkeypatch.setattr(blockcopy, "NATIVE_RUN", 8)
    monkeypatch.setattr(blockcopy, "TILE_BYTES", 1 << 10)
    monkeypatch.setattr(blockcopy, "INNER", 4)
    monkeypatch.setattr(blockcopy, "PARALLEL_FROM", 1 << 10)
    blockcopy._blocks.cache_clear()
    yield
    blockcopy._blocks.cache_clear()


def _check(source: np.ndarray, perm: tuple[int, ...]) -> None:
    out = blockcopy.permuted(source, perm)
    expected = source.transpose(perm)
    assert out.shape == expected.shape and out.dtype == source.dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)
    assert not np.shares_memory(out, source)


def _data(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    return np.random.default_rng(sum(shape) + len(shape)).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (1, 1), (67, 130), (130, 67), (300, 1100), (0, 5), (5, 0)])
def test_two_dimensional_transposes_match_numpy(shape: tuple[int, int], tiles: str,
                                                request: pytest.FixtureRequest) -> None:
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    _check(_data(shape), (1, 0))


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_every_three_axis_permutation(perm: tuple[int, ...], small_tiles: None) -> None:
    _check(_data((5, 67, 3)), perm)        # 5 and 3 are short axes that go innermost, 67 is no tile multiple


@pytest.mark.parametrize("perm", [(3, 2, 1, 0), (0, 2, 3, 1), (2, 0, 3, 1), (1, 0, 2, 3)])
def test_four_axis_permutations(perm: tuple[int, ...], small_tiles: None) -> None:
    _check(_data((3, 17, 5, 11)), perm)


def test_the_flatten_dense_reorder_is_one_three_axis_pass(small_tiles: None) -> None:
    """``O (C H W) -> (H W C) O`` plans as (O, C, HW) -> (HW, C, O): the rows re-ordered and transposed at once."""
    from conformance.layout import Layout
    o, c, h, w = 9, 6, 5, 3
    kernel = _data((o, c * h * w))
    plan = Layout("O (C H W) -> (H W C) O").plan(kernel.shape, C=c, H=h)
    moved = blockcopy.permuted(kernel.reshape(plan.elementary), plan.perm).reshape(plan.result)
    np.testing.assert_array_equal(moved, kernel.reshape(o, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, o))


@pytest.mark.parametrize("dtype", ["float16", "float64", "int8", "bool", "complex64", "complex128", "uint16"])
def test_dtypes_move_as_raw_words(dtype: str, small_tiles: None) -> None:
    _check(_data((13, 9, 4), dtype), (2, 0, 1))


def test_identity_and_zero_dimensional_copies_are_copies(small_tiles: None) -> None:
    _check(_data((37, 5)), (0, 1))
    _check(np.array(3.5, np.float32), ())
    _check(_data((41,)), (0,))


def test_a_strided_source_is_read_correctly(small_tiles: None) -> None:
    base = _data((40, 30))
    _check(base[::3, 1::2], (1, 0))


def test_blocks_hold_whole_cache_lines_and_fit_the_budget() -> None:
    for shape, perm in [((2900, 2900), (1, 0)), ((4096, 512, 49), (2, 1, 0)), ((49, 512, 4096), (2, 1, 0)),
                        ((512, 512, 9), (2, 1, 0)), ((3, 5), (1, 0))]:
        blocks = blockcopy._blocks(shape, perm, 4)
        assert all(1 <= b <= n for b, n in zip(blocks, shape, strict=True))
        assert np.prod(blocks) * 4 <= max(blockcopy.TILE_BYTES, 4 * np.prod([min(n, 64) for n in shape]))
        for axis in (len(shape) - 1, perm[-1]):
            assert blocks[axis] >= min(shape[axis], blockcopy.INNER), (shape, perm, blocks)


def test_bad_arguments_are_refused() -> None:
    source = _data((4, 6))
    with pytest.raises(ValueError, match="not a permutation"):
        blockcopy.permute_into(source, (0, 0), np.empty((6, 4), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        blockcopy.permute_into(source, (1, 0), np.empty((5, 4), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        blockcopy.permute_into(source, (1, 0), np.empty((4, 12), np.float32)[:, ::2])


@pytest.mark.parametrize("nbytes", [0, 100, 8 << 20])
def test_empty_buffers_are_aligned_and_writable(nbytes: int) -> None:
    buffer = blockcopy.empty(nbytes)
    assert buffer.dtype == np.uint8 and buffer.size == nbytes and buffer.flags.writeable
    assert nbytes == 0 or buffer.ctypes.data % 64 == 0   # TensorFlow copies a DLPack buffer not 64-byte aligned
    buffer[:] = 7
    assert nbytes == 0 or int(buffer[-1]) == 7


def test_a_forked_child_gets_its_own_threads(small_tiles: None) -> None:
    """A pool inherited through fork has no threads; the child must not wait on it forever. (Whether an
    inherited pool hangs depends on how many of its threads were idle at the fork, so this guard
    catches the bug often, not always.)"""
    import multiprocessing
    import os
    if "fork" not in multiprocessing.get_all_start_methods() or blockcopy.threads() < 2:
        pytest.skip("needs fork and two usable CPUs")
    _check(_data((64, 48)), (1, 0))                  # the parent's pool now exists
    pid = os.fork()
    if pid == 0:                                     # the child: exit 0 only if the copy finishes and is right
        ok = False
        try:
            source = _data((64, 48))
            ok = bool(np.array_equal(blockcopy.permuted(source, (1, 0)), source.T))
        finally:
            os._exit(0 if ok else 1)
    for _ in range(600):                             # a hang guard, not a speed check: 60 s for a 12 KB copy
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child waited forever on its parent's thread pool")
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_compiled_plan_joins_a_short_axis_to_make_whole_runs() -> None:
    """A 3x3 kernel's nine taps are too short for 16-item runs: the input channels join them (group 1),
    and the tile takes the source side whole and the destination side in page-sized runs."""
    shape, itemsize = (512, 512, 9), 4
    src_strides = (512 * 9 * 4, 9 * 4, 4)
    dst_strides = (4, 512 * 4, 512 * 512 * 4)         # (O, I, HW) seen in an (HW, I, O) buffer
    plan = blockcopy._native_plan(shape, src_strides, dst_strides, itemsize)
    assert plan is not None
    blocks, groups = plan
    assert groups == (2, 1, 1)
    assert blocks == (min(512, blockcopy.NATIVE_RUN), 512, 9)
    assert blockcopy._native_plan((4, 6), (24, 4), (24, 4), 4) is None       # no axis moves: a plain copy


def test_the_compiled_loop_refuses_bad_arguments(copy_loop: str) -> None:
    if copy_loop != "compiled":
        pytest.skip("the compiled loop's own checks")
    native = blockcopy._native
    a = np.zeros(4, np.float32)
    good = (a.ctypes.data, a.ctypes.data, 4, (2, 2), (8, 4), (4, 8), (2, 2), (2, 1))
    with pytest.raises(ValueError, match="item size"):
        native.permute(*good[:2], 3, *good[3:], 0, 1)
    with pytest.raises(ValueError, match="outside"):
        native.permute(*good, 0, 2)
    with pytest.raises(ValueError, match="rank"):
        native.permute(*good[:3], (), (), (), (), (), 0, 0)
    with pytest.raises(ValueError, match="wrong length"):
        native.permute(*good[:3], (2, 2), (8,), (4, 8), (2, 2), (2, 1), 0, 1)


def test_a_released_buffer_is_reused_and_a_held_one_never_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """empty()'s pool: a large buffer's memory comes back when the last view of it dies (TensorFlow dropping
    an adopted buffer), and the next buffer of about its size reuses it; while any view lives, never."""
    monkeypatch.setattr(blockcopy, "_pooled", [])
    nbytes = blockcopy.HUGE_FROM + 12344
    first = blockcopy.empty(nbytes)
    view = first.view(np.float32)[::2]            # a derived view keeps the memory, as torch.from_numpy would
    address = first.ctypes.data
    del first
    second = blockcopy.empty(nbytes)
    assert second.ctypes.data != address, "a buffer still viewed was handed out again"
    del view
    third = blockcopy.empty(nbytes - 1000)
    assert third.ctypes.data == address and third.size == nbytes - 1000 and third.ctypes.data % 64 == 0
    del second, third
    assert len(blockcopy._pooled) == 2
    assert blockcopy.empty(4 * nbytes).ctypes.data != address     # more than twice too small: a fresh mapping


def test_the_pool_keeps_at_most_pool_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockcopy, "_pooled", [])
    monkeypatch.setattr(blockcopy, "POOL_BYTES", 3 * blockcopy.HUGE_FROM)
    buffers = [blockcopy.empty(blockcopy.HUGE_FROM) for _ in range(4)]
    del buffers
    assert len(blockcopy._pooled) >= 1 and sum(map(len, blockcopy._pooled)) <= blockcopy.POOL_BYTES
    monkeypatch.setattr(blockcopy, "POOL_BYTES", 0)
    blockcopy.empty(blockcopy.HUGE_FROM)      # taken from the pool and released into one that keeps nothing
    assert sum(map(len, blockcopy._pooled)) <= 2 * blockcopy.HUGE_FROM

"""A cache-blocked transpose into a buffer the caller chooses, on every CPU core it may use.

Why not ``tf.transpose`` or ``a.T.copy()``: a layout change reads every byte once and writes it
once, like a memcpy, but a naive transpose walks one side with a large stride, so every element
read or written pulls a new cache line (NumPy's ``ascontiguousarray(a.T)`` of the 411 MB VGG
Flatten->Dense kernel took 24-34x a memcpy; ``torch.permute().contiguous()`` 34-42x). Cut into
tiles of about 256 KB, every cache line a tile touches is used whole while it is in cache, and
the tiles are shared between threads (NumPy's copy releases the GIL).

The second cost is memory that has never been touched: a fresh buffer the size of a weight
page-faults on first write, and on a virtual machine with 4 KB pages that cost 3-7x a memcpy of
the same bytes by itself (measured on the AVX-512 development machine). Hence :func:`empty` asks
the kernel for huge pages where it can, and the transfer writes a torch destination in place
(no fresh memory at all). Measured candidates are in ``benchmarks/transpose_candidates.py`` and
the README's transfer-speed section.

Every routine works on raw bytes (any dtype of 1, 2, 4 or 8 bytes is moved as an unsigned
integer), so bfloat16 and float16 take the same path as float32.
"""

from __future__ import annotations

import itertools
import math
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

try:       # compiled when the package is installed (pyproject.toml, ext-modules); absent, NumPy tiles copy
    from . import _permute as _native
except ImportError:                                  # pragma: no cover - a build without a C compiler
    _native = None

# Destination run per tile of the compiled path: 1 KB of float32. Interleaved on the VGG and dense
# shapes, 256 beat 64 and 1024-4096 (by 10-20%) and 16 by 3x.
NATIVE_RUN = 256
NATIVE_REACH = 256              # items: how far a group of axes is joined to make whole 16-item runs
TILE_BYTES = 256 << 10          # a tile's bytes: both sides of a tile fit a core's 2 MB L2 with room to spare
INNER = 64                      # at least this many elements along each side's contiguous axis: whole cache lines
HUGE_PAGE = 2 << 20
HUGE_FROM = 4 << 20             # smaller buffers come from the heap, which reuses warm memory
POOL_BYTES = 1 << 30          # released huge-page memory kept for reuse
PARALLEL_FROM = 1 << 20         # below a MB, a second thread costs more than it saves

_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def words(array: np.ndarray) -> np.ndarray:
    """``array`` viewed as unsigned integers of its item size (no copy), so that any dtype moves alike."""
    return array.view(_WORDS[array.dtype.itemsize])


def compiled() -> str | None:
    """The compiled copy loop's block kernel ("avx2", "sse2", "scalar"), or None where it was not built."""
    return None if _native is None else str(_native.KERNEL)


def movable(itemsize: int) -> bool:
    return itemsize in _WORDS


def threads() -> int:
    """The cores this process may run on (its affinity, not the machine's count), at most 8."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:     # not Linux
        return max(1, min(8, os.cpu_count() or 1))


@cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One pool per process: a pool inherited through fork has no threads, and can wait forever."""
    return ThreadPoolExecutor(workers, thread_name_prefix="conformance-blockcopy")


def empty(nbytes: int) -> np.ndarray:
    """A writable, 64-byte aligned uint8 buffer; from huge pages when it is large and the OS offers them.

    A buffer handed to TensorFlow is adopted, not copied, so this one cannot be written again while
    anything holds it. Fresh memory page-faults on first write (huge pages cut that 512-fold, but the
    kernel still zeroes every page: 1-2x a memcpy on the development VM), so a large buffer's memory
    goes back to a small pool when the last view of it dies (TensorFlow drops an adopted buffer when
    its variable is next assigned or freed), and the next buffer of about its size reuses it,
    already mapped: a model transferred again (the gate, a benchmark, a training loop that syncs
    weights) pays no page faults.
    """
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_FROM or advice is None:
        import torch  # torch's allocator aligns to 64 bytes; NumPy's only to 16, which TensorFlow would copy
        return torch.empty(nbytes, dtype=torch.uint8).numpy()
    region = _region(nbytes + HUGE_PAGE, advice)
    whole = np.frombuffer(region, dtype=np.uint8)   # every view handed out keeps this array alive, and it the region
    finalizer = weakref.finalize(whole, _released, region)
    finalizer.atexit = False
    start = -whole.ctypes.data % HUGE_PAGE
    return whole[start:start + nbytes]


_pooled: list[mmap.mmap] = []     # released regions, smallest first, at most POOL_BYTES in all
_pool_lock = threading.RLock()    # released by the garbage collector: on any thread, even inside _region


def _region(nbytes: int, advice: int) -> mmap.mmap:
    """A mapping of at least ``nbytes``: a released one at most twice that size, else a new one."""
    with _pool_lock:
        for index, region in enumerate(_pooled):
            if nbytes <= len(region) <= 2 * nbytes:
                return _pooled.pop(index)
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(advice)
    return region


def _released(region: mmap.mmap) -> None:
    """Keep ``region`` for reuse. Its pages are marked free (MADV_FREE): the OS takes them back if it
    runs short of memory (they read as zeros then, and every buffer is written whole), and they stay
    mapped otherwise. The largest regions leave the pool first when it holds more than POOL_BYTES."""
    lazy = getattr(mmap, "MADV_FREE", None)
    if lazy is not None:
        region.madvise(lazy)
    with _pool_lock:
        _pooled.append(region)
        _pooled.sort(key=len)
        while sum(map(len, _pooled)) > POOL_BYTES:
            _pooled.pop()


def _pages(blocks: Sequence[int], strides: Sequence[int], itemsize: int) -> int:
    """About how many 4 KB pages one side of a tile touches: axes whose stride is a page or more
    multiply, the rest make one run of bytes."""
    pages, run = 1, 1
    for block, stride in zip(blocks, strides, strict=True):
        if stride * itemsize >= 4096:
            pages *= block
        else:
            run += (block - 1) * stride
    return pages * -(-run * itemsize // 4096)


@cache
def _blocks(shape: tuple[int, ...], perm: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Tile extents per source axis: at most ``TILE_BYTES``, whole cache lines along both sides'
    contiguous axes, and of those the tile that touches the fewest pages per element moved (each
    page a tile touches costs a TLB entry, each tile a Python call, counted as 8 pages)."""
    rank = len(shape)
    src_strides = [math.prod(shape[a + 1:]) for a in range(rank)]
    out_shape = [shape[p] for p in perm]
    out_strides = [0] * rank
    for position, axis in enumerate(perm):
        out_strides[axis] = math.prod(out_shape[position + 1:])
    floor = [min(n, INNER) if a in (rank - 1, perm[-1]) else 1 for a, n in enumerate(shape)]
    options = [sorted({n} | {1 << k for k in range(n.bit_length()) if floor[a] <= 1 << k < n})
               for a, n in enumerate(shape)]
    budget = max(1, TILE_BYTES // itemsize)
    best: tuple[float, tuple[int, ...]] = (math.inf, tuple(floor))
    for blocks in itertools.product(*options):
        elements = math.prod(blocks)
        if elements > budget and blocks != tuple(floor):
            continue
        cost = (_pages(blocks, src_strides, itemsize) + _pages(blocks, out_strides, itemsize) + 8) / elements
        best = min(best, (cost, blocks))
    return best[1]


def _shared(run: Callable[[int, int], None], count: int, nbytes: int) -> None:
    """``run(first, last)`` over ``range(count)``, in even contiguous shares on :func:`threads` threads
    when ``nbytes`` are enough to gain from them, else at once on this thread."""
    workers = min(threads(), count) if nbytes >= PARALLEL_FROM else 1
    if workers <= 1:
        run(0, count)
        return
    share = math.ceil(count / workers)
    pool = _pool(workers, os.getpid())
    for future in [pool.submit(run, i, min(count, i + share)) for i in range(0, count, share)]:
        future.result()


def _native_plan(shape: Sequence[int], src_strides: Sequence[int], dst_strides: Sequence[int],
                 itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(tile blocks, axis groups) for the compiled copy of a transposing permutation, else None.

    Group 1 (R) is the source's contiguous axis joined with the axes just outside it while they run on
    contiguously and are short (a 3x3 kernel's nine taps with its input channels); group 2 (Q) the
    same for the destination; the rest are looped over. The compiled loop moves 16 x 16 blocks of
    (R, Q), and sweeps a whole tile's Q for each block of R: each destination run is written as one
    sequential stream, and each source line is read again, from cache, by the next block of R. So a
    tile takes R whole and Q in runs of :data:`NATIVE_RUN` items: the source rows a sweep touches
    (one page each at worst) stay within the TLB's reach.
    """
    axes = [a for a in range(len(shape)) if shape[a] > 1]
    r_order = sorted(axes, key=lambda a: abs(src_strides[a]))
    q_order = sorted(axes, key=lambda a: abs(dst_strides[a]))
    if len(axes) < 2 or r_order[0] == q_order[0] or src_strides[r_order[0]] != itemsize \
            or dst_strides[q_order[0]] != itemsize:
        return None
    groups = [0] * len(shape)
    groups[q_order[0]] = 2

    def join(order: list[int], strides: Sequence[int], mark: int) -> None:
        span = 1
        for axis in order:
            if groups[axis] not in (0, mark) or strides[axis] != span * itemsize or span >= NATIVE_REACH:
                return
            groups[axis] = mark
            span *= shape[axis]

    join(r_order, src_strides, 1)
    join(q_order, dst_strides, 2)
    blocks = [n if groups[a] == 1 else 1 for a, n in enumerate(shape)]
    span = 1
    for axis in (a for a in q_order if groups[a] == 2):
        blocks[axis] = min(shape[axis], max(1, NATIVE_RUN // span))
        span *= blocks[axis]
    return tuple(blocks), tuple(groups)


def _native_copy(source: np.ndarray, target: np.ndarray) -> bool:
    """Copy ``source`` into ``target`` (the same shape, any strides) by the compiled loop, on
    :func:`threads` threads when it is large; False where that path does not apply."""
    itemsize = source.dtype.itemsize
    if _native is None or itemsize not in _WORDS or source.ndim > 16:
        return False
    plan = _native_plan(source.shape, source.strides, target.strides, itemsize)
    if plan is None:
        return False
    blocks, groups = plan
    count = math.prod(-(-n // b) for n, b in zip(source.shape, blocks, strict=True))
    args = (source.ctypes.data, target.ctypes.data, itemsize, source.shape, source.strides, target.strides,
            blocks, groups)
    _shared(lambda first, last: _native.permute(*args, first, last), count, source.nbytes)
    return True


def _tiles(shape: Sequence[int], blocks: Sequence[int]) -> list[tuple[slice, ...]]:
    starts = np.stack(np.meshgrid(*[np.arange(0, n, b) for n, b in zip(shape, blocks, strict=True)],
                                  indexing="ij"), axis=-1).reshape(-1, len(shape))
    return [tuple(slice(s, s + b) for s, b in zip(row, blocks, strict=True)) for row in starts.tolist()]


def permute_into(source: np.ndarray, perm: Sequence[int], out: np.ndarray) -> None:
    """Write ``source.transpose(perm)`` into the C-contiguous ``out`` (any shape of the same size).

    ``source`` may be any strided array; the two must not overlap. Tiles are split evenly between
    :func:`threads` threads when the copy is large enough to gain from them.
    """
    perm = tuple(perm)
    if sorted(perm) != list(range(source.ndim)):
        raise ValueError(f"permute_into: {perm} is not a permutation of {source.ndim} axes")
    target_shape = tuple(source.shape[p] for p in perm)
    if not out.flags.c_contiguous or out.size != source.size or out.dtype.itemsize != source.dtype.itemsize:
        raise ValueError(f"permute_into: out {out.shape} {out.dtype} does not fit {target_shape} {source.dtype}")
    if source.size == 0:
        return
    if out.dtype != source.dtype and movable(out.dtype.itemsize):
        source, out = words(source), words(out)
    target = out.reshape(target_shape).transpose(np.argsort(perm))   # ``out`` seen in the source's axis order
    if source.ndim == 0:
        np.copyto(target, source, casting="no")
        return
    if _native_copy(source, target):
        return
    if perm == tuple(range(source.ndim)):     # a plain copy: slabs of whole rows, one run per slab
        step = max(1, -(-len(source) // 8))
        tiles: list[tuple[slice, ...]] = [(slice(start, start + step),) for start in range(0, len(source), step)]
    else:
        tiles = _tiles(source.shape, _blocks(tuple(source.shape), perm, source.dtype.itemsize))

    def run(first: int, last: int) -> None:
        for tile in tiles[first:last]:
            np.copyto(target[tile], source[tile], casting="no")

    _shared(run, len(tiles), source.nbytes)


def permuted(source: np.ndarray, perm: Sequence[int]) -> np.ndarray:
    """A new C-contiguous array holding ``source.transpose(perm)`` (never a view of ``source``)."""
    out = np.empty(source.shape, source.dtype) if source.dtype.hasobject else empty(source.nbytes).view(source.dtype)
    out = out.reshape(tuple(source.shape[p] for p in perm))
    permute_into(source, perm, out)
    return out

"""The candidates for the transfer's layout change, timed against a memcpy of the same bytes.

Why this script exists: conformance/fastcopy.py picks its transpose by measurement, and the
choice depends on the machine (oneDNN on or off, how many cores). Each candidate writes the
weight shapes of benchmarks/transfer_ratio.py's stacks in both directions; the runs are
interleaved round by round and the best of each is kept, so that a busy machine slows every
candidate alike. "blockcopy" is the compiled copy loop where it was built (the machine line
says which), "NumPy tiles" the fallback of a build without a C compiler. "warm" writes into
memory written before (as the transfer does into a torch tensor), "fresh" into new memory (as
TensorFlow's transpose and a Keras destination must).
Run: python benchmarks/transpose_candidates.py [--repeat 5]; taskset -c 0 for one core.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch  # torch before TensorFlow: the other order has crashed

# isort: split
import tensorflow as tf

from conformance import blockcopy

sys.path.insert(0, str(Path(__file__).parent))
import transfer_ratio  # noqa: E402

SHAPES = {"dense 2900x2900": ((2900, 2900), (1, 0)),
          "conv O,I,HW -> HW,I,O": ((512, 512, 9), (2, 1, 0)), "conv back": ((9, 512, 512), (2, 1, 0)),
          "VGG O,C,HW -> HW,C,O": ((4096, 512, 49), (2, 1, 0)), "VGG back": ((49, 512, 4096), (2, 1, 0))}


def candidates(x: np.ndarray, perm: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    out = np.empty(tuple(x.shape[p] for p in perm), x.dtype)
    copy = np.empty_like(x)
    constant = tf.constant(x)
    one_core = blockcopy.threads() == 1

    def tiles(workers: int, compiled: bool = True) -> Callable[[], object]:
        def run() -> None:
            saved, native = blockcopy.threads, blockcopy._native
            blockcopy.threads = lambda: workers       # type: ignore[assignment]
            if not compiled:
                blockcopy._native = None
            try:
                blockcopy.permute_into(x, perm, out)
            finally:
                blockcopy.threads, blockcopy._native = saved, native    # type: ignore[assignment]
        return run

    found: dict[str, Callable[[], object]] = {
        "memcpy (warm)": lambda: np.copyto(copy, x),
        "tf.transpose (fresh)": lambda: tf.transpose(constant, perm).shape,
        "blockcopy, 1 thread (warm)": tiles(1),
        "blockcopy, fresh huge pages": lambda: blockcopy.permuted(x, perm),
    }
    if not one_core:
        found["blockcopy, all cores (warm)"] = tiles(blockcopy.threads())
    if blockcopy.compiled():     # what a build without a C compiler copies with
        found["NumPy tiles, 1 thread (warm)"] = tiles(1, compiled=False)
    if x.ndim == 2:     # TensorIterator's copy of a permuted 3-D view took seconds at VGG scale
        target, source = torch.from_numpy(out), torch.from_numpy(x).permute(*perm)
        found["torch copy_ (warm)"] = lambda: target.copy_(source)
        found["numpy ascontiguousarray(a.T) (fresh)"] = lambda: np.ascontiguousarray(x.transpose(perm))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(transfer_ratio.machine_line())
    for name, (shape, perm) in SHAPES.items():
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        best = transfer_ratio.interleaved_best(candidates(x, perm), args.repeat)
        memcpy = best["memcpy (warm)"]
        print(f"{name} ({x.nbytes / 1e6:.0f} MB, memcpy {memcpy * 1e3:.1f} ms):")
        for key, seconds in best.items():
            print(f"    {key:38s} {seconds / memcpy:6.2f}x")


if __name__ == "__main__":
    main()

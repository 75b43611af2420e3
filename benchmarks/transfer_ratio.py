"""How long transfer_weights takes on >= 100 MB models, as a ratio to a memcpy of the same bytes.

The physical limit is one read and one write of every byte, which is what a memcpy does. All are
timed in this process, taking turns round by round, best of several rounds, so that the ratio
depends neither on the machine's speed nor on a slow spell that hits one of them alone. Each stack
is reported whole (transfer_weights, which also pairs the layers by tracing the torch model) and for
its writes alone (the bytes moved, what conformance/fastcopy.py controls), in both directions, with
the ISA and whether TensorFlow runs oneDNN. The third stack is VGG16's Flatten->Dense head, whose
row reorder dominated a whole VGG16 transfer.
Run: python benchmarks/transfer_ratio.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch  # torch before TensorFlow: the other order has crashed

# isort: split
import keras

import conformance
from conformance import blockcopy, transfer
from conformance.facts import scope_facts


def dense_stack(width: int = 2900, depth: int = 4) -> tuple[torch.nn.Module, keras.Model]:
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    model = keras.Sequential([keras.Input((width,))] + [keras.layers.Dense(width, activation="relu")
                                                        for _ in range(depth)])
    return torch.nn.Sequential(*layers), model


def conv_stack(channels: int = 512, depth: int = 11) -> tuple[torch.nn.Module, keras.Model]:
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU()]
    model = keras.Sequential([keras.Input((8, 8, channels))] + [keras.layers.Conv2D(channels, 3, padding="same",
                                                                                     activation="relu")
                                                                for _ in range(depth)])
    return torch.nn.Sequential(*layers), model


def flatten_dense(channels: int = 512, side: int = 7, width: int = 4096) -> tuple[torch.nn.Module, keras.Model]:
    """VGG16's first classifier layer: a 512x7x7 map flattened into a 25088x4096 Dense (411 MB).

    torch flattens C,H,W and Keras H,W,C, so the kernel's rows are re-ordered as well as
    transposed. On a VGG16 pair this one weight dominated the whole model's transfer.
    """
    torch_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * side * side, width))
    keras_model = keras.Sequential([keras.Input((side, side, channels)), keras.layers.Flatten(),
                                    keras.layers.Dense(width)])
    return torch_model, keras_model


def interleaved_best(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best seconds of each run over ``repeat`` rounds, the runs taking turns within a round, so that a
    shared machine's slow spells hit every candidate alike."""
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeat):
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: min(values) for key, values in times.items()}


def machine_line() -> str:
    """The ISA, oneDNN as resolved and the CPUs: every figure printed below depends on them."""
    facts = scope_facts()
    return (f"isa {facts['isa']}; oneDNN {'on, kernels up to ' + facts['onednn_isa'] if facts['onednn'] else 'off'}; "
            f"copy loop {blockcopy.compiled() or 'NumPy tiles (not compiled)'}; "
            f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; torch threads {torch.get_num_threads()}; "
            f"load {os.getloadavg()[0]:.1f}")


def writes_only(src: object, dst: object) -> Callable[[], None]:
    """The transfer's writes alone, planned once ahead: pairing the layers traces the torch model by
    running it, which on the conv stack costs more than moving its bytes and is not a copy."""
    to_keras = isinstance(src, torch.nn.Module)
    torch_model, keras_model = (src, dst) if to_keras else (dst, src)
    planned, _, _ = transfer._plan(torch_model, keras_model, to_keras)
    write = transfer.write_keras if to_keras else transfer.write_torch

    def run() -> None:
        with torch.no_grad():
            for one in planned:
                write(one.destination, one.source, one.plan)
    return run


def measure(name: str, torch_model: torch.nn.Module, keras_model: keras.Model, repeat: int) -> None:
    tensors = [p.detach().numpy() for p in torch_model.state_dict().values()]
    total = sum(t.nbytes for t in tensors)
    targets = [np.empty_like(t) for t in tensors]

    def memcpy() -> None:
        for src, dst in zip(tensors, targets, strict=True):
            np.copyto(dst, src)

    best = interleaved_best({"memcpy": memcpy,
                             "forward": lambda: conformance.transfer_weights(torch_model, keras_model),
                             "backward": lambda: conformance.transfer_weights(keras_model, torch_model),
                             "forward_writes": writes_only(torch_model, keras_model),
                             "backward_writes": writes_only(keras_model, torch_model)}, repeat)
    copy, forward, backward = best["memcpy"], best["forward"], best["backward"]
    forward_writes, backward_writes = best["forward_writes"], best["backward_writes"]
    print(f"{name}: {total / 1e6:.0f} MB; memcpy {copy * 1e3:.1f} ms; "
          f"torch->keras {forward * 1e3:.1f} ms ({forward / copy:.2f}x memcpy; writes alone "
          f"{forward_writes / copy:.2f}x); keras->torch {backward * 1e3:.1f} ms ({backward / copy:.2f}x memcpy; "
          f"writes alone {backward_writes / copy:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(machine_line())
    measure("dense stack", *dense_stack(), repeat=args.repeat)
    measure("conv stack", *conv_stack(), repeat=args.repeat)
    measure("flatten->dense (VGG)", *flatten_dense(), repeat=args.repeat)


if __name__ == "__main__":
    main()

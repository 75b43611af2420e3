"""Every training scenario the tests run, with its verdict, worst tensor, headroom and time.

Prints one line per scenario (the figures in the README's "Training across frameworks"), with the
environment facts that explain them: the CPU's ISA and whether TensorFlow's oneDNN is on. Run:
python benchmarks/training_scenarios.py   (and again with TF_ENABLE_ONEDNN_OPTS=0)
"""

from __future__ import annotations

import os
import time

import torch  # torch before TensorFlow: the other order has crashed

from conformance.training import run_scenario

RUNS = [
    ("batch_norm_training", dict(family="batch_norm1d", num_features=3, input_shape=(3,), steps=1)),
    ("batch_norm_training", dict(steps=1)),
    ("batch_norm_training", dict(steps=6)),
    ("batch_norm_training", dict(steps=6, correction=True)),
    ("batch_norm_training", dict(family="batch_norm3d", num_features=2, input_shape=(2, 3, 4, 5), batch=2,
                                 steps=6, correction=True)),
    ("batch_norm_training", dict(steps=3, keras_momentum_override=0.1)),
    ("optimizer_step", dict(optimizer="sgd", lr=0.1, steps=1)),
    ("optimizer_step", dict(optimizer="sgd", lr=0.1, momentum=0.9, steps=10)),
    ("optimizer_step", dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, steps=10, source="keras")),
    ("optimizer_step", dict(optimizer="sgd", lr=0.1, weight_decay=0.1, steps=10)),
    ("optimizer_step", dict(optimizer="adam", lr=1e-2, steps=1)),
    ("optimizer_step", dict(optimizer="adam", lr=1e-2, steps=10, source="keras")),
    ("optimizer_step", dict(optimizer="adam", lr=1e-2, amsgrad=True, steps=10)),
    ("optimizer_step", dict(optimizer="adamw", lr=1e-2, weight_decay=0.1, steps=10)),
    ("optimizer_step", dict(optimizer="adam", lr=1e-2, eps=1e-3, steps=10, epsilon="keras")),
    ("optimizer_step", dict(model="lenet", optimizer="adam", lr=1e-3, steps=1, epsilon="keras")),
    *[("fine_tune", dict(model=m, optimizer=o, source=s, correction=c))
      for m, c in (("lenet", False), ("residual_block", False), ("residual_block", True))
      for o in ("sgd", "adam") for s in ("torch", "keras")],
]


def main() -> None:
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
    print(f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, TF_ENABLE_ONEDNN_OPTS={onednn}")
    for name, params in RUNS:
        start = time.perf_counter()
        result = run_scenario(name, **params)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        print(f"{time.perf_counter() - start:5.1f}s  {name}({shown})\n        {result.summary()}")


if __name__ == "__main__":
    main()

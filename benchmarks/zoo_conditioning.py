"""Calibration evidence for conformance.conditioning: how many sigmas Keras's gradients sit from the
float64 twin, per tensor, for the zoo's train cases (``cases/zoo_train.toml``, or a file given).

Run: ``python benchmarks/zoo_conditioning.py [cases/zoo_train.toml] [-k substring]``, once per
environment (``TF_ENABLE_ONEDNN_OPTS=0/1``, ``ONEDNN_MAX_CPU_ISA``). Prints one JSON line per case and
direction: the largest ratio |keras - reference| / sigma over the input gradient and the weights
(what K must exceed), the same ratio for torch float32 against the Monte Carlo sigma alone (whether
the Monte Carlo draws model float32 well), the discrimination figures and the seconds taken.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch  # noqa: F401  (torch before TensorFlow)

from conformance import conditioning, runner
from conformance.cases import DIRECTIONS, load_file
from conformance.families.base import Tolerance
from conformance.gradients import Gradients, gradient_tolerance, keras_gradients, torch_gradients, weight_comparisons


def measure(case, direction: str) -> dict:
    clock = time.perf_counter()
    pair, memo = runner.pair_for(case)
    source = runner.randomized_source(pair, case, direction)
    runner._builtin_transfer(pair, source, direction, case.id, memo)
    inputs = list(pair.sample_inputs(case.seed, case.batch))
    state = {k: v.clone() for k, v in pair.torch.state_dict().items()}
    t32, rs = torch_gradients(pair.torch, inputs, case.seed)
    keras_side = keras_gradients(pair.keras, inputs, rs, bool(pair.channels_last))
    clock_ref = time.perf_counter()
    ref = conditioning.reference(pair.torch, inputs, rs, case.seed, t32)
    reference_seconds = time.perf_counter() - clock_ref
    # the Monte Carlo sigma alone: torch float32 left out of it
    zero = Gradients(ref.outputs, ref.inputs, ref.weights)
    mc = conditioning.reference(pair.torch, inputs, rs, case.seed, zero)
    pair.torch.load_state_dict(state)
    ref_side = Gradients(t32.outputs, ref.inputs, ref.weights)
    def in_sigmas(key: int) -> Tolerance:   # headroom = |keras - reference| / sigma
        return Tolerance(max(ref.weight_sigma.get(key, 0.0), 1e-30), 0.0)
    ratio = weight_comparisons(pair, direction, ref_side, keras_side, in_sigmas, memo.get("pairing"))
    keras_weights = max(c.comparison.headroom for c in ratio)
    keras_input = max(float(np.abs(k - r).max()) / max(s, 1e-30) for k, r, s in
                      zip(keras_side.inputs, ref.inputs, ref.input_sigma, strict=True) if r is not None)
    torch_mc = max(float(np.abs(t32.weights[k] - ref.weights[k]).max()) / max(mc.weight_sigma[k], 1e-30)
                   for k in ref.weights)
    problem, figures = conditioning.discrimination(ref)
    tolerance = gradient_tolerance(pair.family.tolerance(pair.params), sum(r.size for r in rs))
    return {"case": case.id, "direction": direction, "keras_sigmas_weights": round(keras_weights, 3),
            "keras_sigmas_input": round(keras_input, 3), "torch32_over_mc_sigma": round(torch_mc, 3),
            "worst_weight": max(ratio, key=lambda c: c.comparison.headroom).name,
            "plain_tolerance_atol": tolerance.atol, "problem": problem, **figures,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
            "reference_seconds": round(reference_seconds, 1), "seconds": round(time.perf_counter() - clock, 1)}


def main() -> None:
    args = sys.argv[1:]
    path = args[0] if args and not args[0].startswith("-") else "cases/zoo_train.toml"
    pick = args[args.index("-k") + 1] if "-k" in args else ""
    for case in load_file(path):
        if pick in case.id:
            for direction in DIRECTIONS:
                print(json.dumps(measure(case, direction)), flush=True)


if __name__ == "__main__":
    main()

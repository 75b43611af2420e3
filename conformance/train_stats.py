"""Training behaviour that is random, judged by statistics: dropout and attention dropout.

torch and Keras draw their dropout masks from different generators, so no element-wise comparison
can hold. What must hold is the distribution, and a wrong mapping moves it far:

- ``Dropout(p)``: each side's count of zeroed elements is Binomial(n, p). It must lie inside the
  exact two-sided binomial interval with tail mass ``ALPHA`` = 1e-6 (computed from the pmf, no
  normal approximation), and every survivor must be the input times 1/(1 - p) (element-wise
  tolerance). A rate passed as a keep-probability (``Dropout(1 - p)``) lands far outside.
- attention dropout: Keras returns its attention scores before dropout and torch after, and the
  outputs mix values, so zeros are not visible. The statistic is the energy of the deviation from
  the inference output, ``D = sum((out_train - out_eval)^2)`` per sample: with the same weights and
  inputs its expectation is ``p / (1 - p)`` times a constant fixed by weights and inputs, in both
  frameworks. Per-sample energies give a mean and a standard error for each side, and the two
  means must agree within ``Z`` standard errors of their difference (two-sided 1e-6, normal); and
  with p > 0 each side's mean must exceed ``Z`` of its own standard errors (so that a dropout left
  out on both sides is caught too). A rate left out gives D = 0; a keep-probability 1 - p
  multiplies the expectation by ((1 - p) / p)^2 (p = 0.1: 81x, p = 0.3: 5.4x).

Each result carries the seeds, the bounds and the observed values; its headroom is the observed
deviation over the allowed one, so > 1 fails as everywhere else.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .comparison import _device_of, _move_channels, compare_arrays
from .families.base import Tolerance

ALPHA = 1e-6                 # two-sided tail mass of every statistical bound
Z = 4.891638                 # the standard normal's two-sided 1e-6 quantile
ATTENTION_BATCH = 64         # samples for the attention statistic


def binomial_interval(n: int, p: float, alpha: float = ALPHA) -> tuple[int, int]:
    """The counts ``lo..hi`` with P(K < lo) <= alpha/2 and P(K > hi) <= alpha/2 for K ~ Binomial(n, p)."""
    if p <= 0.0:
        return 0, 0
    if p >= 1.0:
        return n, n
    k = np.arange(n + 1)
    log_factorial = np.fromiter((math.lgamma(i + 1) for i in range(n + 1)), dtype=np.float64, count=n + 1)
    log_pmf = (log_factorial[n] - log_factorial - log_factorial[::-1]
               + k * math.log(p) + (n - k) * math.log1p(-p))
    pmf = np.exp(log_pmf - log_pmf.max())
    cdf = np.cumsum(pmf / pmf.sum())
    lo = int(np.searchsorted(cdf, alpha / 2, side="right"))      # first k whose cdf exceeds alpha/2
    upper = 1.0 - cdf                                            # P(K > k)
    hi = int(np.argmax(upper <= alpha / 2))
    return lo, hi


def _seed_keras(model: Any, seed: int) -> list[str]:
    """Set every Keras seed generator of the model to ``(seed, 0)``: the masks are then reproducible."""
    seeded = []
    for variable in model.non_trainable_variables:
        if variable.path.endswith("seed_generator_state"):
            variable.assign(np.array([seed, 0], dtype=np.asarray(variable.numpy()).dtype))
            seeded.append(variable.path)
    return seeded


def _dropout_side(name: str, x: np.ndarray, out: np.ndarray, p: float) -> dict[str, Any]:
    zeros = out == 0
    n, k = int(out.size), int(zeros.sum())
    lo, hi = binomial_interval(n, p)
    expected = n * p
    half = (expected - lo) if k < expected else (hi - expected)
    count_headroom = 0.0 if k == expected else (math.inf if half <= 0 else abs(k - expected) / half)
    keep = ~zeros
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    survivors = compare_arrays((x[keep] * np.float32(scale)).astype(np.float32), out[keep],
                               Tolerance.elementwise())
    return {"framework": name, "elements": n, "zeros": k, "fraction": k / n, "bounds": [lo, hi],
            "fraction_bounds": [lo / n, hi / n], "count_headroom": count_headroom,
            "survivors": int(keep.sum()), "survivor_scale": scale, "survivor_max_abs_error": survivors.max_abs_error,
            "survivor_headroom": survivors.headroom}


def judge_dropout(pair: Any, case: Any, inputs: list[np.ndarray]) -> tuple[float, str, dict[str, Any]]:
    """``Dropout(p)`` in training mode: (headroom, problem, the statistics for the result)."""
    import keras
    import torch
    p = float(pair.params["p"])
    x = inputs[0]
    if (x == 0).any():
        return math.inf, "the input holds exact zeros, which would count as dropped", {}
    torch.manual_seed(case.seed)
    pair.torch.train()
    with torch.no_grad():
        t_out = pair.torch(torch.from_numpy(x).to(_device_of(pair.torch))).cpu().numpy()
    pair.torch.eval()
    seeded = _seed_keras(pair.keras, case.seed)
    to_last = bool(pair.channels_last)
    k_out = keras.ops.convert_to_numpy(pair.keras(_move_channels(x, True) if to_last else x, training=True))
    if to_last:
        k_out = _move_channels(k_out, False)
    sides = [_dropout_side("torch", x, t_out, p), _dropout_side("keras", x, k_out, p)]
    headroom = max(max(s["count_headroom"], s["survivor_headroom"]) for s in sides)
    problems = [f"{s['framework']} zeroed {s['zeros']} of {s['elements']} ({s['fraction']:.4f}), outside "
                f"[{s['bounds'][0]}, {s['bounds'][1]}] for p = {p}" for s in sides if s["count_headroom"] > 1]
    problems += [f"{s['framework']}'s survivors are not the input times 1/(1 - p) = {s['survivor_scale']:.6g} "
                 f"(max abs error {s['survivor_max_abs_error']:.3g})" for s in sides if s["survivor_headroom"] > 1]
    info = {"statistic": "fraction of zeros ~ Binomial(n, p), exact two-sided interval; survivors = x / (1 - p)",
            "p": p, "alpha": ALPHA, "torch_seed": case.seed, "keras_seed": [case.seed, 0],
            "keras_seed_generators": seeded, "sides": sides}
    return headroom, "; ".join(problems), info


def _attention_energy(pair: Any, inputs: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample energies of (train - eval) output 0, torch and Keras."""
    import keras
    import torch
    xs = [torch.from_numpy(a).to(_device_of(pair.torch)) for a in inputs]
    with torch.no_grad():
        pair.torch.eval()
        t_eval = pair.torch(*xs)
        pair.torch.train()
        torch.manual_seed(seed)
        t_train = pair.torch(*xs)
        pair.torch.eval()
    t_eval, t_train = (o[0] if isinstance(o, tuple | list) else o for o in (t_eval, t_train))
    feed = inputs[0] if len(inputs) == 1 else list(inputs)
    k_eval = pair.keras(feed, training=False)
    _seed_keras(pair.keras, seed)
    k_train = pair.keras(feed, training=True)
    k_eval, k_train = (keras.ops.convert_to_numpy(o[0] if isinstance(o, tuple | list) else o)
                       for o in (k_eval, k_train))
    t = ((t_train.cpu().numpy().astype(np.float64) - t_eval.cpu().numpy()) ** 2).reshape(len(inputs[0]), -1).sum(axis=1)
    k = ((k_train.astype(np.float64) - k_eval) ** 2).reshape(len(inputs[0]), -1).sum(axis=1)
    return t, k


def judge_attention_dropout(pair: Any, case: Any) -> tuple[float, str, dict[str, Any]]:
    """MultiheadAttention's dropout in training mode (see the module): (headroom, problem, statistics)."""
    p = float(pair.params["dropout"])
    inputs = list(pair.sample_inputs(case.seed, ATTENTION_BATCH))
    t, k = _attention_energy(pair, inputs, case.seed)
    n = len(t)
    mean_t, mean_k = float(t.mean()), float(k.mean())
    se_t, se_k = float(t.std(ddof=1) / math.sqrt(n)), float(k.std(ddof=1) / math.sqrt(n))
    se = math.hypot(se_t, se_k)
    z_diff = abs(mean_t - mean_k) / se if se > 0 else (0.0 if mean_t == mean_k else math.inf)
    headroom = z_diff / Z
    problems = []
    if headroom > 1:
        problems.append(f"the deviation energy from the inference output differs: torch {mean_t:.4g} +- {se_t:.2g}, "
                        f"keras {mean_k:.4g} +- {se_k:.2g} ({z_diff:.1f} standard errors; allowed {Z:.2f})")
    if p > 0:
        for name, mean, s in (("torch", mean_t, se_t), ("keras", mean_k, se_k)):
            present = mean / s if s > 0 else (math.inf if mean > 0 else 0.0)
            if present < Z:
                headroom = max(headroom, math.inf if present == 0 else Z / present)
                problems.append(f"{name} shows no attention dropout: deviation energy {mean:.3g} +- {s:.2g} "
                                f"with dropout = {p}")
    info = {"statistic": "per-sample energy of (train - inference) output 0; the means must agree (the "
                         "expectation is p/(1-p) times a constant fixed by weights and inputs)",
            "p": p, "alpha": ALPHA, "z": Z, "samples": n, "torch_seed": case.seed, "keras_seed": [case.seed, 0],
            "torch_energy": [mean_t, se_t], "keras_energy": [mean_k, se_k], "z_difference": z_diff,
            "returned_weights": "not judged here: torch returns them after dropout, Keras before"}
    return headroom, "; ".join(problems), info


def statistical_judge(pair: Any, case: Any, inputs: list[np.ndarray]) -> tuple[float, str, dict[str, Any]] | None:
    """The statistical verdict for a family whose training behaviour is random, else ``None``."""
    if pair.family.name == "dropout":
        return judge_dropout(pair, case, inputs)
    if pair.family.name == "multihead_attention" and pair.params.get("dropout", 0.0) > 0:
        return judge_attention_dropout(pair, case)
    return None

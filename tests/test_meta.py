"""Meta-tests: plant a classic wrong rule, and named catalogue cases must fail by their numbers.

array-api-tests' ``meta_tests`` idea, applied to the catalogue. Each test monkeypatches one rule,
layout, builder or ``compare`` into the classic mistake, runs a handful of *catalogue* cases
(loaded from ``cases/*.toml`` with :func:`conformance.cases.load_file`) through
:func:`conformance.runner.run_case` in both directions, and asserts outcome ``failed`` with a
finite headroom above 1 and no shape or NaN problem: the numbers decided, not a shape check and not
a structural refusal (``ConversionError`` is outcome ``error`` and would fail these tests). That is
why the cases are square layers, square kernels, non-square Flatten maps and negative pooling
borders: with other shapes most of these mistakes are refused by shape before any number is seen.

``compare`` itself is planted the other way round. A compare that sorts its outputs, multiplies
its tolerance or judges only the first output makes *fewer* cases fail, so no correct case can
catch it; what catches it is a canary: a catalogue case run with a known wrong conversion that
only a sound compare sees (a pure permutation, a modest error, an error in a later output). Each
compare test asserts that the canary fails under the real compare and passes under the planted
one, so the first half of the test is what fails if ``compare`` ever regresses that way.

Cost: about 60 cases in both directions, a few seconds; the pair cache is emptied around each
test so that planted builders never leak into other tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from conformance import comparison, runner, transfer
from conformance.cases import DIRECTIONS, Case, load_file
from conformance.families import _load as registry
from conformance.families import attention, conv, conv_transpose, dense, norm, recurrent, separable
from conformance.layout import Layout
from conformance.rules import WeightRule, spatial_axes

CASES = Path(__file__).resolve().parent.parent / "cases"


@cache
def _catalogue(file: str) -> dict[str, Case]:
    return {case.id: case for case in load_file(CASES / f"{file}.toml")}


def cases(file: str, *ids: str) -> list[Case]:
    """Catalogue cases by id; a renamed or removed case fails here, loudly, rather than testing nothing."""
    known = _catalogue(file)
    missing = [i for i in ids if i not in known]
    assert not missing, f"not in cases/{file}.toml: {missing}"
    return [known[i] for i in ids]


@pytest.fixture(autouse=True)
def fresh_pairs() -> Iterator[None]:
    """Pairs are cached by case id; a planted builder must build its own and leave none behind."""
    runner._PAIRS.clear()
    yield
    runner._PAIRS.clear()


def assert_caught(selected: list[Case]) -> list[runner.CaseResult]:
    results = []
    for case in selected:
        for direction in DIRECTIONS:
            result = runner.run_case(case, direction)
            assert result.outcome == "failed", f"the planted bug was not caught:\n{result.explain()}"
            assert not result.message, f"caught by a shape or NaN problem, not by the numbers:\n{result.explain()}"
            assert result.headroom is not None and math.isfinite(result.headroom) and result.headroom > 1, \
                result.explain()
            results.append(result)
    return results


def assert_missed(selected: list[Case]) -> None:
    for case in selected:
        for direction in DIRECTIONS:
            result = runner.run_case(case, direction)
            assert result.outcome == "passed", result.explain()


def plant_builder(monkeypatch: pytest.MonkeyPatch, family: str,
                  wrong: Callable[[Callable[..., Any], dict[str, Any], Any], Any]) -> None:
    """Replace one family's Keras builder by ``wrong(original, params, x)``."""
    families = registry()[0]
    original = families[family]
    monkeypatch.setitem(families, family, replace(original, build_keras=lambda p, x: wrong(
        original.build_keras, dict(p), x)))


def plant_converter(monkeypatch: pytest.MonkeyPatch, converter: Any, **changes: Any) -> None:
    """Replace one converter, as the transfer sees the registry (converters are frozen records)."""
    planted = tuple(replace(c, **changes) if c is converter else c for c in transfer.converters())
    monkeypatch.setattr(transfer, "converters", lambda: planted)


MHA = "multihead_attention[e8-h2-bias-nobf-kdnone-vdnone-drop0-L5-{}-nopadall-{}-nocausal-nw-avg]"

# Which catalogue cases each planted bug must fail, by file. Square layers for I/O swaps, square
# kernels for spatial swaps, multiplier 2 for the depthwise split, non-square maps for the Flatten.
PLANTED: dict[str, dict[str, tuple[str, ...]]] = {
    "spatial": {"conv2d": ("conv2d[o5-k3-s1-p1-d1-g1-bias-in5x7x9]", "conv2d[o6-k3-s2-p1-d1-g1-bias-in4x11x12]"),
                "conv3d": ("conv3d[o3-k3-s2-p1-d1-g1-bias-in3x4x5x6]",),
                "conv_transpose2d": ("conv_transpose2d[o4-k3-s2-p1-op0-d1-g1-bias-in4x5x6]",),
                "flatten_linear": ("flatten_linear[c4-k3-s1-p1-none-o10-bias-in3x9x5]",)},
    "in_out": {"conv1d": ("conv1d[o5-k3-s2-p1-d1-g1-bias-in5x13]",),
               "conv2d": ("conv2d[o5-k3-s1-p1-d1-g1-bias-in5x7x9]",),
               "conv3d": ("conv3d[o3-k3-s1-p1-d1-g1-bias-in3x4x5x6]",),
               "conv_transpose1d": ("conv_transpose1d[o4-k3-s2-p1-op0-d1-g1-bias-in4x6]",),
               "conv_transpose2d": ("conv_transpose2d[o4-k3-s1-p1-op0-d1-g1-bias-in4x5x6]",),
               "conv_transpose3d": ("conv_transpose3d[o3-k2-s2-p0-op0-d1-g1-bias-in3x3x4x2]",),
               "linear": ("linear[o12-bias-in12]", "linear[o12-nobias-in5x12]"),
               "separable_conv2d": ("separable_conv2d[o4-k3-m1-s1-p1-d1-bias-nodwb-in4x7x9]",)},
    "depthwise": {"conv1d": ("conv1d[o12-k3-s1-p1-d1-g6-nobias-in6x17]",),
                  "conv2d": ("conv2d[o8-k3-s1-p1-d1-g4-bias-in4x12x12]",),
                  "separable_conv2d": ("separable_conv2d[o4-k3-m2-s1-p1-d1-bias-nodwb-in4x7x9]",)},
    "flatten_dense": {"flatten_linear": ("flatten_linear[c4-k3-s2-p1-add-o10-bias-in3x9x5]",
                                         "flatten_linear[c5-k3-s1-p0-none-o6-bias-in3x9]",
                                         "flatten_linear[c3-k3-s1-p1-none-o4-bias-in2x4x5x6]",
                                         "flatten_linear[c2-k2-s1-p0-none-o3-nobias-in5x4x7]")},
    "gru": {"gru": ("gru[h4-l1-bias-bf-nobi-in5x5]", "gru[h4-l2-nobias-nobf-bi-in5x5]",
                    "gru[h1-l1-bias-nobf-nobi-in10x3]")},
    "lstm": {"lstm": ("lstm[h4-l1-bias-bf-nobi-in5x5]", "lstm[h4-l2-nobias-nobf-bi-in5x5]",
                      "lstm[h1-l1-bias-nobf-nobi-in10x3]")},
    "max_pool_zeros": {"max_pool2d": ("max_pool2d[k3-s2-p1-noceil-d1-in3x11x10]",
                                      "max_pool2d[k3-s2-p1-ceil-d2-in3x11x10]"),
                       "max_pool1d": ("max_pool1d[k2-s2-p1-noceil-d1-in4x14]",),
                       "max_pool3d": ("max_pool3d[k3x2x2-s1x2x3-p1-ceil-d1-in2x7x8x9]",)},
    "count_include_pad": {"avg_pool2d": ("avg_pool2d[k3-s2-p1-noceil-nocip-in3x11x10]",
                                         "avg_pool2d[k2-snone-p1-ceil-nocip-in3x11x10]")},
    "attention_masks": {"multihead_attention": (MHA.format("kvself-kpm", "amnone-nom3d"),
                                                MHA.format("kv7-nokpm", "ambool-m3d"),
                                                MHA.format("kv7-kpm", "ambool-nom3d"))},
    "batch_norm_swap": {"batch_norm2d": ("batch_norm2d[eps1-m0.1-affine-in5x6x7]",)},
    # canaries for compare: a wrong conversion that only a sound compare sees
    "permutation": {"flatten": ("flatten[start1-end-1-in3x4x5]", "flatten[start1-end-1-in2x3x4x5]")},
    "states": {"lstm": ("lstm[h4-l1-bias-bf-bi-in5x5]",), "gru": ("gru[h4-l1-bias-nobf-bi-in5x5]",)},
}


def planted(name: str) -> list[Case]:
    return [case for file, ids in PLANTED[name].items() for case in cases(file, *ids)]


# ---- the rules


def test_kernel_spatial_axes_swapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """``O I H W -> W H I O``: with square kernels the shapes fit, and the kernel is mirrored on its diagonal."""
    def swapped(n: int, first: str) -> Layout:
        axes = spatial_axes(n)
        return Layout(f"{first} {' '.join(axes)} -> {' '.join(reversed(axes))} {first[::-1]}")
    monkeypatch.setattr(conv, "kernel_layout", lambda n: swapped(n, "O I"))
    monkeypatch.setattr(conv_transpose, "transpose_layout", lambda n: swapped(n, "I O"))
    assert_caught(planted("spatial"))


def test_kernel_in_and_out_swapped_on_square_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """I and O swapped (``O I H W -> H W O I``, an untransposed Dense kernel): fits only where I == O."""
    def conv_io(n: int) -> Layout:
        axes = " ".join(spatial_axes(n))
        return Layout(f"O I {axes} -> {axes} O I")

    def transpose_io(n: int) -> Layout:
        axes = " ".join(spatial_axes(n))
        return Layout(f"I O {axes} -> {axes} I O")
    monkeypatch.setattr(conv, "kernel_layout", conv_io)
    monkeypatch.setattr(separable, "kernel_layout", conv_io)
    monkeypatch.setattr(conv_transpose, "transpose_layout", transpose_io)
    monkeypatch.setattr(dense, "DENSE", Layout("O I -> O I"))
    assert_caught(planted("in_out"))


def test_depthwise_split_read_the_other_way_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """``(M C) 1 H W`` instead of ``(C M) 1 H W``: torch's output channel c*M + m read multiplier-major."""
    def multiplier_major(n: int) -> Layout:
        axes = " ".join(spatial_axes(n))
        return Layout(f"(M C) 1 {axes} -> {axes} C M")
    monkeypatch.setattr(conv, "depthwise_layout", multiplier_major)
    monkeypatch.setattr(separable, "depthwise_layout", multiplier_major)
    assert_caught(planted("depthwise"))


def test_flatten_dense_rows_left_in_torch_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The LeNet bug: the Dense kernel after a Flatten only transposed, its rows left in C,H,W order."""
    monkeypatch.setattr(dense, "flatten_layout", lambda *args, **kwargs: None)
    assert_caught(planted("flatten_dense"))


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_recurrent_gates_in_the_wrong_order(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """GRU: torch's (r, z, n) copied as Keras's (z, r, h); LSTM: (i, f, g, o) read as (i, g, f, o)."""
    original = recurrent._kernel_rule
    wrong = {"gru": (0, 1, 2), "lstm": (0, 2, 1, 3)}[kind]

    def wrong_kernel(k: recurrent.Kind, torch_name: str, keras_path: str) -> WeightRule:
        return original(replace(k, order=wrong) if k.name == kind else k, torch_name, keras_path)
    monkeypatch.setattr(recurrent, "_kernel_rule", wrong_kernel)
    if kind == "gru":   # the biases too: a GRU converter that forgets the re-order forgets it everywhere
        original_gates = recurrent._gates
        monkeypatch.setattr(recurrent, "_gates", lambda order: original_gates(tuple(range(len(order)))))
    assert_caught(planted(kind))


def test_max_pooling_padded_with_zeros(monkeypatch: pytest.MonkeyPatch) -> None:
    """Max pooling padded with 0 instead of -inf: a zero wins every window whose real values are all negative,
    which the max pooling inputs guarantee next to every padded border."""
    pad = keras.ops.pad

    def zero_padded(x: Any, pad_width: Any, mode: str = "constant", constant_values: Any = None) -> Any:
        if constant_values is not None and np.isneginf(constant_values):
            constant_values = 0.0
        return pad(x, pad_width, mode=mode, constant_values=constant_values)
    monkeypatch.setattr(keras.ops, "pad", zero_padded)
    assert_caught(planted("max_pool_zeros"))


def test_count_include_pad_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """count_include_pad=False built as torch's default (padding counted in the divisor)."""
    plant_builder(monkeypatch, "avg_pool2d", lambda build, p, x: build({**p, "count_include_pad": True}, x))
    assert_caught(planted("count_include_pad"))


def test_attention_masks_not_inverted(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's True = ignore passed to Keras as it is, where Keras reads True = attend."""
    original = attention._keras_masks

    def not_inverted(p: Any, kpm: Any, mask: Any) -> Any:   # inverting first cancels the inversion inside
        ops = keras.ops
        flip = kpm is not None, mask is not None and p["attn_mask"] == "bool"
        return original(p, ops.logical_not(kpm) if flip[0] else kpm, ops.logical_not(mask) if flip[1] else mask)
    monkeypatch.setattr(attention, "_keras_masks", not_inverted)
    assert_caught(planted("attention_masks"))


def test_batch_norm_mean_and_variance_swapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """running_mean -> moving_variance and running_var -> moving_mean. The case's eps (1.0) keeps a swapped
    (possibly negative) variance + eps positive, so the swap shows as wrong numbers rather than NaN."""
    def swapped(module: Any, layer: Any, context: Any) -> list[WeightRule]:
        return [WeightRule("weight", "gamma", optional=True), WeightRule("bias", "beta", optional=True),
                WeightRule("running_mean", "moving_variance"), WeightRule("running_var", "moving_mean")]
    plant_converter(monkeypatch, norm.CONVERTERS[0], rules=swapped)
    assert_caught(planted("batch_norm_swap"))


# ---- compare, planted: each canary fails under the real compare and passes under the planted one


def _flatten_keeping_keras_order(monkeypatch: pytest.MonkeyPatch) -> list[Case]:
    """A pure permutation: Keras flattens its H,W,C map without going back to torch's C,H,W first."""
    plant_builder(monkeypatch, "flatten", lambda build, p, x: keras.layers.Flatten()(x))
    return planted("permutation")


def test_compare_that_sorts_its_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    canaries = _flatten_keeping_keras_order(monkeypatch)
    assert_caught(canaries)
    arrays = comparison.compare_arrays
    monkeypatch.setattr(comparison, "compare_arrays", lambda t, k, tolerance: arrays(
        np.sort(t, axis=None), np.sort(k, axis=None), tolerance))
    assert_missed(canaries)


def test_compare_with_its_tolerance_multiplied_by_a_million(monkeypatch: pytest.MonkeyPatch) -> None:
    """The canary: BatchNorm's mean and variance swapped, wrong by 1e3..1e5 times the tolerance."""
    test_batch_norm_mean_and_variance_swapped(monkeypatch)
    arrays = comparison.compare_arrays
    monkeypatch.setattr(comparison, "compare_arrays", lambda t, k, tolerance: arrays(
        t, k, replace(tolerance, atol=tolerance.atol * 1e6, rtol=tolerance.rtol * 1e6)))
    runner._PAIRS.clear()
    assert_missed(planted("batch_norm_swap"))


def test_compare_that_judges_only_the_first_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """The canary: a bidirectional recurrent layer whose final states are stacked backward direction first.
    The output sequence is right; only outputs 1 (h_n) and 2 (c_n) are wrong, so each output must be judged."""
    stack = keras.ops.stack
    monkeypatch.setattr(keras.ops, "stack", lambda xs, axis=0: stack(list(xs)[::-1], axis=axis))
    canaries = planted("states")
    for result in assert_caught(canaries):
        assert result.worst is not None and result.worst["output"] >= 1, result.explain()
    monkeypatch.setattr(comparison, "_combine", lambda parts: parts[0])
    assert_missed(canaries)


# ---- the controls: without a planting, every case above passes, and the max pooling inputs do their job


def test_every_planted_case_passes_unplanted() -> None:
    selected = {case.id: case for name in PLANTED for case in planted(name)}
    assert_missed(list(selected.values()))


def test_max_pool_inputs_are_negative_in_every_padded_window() -> None:
    """In every padded max pooling catalogue case, each window that overlaps padding (at either end, or past
    the end with ceil_mode) holds only negative data, so its maximum is below 0: a zero pad would win there."""
    import torch

    from conformance.families import get_family
    checked = 0
    for file in ("max_pool1d", "max_pool2d", "max_pool3d"):
        for case in _catalogue(file).values():
            p = case.params
            family = get_family(case.family)
            assert family.make_inputs is not None
            x = torch.from_numpy(family.make_inputs(p, np.random.default_rng(case.seed), case.batch)[0])
            stride = p["stride"] or p["kernel_size"]
            out = getattr(torch.nn.functional, f"max_pool{x.ndim - 2}d")(
                x, p["kernel_size"], stride, p["padding"], p["dilation"], p["ceil_mode"])
            touches = torch.zeros(out.shape[2:], dtype=torch.bool)
            for axis, (length, k, s, q, d) in enumerate(zip(x.shape[2:], p["kernel_size"], stride, p["padding"],
                                                            p["dilation"], strict=True)):
                start = torch.arange(out.shape[2 + axis]) * s - q
                edge = (start < 0) | (start + d * (k - 1) >= length)
                touches |= edge.reshape([-1 if a == axis else 1 for a in range(out.ndim - 2)])
            if touches.any():
                assert (out[..., touches] < 0).all(), f"{case.id}: a padded window holds a positive value"
                checked += 1
    assert checked >= 50, f"only {checked} padded max pooling cases"

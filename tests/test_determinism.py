"""Determinism: a case's result is a function of the case alone, timings aside.

Two runs of the same cases, the second in reverse order with the pair cache emptied, give identical
results files; and a case's seed, and so its inputs and weights, come from its id alone
(``crc32(id) ^ file seed``), so adding, removing or re-ordering cases never changes another's.
Layer names are part of each result (the mapping), and Keras numbers them from process-wide
counters: the runner restarts them for each pair it builds.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from conformance import runner
from conformance.cases import DIRECTIONS, Case, load_file
from conformance.pair import build_pair

CASES = Path(__file__).resolve().parent.parent / "cases"
SLICE = {"conv2d": 2, "flatten_linear": 2, "lstm": 2, "multihead_attention": 2, "max_pool2d": 2, "batch_norm2d": 1,
         "residual_block": 1, "separable_conv2d": 1}


def _slice() -> list[Case]:
    return [case for file, n in SLICE.items() for case in load_file(CASES / f"{file}.toml")[:n]]


def _results(cases: list[Case]) -> dict[tuple[str, str], dict[str, Any]]:
    runner._PAIRS.clear()
    out = {}
    for case in cases:
        for direction in DIRECTIONS:
            result = runner.run_case(case, direction).to_json()
            assert result.pop("timings")
            out[(case.id, direction)] = result
    runner._PAIRS.clear()
    return out


def test_two_runs_give_identical_results_timings_aside() -> None:
    cases = _slice()
    first = _results(cases)
    second = _results(list(reversed(cases)))     # another order, and other cases built before each one
    assert first.keys() == second.keys()
    for key in first:
        assert first[key] == second[key], f"{key} differs between runs"
    assert all(r["outcome"] == "passed" for r in first.values())


def test_layer_names_in_a_result_do_not_depend_on_what_was_built_before() -> None:
    import keras
    case = load_file(CASES / "linear.toml")[0]
    runner._PAIRS.clear()
    keras.layers.Dense(3)      # move the process-wide counter
    mapping = runner.run_case(case, "torch->keras").to_json()["mapping"]
    assert [row["destination"] for row in mapping] == ["dense/kernel", "dense/bias"], mapping


def test_seed_comes_from_the_case_id_and_the_file_seed_alone(tmp_path: Path) -> None:
    original = {case.id: case for case in load_file(CASES / "linear.toml")}
    for case in original.values():
        assert case.seed == zlib.crc32(case.id.encode()) & 0x7FFFFFFF
    head, *grids = (CASES / "linear.toml").read_text().split("[[grid]]")
    extra = "\nin_features = 7\nout_features = 3\ninput_shape = [[7]]\n\n"
    changed = tmp_path / "linear.toml"     # a new case first, then the blocks in reverse order
    changed.write_text(head + "[[grid]]".join(["", extra, *reversed(grids)]))
    loaded = {case.id: case for case in load_file(changed)}
    assert len(loaded) == len(original) + 1 and list(loaded)[0] == "linear[o3-bias-in7]"
    assert {cid: loaded[cid].seed for cid in original} == {cid: c.seed for cid, c in original.items()}
    salted = tmp_path / "salted.toml"      # the file's seed is mixed in
    salted.write_text("seed = 5\n" + (CASES / "linear.toml").read_text())
    assert {c.id: c.seed for c in load_file(salted)} == {cid: c.seed ^ 5 for cid, c in original.items()}


def test_inputs_depend_on_the_seed_and_params_only() -> None:
    case = load_file(CASES / "max_pool2d.toml")[3]
    one = build_pair(case.family, **case.params).sample_inputs(case.seed, case.batch)
    build_pair("conv2d", in_channels=3, out_channels=2, kernel_size=3, input_shape=(3, 5, 5))   # state in between
    two = build_pair(case.family, **case.params).sample_inputs(case.seed, case.batch)
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))

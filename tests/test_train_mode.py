"""Train mode (issue 12): the catalogue's mode dimension, gradient comparison, dropout statistics, results.

The catalogue runs the train cases themselves (``pytest cases -k train``); these tests check the
machinery: that the train dimension leaves inference ids, seeds and params exactly as the stored
baselines have them, that a bad mode is refused by name, that a train result records what it
compared, and that the statistics' bounds are exact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conformance import gradients, runner, train_stats
from conformance.cases import DIRECTIONS, load_catalogue, load_file
from conformance.errors import CaseError
from conformance.report import render

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "cases"


def test_train_cases_leave_inference_ids_and_seeds_as_the_baselines_have_them() -> None:
    catalogue = load_catalogue(CASES)
    assert not catalogue.errors
    inference = {c.id: c for c in catalogue.cases if c.mode == "inference"}
    train = [c for c in catalogue.cases if c.mode == "train"]
    assert train and all(c.id.endswith("-train]") for c in train)
    assert not any(c.id.endswith("-train]") for c in inference.values())
    baseline = json.loads((ROOT / "reports/baselines/tensorflow-onednn-on.json").read_text())
    stored = {(c["id"], c["seed"], json.dumps(c["params"], sort_keys=True)) for c in baseline["cases"]
              if c.get("mode", "inference") == "inference"}
    assert len(stored) >= 1248     # at least the inference catalogue the baselines were first recorded on
    ours = {(c.id, c.seed, json.dumps(runner._jsonable(dict(c.params)), sort_keys=True))
            for c in inference.values() if c.tier == "default"}
    assert stored <= ours   # every stored result's id, seed and params are still an inference case's


def test_a_file_reads_the_same_inference_cases_without_its_train_grids(tmp_path: Path) -> None:
    text = (CASES / "linear.toml").read_text()
    stripped = text[:text.index("[[grid]]   # training mode")]
    (tmp_path / "linear.toml").write_text(stripped)
    with_train = [c for c in load_file(CASES / "linear.toml") if c.mode == "inference"]
    without = load_file(tmp_path / "linear.toml")
    assert [(c.id, c.seed, c.params) for c in with_train] == [(c.id, c.seed, c.params) for c in without]


@pytest.mark.parametrize("where, text, field", [
    ("top", 'mode = "training"\n[[grid]]\nin_features = 2\nout_features = 2\ninput_shape = [[2]]\n', "mode"),
    ("grid", '[[grid]]\nmode = ["train", "eval"]\nin_features = 2\nout_features = 2\ninput_shape = [[2]]\n',
     "grid[0].mode"),
    ("record", '[[grid]]\nmode = "train"\nin_features = 2\nout_features = 2\ninput_shape = [[2]]\n'
               '[[divergence]]\nwhen = { mode = "backward" }\nreason = "x"\n', "divergence[0].when.mode"),
])
def test_a_bad_mode_is_refused_naming_file_and_field(tmp_path: Path, where: str, text: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('family = "linear"\n' + text)
    with pytest.raises(CaseError) as info:
        load_file(path)
    assert info.value.field == field and str(path) in str(info.value)


def test_a_record_scoped_to_train_applies_to_train_cases_only(tmp_path: Path) -> None:
    path = tmp_path / "linear.toml"
    path.write_text('family = "linear"\n[[grid]]\nmode = ["inference", "train"]\nin_features = 2\n'
                    'out_features = 2\ninput_shape = [[2]]\n[[divergence]]\nwhen = { mode = "train" }\nreason = "x"\n')
    by_mode = {c.mode: c for c in load_file(path)}
    assert by_mode["train"].id == "linear[o2-bias-in2-train]" and by_mode["inference"].id == "linear[o2-bias-in2]"
    assert by_mode["train"].divergence_for("torch->keras") is not None
    assert by_mode["inference"].divergence_for("torch->keras") is None


def _case(file: str, case_id: str):
    return next(c for c in load_file(CASES / f"{file}.toml") if c.id == case_id)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_train_result_records_every_gradient_it_compared(direction: str) -> None:
    case = _case("lstm", "lstm[h4-l2-bias-bf-bi-in5x5-train]")
    result = runner.run_case(case, direction)
    assert result.outcome == "passed", result.explain()
    training = result.training
    assert training is not None and training["judged"] == "gradients"
    names = [c["name"] for c in training["compared"]]
    assert names[0] == "output 0 (training mode)" and "d loss / d input 0" in names
    # every torch parameter is compared: 2 layers x 2 directions x (2 kernels + 2 biases), the biases by adjoint
    weights = [n for n in names if "->" in n]
    assert len(weights) == training["torch_parameters"] == 16
    assert sum("adjoint" in n for n in weights) == 8
    assert training["worst"] in names and result.headroom == max(c["headroom"] for c in training["compared"])
    entry = result.to_json()
    assert entry["mode"] == "train" and entry["training"]["compared"]


def test_an_inference_result_reads_as_before() -> None:
    case = _case("linear", "linear[o12-bias-in5x12]")
    entry = runner.run_case(case, "torch->keras").to_json()
    assert "mode" not in entry and "training" not in entry


def test_the_projection_sees_a_permutation_that_a_plain_sum_would_hide() -> None:
    """The loss is sum(out * R): swapping two outputs changes it, and so every gradient."""
    out = np.arange(6, dtype=np.float32).reshape(2, 3)
    (r,) = gradients.projections([out.shape], seed=5)
    assert float((out * r).sum()) != float((out[:, ::-1] * r).sum())
    assert not np.allclose(r, r[:, ::-1])


@pytest.mark.parametrize("n, p", [(20, 0.1), (50, 0.5), (200, 0.3), (1000, 0.9)])
def test_the_binomial_interval_is_exact(n: int, p: float) -> None:
    alpha = 1e-3
    lo, hi = train_stats.binomial_interval(n, p, alpha)
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    assert sum(pmf[:lo]) <= alpha / 2 < sum(pmf[:lo + 1])
    assert sum(pmf[hi + 1:]) <= alpha / 2 < sum(pmf[hi:])


def test_dropout_train_result_carries_bounds_fractions_and_seeds() -> None:
    case = _case("dropout", "dropout[p0.3-in8x32x32-train]")
    result = runner.run_case(case, "torch->keras")
    assert result.outcome == "passed", result.explain()
    stats = result.training
    assert stats is not None and stats["judged"] == "statistically" and stats["alpha"] == 1e-6
    assert stats["torch_seed"] == case.seed and stats["keras_seed"] == [case.seed, 0]
    for side in stats["sides"]:
        lo, hi = side["bounds"]
        assert side["elements"] == 2 * 8 * 32 * 32 and lo <= side["zeros"] <= hi
        assert side["fraction_bounds"][0] < 0.3 < side["fraction_bounds"][1]
    again = runner.run_case(case, "torch->keras").training
    assert again is not None and [s["zeros"] for s in again["sides"]] == [s["zeros"] for s in stats["sides"]]


def test_the_report_puts_train_results_beside_inference() -> None:
    cases = [runner.run_case(_case("linear", cid), "torch->keras").to_json()
             for cid in ("linear[o12-bias-in5x12]", "linear[o12-bias-in5x12-train]")]
    document = {"schema": "conformance-results", "schema_version": 2, "environment": {}, "cases": cases}
    page = render(document)
    assert "<section id='training'>" in page and "<tr data-family='linear'>" in page
    row = page[page.index("<tr data-family='linear'>"):]
    row = row[:row.index("</tr>")]
    assert row.count("<b>1</b> passed") == 2 and "linear[o12-bias-in5x12-train]" in row
    assert "<section id='training'>" not in render({**document, "cases": cases[:1]})

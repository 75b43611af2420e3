"""Known divergences: the evidence that they are real, and that the records are strict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conformance.cases import DIRECTIONS, load_file
from conformance.runner import run_case

CASES = Path(__file__).resolve().parent.parent / "cases"


# ---- evidence: each record's scope against raw-framework probes in several environments ----------------
#
# tests/evidence_probes.py runs the frameworks alone (no conversion code) in child processes with
# oneDNN forced off, forced on, forced on but capped at AVX2 kernels (what an AVX2 machine gets),
# and on Keras's torch backend. For every probe the record's own scope, evaluated on the facts that
# process resolved, must predict what happened: inside the scope the framework is wrong (or refuses
# with the recorded words), outside it the framework is right. So a record whose scope is too wide
# or too narrow fails here on any machine, not only on the machine that shows the bug.

ENVIRONMENTS = {
    "as configured": {},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0", "KERAS_BACKEND": "tensorflow"},
    "oneDNN on": {"TF_ENABLE_ONEDNN_OPTS": "1", "KERAS_BACKEND": "tensorflow"},
    "oneDNN on, AVX2 kernels": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                "KERAS_BACKEND": "tensorflow"},
    "Keras torch backend": {"KERAS_BACKEND": "torch"},
}
PROBES = Path(__file__).resolve().parent / "evidence_probes.py"


@pytest.fixture(scope="module")
def observed() -> dict[str, dict[str, Any]]:
    """Each environment's probe results, the child processes run two at a time."""
    import json
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    def run(overrides: dict[str, str]) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
        env.update(overrides, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        proc = subprocess.run([sys.executable, str(PROBES)], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(ENVIRONMENTS, pool.map(run, ENVIRONMENTS.values()), strict=True))


def _record(file: str, kind: str) -> Any:
    """The record of a layer case file, or of a training case file (``training/...``: same records)."""
    from conformance.plugin import load_any
    return next(r for r in load_any(CASES / file)[0].divergences if r.kind == kind)


def _facts(result: dict[str, Any], backend: str | None) -> dict[str, Any]:
    """The facts a probe ran under: a raw TensorFlow probe runs on TensorFlow's oneDNN switch and a raw
    torch probe on torch's mkldnn, whatever the process's Keras backend; None keeps the process's."""
    facts = dict(result["facts"])
    if backend is not None:
        facts["keras_backend"] = backend
        facts["onednn"] = result["facts"]["tensorflow_onednn" if backend == "tensorflow" else "torch_mkldnn"]
    return facts


EVIDENCE = [  # probe, case file, record kind, the backend whose kernels the probe runs (None: the process's)
    ("tf_conv2d_one_channel", "conv2d.toml", "divergence", "tensorflow"),
    ("tf_conv3d_one_channel", "conv3d.toml", "divergence", "tensorflow"),
    ("torch_conv3d_one_channel", "conv3d.toml", "divergence", "torch"),
    ("tf_dilated_conv2d_transpose", "conv_transpose2d.toml", "unsupported", "tensorflow"),
    ("tf_depthwise_unequal_strides", "separable_conv2d.toml", "unsupported", "tensorflow"),
    ("keras_layer_norm_inner_axes", "layer_norm.toml", "unsupported", None),
    ("tf_conv2d_1x1_stride2_filter_grad", "training/fine_tune.toml", "divergence", "tensorflow"),
    ("torch_conv2d_1x1_stride2_filter_grad", "training/fine_tune.toml", "divergence", "torch"),
]


@pytest.mark.parametrize(("probe", "file", "kind", "backend"), EVIDENCE, ids=[e[0] for e in EVIDENCE])
def test_each_record_scope_predicts_the_raw_frameworks(observed: dict[str, dict[str, Any]], probe: str, file: str,
                                                       kind: str, backend: str | None) -> None:
    record = _record(file, kind)
    seen_in, seen_out = [], []
    for name, result in observed.items():
        outcome = result["probes"][probe]
        facts = _facts(result, backend)
        where = f"{probe} in '{name}' ({facts}): {outcome}"
        if record.applies_to(result["versions"], facts):
            seen_in.append(name)
            if kind == "unsupported":
                assert record.message in outcome.get("refused", ""), f"the recorded refusal did not happen: {where}"
            else:
                assert outcome.get("error", 0.0) > 1e-2, f"the recorded divergence did not happen: {where}"
        else:
            seen_out.append(name)
            assert "refused" not in outcome and outcome["error"] < 1e-4, f"outside the record's scope, yet: {where}"
    assert seen_out, f"{file} {kind}: no environment outside its scope was probed"


def test_the_probes_put_each_refusal_record_in_scope_somewhere(observed: dict[str, dict[str, Any]]) -> None:
    """oneDNN off and the torch backend are reachable on every machine, so each refusal is seen here."""
    for probe, file, kind, backend in EVIDENCE:
        if kind == "unsupported":
            record = _record(file, kind)
            assert any(record.applies_to(r["versions"], _facts(r, backend)) for r in observed.values()), probe


def test_every_evidence_link_names_a_test_that_exists() -> None:
    from conformance.plugin import load_any
    root = CASES.parent
    for path in sorted([*CASES.glob("*.toml"), *CASES.glob("training/*.toml")]):
        for record in {id(r): r for c in load_any(path) for r in c.divergences}.values():
            if not record.link.startswith("tests/"):
                continue
            file, _, name = record.link.partition("::")
            assert (root / file).is_file(), f"{path.name}: link {record.link!r} names no file"
            assert not name or f"def {name.split('[')[0]}(" in (root / file).read_text(), \
                f"{path.name}: link {record.link!r} names no test"


def relu_case(tmp_path: Path, record: str) -> Any:
    """One relu case with a [[divergence]] record for it, whose other keys are ``record``."""
    (tmp_path / "relu.toml").write_text(f"""
family = "relu"
[[grid]]
input_shape = [[3, 4]]
[[divergence]]
when = {{ input_shape = [[3, 4]] }}
{record}
""")
    return load_file(tmp_path / "relu.toml")[0]


def test_a_divergence_that_stops_diverging_fails_the_run(tmp_path: Path) -> None:
    case = relu_case(tmp_path, 'direction = "keras->torch"\nreason = "pretend relu differs"')
    outcomes = {d: run_case(case, d) for d in DIRECTIONS}
    assert outcomes["torch->keras"].outcome == "passed"
    stale = outcomes["keras->torch"]
    assert stale.outcome == "xpass" and not stale.ok
    assert "no longer diverges" in stale.message and "relu.toml" in stale.message


def test_a_divergence_outside_its_version_range_does_not_apply(tmp_path: Path) -> None:
    case = relu_case(tmp_path, 'tensorflow = "<1.0"\nreason = "only on ancient TensorFlow"')
    result = run_case(case, "torch->keras")
    assert result.outcome == "passed" and result.divergence is None


def test_a_divergence_for_another_keras_backend_does_not_apply(tmp_path: Path) -> None:
    case = relu_case(tmp_path, 'keras_backend = "jax"\nreason = "only on the JAX backend"')
    assert case.divergences[0].applies_to({}, "tensorflow") is False
    assert case.divergences[0].applies_to({}, "jax") is True


@pytest.mark.parametrize("name", sorted(p.name for p in CASES.glob("*.toml")))
def test_every_recorded_divergence_has_a_reason_and_matches_cases(name: str) -> None:
    cases = load_file(CASES / name)
    for case in cases:
        for record in case.divergences:
            assert len(record.reason) > 40, "a reason a reader can act on"

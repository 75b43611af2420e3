"""The case catalogue: loading, ids, and a clear error for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.cases import case_id, load_catalogue, load_file
from conformance.errors import CaseError
from conformance.families import get_family

CATALOGUE = Path(__file__).resolve().parent.parent / "cases"

GOOD = """
family = "relu"
[[grid]]
input_shape = [[3, 4, 5]]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str, name: str = "bad.toml") -> CaseError:
    path = write(tmp_path, name, text)
    with pytest.raises(CaseError) as info:
        load_file(path)
    assert str(path) in str(info.value), "the message names the file"
    return info.value


def test_the_catalogue_loads_without_errors_and_is_large() -> None:
    catalogue = load_catalogue(CATALOGUE)
    assert catalogue.errors == []
    assert len(catalogue.cases) >= 150
    assert len({c.id for c in catalogue.cases}) == len(catalogue.cases)


def test_ids_are_readable_and_follow_the_family_parameter_order() -> None:
    family = get_family("conv2d")
    params = family.normalise({"in_channels": 4, "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1,
                               "input_shape": [4, 16, 16]})
    assert case_id(family, params) == "conv2d[o8-k3-s2-p1-d1-g1-bias-in4x16x16]"
    params = family.normalise({**params, "kernel_size": [3, 5], "bias": False, "padding": "same", "stride": 1})
    assert case_id(family, params) == "conv2d[o8-k3x5-s1-psame-d1-g1-nobias-in4x16x16]"


def test_grid_is_a_cartesian_product_minus_exclusions(tmp_path: Path) -> None:
    cases = load_file(write(tmp_path, "c.toml", """
family = "conv1d"
[[grid]]
in_channels = 2
out_channels = 2
kernel_size = [1, 3]
stride = [1, 2]
padding = [0, "same"]
input_shape = [[2, 9]]
exclude = [{ padding = "same", stride = 2 }]
"""))
    assert len(cases) == 2 * 2 * 2 - 2
    assert all(not (c.params["padding"] == "same" and c.params["stride"] == (2,)) for c in cases)
    assert len({c.seed for c in cases}) == len(cases), "each case has its own deterministic seed"
    assert [c.seed for c in cases] == [c.seed for c in load_file(tmp_path / "c.toml")]


@pytest.mark.parametrize(("text", "field", "fragment"), [
    ('family = "relu"\n[[grid]\ninput_shape = [[3]]', None, "not valid TOML"),
    ('family = "conv9d"\n[[grid]]\ninput_shape = [[3]]', "family", "unknown family 'conv9d'"),
    ('[[grid]]\ninput_shape = [[3]]', "family", "missing the family"),
    ('family = "relu"\nfamilly = 1\n[[grid]]\ninput_shape = [[3]]', "familly", "unknown key"),
    ('family = "relu"', "grid", "no [[grid]] block"),
    ('family = "relu"\ndtype = "float16"\n[[grid]]\ninput_shape = [[3]]', "dtype", "only float32"),
    ('family = "relu"\ntier = "slow"\n[[grid]]\ninput_shape = [[3]]', "tier", "'default' or 'extended'"),
    ('family = "relu"\n[[grid]]\ninput_shape = [3, 4]', "input_shape", "lists of alternatives"),
    ('family = "relu"\n[[grid]]\ninput_shape = []', "grid[0].input_shape", "expands to no cases"),
    ('family = "conv2d"\n[[grid]]\nin_channels = 3\nout_channels = 4\nkernel_size = 3\nstride = 2\n'
     'padding = "same"\ninput_shape = [[3, 8, 8]]', "padding", "stride > 1"),
    ('family = "conv2d"\n[[grid]]\nin_channels = 3\nout_channels = 4\nkernel_size = 3\ninput_shape = [[4, 8, 8]]',
     "input_shape", "in_channels is 3"),
    ('family = "conv2d"\n[[grid]]\nin_channels = 4\nout_channels = 6\nkernel_size = 3\ngroups = 4\n'
     'input_shape = [[4, 8, 8]]', "groups", "must divide"),
    ('family = "conv2d"\n[[grid]]\nin_channels = 3\nout_channels = 4\nkernel_size = 0\ninput_shape = [[3, 8, 8]]',
     "kernel_size", "must be >= 1"),
    ('family = "conv2d"\n[[grid]]\nin_channels = 3\nout_channels = 4\nkernel_size = 3\nstrides = 2\n'
     'input_shape = [[3, 8, 8]]', "strides", "unknown parameter"),
    ('family = "conv2d"\n[[grid]]\nin_channels = 3\nout_channels = 4\ninput_shape = [[3, 8, 8]]',
     "kernel_size", "required parameter missing"),
    ('family = "max_pool2d"\n[[grid]]\nkernel_size = 2\npadding = 2\ninput_shape = [[3, 8, 8]]',
     "padding", "more than half"),
    ('family = "linear"\n[[grid]]\nin_features = 4\nout_features = 2\nbias = "yes"\ninput_shape = [[4]]',
     "bias", "true or false"),
    ('family = "softmax"\n[[grid]]\ndim = 0\ninput_shape = [[4]]', "dim", "batch axis"),
    ('family = "relu"\n[tolerance]\natol = 1e-3\n[[grid]]\ninput_shape = [[3]]', "tolerance.reason", "reason"),
    ('family = "relu"\n[tolerance]\natol = -1\nreason = "x"\n[[grid]]\ninput_shape = [[3]]', "tolerance.atol",
     "non-negative"),
    ('family = "conv2d"\n[layout]\nweight = "O I H W -> H W O I"\n[[grid]]\nin_channels = 3\nout_channels = 4\n'
     'kernel_size = 3\ninput_shape = [[3, 8, 8]]', "layout.weight", "converter applies"),
    ('family = "conv2d"\n[layout]\nweight = "O I H W -> H W I"\n[[grid]]\nin_channels = 3\nout_channels = 4\n'
     'kernel_size = 3\ninput_shape = [[3, 8, 8]]', "layout.weight", "different axes"),
    ('family = "relu"\n[layout]\nkernel = "A -> A"\n[[grid]]\ninput_shape = [[3]]', "layout.kernel", "no weight"),
    ('family = "relu"\n[[grid]]\ninput_shape = [[3]]\n[[divergence]]\nwhen = { input_shape = [[3]] }',
     "divergence[0].reason", "needs a reason"),
    ('family = "relu"\n[[grid]]\ninput_shape = [[3]]\n[[divergence]]\nwhen = { input_shape = [[4]] }\nreason = "r"',
     "divergence[0].when", "matches no case"),
    ('family = "relu"\n[[grid]]\ninput_shape = [[3]]\n[[divergence]]\nwhen = { dim = [1] }\nreason = "r"',
     "divergence[0].when.dim", "no parameter"),
    ('family = "relu"\n[[grid]]\ninput_shape = [[3]]\n[[divergence]]\nwhen = { input_shape = [[3]] }\n'
     'reason = "r"\ntorch = "at least 2"', "divergence[0].torch", "invalid version range"),
    ('family = "relu"\n[[grid]]\ninput_shape = [[3]]\n[[divergence]]\nwhen = { input_shape = [[3]] }\n'
     'reason = "r"\ndirection = "sideways"', "divergence[0].direction", "'both'"),
    ('family = "relu"\n[[grid]]\ninput_shape = [[3]]\n[[divergence]]\nwhen = { input_shape = [[3]] }\n'
     'reason = "r"\nkeras_backend = "theano"', "divergence[0].keras_backend", "'tensorflow', 'torch' or 'jax'"),
])
def test_bad_input_names_file_case_and_field(tmp_path: Path, text: str, field: str | None, fragment: str) -> None:
    error = error_for(tmp_path, text)
    assert error.field == field
    assert fragment in str(error)
    if field is not None:
        assert f"field {field}" in str(error)


def test_a_bad_parameter_names_the_concrete_case(tmp_path: Path) -> None:
    error = error_for(tmp_path, 'family = "conv1d"\n[[grid]]\nin_channels = 2\nout_channels = 2\n'
                                'kernel_size = [3, 30]\ninput_shape = [[2, 9]]')
    assert error.case is not None and "'kernel_size': 30" in error.case
    assert "too small" in str(error)


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00family")
    with pytest.raises(CaseError, match="not UTF-8"):
        load_file(tmp_path / "binary.toml")
    with pytest.raises(CaseError, match="cannot read"):
        load_file(tmp_path / "missing.toml")


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path, "a_good.toml", GOOD)
    write(tmp_path, "b_bad.toml", 'family = "nope"\n[[grid]]\ninput_shape = [[3]]')
    write(tmp_path, "c_dup.toml", GOOD)
    catalogue = load_catalogue(tmp_path)
    assert [c.id for c in catalogue.cases] == ["relu[in3x4x5]"]
    messages = [str(e) for e in catalogue.errors]
    assert any("b_bad.toml" in m and "unknown family" in m for m in messages)
    assert any("c_dup.toml" in m and "also defined in" in m and "a_good.toml" in m for m in messages)


def test_a_missing_or_empty_directory_is_an_error(tmp_path: Path) -> None:
    assert "no such directory" in str(load_catalogue(tmp_path / "nope").errors[0])
    assert "no *.toml" in str(load_catalogue(tmp_path).errors[0])


def test_pytest_reports_a_bad_case_file_by_name_and_still_runs_the_others(pytester: pytest.Pytester) -> None:
    cases = pytester.mkdir("cases")
    pytester.makeini("[pytest]\nconformance_cases = cases\n")
    (cases / "good.toml").write_text(GOOD)
    (cases / "bad.toml").write_text('family = "conv2d"\n[[grid]]\nin_channels = 3\nout_channels = 4\n'
                                    'kernel_size = 3\ninput_shape = [[4, 8, 8]]')
    result = pytester.runpytest_inprocess("cases", "-p", "no:cacheprovider", "--conformance-results=")
    result.assert_outcomes(passed=2, failed=1)
    text = result.stdout.str()
    assert "invalid case file: file" in text and "bad.toml" in text and "field input_shape" in text
    assert "Traceback" not in text


def test_toml_files_outside_the_configured_directories_are_not_collected(pytester: pytest.Pytester) -> None:
    cases = pytester.mkdir("cases")
    (cases / "other.toml").write_text('name = "not a case file"\n')
    result = pytester.runpytest_inprocess("cases", "-p", "no:cacheprovider", "--conformance-results=")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_pytest_ids_and_k_selection(pytester: pytest.Pytester) -> None:
    cases = pytester.mkdir("cases")
    pytester.makeini("[pytest]\nconformance_cases = cases\n")
    (cases / "softmax.toml").write_text('family = "softmax"\n[[grid]]\ndim = [1, -1]\ninput_shape = [[3, 4, 5]]')
    result = pytester.runpytest_inprocess("cases", "-p", "no:cacheprovider", "--collect-only", "-q",
                                          "-k", "softmax and dim-1", "--conformance-results=")
    lines = [line for line in result.stdout.lines if "::" in line]
    assert lines == ["cases/softmax.toml::softmax[dim-1-in3x4x5]::torch->keras",
                     "cases/softmax.toml::softmax[dim-1-in3x4x5]::keras->torch"]


@pytest.mark.parametrize(("family", "params", "field", "fragment"), [
    ("conv9d", {}, "family", "unknown family 'conv9d'"),
    ("conv2d", {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "input_shape": (3, 8)}, "input_shape",
     "expected rank 3"),
    ("conv2d", {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": "same",
                "input_shape": (3, 8, 8)}, "padding", "stride > 1"),
    ("linear", {"in_features": 4, "out_features": 2, "input_shape": (5,)}, "input_shape", "!= in_features"),
    ("max_pool2d", {"kernel_size": 2, "input_shape": (3, 8, 8), "dilations": 2}, "dilations", "unknown parameter"),
])
def test_build_pair_rejects_bad_parameters_by_field(family: str, params: dict, field: str, fragment: str) -> None:
    import conformance
    with pytest.raises(CaseError) as info:
        conformance.build_pair(family, **params)
    assert info.value.field == field and fragment in str(info.value)

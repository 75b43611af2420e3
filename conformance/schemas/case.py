"""The case-file format (``cases/*.toml``) as one declarative model: :class:`CaseFile`.

It says what every key may hold; :mod:`conformance.cases` reads a file through it and then does
what needs a family (its parameters, its weights' layout rules, which records match a case).
``conformance/schemas/case.schema.json`` is generated from it (``conformance schema --write``),
for editors and CI. A new key is one annotated line here, plus a line in ``cases.py`` if it
changes what a case is.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from .base import Absent, Table

Framework = Literal["tensorflow", "keras", "torch", "jax"]
_FRAMEWORKS = ", ".join(get_args(Framework))


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _matches_some(values: list[Any]) -> list[Any]:
    if not values:
        raise ValueError("an empty list matches no environment")
    return values


def _one_or_more(kind: Any) -> BeforeValidator:
    """``onednn = false`` or ``onednn_isa = ["avx512", "amx"]``: one value, or a list of alternatives."""
    return BeforeValidator(_as_list, json_schema_input_type=kind | Annotated[list[kind], Field(min_length=1)])


KerasBackend = Literal["tensorflow", "torch", "jax"]
OnednnIsa = Literal["none", "sse41", "avx", "avx2", "avx512", "amx"]
TorchDevice = Literal["cpu", "cuda"]
_SOME = AfterValidator(_matches_some)
Text = Annotated[str, StringConstraints(pattern=r"\S")]          # not blank
Link = Annotated[str, StringConstraints(pattern=r"^\s*\S*\s*$")]   # one URL or test path, no spaces


def _version_range(text: str) -> str:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise ValueError(f"invalid version range {text!r}") from None
    return text


VersionRange = Annotated[str, AfterValidator(_version_range),
                         Field(description="a version specifier set such as '>=2.20,<2.22'; empty: any version")]


def _not_empty(value: Any) -> Any:
    if isinstance(value, list) and not value:
        raise ValueError("an empty list of alternatives expands to no cases")
    return value


class Grid(Table):
    """``[[grid]]``: each parameter is a value or a list of alternatives; the cases are their product."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "minProperties": 1, "additionalProperties": {"description": "a value, or a list of alternative values",
                                                     "not": {"type": "array", "maxItems": 0}}})
    __pydantic_extra__: dict[str, Annotated[Any, AfterValidator(_not_empty)]]
    exclude: list[dict[str, Any]] = Field(default=[], description="parameter combinations left out of the product")

    @model_validator(mode="after")
    def _names_parameters(self) -> Grid:
        if not self.model_extra:
            raise ValueError("a grid block names no parameters")
        return self


class Tolerance(Table):
    """``[tolerance]``: overrides the family's tolerance policy, with the reason."""

    messages: ClassVar[dict[str, str]] = {
        "greater_than_equal": "expected a non-negative number, got {input}",
        "float_type": "expected a non-negative number, got {input}",
        "reason.missing": "a tolerance override needs a reason", "reason.string_pattern_mismatch":
            "a tolerance override needs a reason",
    }
    atol: float = Field(default=0.0, ge=0)
    rtol: float = Field(default=0.0, ge=0)
    reason: Text


class Environment(Table):
    """The environment facts a record holds in (:data:`conformance.facts.SCOPES`), each one value or a list."""

    messages: ClassVar[dict[str, str]] = {
        "extra_forbidden": "unknown environment fact {key!r}; records can be scoped on {allowed}",
    }
    keras_backend: Annotated[list[KerasBackend], _one_or_more(KerasBackend), _SOME] | None = Absent()
    onednn: Annotated[list[bool], _one_or_more(bool), _SOME] | None = Absent()
    onednn_isa: Annotated[list[OnednnIsa], _one_or_more(OnednnIsa), _SOME] | None = Absent()
    isa: Annotated[list[str], _one_or_more(str), _SOME] | None = Absent(
        description="torch's CPU capability, lower case: avx2, avx512, ...")
    torch_device: Annotated[list[TorchDevice], _one_or_more(TorchDevice), _SOME] | None = Absent()
    machine: Annotated[list[str], _one_or_more(str), _SOME] | None = Absent(
        description="platform.machine(): x86_64, aarch64, ...")


class Divergence(Table):
    """``[[divergence]]``: a known, strict difference between the frameworks for the matching cases."""

    messages: ClassVar[dict[str, str]] = {
        "reason.missing": "a divergence record needs a reason",
        "reason.string_pattern_mismatch": "a divergence record needs a reason",
        "link.string_pattern_mismatch": "a link is one URL or test path, without spaces; say the rest in the reason",
    }
    when: dict[str, Any] = Field(description="parameter pattern: each key matches any of its listed values")
    direction: Literal["both", "torch->keras", "keras->torch"] = "both"
    torch: VersionRange = ""
    tensorflow: VersionRange = ""
    keras: VersionRange = ""
    keras_backend: Annotated[list[KerasBackend], _one_or_more(KerasBackend), _SOME] | None = Absent(
        description="shorthand for environment = { keras_backend = ... }")
    environment: Environment = Field(default_factory=Environment)
    reason: Text = Field(description="what was measured, with the facts that scope it")
    link: Link = Field(default="", description="the evidence: a URL or a test path")


class Unsupported(Divergence):
    """``[[unsupported]]``: a framework refuses a valid configuration; strict like a divergence."""

    messages: ClassVar[dict[str, str]] = {
        **Divergence.messages,
        "reason.missing": "an unsupported record needs a reason",
        "reason.string_pattern_mismatch": "an unsupported record needs a reason",
        "framework.missing": f"name the framework that refuses: one of {_FRAMEWORKS}",
        "framework.literal_error": f"name the framework that refuses: one of {_FRAMEWORKS}; got {{input}}",
        "message.missing": "give the text of the framework's error (a part of it that does not change from case to "
                           "case)",
        "message.string_pattern_mismatch": "give the text of the framework's error (a part of it that does not "
                                           "change from case to case)",
    }
    framework: Framework
    message: Text = Field(description="a part of the framework's error message")


class ScenarioDivergence(Divergence):
    """``[[divergence]]`` in a training case file (``cases/training/*.toml``): the same record, with the rule's
    name and the tensors it may put outside tolerance (a scenario compares many; the others must still agree)."""

    messages: ClassVar[dict[str, str]] = {
        **Divergence.messages,
        "rule.missing": "name the rule, e.g. rule = \"onednn-avx2-1x1-stride2-filter-grad\"",
        "rule.string_pattern_mismatch": "a rule name is lower-case words joined by '-'",
    }
    rule: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]
    tensors: Annotated[list[Text], Field(min_length=1)] = Field(
        default=["*"], description="fnmatch patterns of the tensors the rule may put outside tolerance")
    factor: str | None = Field(default=None, description="the exact factor, in words, when there is one")


class CaseFile(Table):
    """One ``cases/*.toml`` file: a family, its grids of parameters, and its known divergences."""

    model_config = ConfigDict(title="conformance case file")
    messages: ClassVar[dict[str, str]] = {
        "family.missing": "missing the family name",
        "grid.missing": "no [[grid]] block: the file describes no cases",
        "grid.too_short": "no [[grid]] block: the file describes no cases",
        "dtype.literal_error": "only float32 is compared so far, got {input}",
        "extra_forbidden": "unknown key; expected one of {allowed}",
    }
    family: str = Field(description="a registered family: the snake_case torch class, e.g. conv2d")
    description: str = ""
    dtype: Literal["float32"] = "float32"
    seed: int = Field(default=0, description="mixed into every case's seed")
    batch: int = Field(default=2, ge=1)
    tier: Literal["default", "extended"] = Field(default="default",
                                                 description="extended: slow cases, run with -m extended")
    mode: Literal["inference", "train"] = Field(default="inference", description=(
        "train: gradients and training behaviour are compared (conformance.gradients); also a grid key"))
    layout: dict[str, str] = Field(default={}, description="the layout rules in words, checked against the "
                                                           "converter's: weight = 'O I H W -> H W I O'")
    tolerance: Tolerance | None = Absent()
    grid: list[Grid] = Field(min_length=1)
    divergence: list[Divergence] = []
    unsupported: list[Unsupported] = []

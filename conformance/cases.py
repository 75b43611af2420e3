"""The case catalogue: read ``cases/*.toml``, validate every field, expand grids, make ids.

A case file is data. Its format is declared once, as the model
:class:`conformance.schemas.case.CaseFile` (shipped as ``case.schema.json`` for editors and CI);
this module reads files through it, then checks what needs the family. In short (every key
optional unless marked):

    family = "conv2d"                  # required: a registered family (snake_case torch class)
    description = "..."
    dtype = "float32"                  # the only dtype compared so far
    seed = 0                           # mixed into every case's seed
    batch = 2
    tier = "default"                   # or "extended": slow cases, run with -m extended
    mode = "inference"                 # or "train" (also per [[grid]], as a list): gradients, dropout
                                       # statistics (conformance.gradients); ids end in "-train". For a
                                       # family with a parameter of that name (upsample), `mode` in a
                                       # grid or `when` is the parameter, and only this top-level key sets it
    [layout]                           # the rules in words; checked against the converter's
    weight = "O I H W -> H W I O"
    input = "N C H W -> N H W C"
    [tolerance]                        # override the family's policy; reason required
    atol = 1e-4; rtol = 1e-4; reason = "..."
    [[grid]]                           # required, one or more: the cartesian product of its lists
    kernel_size = [1, 3, [3, 5]]       # every value is a list of alternatives
    exclude = [{ padding = "same", stride = 2 }]
    [[divergence]]                     # a known framework difference, strict
    when = { output_size = [5, 7] }    # params pattern: each key matches any listed value
    direction = "both"                 # or "torch->keras", "keras->torch"
    torch = ">=2.0"                    # optional version ranges
    tensorflow = ""
    keras = ""
    environment = { keras_backend = "tensorflow", onednn = true, onednn_isa = ["avx512", "amx"] }
                                       # optional: the environment facts it holds in (conformance.facts.SCOPES)
    reason = "..."                     # required: what was measured, with the facts that scope it
    link = "..."                       # the evidence test
    [[unsupported]]                    # a framework refuses a valid configuration here: strict too
    when = { dilation = [2, 3] }       # same keys as [[divergence]], plus:
    framework = "tensorflow"           # required: tensorflow, keras, torch or jax
    message = "do not yet support dilation rates larger than 1"   # required: in the framework's error
    environment = { onednn = false }

A record applies where its parameters match and the versions and facts are in its scope. It is
strict both ways: inside its scope the case must still diverge (or still be refused), else the
result is ``xpass``; outside it the case must pass.

Every error names the file, the case (when there is one) and the field.
"""

from __future__ import annotations

import itertools
import tomllib
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CaseError
from .families import get_family
from .families.base import Family, Tolerance
from .layout import Layout, LayoutError

if TYPE_CHECKING:
    from .schemas.case import CaseFile

DIRECTIONS = ("torch->keras", "keras->torch")
MODES = ("inference", "train")
FRAMEWORKS = ("tensorflow", "keras", "torch", "jax")   # the model's Framework, in the same order


@dataclass(frozen=True)
class Divergence:
    """A recorded, strict, known difference between the frameworks for matching cases.

    ``kind`` is ``"divergence"`` (both frameworks run and disagree) or ``"unsupported"`` (a
    framework refuses to run a valid configuration; ``framework`` names it and ``message`` is the
    text its error must contain). ``environment`` scopes the record by the facts of
    :mod:`conformance.facts` (``{"onednn": (False,)}``), beside the version ranges.
    """

    when: Mapping[str, tuple[Any, ...]]
    reason: str
    direction: str = "both"
    versions: Mapping[str, str] = field(default_factory=dict)   # package -> specifier set
    link: str = ""
    environment: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)   # fact -> accepted values
    kind: str = "divergence"
    framework: str = ""          # unsupported only: "tensorflow", "keras", "torch" or "jax"
    message: str = ""            # unsupported only: what the framework's error says

    @property
    def keras_backend(self) -> str:
        """The one backend the record is limited to, or "" (kept for reports and older callers)."""
        backends = self.environment.get("keras_backend", ())
        return str(backends[0]) if len(backends) == 1 else ""

    def matches(self, params: Mapping[str, Any], direction: str, mode: str = "inference") -> bool:
        """``when`` may name ``mode``; without it a record holds in both modes."""
        if self.direction not in ("both", direction):
            return False
        return all((mode if key == "mode" and key not in params else params.get(key)) in values
                   for key, values in self.when.items())

    def applies_to(self, installed: Mapping[str, str], facts: Mapping[str, Any] | str = "") -> bool:
        """Whether the installed versions and the environment facts fall inside the record's scope.

        ``facts`` is :func:`conformance.facts.scope_facts` (a bare string is read as the Keras backend).
        """
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version

        from .facts import in_scope
        if isinstance(facts, str):
            facts = {"keras_backend": facts} if facts else {}
        scope = {k: v for k, v in self.environment.items() if k in facts}
        if not in_scope(scope, facts):
            return False
        return all(package not in installed or Version(installed[package].split("+")[0]) in SpecifierSet(spec)
                   for package, spec in self.versions.items() if spec)

    def scope_text(self) -> str:
        """``tensorflow >=2.20; onednn = true; onednn_isa in avx512, amx``: the record's scope in words."""
        parts = [f"{package} {spec}" for package, spec in self.versions.items() if spec]
        for key, values in self.environment.items():
            shown = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
            parts.append(f"{key} = {shown[0]}" if len(shown) == 1 else f"{key} in {', '.join(shown)}")
        return "; ".join(parts) or "every environment"

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, "when": {k: list(v) for k, v in self.when.items()}, "direction": self.direction,
               "versions": dict(self.versions), "environment": {k: list(v) for k, v in self.environment.items()},
               "keras_backend": self.keras_backend, "reason": self.reason, "link": self.link,
               "scope": self.scope_text()}
        if self.kind == "unsupported":
            out.update(framework=self.framework, message=self.message)
        return out


@dataclass(frozen=True)
class Case:
    """One concrete case: a family, its normalised parameters, and how to judge it."""

    id: str
    family: str
    params: Mapping[str, Any]
    file: str
    seed: int
    batch: int
    tolerance: Tolerance | None              # None: the family's policy
    divergences: tuple[Divergence, ...]
    layouts: Mapping[str, str]
    tier: str = "default"
    mode: str = "inference"                  # or "train": gradients and training behaviour are compared

    def divergence_for(self, direction: str) -> Divergence | None:
        """The first record whose parameters match, in any environment."""
        return next((d for d in self.divergences if d.matches(self.params, direction, self.mode)), None)

    def record_for(self, direction: str, installed: Mapping[str, str], facts: Mapping[str, Any]) -> Divergence | None:
        """The record that applies to this case here: its parameters match and the versions and
        environment facts fall in its scope."""
        return next((d for d in self.divergences if d.matches(self.params, direction, self.mode)
                     and d.applies_to(installed, facts)), None)


def format_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        items = [format_value(v) for v in value]
        return items[0] if len(set(items)) == 1 else "x".join(items)
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def case_id(family: Family, params: Mapping[str, Any], mode: str = "inference") -> str:
    """``conv2d[k3-s2-p1-d1-g1-bias-in4x16x16]``: every id-bearing parameter, in the family's order;
    a train case ends in ``-train`` (inference ids carry no mode, so they stay as they always were)."""
    parts = []
    for name, spec in family.params.items():
        if spec.abbrev is None:
            continue
        value = params[name]
        if isinstance(value, bool):
            parts.append(spec.abbrev if value else f"no{spec.abbrev}")
        elif name == "input_shape":
            parts.append(f"{spec.abbrev}{'x'.join(map(str, value))}")
        else:
            parts.append(f"{spec.abbrev}{format_value(value)}")
    if mode != "inference":
        parts.append(mode)
    return f"{family.name}[{'-'.join(parts)}]"


def _alternatives(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _expand_grid(block: Mapping[str, Any], excludes: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    keys = list(block)
    for combo in itertools.product(*(_alternatives(block[k]) for k in keys)):
        params = dict(zip(keys, combo, strict=True))
        if any(all(params.get(k) == v for k, v in pattern.items()) for pattern in excludes):
            continue
        yield params


def _divergences(model: CaseFile, family: Family, file: str) -> tuple[Divergence, ...]:
    """The ``[[divergence]]`` and ``[[unsupported]]`` records of a file: their patterns checked against
    the family's parameters (the model has checked the rest)."""
    from .schemas.case import Unsupported
    records = []
    for kind, entries in (("divergence", model.divergence), ("unsupported", model.unsupported)):
        for i, entry in enumerate(entries):
            where = f"{kind}[{i}]"
            pattern: dict[str, tuple[Any, ...]] = {}
            for key, values in entry.when.items():
                if key == "mode" and key not in family.params:
                    pattern[key] = tuple(_mode(v, file, f"{where}.when.mode") for v in _alternatives(values))
                    continue
                spec = family.params.get(key)
                if spec is None:
                    raise CaseError(f"{family.name} has no parameter {key!r}", file=file,
                                    field=f"{where}.when.{key}")
                try:
                    pattern[key] = tuple(spec.check(v) for v in _alternatives(values))
                except ValueError as exc:
                    raise CaseError(str(exc), file=file, field=f"{where}.when.{key}") from None
            environment, versions = record_scope(entry, file, where)
            framework, message = (entry.framework, entry.message.strip()) if isinstance(entry, Unsupported) \
                else ("", "")
            records.append(Divergence(pattern, entry.reason.strip(), entry.direction, versions, entry.link.strip(),
                                      environment, kind, framework, message))
    return tuple(records)


def record_scope(entry: Any, file: str, where: str) -> tuple[dict[str, tuple[Any, ...]], dict[str, str]]:
    """A validated record's environment facts and version ranges (layer and training case files alike)."""
    environment = {key: tuple(values) for key, values in entry.environment if values is not None}
    if entry.keras_backend is not None:      # shorthand for environment = { keras_backend = ... }
        if "keras_backend" in environment:
            raise CaseError("keras_backend is given twice; keep it in environment", file=file,
                            field=f"{where}.keras_backend")
        environment["keras_backend"] = tuple(entry.keras_backend)
    return environment, {"torch": entry.torch, "tensorflow": entry.tensorflow, "keras": entry.keras}


def _mode(value: Any, file: str, where: str) -> str:
    if value not in MODES:
        raise CaseError(f"expected 'inference' or 'train', got {value!r}", file=file, field=where)
    return str(value)


def _layouts(raw: Mapping[str, str], family: Family, file: str) -> dict[str, str]:
    known = {**family.weight_layouts}
    for name, text in raw.items():
        where = f"layout.{name}"
        try:
            Layout(text).validate()
        except LayoutError as exc:
            raise CaseError(str(exc), file=file, field=where) from None
        if name == "input":
            continue
        if name not in known:
            raise CaseError(f"{family.name} has no weight {name!r}; its weights are {sorted(known) or 'none'}",
                            file=file, field=where)
        if " ".join(text.split()) != " ".join(known[name].split()):
            raise CaseError(f"says {text!r} but the converter applies {known[name]!r}", file=file, field=where)
    return dict(raw)


def _validated(raw: dict[str, Any], file: str) -> CaseFile:
    """The file through its model (:class:`conformance.schemas.case.CaseFile`); every problem, one per line."""
    from pydantic import ValidationError  # here, not at import: only reading a case file needs pydantic

    from .schemas.base import one_line_each, problems
    from .schemas.case import CaseFile
    try:
        return CaseFile.model_validate(raw)
    except ValidationError as exc:
        found = problems(exc, CaseFile, raw)
        field, message = found[0]
        raise CaseError(message + one_line_each(found), file=file, field=field or None) from None


def load_file(path: str | Path) -> list[Case]:
    """All concrete cases of one file. Raises :class:`CaseError` naming the file, case and field."""
    path = Path(path)
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError(f"cannot read: {exc.strerror}", file=file) from None
    except UnicodeDecodeError:
        raise CaseError("not UTF-8 text", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise CaseError(f"not valid TOML: {exc}", file=file) from None
    model = _validated(raw, file)
    try:
        family = get_family(model.family)
    except CaseError as exc:
        raise exc.located(file=file) from None
    override = model.tolerance
    tolerance = Tolerance(override.atol, override.rtol, override.reason) if override is not None else None
    divergences = _divergences(model, family, file)
    layouts = _layouts(model.layout, family, file)

    cases: dict[str, Case] = {}
    for index, block in enumerate(model.grid):
        for params in _expand_grid(block.model_extra or {}, block.exclude):
            mode = model.mode if "mode" in family.params else \
                _mode(params.pop("mode", model.mode), file, f"grid[{index}].mode")   # upsample has its own
            label = f"{family.name}{params}"
            try:
                normalised = family.normalise(params)
            except CaseError as exc:
                hint = ""
                if exc.field == "input_shape" and "expected a list of sizes" in exc.detail:
                    hint = " (grid values are lists of alternatives: write input_shape = [[4, 16, 16]])"
                raise CaseError(exc.detail + hint, file=file, case=label, field=exc.field) from None
            cid = case_id(family, normalised, mode)
            if cid in cases:
                if cases[cid].params != normalised:
                    raise CaseError(f"two different cases get the same id {cid} ({dict(cases[cid].params)} and "
                                    f"{normalised}); change one of the values", file=file, case=cid)
                continue   # two grid blocks may overlap; the case runs once
            seed = (zlib.crc32(cid.encode()) ^ model.seed) & 0x7FFFFFFF
            cases[cid] = Case(cid, family.name, normalised, file, seed, model.batch, tolerance, divergences, layouts,
                              model.tier, mode)
    used = {id(d) for c in cases.values() for d in c.divergences
            if any(d.matches(c.params, x, c.mode) for x in DIRECTIONS)}
    for kind in ("divergence", "unsupported"):
        for i, record in enumerate(r for r in divergences if r.kind == kind):
            if id(record) not in used:
                raise CaseError("matches no case in this file: a stale or mistyped record", file=file,
                                field=f"{kind}[{i}].when")
    return list(cases.values())


@dataclass
class Catalogue:
    """Every case that loaded, and one error per file that did not. Bad files never stop good ones."""

    cases: list[Case]
    errors: list[CaseError]


def load_catalogue(directory: str | Path) -> Catalogue:
    directory = Path(directory)
    if not directory.is_dir():
        return Catalogue([], [CaseError("no such directory", file=str(directory))])
    cases: list[Case] = []
    errors: list[CaseError] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            loaded = load_file(path)
        except CaseError as exc:
            errors.append(exc)
            continue
        for case in loaded:
            if case.id in seen:
                errors.append(CaseError(f"the same case is also defined in {seen[case.id]}", file=case.file,
                                        case=case.id))
                continue
            seen[case.id] = case.file
            cases.append(case)
    if not cases and not errors:
        errors.append(CaseError("no *.toml case files", file=str(directory)))
    return Catalogue(cases, errors)

"""The case catalogue: read ``cases/*.toml``, validate every field, expand grids, make ids.

A case file is data. Its schema (every key optional unless marked):

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
from typing import Any

from .errors import CaseError
from .families import get_family
from .families.base import Family, Tolerance
from .layout import Layout, LayoutError

DIRECTIONS = ("torch->keras", "keras->torch")
_TOP_KEYS = {"family", "description", "dtype", "seed", "batch", "tier", "layout", "tolerance", "grid",
             "divergence", "unsupported", "mode"}
MODES = ("inference", "train")
_RECORD_KEYS = {"when", "direction", "torch", "tensorflow", "keras", "keras_backend", "environment", "reason", "link"}
_RECORD_KEYS_BY_KIND = {"divergence": _RECORD_KEYS, "unsupported": _RECORD_KEYS | {"framework", "message"}}
FRAMEWORKS = ("tensorflow", "keras", "torch", "jax")


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


def _expect(value: Any, kind: type | tuple[type, ...], where: str, file: str, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise CaseError(f"expected {what}, got {value!r}", file=file, field=where)
    return value


def _alternatives(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _expand_grid(block: Mapping[str, Any], index: int, file: str) -> Iterable[dict[str, Any]]:
    where = f"grid[{index}]"
    _expect(block, dict, where, file, "a table of parameter lists")
    excludes = block.get("exclude", [])
    _expect(excludes, list, f"{where}.exclude", file, "a list of parameter tables")
    for j, pattern in enumerate(excludes):
        _expect(pattern, dict, f"{where}.exclude[{j}]", file, "a table of parameter values")
    keys = [k for k in block if k != "exclude"]
    if not keys:
        raise CaseError("a grid block names no parameters", file=file, field=where)
    for key in keys:
        if isinstance(block[key], list) and not block[key]:
            raise CaseError("an empty list of alternatives expands to no cases", file=file,
                            field=f"{where}.{key}")
    for combo in itertools.product(*(_alternatives(block[k]) for k in keys)):
        params = dict(zip(keys, combo, strict=True))
        if any(all(params.get(k) == v for k, v in pattern.items()) for pattern in excludes):
            continue
        yield params


def _tolerance(raw: Any, file: str) -> Tolerance | None:
    if raw is None:
        return None
    _expect(raw, dict, "tolerance", file, "a table with atol, rtol and reason")
    unknown = set(raw) - {"atol", "rtol", "reason"}
    if unknown:
        raise CaseError(f"unknown key {sorted(unknown)[0]!r}; expected atol, rtol, reason", file=file,
                        field="tolerance")
    for key in ("atol", "rtol"):
        value = raw.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise CaseError(f"expected a non-negative number, got {value!r}", file=file, field=f"tolerance.{key}")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise CaseError("a tolerance override needs a reason", file=file, field="tolerance.reason")
    return Tolerance(float(raw.get("atol", 0.0)), float(raw.get("rtol", 0.0)), reason)


def _environment(raw: Any, where: str, file: str) -> dict[str, tuple[Any, ...]]:
    """``environment = { onednn = false, onednn_isa = ["avx512", "amx"] }``: facts and accepted values."""
    from .facts import SCOPES
    scope: dict[str, tuple[Any, ...]] = {}
    for key, values in _expect(raw, dict, where, file, "a table of environment facts").items():
        if key not in SCOPES:
            raise CaseError(f"unknown environment fact {key!r}; records can be scoped on {sorted(SCOPES)}",
                            file=file, field=f"{where}.{key}")
        allowed = SCOPES[key]
        alternatives = _alternatives(values)
        if not alternatives:
            raise CaseError("an empty list matches no environment", file=file, field=f"{where}.{key}")
        for value in alternatives:
            if allowed is None and not isinstance(value, str) or allowed is not None and (
                    value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool)):
                shown = [str(a).lower() if isinstance(a, bool) else repr(a) for a in allowed or ()]
                expected = "a string" if allowed is None else ", ".join(shown[:-1]) + " or " + shown[-1]
                raise CaseError(f"expected {expected}, got {value!r}", file=file, field=f"{where}.{key}")
        scope[key] = tuple(alternatives)
    return scope


def _divergences(raw_file: Mapping[str, Any], family: Family, file: str) -> tuple[Divergence, ...]:
    """The ``[[divergence]]`` and ``[[unsupported]]`` records of a file, validated."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    records = []
    for kind in ("divergence", "unsupported"):
        entries = _expect(raw_file.get(kind, []), list, kind, file, f"a list of [[{kind}]] tables")
        for i, entry in enumerate(entries):
            where = f"{kind}[{i}]"
            _expect(entry, dict, where, file, "a table")
            allowed_keys = _RECORD_KEYS_BY_KIND[kind]
            unknown = set(entry) - allowed_keys
            if unknown:
                raise CaseError(f"unknown key {sorted(unknown)[0]!r}; expected {sorted(allowed_keys)}",
                                file=file, field=where)
            reason = entry.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise CaseError(f"a {kind} record needs a reason", file=file, field=f"{where}.reason")
            direction = entry.get("direction", "both")
            if direction not in ("both", *DIRECTIONS):
                raise CaseError(f"expected 'both', 'torch->keras' or 'keras->torch', got {direction!r}", file=file,
                                field=f"{where}.direction")
            when = _expect(entry.get("when"), dict, f"{where}.when", file, "a table of parameter values")
            pattern: dict[str, tuple[Any, ...]] = {}
            for key, values in when.items():
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
            versions = {}
            for package in ("torch", "tensorflow", "keras"):
                spec_text = entry.get(package, "")
                try:
                    SpecifierSet(_expect(spec_text, str, f"{where}.{package}", file, "a version specifier string"))
                except InvalidSpecifier:
                    raise CaseError(f"invalid version range {spec_text!r}", file=file,
                                    field=f"{where}.{package}") from None
                versions[package] = spec_text
            environment = _environment(entry.get("environment", {}), f"{where}.environment", file)
            if "keras_backend" in entry:      # shorthand for environment = { keras_backend = ... }
                if "keras_backend" in environment:
                    raise CaseError("keras_backend is given twice; keep it in environment", file=file,
                                    field=f"{where}.keras_backend")
                environment.update(_environment({"keras_backend": entry["keras_backend"]},
                                                where, file))
            framework, message = "", ""
            if kind == "unsupported":
                framework = entry.get("framework")
                if framework not in FRAMEWORKS:
                    raise CaseError(f"name the framework that refuses: one of {', '.join(FRAMEWORKS)}; got "
                                    f"{framework!r}", file=file, field=f"{where}.framework")
                message = entry.get("message")
                if not isinstance(message, str) or not message.strip():
                    raise CaseError("give the text of the framework's error (a part of it that does not change "
                                    "from case to case)", file=file, field=f"{where}.message")
                message = message.strip()
            link = _expect(entry.get("link", ""), str, f"{where}.link", file, "a string")
            if any(ch.isspace() for ch in link.strip()):
                raise CaseError("a link is one URL or test path, without spaces; say the rest in the reason",
                                file=file, field=f"{where}.link")
            records.append(Divergence(pattern, reason.strip(), direction, versions, link.strip(), environment, kind,
                                      framework, message))
    return tuple(records)


def _mode(value: Any, file: str, where: str) -> str:
    if value not in MODES:
        raise CaseError(f"expected 'inference' or 'train', got {value!r}", file=file, field=where)
    return str(value)


def _layouts(raw: Any, family: Family, file: str) -> dict[str, str]:
    if raw is None:
        return {}
    _expect(raw, dict, "layout", file, "a table of layout rules")
    known = {**family.weight_layouts}
    for name, text in raw.items():
        where = f"layout.{name}"
        _expect(text, str, where, file, "a rule such as 'O I H W -> H W I O'")
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
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise CaseError(f"unknown key; expected one of {sorted(_TOP_KEYS)}", file=file, field=unknown[0])
    if "family" not in raw:
        raise CaseError("missing the family name", file=file, field="family")
    try:
        family = get_family(_expect(raw["family"], str, "family", file, "a family name"))
    except CaseError as exc:
        raise exc.located(file=file) from None
    if raw.get("dtype", "float32") != "float32":
        raise CaseError(f"only float32 is compared so far, got {raw['dtype']!r}", file=file, field="dtype")
    base_seed = _expect(raw.get("seed", 0), int, "seed", file, "an integer")
    batch = _expect(raw.get("batch", 2), int, "batch", file, "an integer")
    if batch < 1:
        raise CaseError("must be >= 1", file=file, field="batch")
    tier = raw.get("tier", "default")
    if tier not in ("default", "extended"):
        raise CaseError(f"expected 'default' or 'extended', got {tier!r}", file=file, field="tier")
    tolerance = _tolerance(raw.get("tolerance"), file)
    default_mode = _mode(raw.get("mode", "inference"), file, "mode")
    divergences = _divergences(raw, family, file)
    layouts = _layouts(raw.get("layout"), family, file)
    grids = raw.get("grid")
    if not grids:
        raise CaseError("no [[grid]] block: the file describes no cases", file=file, field="grid")
    _expect(grids, list, "grid", file, "a list of [[grid]] tables")

    cases: dict[str, Case] = {}
    for index, block in enumerate(grids):
        for params in _expand_grid(block, index, file):
            mode = default_mode if "mode" in family.params else \
                _mode(params.pop("mode", default_mode), file, f"grid[{index}].mode")   # upsample has its own
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
            seed = (zlib.crc32(cid.encode()) ^ base_seed) & 0x7FFFFFFF
            cases[cid] = Case(cid, family.name, normalised, file, seed, batch, tolerance, divergences, layouts, tier,
                              mode)
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

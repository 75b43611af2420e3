"""Compare two results documents: the upgrade gate.

``diff(baseline, candidate)`` keys every entry by ``(id, direction)`` and sorts what changed:

- ``newly_failing``: ``failed`` or ``error`` in the candidate, where the baseline had any other
  outcome (``passed``, ``divergence``, ``xpass``, ``skipped``), or had no such case at all.
- ``missing``: in the baseline, absent from the candidate (a deleted case can hide a failure).
- ``headroom_grew``: passed in both, and the candidate's headroom (observed / allowed error)
  exceeds ``headroom_factor`` times the baseline's. Many exact cases have a headroom of 0, and
  tiny headrooms are rounding noise, so the baseline headroom is floored at
  :data:`HEADROOM_FLOOR` (an error of 1e-3 of the allowed error): with the default factor of 10
  a case is flagged only once its error exceeds 1% of the allowed error and 10x the baseline.
- ``stale_divergences``: ``xpass`` in the candidate but not in the baseline: a recorded
  divergence or refusal that stopped happening, so its record must be removed or narrowed.
- ``tolerance_loosened``: the candidate judged a case by a larger atol or rtol than the baseline
  did, for the same stated reason. Every other regression is measured against the tolerance, so a
  looser one hides them all; mutation testing found that a family's tolerance loosened 1e5-fold
  failed no test and no case. A tolerance whose reason changed too (a train case judged by its
  gradients in one run and by its forward pass in the other, a reduction over another number of
  terms) is a different rule, not a loosened one, and is not compared; nor is a change of 1% or less
  (:data:`TOLERANCE_MARGIN`), the rounding of a measured allowance's stated sigma.

All five are regressions: the CLI exits 1 when any is non-empty. Reported for information only:
``fixed`` (failed or error in the baseline, passed now) and ``stale_in_both`` (``xpass`` in both
runs: the record was already stale when the baseline was made, so nothing changed).

Like with like: each run's ``environment.facts`` says which kernels it used. When the two runs
differ in a fact that a record is scoped on (oneDNN on or off, the oneDNN ISA, the Keras
backend), :attr:`Diff.environment_differs` lists it, and headroom growth is reported for
information instead of as a regression: other kernels round differently. Outcomes still count,
since records scoped on those facts already explain every difference they should.
Reads only the JSON, never torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HEADROOM_FLOOR = 1e-3
# A tolerance counts as loosened above 1% more: measured allowances (conformance.conditioning) state their sigma
# to three digits in the reason, so the same reason may carry an atol that differs by rounding, never by 1%.
TOLERANCE_MARGIN = 1.01
FAILING = ("failed", "error")
_VERSIONS = ("torch", "tensorflow", "keras", "numpy", "python", "device", "git_revision")


@dataclass(frozen=True)
class Change:
    """One case in one direction that changed between the two runs."""

    id: str
    direction: str
    family: str
    before: str
    after: str
    why: str

    @property
    def key(self) -> tuple[str, str]:
        return self.id, self.direction

    def line(self) -> str:
        return f"  {self.id} {self.direction}: {self.before} -> {self.after}\n      {self.why}"

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "direction": self.direction, "family": self.family, "before": self.before,
                "after": self.after, "why": self.why}


@dataclass
class Diff:
    newly_failing: list[Change] = field(default_factory=list)
    missing: list[Change] = field(default_factory=list)
    headroom_grew: list[Change] = field(default_factory=list)
    stale_divergences: list[Change] = field(default_factory=list)
    tolerance_loosened: list[Change] = field(default_factory=list)
    fixed: list[Change] = field(default_factory=list)
    stale_in_both: list[Change] = field(default_factory=list)
    headroom_info: list[Change] = field(default_factory=list)   # growth across environments that differ
    headroom_factor: float = 10.0
    environment: list[str] = field(default_factory=list)   # "torch 2.3.0 -> 2.4.0", what changed
    environment_differs: list[str] = field(default_factory=list)   # scoped facts that differ: "onednn true -> false"
    compared: int = 0

    SECTIONS = (("newly_failing", "newly failing"), ("missing", "missing from the candidate"),
                ("headroom_grew", "headroom grew"), ("stale_divergences", "stale records (xpass)"),
                ("tolerance_loosened", "tolerance loosened"))
    INFORMATION = (("fixed", "fixed"), ("stale_in_both", "stale in both runs (update the record)"),
                   ("headroom_info", "headroom grew across different kernels"))

    @property
    def regressions(self) -> list[Change]:
        return (self.newly_failing + self.missing + self.headroom_grew + self.stale_divergences
                + self.tolerance_loosened)

    def __bool__(self) -> bool:
        return bool(self.regressions)

    def format(self) -> str:
        lines = [f"compared {self.compared} case results (headroom factor {self.headroom_factor:g}, "
                 f"floor {HEADROOM_FLOOR:g})"]
        if self.environment:
            lines.append("environment: " + "; ".join(self.environment))
        if self.environment_differs:
            lines.append("the two runs used different kernels: they differ in facts that records are scoped on ("
                         + "; ".join(self.environment_differs) + "). Records scoped on them explain outcome "
                         "changes; headroom changes are listed for information only. For a like-with-like gate, "
                         "compare with a baseline of the same environment class.")
        for name, title in self.SECTIONS:
            changes = getattr(self, name)
            if changes:
                lines.append(f"\n{title} ({len(changes)}):")
                lines.extend(change.line() for change in changes)
        for name, title in self.INFORMATION:
            changes = getattr(self, name)
            if changes:
                lines.append(f"\n{title}, for information ({len(changes)}):")
                lines.extend(change.line() for change in changes)
        count = len(self.regressions)
        lines.append(f"\n{count} regression{'s' if count != 1 else ''}" if count else "\nno regressions")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: [c.to_json() for c in getattr(self, name)] for name, _ in self.SECTIONS}
        out.update({name: [c.to_json() for c in getattr(self, name)] for name, _ in self.INFORMATION})
        out.update(headroom_factor=self.headroom_factor, headroom_floor=HEADROOM_FLOOR, environment=self.environment,
                   environment_differs=self.environment_differs, compared=self.compared)
        return out


def _index(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(case["id"], case["direction"]): case for case in document.get("cases", [])}


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def _state(case: dict[str, Any]) -> str:
    headroom = case.get("headroom")
    return case["outcome"] + (f" (headroom {_num(headroom)})" if headroom is not None else "")


def _reason(case: dict[str, Any]) -> str:
    message = (case.get("message") or "").strip().splitlines()
    if message:
        return message[0]
    if case.get("headroom") is not None:
        return (f"max abs error {_num(case.get('max_abs_error'))} > allowed {_num(case.get('allowed_error'))}"
                f" (headroom {_num(case['headroom'])})")
    return "no message recorded"


def diff(baseline: dict[str, Any], candidate: dict[str, Any], headroom_factor: float = 10.0) -> Diff:
    """What got worse from ``baseline`` to ``candidate``; see the module docstring for the rules."""
    before, after = _index(baseline), _index(candidate)
    result = Diff(headroom_factor=headroom_factor, compared=len(after))
    env_before, env_after = baseline.get("environment") or {}, candidate.get("environment") or {}
    result.environment = [f"{k} {env_before.get(k)} -> {env_after.get(k)}" for k in _VERSIONS
                          if env_before.get(k) != env_after.get(k)]
    result.environment_differs = scoped_differences(baseline, candidate)
    for key, new in after.items():
        old = before.get(key)
        family = new.get("family", "")
        if new["outcome"] in FAILING and (old is None or old["outcome"] not in FAILING):
            was = "absent" if old is None else _state(old)
            why = ("new case, " if old is None else "") + _reason(new)
            result.newly_failing.append(Change(*key, family, was, new["outcome"], why))
        elif old is not None and old["outcome"] in FAILING and new["outcome"] == "passed":
            result.fixed.append(Change(*key, family, old["outcome"], _state(new), "now within tolerance"))
        if new["outcome"] == "xpass":
            record = new.get("divergence") or {}
            reason, kind = record.get("reason", ""), record.get("kind", "divergence")
            what = "recorded refusal no longer happens" if kind == "unsupported" else \
                "recorded divergence no longer diverges"
            why = f"the {what}; remove or narrow its [[{kind}]] record in " + \
                  (new.get("file") or "its case file") + \
                  (f" (scope: {record['scope']})" if record.get("scope") else "") + \
                  (f" (recorded reason: {reason})" if reason else "")
            was = _state(old) if old else "absent"
            stale = result.stale_in_both if old is not None and old["outcome"] == "xpass" else \
                result.stale_divergences
            stale.append(Change(*key, family, was, "xpass", why))
        if old is not None:
            loosened = _loosened(old.get("tolerance"), new.get("tolerance"))
            if loosened:
                result.tolerance_loosened.append(Change(*key, family, *loosened))
        if old is not None and old["outcome"] == new["outcome"] == "passed":
            h_old, h_new = old.get("headroom"), new.get("headroom")
            if isinstance(h_old, int | float) and isinstance(h_new, int | float):
                reference = max(float(h_old), HEADROOM_FLOOR)
                if h_new > headroom_factor * reference:
                    why = (f"max abs error {_num(old.get('max_abs_error'))} -> "
                           f"{_num(new.get('max_abs_error'))}"
                           f" (allowed {_num(new.get('allowed_error'))}): headroom x{h_new / reference:.3g}, "
                           f"over the factor {headroom_factor:g}"
                           + (f" against the floor {HEADROOM_FLOOR:g}" if h_old < HEADROOM_FLOOR else ""))
                    grew = result.headroom_info if result.environment_differs else result.headroom_grew
                    grew.append(Change(*key, family, f"headroom {_num(h_old)}", f"headroom {_num(h_new)}", why))
    for key, old in before.items():
        if key not in after:
            result.missing.append(Change(*key, old.get("family", ""), _state(old), "absent",
                                         "in the baseline but not in the candidate run (deleted, renamed "
                                         "or not selected)"))
    return result


def _loosened(old: Any, new: Any) -> tuple[str, str, str] | None:
    """(before, after, why) when ``new`` allows more than ``old`` for the same reason, else None."""
    if not isinstance(old, dict) or not isinstance(new, dict) or old.get("reason") != new.get("reason"):
        return None
    bounds = ("atol", "rtol")
    if not all(isinstance(t.get(b), int | float) for t in (old, new) for b in bounds):
        return None
    looser = [b for b in bounds if new[b] > old[b] * TOLERANCE_MARGIN]
    if not looser:
        return None
    state = "atol {}, rtol {}".format
    why = (" and ".join(f"{b} x{new[b] / old[b]:.3g}" if old[b] else f"{b} from 0" for b in looser)
           + f" for the same reason ({old.get('reason') or 'none given'}): a looser tolerance hides every other "
           "regression; if the change is deliberate, make a new baseline")
    return state(_num(old["atol"]), _num(old["rtol"])), state(_num(new["atol"]), _num(new["rtol"])), why


def scoped_differences(baseline: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """The environment facts that some record of either run is scoped on and that differ between
    the runs: ``["onednn true -> false"]``. Runs without facts (schema 1) compare only the backend."""
    scoped = {"keras_backend"}
    for document in (baseline, candidate):
        for record in document.get("divergences") or []:
            scoped.update((record.get("environment") or {}).keys())
    before = _facts(baseline)
    after = _facts(candidate)
    return [f"{key} {_fact(before.get(key))} -> {_fact(after.get(key))}" for key in sorted(scoped)
            if key in before and key in after and before[key] != after[key]]


def _facts(document: dict[str, Any]) -> dict[str, Any]:
    env = document.get("environment") or {}
    facts = dict(env.get("facts") or {})
    if "keras_backend" not in facts and env.get("keras_backend"):
        facts["keras_backend"] = env["keras_backend"]
    return facts


def _fact(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def environment_class(document: dict[str, Any]) -> str:
    """The environment class a run belongs to (``tensorflow-onednn-on``); see :mod:`conformance.facts`."""
    from .facts import environment_class as name
    facts = _facts(document)
    return facts.get("class") or name(facts)


__all__ = ["HEADROOM_FLOOR", "Change", "Diff", "diff", "environment_class", "scoped_differences"]

"""The report's training-mode panel: per family, train results beside inference results.

A family's inference and train cases are the same layers judged two ways (forward outputs; outputs
in training mode, gradients, dropout statistics), so the panel puts them in one row: counts of
each outcome and the worst headroom per mode, and for train the comparison that came closest to
failing (a gradient's name, or "statistically" for dropout). Rendered from the results JSON alone,
without JavaScript. Absent when a run has no train cases (so older reports look as they did).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from .escape import _e

ORDER = ("passed", "divergence", "unsupported", "xpass", "failed", "error", "skipped")


def _cell(cases: list[dict[str, Any]]) -> str:
    if not cases:
        return "<td class='meta'>—</td>"
    counts = Counter(c.get("outcome") for c in cases)
    chips = " ".join(f"<span class='chip o-{_e(o)}'><b>{counts[o]}</b> {_e(o)}</span>" for o in ORDER if counts[o])
    finite = [c["headroom"] for c in cases if isinstance(c.get("headroom"), int | float)
              and not isinstance(c.get("headroom"), bool) and math.isfinite(c["headroom"])]
    worst = f"<div class='meta'>max headroom {max(finite):.3g}</div>" if finite else ""
    return f"<td>{chips}{worst}</td>"


def _closest(cases: list[dict[str, Any]]) -> str:
    """The train comparison nearest to failing among passed results: what a drift would break first."""
    passed = [c for c in cases if c.get("outcome") == "passed" and isinstance(c.get("headroom"), int | float)]
    if not passed:
        return ""
    case = max(passed, key=lambda c: c["headroom"])
    training = case.get("training") or {}
    what = training.get("worst") or training.get("judged") or ""
    return f"{_e(what)} <span class='meta'>({_e(case.get('id'))}, {_e(case.get('direction'))})</span>"


def training_section(cases: list[dict[str, Any]]) -> str:
    """``<section id='training'>``: one row per family with train cases, inference beside train."""
    by_family: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for case in cases:
        by_family[case.get("family", "")][case.get("mode", "inference")].append(case)
    rows = [f"<tr data-family='{_e(family)}'><td><b>{_e(family)}</b></td>{_cell(modes.get('inference', []))}"
            f"{_cell(modes['train'])}<td>{_closest(modes['train'])}</td></tr>"
            for family, modes in by_family.items() if modes.get("train")]
    if not rows:
        return ""
    return ("<section id='training'><h2>Training mode beside inference</h2><p class='meta'>train cases compare "
            "outputs in training mode and the gradients of a seeded projection of the outputs with respect to the "
            "inputs and every weight, mapped by the transfer's rules; dropout is judged by its statistics.</p>"
            "<table class='div'><thead><tr><th>family</th><th>inference</th><th>train</th>"
            f"<th>train: closest to failing</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>")

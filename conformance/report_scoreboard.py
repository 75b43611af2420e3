"""The converter scoreboard: families (rows) x converters (columns), in the matrix report.

Shown when the environments of a ``conformance-matrix`` document judged different converters
(the ``converter`` fact, :mod:`conformance.converters`). Each cell counts a family's outcomes for
one converter, ``failed`` first and loudest: a converter that returns wrong numbers without
complaint is the dangerous one. Each cell links to its cases (one click: a list of
each case's outcome, message and evidence), and a last row gives each converter's median
conversion time per case (``timings.convert``; ``timings.transfer`` for our own
``transfer_weights``). No script: anchors only.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from .escape import _e
from .merge import converter_of

# Loudest first: a silent wrong answer outranks everything.
ORDER = ("failed", "error", "xpass", "refused", "unsupported", "divergence", "skipped", "passed")
_CSS = """
td.sb{min-width:9em}td.sb a{color:inherit;text-decoration:none}td.sb b.failed{color:#fff;background:#c0262d;
padding:1px 5px;border-radius:3px}td.o-refused{background:#f7f1e3}.sb-case{font-size:12px}
.sb-case .failed{color:#c0262d;font-weight:700}div.sb-cases h3{font-size:14px;margin:10px 0 2px}
div.sb-cases:target{outline:2px solid #1f6feb}
"""


def _conversion_seconds(case: dict[str, Any]) -> float | None:
    timings = case.get("timings") or {}
    value = timings.get("convert", timings.get("transfer"))
    return float(value) if isinstance(value, int | float) else None


def has_converters(matrix: dict[str, Any]) -> bool:
    names = {converter_of(e["results"])[0] for e in matrix["environments"]}
    return len(names) > 1 or names != {"transfer_weights"}


def _cell_text(counts: Counter[str]) -> str:
    parts = []
    for outcome in ORDER:
        if counts.get(outcome):
            label = f"{counts[outcome]} {outcome}"
            parts.append(f"<b class='failed'>{_e(label)}</b>" if outcome == "failed" else _e(label))
    return " · ".join(parts) or "not run"


def columns(matrix: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """One column per converter and direction: (title, version, cases). A converter of both directions
    (our own) gets a column per direction, so each column compares like with like."""
    result = []
    for entry in matrix["environments"]:
        name, version = converter_of(entry["results"])
        cases = entry["results"].get("cases", [])
        directions = list(dict.fromkeys(c.get("direction", "?") for c in cases)) or ["?"]
        for direction in directions:
            title = f"{name} {direction}" if len(directions) > 1 else name
            result.append((title, version, [c for c in cases if c.get("direction", "?") == direction]))
    return result


def render_scoreboard(matrix: dict[str, Any]) -> tuple[str, str]:
    """The scoreboard section's HTML and its CSS."""
    table = columns(matrix)
    families: dict[str, list[list[dict[str, Any]]]] = defaultdict(lambda: [[] for _ in table])
    seconds: list[list[float]] = [[] for _ in table]
    for index, (_, _, cases) in enumerate(table):
        for case in cases:
            families[case.get("family", "?")][index].append(case)
            took = _conversion_seconds(case)
            if took is not None and case.get("outcome") not in ("skipped",):
                seconds[index].append(took)
    column_names = [(name, version) for name, version, _ in table]
    heads = "".join(f"<th><b>{_e(name)}</b><div class='meta'>{_e(version)}</div></th>"
                    for name, version in column_names)
    totals = [Counter(c["outcome"] for c in cases) for _, _, cases in table]
    rows = [f"<tr><th>all families</th>{''.join(f'<td class=sb>{_cell_text(t)}</td>' for t in totals)}</tr>"]
    lists = []
    for family in sorted(families):
        cells = []
        for index, cases in enumerate(families[family]):
            counts = Counter(c["outcome"] for c in cases)
            anchor = f"sb-{index}-{family}"
            worst = next((o for o in ORDER if counts.get(o)), "absent")
            cells.append(f"<td class='sb o-{worst}'><a href='#{_e(anchor)}'>{_cell_text(counts)}</a></td>")
            if cases:
                lists.append(_case_list(anchor, column_names[index][0], family, cases))
        rows.append(f"<tr><th>{_e(family)}</th>{''.join(cells)}</tr>")
    medians = "".join(f"<td>{_e(f'{statistics.median(s) * 1000:.1f} ms' if s else '–')}"
                      f"<div class='meta'>{len(s)} conversions</div></td>" for s in seconds)
    rows.append(f"<tr><th>median conversion time</th>{medians}</tr>")
    body = (f"<section id='scoreboard'><h2>converter scoreboard: families × converters</h2>"
            f"<p class='meta'><b class='failed'>failed</b> = wrong numbers or shapes with no complaint from the "
            "converter; refused = the converter raised or declined; error = our adapter or the environment broke. "
            "Click a cell for its cases.</p>"
            f"<table><thead><tr><th>family</th>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<h2>cases by converter and family</h2>{''.join(lists)}</section>")
    return body, _CSS


def _case_list(anchor: str, converter: str, family: str, cases: list[dict[str, Any]]) -> str:
    ranked = sorted(cases, key=lambda c: (ORDER.index(c["outcome"]) if c["outcome"] in ORDER else 99, c["id"]))
    items = []
    for case in ranked:
        outcome = case["outcome"]
        detail = (case.get("message") or "").strip().splitlines()
        evidence = ""
        worst = case.get("worst")
        if outcome == "failed" and worst:
            evidence = (f" worst at {tuple(worst.get('index') or ())}: torch {worst.get('torch')!r}, "
                        f"keras {worst.get('keras')!r}")
        first = detail[0][:300] if detail else ""
        items.append(f"<li class='sb-case'><span class='{_e(outcome)}'>{_e(outcome)}</span> <code>{_e(case['id'])}"
                     f"</code> <span class='meta'>{_e(case.get('direction'))}</span> {_e(first)}{_e(evidence)}</li>")
    return (f"<div class='sb-cases' id='{_e(anchor)}'><h3>{_e(converter)} · {_e(family)} · {len(cases)} cases</h3>"
            f"<ul>{''.join(items)}</ul></div>")


__all__ = ["columns", "has_converters", "render_scoreboard"]

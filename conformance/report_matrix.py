"""The compatibility matrix as HTML: environments as columns, families and cases as rows.

Rendered from a ``conformance-matrix`` document (:mod:`conformance.merge`) alone, self-contained
(inline CSS, no script, no network). A reader sees at a glance what works where: each family's
outcomes per environment, each environment's facts in its column header, and below, every case
whose outcome is not the same in all environments, with the message behind each cell.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .escape import _e
from .results import OUTCOMES

_SEVERITY = {"error": 6, "failed": 5, "xpass": 4, "refused": 3, "unsupported": 3, "divergence": 2, "skipped": 1,
             "passed": 0}
_SHORT = {"passed": "pass", "failed": "FAIL", "divergence": "div", "unsupported": "unsup", "xpass": "XPASS",
          "skipped": "skip", "error": "ERROR", "refused": "refused"}
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1b1f24}h1{margin:0 0 4px}h2{margin:28px 0 8px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d5d9de;padding:4px 8px;vertical-align:top}
th{background:#f3f5f7;text-align:left}td.o-passed{background:#e3f4e6}td.o-failed{background:#f9d5d5;font-weight:600}
td.o-error{background:#f2c7cf;font-weight:600}td.o-xpass{background:#fbeaf5}td.o-divergence{background:#eef1f5}
td.o-unsupported{background:#f7f1e3}td.o-skipped{background:#f3f4f6}td.o-absent{color:#8a939c}
.meta{color:#5b6570;font-size:12px}dl{margin:0}dt{color:#5b6570;font-size:12px}dd{margin:0 0 2px}
"""


def _worst(counts: Counter[str]) -> str:
    return max(counts, key=lambda o: _SEVERITY.get(o, 0)) if counts else "absent"


def _header(entry: dict[str, Any]) -> str:
    document = entry["results"]
    env = document.get("environment") or {}
    facts = env.get("facts") or {}
    rows = [("torch", env.get("torch")), ("TensorFlow", env.get("tensorflow")), ("Keras", env.get("keras")),
            ("backend", facts.get("keras_backend", env.get("keras_backend"))),
            ("oneDNN", ("on, up to " + str(facts.get("onednn_isa"))) if facts.get("onednn") else "off"),
            ("ISA", facts.get("isa")), ("CPU", facts.get("cpu")), ("device", facts.get("torch_device")),
            ("class", facts.get("class"))]
    summary = document.get("summary") or {}
    counts = ", ".join(f"{summary[o]} {o}" for o in OUTCOMES if summary.get(o))
    facts_html = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows if v is not None)
    return (f"<th><b>{_e(entry['name'])}</b><div class='meta'>{_e(counts)}</div>"
            f"<details><summary class='meta'>facts</summary><dl>{facts_html}</dl></details></th>")


def render_matrix(matrix: dict[str, Any]) -> str:
    entries = matrix["environments"]
    names = [e["name"] for e in entries]
    by_env: list[dict[tuple[str, str], dict[str, Any]]] = [
        {(c["id"], c["direction"]): c for c in e["results"].get("cases", [])} for e in entries]
    families: dict[str, list[Counter[str]]] = defaultdict(lambda: [Counter() for _ in entries])
    for index, cases in enumerate(by_env):
        for case in cases.values():
            families[case.get("family", "?")][index][case["outcome"]] += 1
    family_rows = []
    for family in sorted(families):
        cells = []
        for counts in families[family]:
            text = " ".join(f"{n} {_SHORT.get(o, o)}" for o, n in sorted(counts.items(),
                                                                           key=lambda on: -_SEVERITY.get(on[0], 0)))
            cells.append(f"<td class='o-{_worst(counts)}'>{_e(text or 'not run')}</td>")
        family_rows.append(f"<tr><th>{_e(family)}</th>{''.join(cells)}</tr>")
    keys = sorted({k for cases in by_env for k in cases})
    differing = []
    for key in keys:
        outcomes = [cases.get(key, {}).get("outcome", "absent") for cases in by_env]
        if len(set(outcomes)) > 1:
            cells = []
            for cases, outcome in zip(by_env, outcomes, strict=True):
                case = cases.get(key, {})
                why = (case.get("message") or (case.get("divergence") or {}).get("reason") or "").strip()
                why = why.splitlines()[0][:300] if why else ""
                cells.append(f"<td class='o-{outcome}' title='{_e(why)}'>{_e(_SHORT.get(outcome, outcome))}</td>")
            differing.append(f"<tr><td><code>{_e(key[0])}</code> <span class='meta'>{_e(key[1])}</span></td>"
                             f"{''.join(cells)}</tr>")
    heads = "".join(_header(e) for e in entries)
    from .report_scoreboard import has_converters, render_scoreboard
    scoreboard, scoreboard_css = render_scoreboard(matrix) if has_converters(matrix) else ("", "")
    differ_html = (f"<table><thead><tr><th>case</th>{heads}</tr></thead><tbody>{''.join(differing)}</tbody></table>"
                   if differing else "<p class='meta'>every case has the same outcome in every environment</p>")
    return "\n".join([
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<title>conformance matrix · {len(entries)} environments</title><style>{_CSS}{scoreboard_css}</style>"
        "</head><body>",
        f"<header><h1>conformance compatibility matrix</h1><p class='meta'>created {_e(matrix.get('created'))} · "
        f"{len(entries)} environments: {_e('; '.join(names))} · schema {_e(matrix.get('schema'))} "
        f"v{_e(matrix.get('schema_version'))}</p></header>",
        scoreboard,
        f"<section id='families'><h2>families × environments</h2><table><thead><tr><th>family</th>{heads}</tr>"
        f"</thead><tbody>{''.join(family_rows)}</tbody></table></section>",
        f"<section id='differences'><h2>{len(differing)} case results that differ between environments</h2>"
        f"<p class='meta'>hover a cell for its message or recorded reason</p>{differ_html}</section>",
        "</body></html>\n"])


__all__ = ["render_matrix"]

"""report.html, rendered from a results document alone: self-contained, no network access."""

from __future__ import annotations

import html
import json
from typing import Any


def render(document: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    env = document.get("environment", {})
    summary = document.get("summary", {})
    rows = []
    for case in document.get("cases", []):
        rows.append(
            f"<tr class='{html.escape(case['outcome'])}'><td>{html.escape(case['id'])}</td>"
            f"<td>{html.escape(case['direction'])}</td><td>{html.escape(case['outcome'])}</td>"
            f"<td>{_num(case.get('max_abs_error'))}</td><td>{_num(case.get('headroom'))}</td>"
            f"<td>{html.escape(case.get('message') or '')}</td></tr>")
    header = " · ".join(f"{k} {html.escape(str(env.get(k)))}" for k in ("python", "torch", "tensorflow", "keras",
                                                                          "numpy", "device", "git_revision"))
    totals = " · ".join(f"{v} {k}" for k, v in summary.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>conformance report</title>
<style>body{{font:14px system-ui,sans-serif;margin:1em}} td,th{{padding:2px 6px;text-align:left}}
tr.passed td:nth-child(3){{color:#070}} tr.failed td:nth-child(3),tr.error td:nth-child(3),tr.xpass td:nth-child(3){{color:#b00;font-weight:bold}}
tr.divergence td:nth-child(3){{color:#960}}</style></head><body>
<h1>conformance report</h1><p>{header}</p><p>{totals}</p>
<table><thead><tr><th>case</th><th>direction</th><th>outcome</th><th>max abs error</th><th>headroom</th><th>message</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<script type="application/json" id="results">{html.escape(json.dumps(summary))}</script>
</body></html>
"""


def _num(value: Any) -> str:
    return "" if value is None else (f"{value:.3g}" if isinstance(value, float) else html.escape(str(value)))

"""report.html and JUnit XML, rendered from a results document alone (never torch or keras).

The HTML is one self-contained file: inline CSS, JS and SVG, no network access. The static part
(versions, totals, regressions against a baseline, known divergences) is rendered here; the
family matrix, the case table and the per-case detail are rendered in the browser from the
results embedded as ``<script type="application/json">``, lazily, so that thousands of cases
stay fast. The page reads its filters from the URL fragment, for instance
``report.html#q=conv2d s2&outcome=failed,error`` or ``report.html#case=relu[in7]&dir=torch->keras``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .escape import _e, _x
from .report_assets import BENCH_CSS, CSS, JS
from .report_train import training_section
from .results import OUTCOMES, PEER_OUTCOMES

_ENV_KEYS = (("python", "Python"), ("torch", "PyTorch"), ("tensorflow", "TensorFlow"), ("keras", "Keras"),
             ("keras_backend", "Keras backend"), ("numpy", "NumPy"), ("platform", "platform"),
             ("device", "device"), ("git_revision", "git revision"))


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else _e(value)
    if value == 0:
        return "0"
    return f"{value:.2e}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.3g}"


def _script_json(value: Any) -> str:
    """JSON for a <script> block: no '<', '>' or '&' survives, so "</script>" cannot end the block."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _jsonable(value: Any) -> Any:
    """NaN and infinities as strings, as the results file writes them, so the JSON stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _benchmarks(summary: Any) -> str:
    from .report_bench import benchmarks_section  # only reports with benchmarks need it
    return benchmarks_section(summary)


def render(document: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The report as one HTML string; with ``baseline``, a regression panel at the top."""
    cases = document.get("cases", [])
    env = document.get("environment") or {}
    changes = None
    payload: dict[str, Any] = {"cases": _jsonable(cases), "baseline": None, "flags": {}}
    if baseline is not None:
        from .diff import diff
        changes = diff(baseline, document)
        payload["baseline"] = {f"{c['id']}|{c['direction']}": [c.get("outcome"), _jsonable(c.get("headroom"))]
                               for c in baseline.get("cases", [])}
        for name, _ in changes.SECTIONS:
            for change in getattr(changes, name):
                payload["flags"][f"{change.id}|{change.direction}"] = name
    counts = Counter(case.get("outcome") for case in cases)
    title = f"conformance report · {env.get('torch', '?')} / keras {env.get('keras', '?')}"
    parts = [
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{CSS}{BENCH_CSS}</style></head><body>",
        _header(document, env),
        _regressions(changes, baseline) if changes is not None else "",
        _totals(counts, cases),
        _load_errors(document.get("errors") or []),
        _controls(counts),
        "<main id='families' aria-live='polite'></main>",
        "<noscript><p class='warn'>The matrix and per-case details need JavaScript; the summary above "
        "does not.</p></noscript>",
        training_section(cases),
        _divergences(document.get("divergences") or [], cases),
        _benchmarks(document.get("benchmarks")),
        "<div id='tip' role='tooltip' hidden></div>",
        f"<script type='application/json' id='conformance-data'>{_script_json(payload)}</script>",
        f"<script>{JS}</script></body></html>\n",
    ]
    return "\n".join(part for part in parts if part)


def _facts(facts: Mapping[str, Any]) -> str:
    """The environment facts that decide which kernels ran (and so which records apply)."""
    if not facts:
        return ""
    onednn = {True: "on", False: "off"}.get(facts.get("onednn"), "—")
    flags = ", ".join(name for name, on in (facts.get("cpu_flags") or {}).items() if on) or "none known"
    threads = ", ".join(f"{k} {v}" for k, v in (facts.get("threads") or {}).items())
    variables = ", ".join(f"{k}={v}" for k, v in (facts.get("variables") or {}).items()) or "none set"
    rows = (("CPU", facts.get("cpu")), ("ISA (torch)", facts.get("isa")), ("CPU flags", flags),
            ("oneDNN (Keras backend)", f"on, kernels up to {facts.get('onednn_isa', '—')}" if facts.get("onednn")
             else onednn),
            ("TensorFlow oneDNN", {True: "on", False: "off"}.get(facts.get("tensorflow_onednn"), "n/a")),
            ("torch mkldnn", {True: "on", False: "off"}.get(facts.get("torch_mkldnn"), "—")),
            ("torch device", facts.get("torch_device")), ("threads", threads), ("variables", variables),
            ("environment class", facts.get("class")))
    return "".join(f"<div><dt>{_e(label)}</dt><dd>{_e(value if value is not None else '—')}</dd></div>"
                   for label, value in rows)


def _header(document: dict[str, Any], env: Mapping[str, Any]) -> str:
    items = "".join(f"<div><dt>{label}</dt><dd>{_e(env.get(key, '—'))}</dd></div>" for key, label in _ENV_KEYS
                    if key in env or key != "keras_backend")
    items += _facts(env.get("facts") or {})
    devices = env.get("devices") or []
    if len(devices) > 1:
        items += f"<div class='wide'><dt>devices</dt><dd>{_e(', '.join(map(str, devices)))}</dd></div>"
    command = env.get("command")
    meta = f"created {_e(document.get('created', '?'))}"
    if command:
        meta += f" · <code>{_e(command)}</code>"
    return (f"<header><h1>conformance report</h1><p class='meta'>{meta} · schema "
            f"{_e(document.get('schema'))} v{_e(document.get('schema_version'))}</p>"
            f"<dl class='env'>{items}</dl></header>")


def _chip(outcome: str, count: int, label: str | None = None) -> str:
    return f"<span class='chip o-{outcome}'><b>{count}</b> {_e(label or outcome)}</span>"


def _totals(counts: Counter[str], cases: list[dict[str, Any]]) -> str:
    total = len(cases)
    chips = "".join(_chip(o, counts.get(o, 0)) for o in OUTCOMES + PEER_OUTCOMES if counts.get(o, 0) or o == "passed")
    bar, x = [], 0.0
    for outcome in OUTCOMES + PEER_OUTCOMES:
        n = counts.get(outcome, 0)
        if n and total:
            width = 1000 * n / total
            bar.append(f"<rect class='f-{outcome}' x='{x:.2f}' y='0' width='{width:.2f}' height='16'>"
                       f"<title>{n} {outcome} ({100 * n / total:.1f}%)</title></rect>")
            x += width
    svg = (f"<svg class='stack' viewBox='0 0 1000 16' preserveAspectRatio='none' role='img' "
           f"aria-label='outcomes'>{''.join(bar)}</svg>")
    return (f"<section id='totals'><div><h2>{total} case results</h2><div class='chips'>{chips}</div>{svg}"
            f"</div>{_histogram(cases)}</section>")


def _histogram(cases: list[dict[str, Any]]) -> str:
    """Headroom distribution: how close the passing cases come to failing, on a log scale."""
    labels = ["0", "<1e-5", "1e-5", "1e-4", "1e-3", "1e-2", "0.1", "≥0.5", ">1"]
    bins = [0] * len(labels)
    for case in cases:
        h = case.get("headroom")
        if not isinstance(h, int | float) or isinstance(h, bool) or case.get("outcome") not in ("passed", "failed"):
            continue                      # a recorded divergence is far above 1 by design: not a near miss
        if h <= 0:
            i = 0
        elif h > 1:
            i = 8
        elif h >= 0.5:
            i = 7
        else:   # 1: below 1e-5, 2: [1e-5, 1e-4), ..., 6: [0.1, 0.5)
            i = min(6, max(1, math.floor(math.log10(h)) + 7))
        bins[i] += 1
    peak = max(bins) or 1
    shade = ["h0", "h0", "h0", "h1", "h2", "h3", "h4", "h5", "f-failed"]
    bars = []
    for i, (label, n) in enumerate(zip(labels, bins, strict=True)):
        height = 0 if not n else max(2.0, 60 * math.sqrt(n / peak))
        bars.append(f"<g><rect class='{shade[i]}' x='{8 + i * 46}' y='{80 - height:.1f}' width='38' "
                    f"height='{height:.1f}'><title>{n} with headroom {label}</title></rect>"
                    f"<text x='{27 + i * 46}' y='{77 - height:.1f}' class='n'>{n or ''}</text>"
                    f"<text x='{27 + i * 46}' y='96'>{label}</text></g>")
    return (f"<figure class='hist'><svg viewBox='0 0 430 100' role='img' aria-label='headroom histogram'>"
            f"{''.join(bars)}</svg><figcaption>headroom = observed / allowed error, per passed or failed result "
            f"(bar heights on a square-root scale); above 1 fails</figcaption></figure>")


def _controls(counts: Counter[str]) -> str:
    shown = OUTCOMES + tuple(o for o in PEER_OUTCOMES if counts.get(o))    # refused: only a converter's runs
    boxes = "".join(f"<label class='chip o-{o}'><input type='checkbox' name='outcome' value='{o}' checked> "
                    f"{o} <b>{counts.get(o, 0)}</b></label>" for o in shown)
    legend = "".join(f"<span><i class='c o-passed {cls}'></i>{label}</span>" for cls, label in
                     (("h0", "<1e-4"), ("h1", "<1e-3"), ("h2", "<1e-2"), ("h3", "<0.1"), ("h4", "<0.5"),
                      ("h5", "≤1")))
    legend += "".join(f"<span><i class='c o-{o}'></i>{o}</span>" for o in shown if o != "passed")
    legend += "<span><i class='c o-passed h0 tr'></i>train mode</span>"
    return (
        "<section id='controls'><div class='bar'>"
        "<input id='q' type='search' placeholder='search ids, params, messages (/ to focus)' "
        "aria-label='search' autocomplete='off'>"
        f"<div class='outcomes'>{boxes}</div>"
        "<label class='sort'>sort <select id='sort'><option value='catalogue'>catalogue order</option>"
        "<option value='headroom'>headroom, worst first</option><option value='outcome'>outcome, worst first"
        "</option></select></label>"
        "<button type='button' id='expand'>expand all</button>"
        "<button type='button' id='collapse'>collapse all</button>"
        "<span id='status'></span></div>"
        f"<div class='legend'>passed, by headroom: {legend} · each column is one variant: top "
        "torch→keras, bottom keras→torch; click a cell for its detail</div></section>")


def _regressions(changes: Any, baseline: dict[str, Any] | None) -> str:
    base_env = (baseline or {}).get("environment") or {}
    ident = (f"baseline created {_e((baseline or {}).get('created', '?'))}, "
             f"git {_e(base_env.get('git_revision'))}, torch {_e(base_env.get('torch'))}, "
             f"tensorflow {_e(base_env.get('tensorflow'))}, "
             f"keras {_e(base_env.get('keras'))}")
    env_line = (f"<p>changed: {_e('; '.join(changes.environment))}</p>" if changes.environment else "")
    if changes.environment_differs:
        differs = _e("; ".join(changes.environment_differs))
        env_line += (f"<p class='warn'>the two runs used different kernels ({differs}): records scoped on these "
                     "facts explain outcome changes, and headroom changes are shown for information only. "
                     "Compare with a baseline of the same environment class.</p>")
    groups = [("newly_failing", "newly failing or erroring", "bad"),
              ("missing", "missing from this run", "bad"),
              ("stale_divergences", "xpass: a recorded divergence or refusal no longer happens", "warn"),
              ("headroom_grew", f"headroom grew over {changes.headroom_factor:g}× (error grew)", "warn"),
              ("tolerance_loosened", "tolerance loosened for the same reason (hides other regressions)", "bad"),
              ("fixed", "fixed", "good"),
              ("stale_in_both", "xpass in both runs: the record was already stale (not a regression)", "warn"),
              ("headroom_info", "headroom grew across different kernels (for information)", "good")]
    blocks = []
    for name, label, tone in groups:
        items = getattr(changes, name)
        if not items:
            continue
        rows = "".join(
            f"<li><a class='jump' href='#case={quote(c.id, safe='')}&amp;dir={quote(c.direction, safe='')}'>"
            f"{_e(c.id)}</a> <span class='dir'>{_e(c.direction)}</span> "
            f"<span class='ba'>{_e(c.before)} → {_e(c.after)}</span><div class='why'>{_e(c.why)}</div></li>"
            for c in items)
        tag = "details" if name in ("fixed", "stale_in_both", "headroom_info") else "details open"
        blocks.append(f"<{tag} class='group {tone}'><summary>{len(items)} {_e(label)}</summary>"
                      f"<ul>{rows}</ul></details>")
    count = len(changes.regressions)
    head = (f"<h2>{count} regression{'s' if count != 1 else ''} against the baseline</h2>" if count
            else "<h2>no regressions against the baseline</h2>")
    tone = ("bad" if changes.newly_failing or changes.missing or changes.tolerance_loosened
            else ("warn" if count else "good"))
    return f"<section id='regressions' class='{tone}'>{head}<p class='meta'>{ident}</p>{env_line}" \
           f"{''.join(blocks)}</section>"


def _load_errors(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return ""
    rows = "".join(f"<li><code>{_e(e.get('file'))}</code>"
                   f"{' · case ' + _e(e['case']) if e.get('case') else ''}"
                   f"{' · field ' + _e(e['field']) if e.get('field') else ''}: {_e(e.get('message'))}</li>"
                   for e in errors)
    return (f"<section id='load-errors' class='bad'><h2>{len(errors)} case file error"
            f"{'s' if len(errors) != 1 else ''}: these cases did not run</h2><ul>{rows}</ul></section>")


def _divergences(records: list[dict[str, Any]], cases: list[dict[str, Any]]) -> str:
    """The recorded divergences and refusals, each with its scope and what it did in this run."""
    hits: Counter[tuple[str, str, str]] = Counter()
    for case in cases:
        if case.get("divergence"):
            hits[(case.get("family", ""), case["divergence"].get("reason", ""), case.get("outcome", ""))] += 1
    rows = []
    for r in records:
        when = "; ".join(f"{k} ∈ {', '.join(json.dumps(v) for v in values)}" for k, values in
                         (r.get("when") or {}).items()) or "every case"
        versions = r.get("scope") or ", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items() if v) \
            or "every environment"
        link = r.get("link") or ""
        link_html = (f" <a href='{_e(link)}' rel='noopener noreferrer' target='_blank'>evidence</a>"
                     if re.match(r"https?://", link) else (f" {_e(link)}" if link else ""))
        key = (r.get("family", ""), r.get("reason", ""))
        kind = r.get("kind", "divergence")
        held = hits[(*key, kind)]
        seen = (f"{held} {'diverge' if kind == 'divergence' else 'refused'}" if held else "out of scope here") + (
            f", <b class='x'>{hits[(*key, 'xpass')]} xpass</b>" if hits[(*key, 'xpass')] else "")
        rows.append(f"<tr><td><b>{_e(r.get('family'))}</b> <span class='meta'>{_e(kind)}</span>"
                    f"<div class='meta'>{_e(r.get('file'))}</div></td>"
                    f"<td><code>{_e(when)}</code></td><td>{_e(r.get('direction', 'both'))}</td>"
                    f"<td>{_e(versions)}</td><td>{seen}</td><td>{_e(r.get('reason'))}{link_html}</td></tr>")
    body = ("<table class='div'><thead><tr><th>family</th><th>when</th><th>direction</th><th>scope</th>"
            f"<th>this run</th><th>reason</th></tr></thead><tbody>{''.join(rows)}</tbody></table>" if rows
            else "<p class='meta'>none recorded</p>")
    return (f"<section id='divergences'><h2>{len(records)} recorded divergence{'s' if len(records) != 1 else ''} "
            "and refusals</h2><p class='meta'>A record applies only inside its scope (versions and environment "
            "facts); inside it the case must still diverge or be refused, outside it the case must pass.</p>"
            f"{body}</section>")


# ---- JUnit XML ----------------------------------------------------------------------------------------

def explain(case: Mapping[str, Any]) -> str:
    """A plain-text explanation of one case result, from its JSON alone."""
    lines = [f"{case['id']} {case['direction']}: {str(case['outcome']).upper()}"]
    if case.get("message"):
        lines.append(f"  {case['message']}")
    if case.get("headroom") is not None:
        lines.append(f"  max abs error {_num(case.get('max_abs_error'))}, max rel error "
                     f"{_num(case.get('max_rel_error'))}, allowed {_num(case.get('allowed_error'))}, "
                     f"headroom {_num(case.get('headroom'))} (observed/allowed, > 1 fails)")
    worst = case.get("worst")
    if worst:
        where = f"in {worst['tensor']}" if worst.get("tensor") else f"at index {tuple(worst.get('index') or ())}"
        lines.append(f"  worst {where}: torch {worst.get('torch')!r}, keras {worst.get('keras')!r}")
    if case.get("reference_error"):
        ref = case["reference_error"]
        lines.append(f"  float64 reference distance: torch {_num(ref.get('torch'))}, "
                     f"keras {_num(ref.get('keras'))}")
    if case.get("divergence"):
        record = case["divergence"]
        lines.append(f"  recorded {record.get('kind', 'divergence')}: {record.get('reason', '')}")
        if record.get("scope"):
            lines.append(f"  record's scope: {record['scope']}")
    lines.append(f"  params: {json.dumps(case.get('params'))}")
    lines.append(f"  seed: {case.get('seed')}   file: {case.get('file')}")
    lines.append(f'  reproduce: conformance run --select "{case["id"]}"')
    return "\n".join(lines)


def junit_xml(document: dict[str, Any], explanations: Mapping[tuple[str, str], str] | None = None) -> bytes:
    """One testcase per case and direction (classname = family, name = "<id> <direction>"), plus one
    error testcase per case file that did not load. ``explanations`` overrides :func:`explain`."""
    import xml.etree.ElementTree as ET
    cases, load_errors = document.get("cases", []), document.get("errors") or []
    counts = Counter(case.get("outcome") for case in cases)
    failures, errors = counts["failed"] + counts["xpass"], counts["error"] + len(load_errors)
    skipped = counts["divergence"] + counts["unsupported"] + counts["skipped"]
    seconds = sum(float((c.get("timings") or {}).get("total") or 0.0) for c in cases)
    stats = {"tests": str(len(cases) + len(load_errors)), "failures": str(failures), "errors": str(errors),
             "skipped": str(skipped), "time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", name="conformance", **stats)
    suite = ET.SubElement(root, "testsuite", name="conformance", timestamp=_x(document.get("created", "")),
                          **stats)
    properties = ET.SubElement(suite, "properties")
    environment = document.get("environment") or {}
    for key, value in [*environment.items(), *((f"facts.{k}", v) for k, v in (environment.get("facts") or {}).items())]:
        if isinstance(value, str | int | float):
            ET.SubElement(properties, "property", name=key, value=_x(value))
    for case in cases:
        testcase = ET.SubElement(suite, "testcase", classname=_x(case.get("family", "")),
                                 name=_x(f"{case['id']} {case['direction']}"), file=_x(case.get("file", "")),
                                 time=f"{float((case.get('timings') or {}).get('total') or 0.0):.3f}")
        outcome = case["outcome"]
        text = (explanations or {}).get((case["id"], case["direction"])) or explain(case)
        first = _x((case.get("message") or "").splitlines()[0] if case.get("message") else outcome)
        if outcome in ("failed", "xpass"):
            message = "stale record: " + first if outcome == "xpass" else first
            ET.SubElement(testcase, "failure", message=message, type=outcome).text = _x(text)
        elif outcome == "error":
            ET.SubElement(testcase, "error", message=first, type="error").text = _x(text)
        elif outcome == "divergence":
            reason = (case.get("divergence") or {}).get("reason", "") or first
            ET.SubElement(testcase, "skipped", message=_x(f"recorded divergence: {reason}"),
                          type="divergence")
        elif outcome == "unsupported":
            ET.SubElement(testcase, "skipped", message=first, type="unsupported")
        elif outcome == "skipped":
            ET.SubElement(testcase, "skipped", message=first, type="skipped")
    for error in load_errors:
        testcase = ET.SubElement(suite, "testcase", classname="catalogue", name=_x(error.get("file", "")),
                                 file=_x(error.get("file", "")), time="0")
        ET.SubElement(testcase, "error", message=_x(error.get("message", "")), type="CaseError").text = _x(
            json.dumps(error, indent=1))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


__all__ = ["explain", "junit_xml", "render"]

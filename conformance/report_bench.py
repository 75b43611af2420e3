"""The benchmark section of report.html: torch against Keras per family, with the noise band.

Reads ``document["benchmarks"]`` as :func:`conformance.bench.summarise` writes it. Static HTML
and inline SVG, no script.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .escape import _e

# ---- benchmarks: document["benchmarks"], as conformance.bench.summarise writes it ------------------------

_BAR_W, _BAR_PAD, _ROW = 300, 14, 7


def _dur(seconds: Any) -> str:
    if not _positive(seconds):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _when(created: Any) -> str:
    """pytest-benchmark's UTC ISO time, to the second."""
    text = str(created or "?")
    return text[:19].replace("T", " ") + " UTC" if text.endswith("+00:00") else text


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _bars(entries: list[Mapping[str, Any]], scale: tuple[int, int], axis: bool = False) -> str:
    """One range bar per entry (min to max, a tick at the median) on a shared log scale; or the axis."""
    lo, hi = scale

    def x(t: float) -> float:
        return _BAR_PAD + (math.log10(t) - lo) / (hi - lo) * (_BAR_W - 2 * _BAR_PAD)
    height = 14 if axis else len(entries) * _ROW + 1
    parts = []
    for decade in range(lo, hi + 1):
        parts.append(f"<line x1='{x(10.0 ** decade):.1f}' x2='{x(10.0 ** decade):.1f}' y1='0' y2='{height}'/>")
        if axis:
            parts.append(f"<text x='{x(10.0 ** decade):.1f}' y='11'>{_dur(10.0 ** decade)}</text>")
    parts = [f"<g class='grid'>{''.join(parts)}</g>"]
    for i, e in enumerate(entries):
        y, (x0, xm, x1) = 1 + i * _ROW, (x(e["min"]), x(e["median"]), x(e["max"]))
        batch = f" b{e['batch']}" if e.get("batch") else ""
        tip = (f"{e.get('framework')} {e.get('mode')}{batch} on {e.get('device_name') or e.get('device')}: "
               f"min {_dur(e['min'])}, median {_dur(e['median'])}, max {_dur(e['max'])} "
               f"({e.get('rounds')} rounds × {e.get('iterations')} calls)")
        parts.append(f"<g class='bf-{_e(e.get('framework'))} bm-{_e(e.get('mode'))}'><title>{_e(tip)}</title>"
                     f"<rect class='band' x='{x0:.1f}' y='{y + 1}' width='{max(x1 - x0, 1.5):.1f}' height='4'/>"
                     f"<rect class='med' x='{xm - 1:.1f}' y='{y}' width='2.5' height='6'/></g>")
    return (f"<svg class='rb' viewBox='0 0 {_BAR_W} {height}' width='{_BAR_W}' height='{height}' role='img' "
            f"aria-label='timings'>{''.join(parts)}</svg>")


def _versus(runs: list[Mapping[str, Any]]) -> str:
    """The fastest mode of each framework by median, and their ratio."""
    best = {fw: min((e for e in runs if e.get("framework") == fw), key=lambda e: e["median"], default=None)
            for fw in ("torch", "keras")}
    parts = [f"<span class='bt-{fw}'>{fw} <b>{_dur(b['median'])}</b> {_e(b.get('mode'))}</span>"
             for fw, b in best.items() if b]
    if best["torch"] and best["keras"]:
        ratio = best["keras"]["median"] / best["torch"]["median"]
        faster, times = ("torch", ratio) if ratio >= 1 else ("keras", 1 / ratio)
        parts.append(f"{faster} <b>{times:.0f}×</b> faster" if times >= 10 else f"{faster} <b>{times:.2g}×</b> faster")
    return " · ".join(parts)


def benchmarks_section(summary: Any) -> str:
    """Per family and device: transfer time, and torch against Keras inference latency per batch size."""
    if not isinstance(summary, Mapping) or not isinstance(summary.get("families"), Mapping):
        return ""
    families = {str(f): [e for e in entries if isinstance(e, Mapping) and all(_positive(e.get(k)) for k in
                                                                              ("min", "median", "max"))]
                for f, entries in summary["families"].items() if isinstance(entries, list)}
    timed = [e for entries in families.values() for e in entries]
    if not timed:
        return ""
    lo = math.floor(math.log10(min(e["min"] for e in timed)))
    scale = (lo, max(lo + 1, math.ceil(math.log10(max(e["max"] for e in timed)))))
    batches = sorted({e["batch"] for e in timed if e.get("what") == "inference" and isinstance(e.get("batch"), int)})
    rows = []
    for family, entries in families.items():
        for case, device in dict.fromkeys((e.get("case"), e.get("device")) for e in entries):
            mine = [e for e in entries if e.get("case") == case and e.get("device") == device]
            transfer = "".join(f"<div title='min {_dur(e['min'])}, max {_dur(e['max'])}, {e.get('rounds')} rounds'>"
                               f"{_e(str(e.get('what')).removeprefix('transfer '))} <b>{_dur(e['median'])}</b></div>"
                               for e in mine if str(e.get("what")).startswith("transfer"))
            cells = []
            for batch in batches:
                runs = [e for e in mine if e.get("what") == "inference" and e.get("batch") == batch]
                cells.append(f"<td>{_bars(runs, scale)}<div class='vs'>{_versus(runs)}</div></td>" if runs
                             else "<td class='meta'>—</td>")
            rows.append(f"<tr><td><b>{_e(family)}</b><div class='mono meta'>{_e(case)}</div></td>"
                        f"<td>{_e(device)}</td><td class='tr'>{transfer or '—'}</td>{''.join(cells)}</tr>")
    m = summary.get("machine") or {}
    threads = (f", {m['torch_threads']} torch / {m.get('tensorflow_threads')} TensorFlow threads"
               if m.get("torch_threads") else "")
    versions = ", ".join(f"{k} {m[k]}" for k in ("torch", "tensorflow", "keras") if m.get(k))
    commit = f" · git {summary['commit']}" if summary.get("commit") else ""
    legend = "".join(f"<span><i class='sw bf-{fw} bm-{mode}'></i>{fw} {mode}</span>" for fw, mode in
                     (("torch", "eager"), ("torch", "torchscript"), ("torch", "compiled"), ("keras", "eager"),
                      ("keras", "graph"), ("keras", "xla")))
    head = "".join(f"<th>inference, batch {b}{_bars([], scale, axis=True)}</th>" for b in batches)
    return (f"<section id='benchmarks'><h2>benchmarks: {len(timed)} timings, {len(families)} families</h2>"
            f"<p class='meta'>measured {_e(_when(summary.get('created')))} on {_e(m.get('cpu', '?'))}, "
            f"{_e(m.get('cores', '?'))} cores{_e(threads)}, GPU: {_e(m.get('cuda') or 'none')}; {_e(versions)}"
            f"{_e(commit)}. Times per call; throughput = batch / median (in the full list).</p>"
            f"<div class='legend'>{legend}<span>bar: min to max over the rounds; tick: median; one log scale "
            f"for every bar</span></div><table class='bench'><thead><tr><th>family / case</th><th>device</th>"
            f"<th>transfer (median)</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"{_bench_list(families, scale)}</section>")


def _bench_list(families: Mapping[str, list[Mapping[str, Any]]], scale: tuple[int, int]) -> str:
    rows = []
    for family, entries in families.items():
        for e in entries:
            rate = e.get("throughput")
            rows.append(f"<tr><td>{_e(family)}</td><td class='mono'>{_e(e.get('case'))}</td><td>{_e(e.get('what'))}"
                        f"</td><td>{_e(e.get('framework'))}</td><td>{_e(e.get('mode'))}</td>"
                        f"<td>{_e(e.get('batch') or '')}</td><td title='{_e(e.get('device_name'))}'>"
                        f"{_e(e.get('device'))}</td><td>{_bars([e], scale)}</td><td class='num'>{_dur(e['min'])}</td>"
                        f"<td class='num'><b>{_dur(e['median'])}</b></td><td class='num'>{_dur(e['max'])}</td>"
                        f"<td class='num'>{_e(e.get('rounds'))} × {_e(e.get('iterations'))}</td><td class='num'>"
                        f"{f'{rate:,.0f}/s' if _positive(rate) else ''}</td></tr>")
    return (f"<details class='bench-all'><summary>every timing ({len(rows)})</summary><table class='bench'><thead>"
            "<tr><th>family</th><th>case</th><th>what</th><th>framework</th><th>mode</th><th>batch</th>"
            "<th>device</th><th>min to max</th><th>min</th><th>median</th><th>max</th><th>rounds × calls</th>"
            f"<th>throughput</th></tr></thead><tbody>{''.join(rows)}</tbody></table></details>")



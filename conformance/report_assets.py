"""The CSS and JavaScript of report.html (see report.py), kept as package data in ``assets/`` and inlined
at render time, so the report stays one self-contained file. No external resources, no console output.

The script reads the results from ``<script id="conformance-data">``, builds one section per
family (a strip of cells, one column per variant, one cell per direction), renders a family's
table only when it is opened and a case's detail only when it is clicked. Filters live in the
URL fragment: ``#q=<words>&outcome=failed,error&case=<id>&dir=<direction>``.
"""

from __future__ import annotations

from importlib.resources import files


def _asset(name: str) -> str:
    return (files(__package__) / "assets" / name).read_text(encoding="utf-8")


CSS = _asset("report.css")
JS = _asset("report.js")
BENCH_CSS = _asset("bench.css")

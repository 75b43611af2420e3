"""Text made safe for the report's HTML and the JUnit XML: one place, for report.py and report_bench.py."""

from __future__ import annotations

import html
import re
from typing import Any

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: Any) -> str:
    """XML 1.0 cannot carry control characters at all, escaped or not: drop them."""
    return _XML_BAD.sub("", "" if text is None else str(text))


def _e(value: Any) -> str:
    return html.escape(_x(value), quote=True)

"""docs/pitfalls.md maps every row of ../shared/PITFALLS.md to cases and to a naive-rule test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "pitfalls.md"
PITFALLS = ROOT.parent / "shared" / "PITFALLS.md"


def _rows(text: str) -> dict[int, str]:
    return {int(m.group(1)): line for line in text.splitlines() if (m := re.match(r"\|\s*(\d+)\s*\|", line))}


def test_every_pitfall_has_a_row() -> None:
    if not PITFALLS.exists():
        pytest.skip(f"{PITFALLS} is not beside this checkout")
    expected = set(_rows(PITFALLS.read_text()))
    assert expected and expected <= set(_rows(TABLE.read_text()))


def test_every_named_test_exists() -> None:
    for number, line in _rows(TABLE.read_text()).items():
        named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", line)
        assert named, f"pitfall {number} names no test"
        for path, function in named:
            source = (ROOT / path).read_text()
            assert not function or f"def {function}(" in source, f"pitfall {number}: {path}::{function} is missing"

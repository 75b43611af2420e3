"""Which cases a run takes: selection expressions, the extended tier, and deterministic balanced shards.

One place for the CLI and pytest alike (the CLI drives pytest; see :mod:`conformance.plugin`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConformanceError


def selected(case_id: str, family: str, expressions: Sequence[str], families: Collection[str] = ()) -> bool:
    """A case matches an expression when it is its family, a substring of its id, or a glob over it.

    An expression that names a family selects that family only: ``relu`` is not ``leaky_relu``.
    """
    for expression in expressions:
        if expression in families:
            if expression == family:
                return True
            continue
        if expression in case_id:
            return True
        if any(ch in expression for ch in "*?"):
            pattern = re.escape(expression).replace(r"\*", ".*").replace(r"\?", ".")
            if re.fullmatch(pattern, case_id):
                return True
    return False


def expressions(text: str | None) -> list[str]:
    return [e.strip() for e in (text or "").split(",") if e.strip()]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3); a clear error for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ConformanceError(f"--shard expects K/N with 1 <= K <= N (e.g. 2/3), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def load_costs(path: str | Path | None) -> dict[str, float]:
    """Seconds per case (both directions), recorded from a run: ``{case id: seconds}``; {} when absent."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    costs = data.get("costs", data) if isinstance(data, dict) else {}
    return {str(k): float(v) for k, v in costs.items() if isinstance(v, int | float)}


def costs_from_results(cases: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each case's recorded time, both directions summed, from a results document's cases."""
    costs: dict[str, float] = {}
    for case in cases:
        seconds = (case.get("timings") or {}).get("total")
        if isinstance(seconds, int | float):
            costs[case["id"]] = round(costs.get(case["id"], 0.0) + float(seconds), 4)
    return costs


def shard(case_ids: Sequence[str], index: int, count: int, costs: Mapping[str, float]) -> set[str]:
    """The cases of shard ``index`` of ``count``: deterministic, balanced by recorded cost.

    Longest first onto the least loaded shard (ties: the lower shard, then the case id), so every
    shard gets about the same time. Cases without a recorded cost count as the median cost.
    """
    known = sorted(costs[c] for c in case_ids if c in costs)
    default = known[len(known) // 2] if known else 1.0
    loads = [0.0] * count
    mine: set[str] = set()
    for case_id in sorted(case_ids, key=lambda c: (-costs.get(c, default), c)):
        target = min(range(count), key=lambda k: (loads[k], k))
        loads[target] += costs.get(case_id, default)
        if target == index - 1:
            mine.add(case_id)
    return mine


__all__ = ["costs_from_results", "expressions", "load_costs", "parse_shard", "selected", "shard"]

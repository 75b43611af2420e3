"""Print the converter scoreboard of a merged matrix as a Markdown table, for the README.

    python scripts/scoreboard_markdown.py reports/scoreboard/results.json [FAMILY ...]

One row per family (all, or those named), one column per converter, each cell the outcome counts
with ``failed`` first; the last rows give the totals and the median conversion time per case.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter, defaultdict

from conformance.merge import load_any
from conformance.report_scoreboard import ORDER, _conversion_seconds, columns


def _cell(counts: Counter[str], of: int = 0) -> str:
    """The outcome counts, ``failed`` first; a column that ran fewer of the family's cases than another
    (a run on a selection, or one stopped early) says how many of them it ran."""
    parts = [f"**{counts[o]} {o}**" if o == "failed" else f"{counts[o]} {o}" for o in ORDER if counts.get(o)]
    ran = sum(counts.values())
    return ", ".join(parts) + (f" ({ran} of {of} cases)" if 0 < ran < of else "") if parts else "–"


def main(argv: list[str]) -> int:
    table = columns(load_any(argv[0]))
    wanted = set(argv[1:])
    families: dict[str, list[Counter[str]]] = defaultdict(lambda: [Counter() for _ in table])
    totals: list[Counter[str]] = [Counter() for _ in table]
    seconds: list[list[float]] = [[] for _ in table]
    for index, (_, _, cases) in enumerate(table):
        for case in cases:
            families[case.get("family", "?")][index][case["outcome"]] += 1
            totals[index][case["outcome"]] += 1
            took = _conversion_seconds(case)
            if took is not None and case["outcome"] != "skipped":
                seconds[index].append(took)
    print("| family | " + " | ".join(f"{name} ({version})" if version else name for name, version, _ in table) + " |")
    print("|---|" + "---|" * len(table))
    for family in sorted(families):
        if not wanted or family in wanted:
            most = max(sum(c.values()) for c in families[family])
            print(f"| {family} | " + " | ".join(_cell(c, most) for c in families[family]) + " |")
    print("| **all cases** | " + " | ".join(_cell(c) for c in totals) + " |")
    print("| median conversion time | " + " | ".join(f"{statistics.median(s) * 1000:.0f} ms" if s else "–"
                                                     for s in seconds) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

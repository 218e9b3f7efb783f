"""Reliability figures: what the fault, race and bad-input tests tried, counted per suite.

Tests add to them through the ``figures`` fixture; conftest.py's session hook writes them
to .artifacts/reliability.json, from which scripts/reliability.py writes docs/reliability.md.
"""

from __future__ import annotations

_FIGURES: dict[str, dict[str, object]] = {}


class Figures:
    """``figures.add("store faults", faults=612)``: counts add up across tests and params."""

    def __init__(self, nodeid: str, doc: str) -> None:
        self.nodeid = nodeid
        self.doc = doc

    def add(self, suite: str, **counts: int) -> None:
        entry = _FIGURES.setdefault(suite, {"tests": [], "counts": {}})
        tests = entry["tests"]
        assert isinstance(tests, list)
        if self.nodeid not in tests:
            tests.append(self.nodeid)
        totals = entry["counts"]
        assert isinstance(totals, dict)
        for name, value in counts.items():
            totals[name] = int(totals.get(name, 0)) + int(value)

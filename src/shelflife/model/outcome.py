"""What a run did: the run shape of DESIGN 5.2 (a dry run carries only its plan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shelflife.model.actions import Action, Failure, Refusal, Skip, totals
from shelflife.model.plan import Plan


@dataclass
class RunOutcome:
    """A run's record as it is built: the plan, then what the executor did."""

    command: str
    plan: Plan
    dry_run: bool = False
    run_id: str | None = None
    actions: list[Action] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    recovered: dict[str, int] = field(default_factory=dict)
    scanned: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None
    refused: str | None = None
    claimed: bool = False  # the run took its plan (a plan applies once)

    @property
    def refusals(self) -> list[Refusal]:
        return self.plan.refusals

    @property
    def status(self) -> str:
        if self.refused or (self.refusals and not self.failed):
            return "refused"
        if self.failed or self.stopped:
            return "partial"
        return "ok"

    @property
    def exit_code(self) -> int:
        if self.dry_run:
            return 3 if self.refusals else 0
        return {"ok": 0, "partial": 1, "refused": 3}[self.status]

    def moved_bytes(self) -> dict[str, int]:
        """Bytes migrated per ``source->destination`` pair."""
        moved: dict[str, int] = {}
        for action in self.actions:
            if action.action == "migrate" and action.to:
                pair = f"{action.tier}->{action.to}"
                moved[pair] = moved.get(pair, 0) + action.bytes
        return moved

    def header_json(self) -> dict[str, Any]:
        """The JSON shape without its streamed lists (a dry run's: the plan's)."""
        if self.dry_run:
            body = self.plan.header_json()
            if self.scanned:
                body["scanned"] = self.scanned
            return body
        body = {
            "run_id": self.run_id,
            "status": self.status,
            "command": self.command,
            "plan_id": self.plan.id,
            "now": self.plan.now.isoformat(),
            "totals": totals(self.actions),
            "failed": [f.as_json() for f in self.failed],
            "refusals": [r.as_json() for r in self.refusals],
            "rows": self.rows,
            "moved_bytes": self.moved_bytes(),
            "recovered": self.recovered,
            "notes": self.plan.notes,
            "warnings": self.plan.warnings,
        }
        if self.plan.unmatched is not None:
            body["unmatched_references"] = self.plan.unmatched
        if self.plan.cost is not None:
            body["cost"] = self.plan.cost.as_json()  # the estimate for the plan applied
        if self.scanned:
            body["scanned"] = self.scanned
        if self.stopped:
            body["stopped"] = self.stopped
        if self.refused:
            body["reason"] = self.refused
        return body

    def as_json(self) -> dict[str, Any]:
        if self.dry_run:
            return {**self.header_json(), **_lists(self.plan)}
        return {
            **self.header_json(),
            "actions": [a.as_json() for a in self.actions],
            "skipped": [s.as_json() for s in self.skipped],
        }


def _lists(plan: Plan) -> dict[str, Any]:
    return {
        "actions": [a.as_json() for a in plan.iter_actions()],
        "skipped": [s.as_json() for s in plan.iter_skipped()],
    }

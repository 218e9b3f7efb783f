"""Logging: one line per action outcome, text or JSON, secrets never written.

Every secret value the configuration holds (keys, tokens, passwords in database URLs)
is registered when the configuration is loaded; :class:`RedactSecrets`, installed on the
handler, replaces each with ``***`` in every record, whatever module logged it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from shelflife.model.actions import Action, Failure, Skip

ACTIONS = logging.getLogger("shelflife.actions")
RUNS = logging.getLogger("shelflife.runs")
MASK = "***"
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never write ``value`` to a log or an error message (short values are ignored: a
    three-letter password would mask every word containing it)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = redact(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extras."""

    _PLAIN = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in self._PLAIN and not name.startswith("_"):
                body[name] = value
        if record.exc_info:
            body["exception"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(body, default=str))


def setup(level: str = "warning", fmt: str = "text", stream: Any = None) -> None:
    """Configure the root logger for a command (stderr, one line per record)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def log_outcomes(
    run_id: str, actions: Iterable[Action], skipped: Iterable[Skip], failed: Iterable[Failure]
) -> None:
    """One INFO line per action taken or skipped, one WARNING line per failure."""
    if not ACTIONS.isEnabledFor(logging.INFO) and not ACTIONS.isEnabledFor(logging.WARNING):
        return
    for action in actions:
        fields = {
            "run_id": run_id,
            "action": action.action,
            "outcome": "done",
            "rule": action.rule,
            "tier": action.tier,
            "key": action.key,
            "bytes": action.bytes,
        }
        if action.to:
            fields["to"] = action.to
        ACTIONS.info(_line(fields), extra=fields)
    for skip in skipped:
        fields = {
            "run_id": run_id,
            "outcome": "skipped",
            "rule": skip.rule,
            "tier": skip.tier,
            "key": skip.key,
            "reason": skip.reason,
        }
        ACTIONS.info(_line(fields), extra=fields)
    for failure in failed:
        fields = {
            "run_id": run_id,
            "outcome": "failed",
            "rule": failure.rule,
            "tier": failure.tier,
            "key": failure.key,
            "error": failure.error,
        }
        ACTIONS.warning(_line(fields), extra=fields)


def log_run(
    run_id: str, status: str, actions: list[Action], failed: list[Failure], error: str | None
) -> None:
    fields = {"run_id": run_id, "status": status, "actions": len(actions), "failed": len(failed)}
    if error:
        fields["error"] = error
    level = logging.INFO if status == "ok" else logging.WARNING
    RUNS.log(level, _line(fields), extra=fields)


def _line(fields: dict[str, Any]) -> str:
    return " ".join(f"{name}={_quote(value)}" for name, value in fields.items())


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or '"' in text or not text) else text

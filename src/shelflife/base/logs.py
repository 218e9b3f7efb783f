"""Logging: one line per action outcome, text or JSON, secrets never written.

Every secret value the configuration holds (keys, tokens, passwords in database URLs)
is registered when the configuration is loaded; :class:`RedactSecrets`, installed on the
handler, replaces each with ``***`` in every record, whatever module logged it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

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


def line(fields: dict[str, Any]) -> str:
    return " ".join(f"{name}={_quote(value)}" for name, value in fields.items())


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or '"' in text or not text) else text

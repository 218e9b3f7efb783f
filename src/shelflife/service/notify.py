"""Webhooks (``[[notify]]``): a JSON body POSTed to each target that wants the event.

Events and where they are raised:

- ``run-finished`` (status ok), ``run-failed`` (partial, or stopped on an error) and
  ``run-refused`` — once a run is recorded (:func:`run_ended`), with the run JSON header;
- ``plan-above`` — when a run, a dry run or ``shelflife plan`` makes a plan above a
  target's ``plan_above_objects`` / ``plan_above_bytes`` (:func:`plan_made`);
- ``health-changed`` — when stored stats carry another health status than the stats
  stored before them (:func:`save_stats`).

Delivery never fails a run and never holds it up: each is sent from a background thread,
retried with exponential back-off on a dropped connection, a timeout, 5xx and 429
(honouring ``Retry-After`` up to :data:`MAX_WAIT`), never on other answers; a process
waits at exit until its deliveries are done, each bounded by :func:`time_bound`. Failures
are logged (WARNING) with the URL masked; header values and the URL's secret parts are
registered with the log filter when the configuration is loaded.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from http.client import HTTPException, InvalidURL
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shelflife.base.logs import redact
from shelflife.base.ratelimit import parse_retry_after
from shelflife.base.units import utcnow
from shelflife.base.urls import mask_url
from shelflife.catalog.history import History
from shelflife.config.model import Config, NotifyConfig
from shelflife.engine.context import Context
from shelflife.model.outcome import RunOutcome
from shelflife.model.plan import Plan
from shelflife.service.checks import CheckResult

LOG = logging.getLogger("shelflife.notify")
INITIAL_WAIT = 0.5  # seconds before the first retry
MAX_WAIT = 10.0  # seconds, at most, between two attempts (and the longest Retry-After kept)
FAILED_LISTED = 50  # a run's failures listed in its event; failed_count says how many
RUN_EVENTS = {"ok": "run-finished", "partial": "run-failed", "failed": "run-failed"}

# -- targets and bodies (pure) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """A ``[[notify]]`` entry and the name it goes by."""

    name: str
    config: NotifyConfig

    @property
    def masked_url(self) -> str:
        return mask_url(self.config.url.get_secret_value())

    def wants(self, event: str) -> bool:
        return event in self.config.wanted

    def describe(self) -> dict[str, Any]:
        """What ``check`` shows: no secret (header names, never their values)."""
        return {
            "name": self.name,
            "url": self.masked_url,
            "events": list(self.config.wanted),
            "headers": sorted(self.config.headers),
        }


def targets(config: Config) -> list[Target]:
    """The configured targets, named (``notify[INDEX]`` when the entry has no name)."""
    return [
        Target(entry.name or f"notify[{index}]", entry) for index, entry in enumerate(config.notify)
    ]


def envelope(event: str, config: Config, now: datetime | None = None) -> dict[str, Any]:
    """What every body starts with: the event, when, and which shelflife sent it."""
    from shelflife import __version__

    return {
        "event": event,
        "at": (now or utcnow()).isoformat(),
        "shelflife": {
            "version": __version__,
            "host": socket.gethostname(),
            "config": config.source,
        },
    }


def run_event(status: str) -> str:
    """The event a run's final status raises."""
    return RUN_EVENTS.get(status, "run-refused")


def run_json(outcome: RunOutcome, status: str, message: str | None) -> dict[str, Any]:
    """The run JSON header (``run --json`` without its action lists), with the status
    recorded and, for a run that stopped on an error, its message."""
    body = outcome.header_json()
    body["status"] = status
    body["failed_count"] = len(outcome.failed)
    body["failed"] = body["failed"][:FAILED_LISTED]
    if message and status in ("failed", "refused"):
        body.setdefault("reason" if status == "refused" else "error", message)
    return body


def plan_over(config: NotifyConfig, plan: Plan) -> dict[str, Any] | None:
    """The counted figures if ``plan`` is above the target's thresholds (more than
    ``plan_above_objects`` actions, or more than ``plan_above_bytes`` bytes, of the kinds
    ``plan_above_actions`` names), else None."""
    if config.plan_above_objects is None and config.plan_above_bytes is None:
        return None
    counted = [f for name, f in plan.counts.items() if name in config.plan_above_actions]
    objects = sum(f["objects"] for f in counted)
    size = sum(f["bytes"] for f in counted)
    over_objects = config.plan_above_objects is not None and objects > config.plan_above_objects
    over_bytes = config.plan_above_bytes is not None and size > config.plan_above_bytes
    if not (over_objects or over_bytes):
        return None
    return {
        "objects": objects,
        "bytes": size,
        "actions": list(config.plan_above_actions),
        "plan_above_objects": config.plan_above_objects,
        "plan_above_bytes": config.plan_above_bytes,
    }


def health_change(previous: dict[str, Any] | None, body: dict[str, Any]) -> dict[str, Any] | None:
    """The ``health-changed`` fields if ``body``'s health status differs from
    ``previous``'s (no previous stats: a change only from a status other than healthy)."""
    before = (previous or {}).get("health", {}).get("status")
    after = body.get("health", {}).get("status")
    if after is None or after == before or (before is None and after == "healthy"):
        return None
    return {
        "from": before,
        "to": after,
        "reasons": list(body["health"].get("reasons", [])),
        "stats": body,
    }


# -- hooks: small calls from the service; never raise ----------------------------------------


def run_ended(context: Context, outcome: RunOutcome, status: str, message: str | None) -> None:
    """A run was recorded with ``status``: tell the targets that want its event."""
    _guarded(lambda: _run_ended(context.config, outcome, status, message))


def _run_ended(config: Config, outcome: RunOutcome, status: str, message: str | None) -> None:
    event = run_event(status)
    chosen = [t for t in targets(config) if t.wants(event)]
    if chosen:
        body = {**envelope(event, config), "run": run_json(outcome, status, message)}
        send([(target, body) for target in chosen])


def plan_made(context: Context, plan: Plan, *, command: str, dry_run: bool) -> None:
    """A plan was made (by a run, a dry run or ``plan``): tell each target it is above."""
    _guarded(lambda: _plan_made(context.config, plan, command, dry_run))


def _plan_made(config: Config, plan: Plan, command: str, dry_run: bool) -> None:
    outgoing = []
    for target in targets(config):
        over = plan_over(target.config, plan) if target.wants("plan-above") else None
        if over is not None:
            body = {
                **envelope("plan-above", config),
                "command": command,
                "dry_run": dry_run,
                "above": over,
                "plan": plan.header_json(),
            }
            outgoing.append((target, body))
    send(outgoing)


def save_stats(context: Context, body: dict[str, Any], now: datetime) -> None:
    """Store a stats body (for /metrics), and raise ``health-changed`` if its health
    status differs from the last stored one's."""
    history = History(context.catalog.engine)
    previous = history.latest_stats() if context.config.notify else None
    history.save_stats(body, now)
    if context.config.notify:
        stats_saved(context, None if previous is None else previous[1], body)


def stats_saved(context: Context, previous: dict[str, Any] | None, body: dict[str, Any]) -> None:
    """Stats were stored after ``previous``: tell the targets of a change of health."""
    _guarded(lambda: _stats_saved(context.config, previous, body))


def _stats_saved(config: Config, previous: dict[str, Any] | None, body: dict[str, Any]) -> None:
    change = health_change(previous, body)
    chosen = [t for t in targets(config) if t.wants("health-changed")]
    if change is not None and chosen:
        event = {**envelope("health-changed", config), **change}
        send([(target, event) for target in chosen])


def _guarded(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception as exc:  # a notification is never a reason for a run to fail
        LOG.warning("notifications not sent: %s", redact(f"{type(exc).__name__}: {exc}"))


# -- delivery ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one delivery went."""

    target: str
    url: str  # masked
    event: str
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.target,
            "url": self.url,
            "event": self.event,
            "delivered": self.delivered,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
        }


class _Transient(Exception):
    """A failure that may pass: tried again."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


class _Permanent(Exception):
    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason, self.status = reason, status


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook is not followed elsewhere: its headers may hold a token."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def time_bound(config: NotifyConfig) -> float:
    """The longest one delivery to ``config`` can take, in seconds: every attempt's
    timeout (a request's connect and each read) and every wait between attempts."""
    timeout = config.timeout.total_seconds()
    return (config.retries + 1) * timeout * 2 + config.retries * MAX_WAIT


def deliver(target: Target, body: dict[str, Any]) -> Delivery:
    """POST ``body`` to ``target`` now, retrying transient failures; log a failure."""
    config = target.config
    event = str(body.get("event", ""))
    data = json.dumps(body, default=str).encode("utf-8")
    delivery_id = uuid.uuid4().hex
    attempts = 0

    def attempt() -> int:
        nonlocal attempts
        attempts += 1
        return _post(config, data, event, delivery_id, attempts)

    def note(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        LOG.info(
            "notify %s (%s): %s attempt %d failed (%s); retrying in %.1fs",
            target.name,
            target.masked_url,
            event,
            state.attempt_number,
            getattr(error, "reason", error),
            wait,
        )

    backoff = wait_exponential_jitter(multiplier=INITIAL_WAIT, max=MAX_WAIT, jitter=INITIAL_WAIT)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = getattr(error, "retry_after", None)
        return float(asked) if asked is not None else float(backoff(state))

    def may_retry(exc: BaseException) -> bool:
        return isinstance(exc, _Transient) and (exc.retry_after or 0.0) <= MAX_WAIT

    try:
        status = Retrying(
            retry=retry_if_exception(may_retry),
            stop=stop_after_attempt(config.retries + 1),
            wait=wait,
            before_sleep=note,
            reraise=True,
        )(attempt)
    except (_Transient, _Permanent) as exc:
        reason = exc.reason
        if isinstance(exc, _Transient) and (exc.retry_after or 0.0) > MAX_WAIT:
            reason += f" (asked to retry after {exc.retry_after:.0f}s: more than {MAX_WAIT:.0f}s)"
        LOG.warning(
            "notify %s (%s): %s not delivered after %d attempt%s: %s",
            target.name,
            target.masked_url,
            event,
            attempts,
            "" if attempts == 1 else "s",
            reason,
        )
        return Delivery(target.name, target.masked_url, event, False, attempts, exc.status, reason)
    LOG.info(
        "notify %s (%s): %s delivered (HTTP %d, attempt %d)",
        target.name,
        target.masked_url,
        event,
        status,
        attempts,
    )
    return Delivery(target.name, target.masked_url, event, True, attempts, status)


def _post(config: NotifyConfig, data: bytes, event: str, delivery_id: str, attempt: int) -> int:
    from shelflife import __version__

    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"shelflife/{__version__}",
        "X-Shelflife-Event": event,
        "X-Shelflife-Delivery": delivery_id,  # the same on every attempt: receivers dedupe
        "X-Shelflife-Attempt": str(attempt),
    }
    url, basic = _without_userinfo(config.url.get_secret_value())
    if basic is not None:
        headers["Authorization"] = basic
    headers.update({name: value.get_secret_value() for name, value in config.headers.items()})
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=config.timeout.total_seconds()) as answer:
            answer.read(65536)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
        if code == 429 or code >= 500:
            after = parse_retry_after(exc.headers.get("Retry-After"))
            raise _Transient(f"HTTP {code}", code, after) from None
        if 300 <= code < 400:
            raise _Permanent(f"HTTP {code} (redirects are not followed)", code) from None
        raise _Permanent(f"HTTP {code}", code) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise _Permanent(f"TLS: {exc.reason.verify_message}") from None
        raise _Transient(_reason(exc.reason)) from None
    except InvalidURL as exc:
        raise _Permanent(f"invalid URL: {_reason(exc)}") from None
    except (TimeoutError, ConnectionError, HTTPException, OSError) as exc:
        raise _Transient(_reason(exc)) from None


def _without_userinfo(url: str) -> tuple[str, str | None]:
    """The URL without ``user:password@`` (urllib sends none), and the Basic
    ``Authorization`` header value it stands for."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    user, password = unquote(parts.username), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


def _reason(error: object) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return redact(str(error) or type(error).__name__)


# -- the outbox: background deliveries, awaited at exit --------------------------------------

_lock = threading.Lock()
_pending: list[tuple[threading.Thread, float]] = []  # (thread, monotonic deadline)
_registered = False


def send(outgoing: Iterable[tuple[Target, dict[str, Any]]]) -> None:
    """Deliver each body to its target from a background thread (awaited at exit)."""
    global _registered
    for target, body in outgoing:
        thread = threading.Thread(
            target=deliver, args=(target, body), name=f"notify-{target.name}", daemon=True
        )
        with _lock:
            _pending[:] = [(t, d) for t, d in _pending if t.is_alive()]
            _pending.append((thread, time.monotonic() + time_bound(target.config) + 1.0))
            if not _registered:
                atexit.register(flush)
                _registered = True
        thread.start()


def flush(timeout: float | None = None) -> bool:
    """Wait for the deliveries under way (each at most its :func:`time_bound`, all at most
    ``timeout`` seconds); whether every one is done."""
    limit = None if timeout is None else time.monotonic() + timeout
    with _lock:
        waiting = list(_pending)
    for thread, deadline in waiting:
        until = deadline if limit is None else min(deadline, limit)
        thread.join(max(0.0, until - time.monotonic()))
    with _lock:
        _pending[:] = [(t, d) for t, d in _pending if t.is_alive()]
        return not _pending


def send_test(config: Config, name: str | None = None) -> list[Delivery]:
    """Send a ``test`` event to every target (or the one named), now, whatever its events;
    how each delivery went, in the targets' order."""
    chosen = [t for t in targets(config) if name is None or t.name == name]
    body = {**envelope("test", config), "message": "a test event from 'shelflife notify test'"}
    results: dict[str, Delivery] = {}

    def one(target: Target) -> None:
        results[target.name] = deliver(target, body)

    threads = [threading.Thread(target=one, args=(t,), daemon=True) for t in chosen]
    for thread in threads:
        thread.start()
    for thread, target in zip(threads, chosen, strict=True):
        thread.join(time_bound(target.config) + 1.0)
    return [
        results.get(t.name)
        or Delivery(t.name, t.masked_url, "test", False, 0, error="no answer in time")
        for t in chosen
    ]


def check_targets(config: Config) -> list[CheckResult]:
    """What ``shelflife check`` lists: each target, masked, and the events it is sent
    (nothing is sent: ``shelflife notify test`` does)."""
    return [
        CheckResult(
            "notify",
            target.name,
            True,
            f"{target.masked_url} (events: {', '.join(target.config.wanted)})",
        )
        for target in targets(config)
    ]

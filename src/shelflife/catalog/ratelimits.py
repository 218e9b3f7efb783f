"""A tier's request slots kept in the catalog, shared by every process that uses it.

One row per rate-limited tier holds the next free slot (µs since the epoch). A process
reserves a slice of the tier's request time with one short transaction — an atomic
``UPDATE`` that moves the row on (PostgreSQL and MariaDB lock the row, SQLite the
database, for the few microseconds it takes), then reads back where the slice ends — and
spends its slots without asking again. Slices never overlap, so all processes together
stay under the rate. A tier without a limit has a row too, which only holds move on: its
processes read it back now and then to keep to another's hold. Instants are the hosts'
clocks: machines sharing a catalog keep them in step (NTP), as a skew shifts one host's
slots against another's.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, Engine, case, insert, literal, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from shelflife.base.ratelimit import LocalSlots
from shelflife.catalog.catalog import _Guard
from shelflife.catalog.schema import rate_limits
from shelflife.errors import CatalogError

log = logging.getLogger("shelflife")


class CatalogSlots:
    """The :class:`~shelflife.base.ratelimit.SlotSource` of one tier, in the catalog.

    Should the catalog fail, the process carries on with slots of its own (it then keeps
    under the rate by itself, not with the others) and says so once."""

    blocking = True

    def __init__(self, engine: Engine, tier: str) -> None:
        self.engine = engine
        self.tier = tier
        self._fallback = LocalSlots()
        self._warned = threading.Event()

    def __repr__(self) -> str:
        return f"CatalogSlots({self.tier!r})"

    def reserve(self, span: float, now: float) -> float:
        span_us, now_us = round(span * 1e6), round(now * 1e6)
        for attempt in (1, 2):
            try:
                with _Guard(self.engine, begin=True) as conn:
                    end = self._advance(conn, now_us, span_us)
                return (end - span_us) / 1e6
            except IntegrityError as exc:  # two processes created the row at once
                if attempt == 2:
                    self._failed(exc)
            except (CatalogError, SQLAlchemyError) as exc:
                self._failed(exc)
                break
        return self._fallback.reserve(span, now)

    def hold(self, until: float) -> None:
        try:
            with _Guard(self.engine, begin=True) as conn:
                self._advance(conn, round(until * 1e6), 0)
        except (CatalogError, SQLAlchemyError) as exc:
            self._failed(exc)
        self._fallback.hold(until)

    def held_until(self) -> float:
        """The tier's row read back: for a tier without a limit, until when it is held."""
        try:
            with _Guard(self.engine, begin=False) as conn:
                value = conn.execute(
                    select(rate_limits.c.next_slot_us).where(rate_limits.c.tier == self.tier)
                ).scalar()
        except (CatalogError, SQLAlchemyError) as exc:
            self._failed(exc)
            return self._fallback.held_until()
        return max(int(value or 0) / 1e6, self._fallback.held_until())

    def _advance(self, conn: Connection, at_least_us: int, span_us: int) -> int:
        """Move the tier's next slot to ``max(next, at_least) + span``; return it."""
        column = rate_limits.c.next_slot_us
        moved = conn.execute(
            update(rate_limits)
            .where(rate_limits.c.tier == self.tier)
            .values(
                next_slot_us=case((column > at_least_us, column), else_=literal(at_least_us))
                + span_us
            )
        )
        if moved.rowcount == 0:  # the tier's first reservation (a race: the loser retries)
            conn.execute(
                insert(rate_limits).values(tier=self.tier, next_slot_us=at_least_us + span_us)
            )
            return at_least_us + span_us
        value = conn.execute(select(column).where(rate_limits.c.tier == self.tier)).scalar_one()
        return int(value)

    def _failed(self, exc: Exception) -> None:
        if not self._warned.is_set():
            self._warned.set()
            log.warning(
                "tier %r: the catalog cannot share its request rate (%s); this process "
                "keeps to the rate on its own",
                self.tier,
                str(exc).splitlines()[0][:200],
            )

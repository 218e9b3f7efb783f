"""The executor: a plan's actions taken batch by batch, each re-checked first.

Before acting, every action is re-checked (the rule still exists, acts the same way and
still selects the object, by the same selection function the planner used); the engine of
its kind then re-checks the object itself (unchanged, not pinned or leased, unreferenced
for deletions) and skips what changed.

Batches are handed to a :class:`Dispatcher`: :class:`InProcess` takes them here, one after
another; the interface layer may inject another (Celery workers, see
:mod:`shelflife.service.dispatch`). Either way a run stops once more than
``max_error_fraction`` of the actions it tried have failed (:class:`ErrorBudget`), and
before a batch once the run's lease is lost (``halt``, see :mod:`shelflife.catalog.lock`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import groupby
from typing import Protocol

from shelflife.base.aio import run_sync
from shelflife.base.progress import NullProgress, Progress
from shelflife.catalog.catalog import CatalogObject
from shelflife.catalog.journal import Candidate
from shelflife.catalog.lock import Fence
from shelflife.config.model import RuleConfig
from shelflife.engine.collect import Collector
from shelflife.engine.context import Context
from shelflife.engine.expire import Expirer, ExpireResult
from shelflife.engine.migrate import Migrator, migrator
from shelflife.errors import ShelflifeError, StoreError
from shelflife.model.actions import Action, ActionKind, Failure, Skip
from shelflife.model.outcome import RunOutcome
from shelflife.model.selection import rule_tiers, selects
from shelflife.references.sources import ReferenceSource, SourceUnreadable
from shelflife.stores.transfer import head_many

Batch = list[Action]


class ErrorBudget:
    """The one ``max_error_fraction`` stop: how many failures a run may take."""

    def __init__(self, fraction: float, total: int) -> None:
        self.fraction = fraction
        self.total = total

    def exhausted(self, failed: int, attempted: int) -> str | None:
        """Why the run must stop now, or None to go on."""
        if failed and failed / attempted > self.fraction and attempted < self.total:
            return (
                f"{failed} of {attempted} actions failed (more than max_error_fraction "
                f"{self.fraction:.0%}); {self.total - attempted} actions not attempted"
            )
        return None


class Dispatcher(Protocol):
    """Takes a run's batches: here, or on workers."""

    def dispatch(
        self, executor: Executor, batches: Iterable[Batch], budget: ErrorBudget
    ) -> None: ...


class InProcess:
    """Takes every batch in this process, in plan order."""

    def dispatch(self, executor: Executor, batches: Iterable[Batch], budget: ErrorBudget) -> None:
        outcome = executor.outcome
        earlier = len(outcome.failed)  # a failed listing before the plan is no action's
        attempted = 0
        for batch in batches:
            if halted := executor.halted():
                outcome.stopped = halted
                return
            executor.take(batch)
            attempted += len(batch)
            if outcome.stopped:
                return
            outcome.stopped = budget.exhausted(len(outcome.failed) - earlier, attempted)
            if outcome.stopped:
                return
        outcome.stopped = executor.halted()  # the lease lost in the last batch: the run says so


def _never() -> str | None:
    return None


def batches(actions: Iterable[Action], size: int) -> Iterator[Batch]:
    """Runs of the same (action, rule, tier, to), in plan order, cut to ``size``."""
    for _, group in groupby(actions, key=lambda a: (a.action, a.rule, a.tier, a.to)):
        batch: Batch = []
        for item in group:
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


class Executor:
    """Takes batches of a plan's actions, each by the engine its kind belongs to."""

    def __init__(
        self,
        context: Context,
        outcome: RunOutcome,
        progress: Progress | None = None,
        extra_rules: list[RuleConfig] | None = None,
        halt: Callable[[], str | None] | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.context = context
        self.outcome = outcome
        # why the run must stop before its next batch (its lease is lost), or None
        self.halted: Callable[[], str | None] = halt or _never
        self.fence = fence  # checked by every journal step: the run still holds the lease
        self.progress = progress or NullProgress()
        self.now = context.clock()
        self.rules = {rule.id: rule for rule in [*context.config.rules, *(extra_rules or [])]}
        self._sources: list[ReferenceSource] | None = None
        self._migrator: Migrator | None = None
        self._expirer: Expirer | None = None

    @property
    def sources(self) -> list[ReferenceSource]:
        if self._sources is None:
            self._sources = self.context.sources()
        return self._sources

    def batches(self, actions: Iterable[Action]) -> Iterator[Batch]:
        return batches(actions, self.context.config.executor.batch_size)

    def take(self, batch: Batch) -> None:
        first = batch[0]
        # One query for the batch's inventory rows (a batch is of one tier), not one each.
        rows = self.context.catalog.get_many(first.tier, [item.key for item in batch])
        eligible = [item for item in batch if self._still_selected(item, rows.get(item.key))]
        if not eligible:
            return
        self.progress.start(f"{first.action} on {first.tier}", total=len(eligible))
        try:
            if first.action == ActionKind.MIGRATE:
                self._migrate(eligible, rows)
            elif first.action == ActionKind.EXPIRE:
                self._expire(eligible)
            else:
                self._collect(eligible)
            self.progress.advance(len(eligible), sum(item.bytes for item in eligible))
        except SourceUnreadable as exc:
            # References can no longer be verified: nothing more may be deleted or repointed
            # on their account. What this batch left half done, recovery completes.
            self._fail(eligible, exc.message)
            self.outcome.stopped = f"stopped: {exc.message}"
        except StoreError as exc:  # retries spent: this batch failed, the next may not
            self._fail(eligible, exc.message)
        finally:
            self.progress.finish()

    def _fail(self, batch: Batch, message: str) -> None:
        settled = {(item.tier, item.key) for item in self.outcome.actions}
        settled |= {(item.tier, item.key) for item in self.outcome.failed}
        self.outcome.failed += [
            Failure(item.rule, item.tier, item.key, message)
            for item in batch
            if (item.tier, item.key) not in settled
        ]

    def _still_selected(self, item: Action, row: CatalogObject | None) -> bool:
        """The action's rule still exists, acts the same way, and selects the object (its
        inventory ``row``, read for the whole batch just before)."""
        rule = self.rules.get(item.rule)
        reason = None
        if rule is None or not rule.enabled:
            reason = "its rule is gone or disabled"
        elif ActionKind(item.action).rule_action != rule.action:
            reason = "its rule now does something else"
        elif item.tier not in rule_tiers(rule, list(self.context.config.tiers)):
            reason = "its rule no longer covers this tier"
        elif item.action == ActionKind.MIGRATE and item.to != rule.to:
            reason = "its rule now migrates elsewhere"
        elif row is None:
            reason = "no longer in the inventory"
        elif not selects(rule, row.view(), self.outcome.plan.now):
            reason = "its rule no longer selects it"
        if reason is None:
            return True
        self.outcome.skipped.append(Skip(item.rule, item.tier, item.key, reason))
        return False

    def _migrate(self, batch: Batch, rows: dict[str, CatalogObject]) -> None:
        if self._migrator is None:
            self._migrator = migrator(self.context, self.fence)
        tier, rule, to = batch[0].tier, batch[0].rule, batch[0].to
        assert to is not None
        store = self.context.store(tier)
        protected = self.context.ledger.protected_keys(tier, [a.key for a in batch], self.now)
        candidates = []
        errors: dict[str, ShelflifeError] = {}
        heads = run_sync(head_many(store, [item.key for item in batch], errors=errors))
        for item in batch:
            reason = None
            head = heads.get(item.key)
            if item.key in errors:
                self.outcome.failed.append(Failure(rule, tier, item.key, errors[item.key].message))
                continue
            if head is None:
                self.context.catalog.forget(tier, [item.key])
                reason = "already gone"
            elif head[0] != item.bytes or (item.etag and head[1] != item.etag):
                reason = "changed since it was planned"
            if reason is None and item.key in protected:
                reason = "pinned or leased"
            if reason is not None:
                self.outcome.skipped.append(Skip(rule, tier, item.key, reason))
                continue
            row = rows.get(item.key)
            modified: datetime = item.modified or self.now
            checksum = None if row is None else row.checksum
            stamps = None if row is None else row.stamps
            candidates.append(Candidate(item.key, item.bytes, modified, None, checksum, stamps))
        if not candidates:
            return
        result = run_sync(
            self._migrator.migrate(rule, tier, to, candidates, None, self.outcome.run_id)
        )
        planned = {item.key: item for item in batch}
        self.outcome.actions += [
            Action(
                ActionKind.MIGRATE,
                m.rule,
                m.src,
                m.key,
                m.size,
                to=m.dst,
                age=planned[m.key].age if m.key in planned else None,
                aged_from=planned[m.key].aged_from if m.key in planned else None,
            )
            for m in result.moved
        ]
        self.outcome.failed += [Failure(rule, t, k, e) for t, k, e in result.failed]

    def _expire(self, batch: Batch) -> None:
        if self._expirer is None:
            context = self.context
            self._expirer = Expirer(
                context.config,
                context.catalog,
                context.ledger,
                context.locator,
                self.sources,
                context.store,
            )
        result = ExpireResult()
        run_sync(self._expirer.expire(batch[0].tier, batch, self.now, result))
        self.outcome.actions += result.actions
        self.outcome.skipped += result.skipped
        self.outcome.failed += result.failed
        for label, changed in result.rows.items():
            self.outcome.rows[label] = self.outcome.rows.get(label, 0) + changed

    def _collect(self, batch: Batch) -> None:
        rule = self.rules[batch[0].rule]
        collector = Collector(self.context, self.sources)
        result = run_sync(collector.sweep(rule, batch[0].tier, batch, self.now))
        self.outcome.actions += result.actions
        self.outcome.skipped += result.skipped
        self.outcome.failed += result.failed

"""The lifecycle commands: plan, apply, run — and gc, enforce, expire, which are ``run``
restricted to one rule action with exactly ``run``'s flags and output — runs, policy."""

# No ``from __future__ import annotations`` here: Typer reads each command's signature
# (twice) when it builds the command line, and string annotations would be compiled and
# evaluated anew every time, on every start.

import json as jsonlib
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shelflife.base.units import FUTURE_SLACK, format_money, format_size, utcnow
from shelflife.cli.render import (
    RichProgress,
    err,
    out,
    print_json,
    print_json_stream,
    print_refusal,
    report,
)
from shelflife.cli.state import (
    AtOption,
    DryRunOption,
    JsonOption,
    MaxDeleteOption,
    NoScanOption,
    RuleOption,
    TransfersOption,
    YesOption,
    instant,
    state,
)
from shelflife.errors import RefusedError, UsageError

if TYPE_CHECKING:
    from shelflife.model.actions import Refusal
    from shelflife.model.outcome import RunOutcome
    from shelflife.model.plan import Plan

policy_app = typer.Typer(
    help="Native lifecycle policies (S3 lifecycle JSON).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the main app's
)


def register(app: typer.Typer) -> None:
    app.command()(plan)
    app.command()(apply)
    app.command("run")(
        pipeline_command("run", "The main job: recover, scan, plan every rule, apply.")
    )
    app.command()(gc)
    app.command("enforce")(
        pipeline_command(
            "enforce",
            "`run` restricted to the migrate rules: tiers under their watermarks, aged objects.",
        )
    )
    app.command("expire")(
        pipeline_command(
            "expire", "`run` restricted to the expire rules: objects older than their retention."
        )
    )
    app.command()(runs)
    app.add_typer(policy_app, name="policy")


def plan(
    rule: RuleOption = None,
    at: AtOption = None,
    json: JsonOption = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the plan to this file")
    ] = None,
    no_scan: NoScanOption = False,
) -> int:
    """Scan, then show what the rules call for now (or --at an instant); change nothing.

    The plan is kept in the catalog: 'shelflife apply PLAN_ID' applies it once."""
    shelf = state.open()
    result = shelf.plan(
        rule=rule, at=instant(at), scan=not no_scan, progress=RichProgress(enabled=not json)
    )
    if output is not None:
        with output.open("w", encoding="utf-8") as handle:
            handle.writelines(result.json_chunks())
    if json:
        print_json_stream(result.header_json(), _plan_lists(result))
    else:
        show_plan(result)
        if output is not None:
            out.print(f"written to {output}; apply it with 'shelflife apply {output}'")
    return 3 if result.refusals else 0


def apply(
    plan_ref: Annotated[
        str,
        typer.Argument(
            metavar="PLAN", help="a plan file ('shelflife plan -o') or a plan id in the catalog"
        ),
    ],
    yes: YesOption = False,
    json: JsonOption = False,
    transfers: TransfersOption = None,
    max_delete: MaxDeleteOption = None,
) -> int:
    """Apply a saved plan once, re-checking every action before taking it."""
    state.override(transfers=transfers, max_delete=max_delete)
    shelf = state.open()
    return _report(
        lambda: shelf.apply(
            plan_ref, yes=yes, trigger="cli", progress=RichProgress(enabled=not json)
        ),
        json=json,
    )


def pipeline_command(command: str, doc: str) -> Callable[..., int]:
    """``run``, or ``run`` restricted to one rule action: one signature, one pipeline."""

    def invoke(
        dry_run: DryRunOption = False,
        rule: RuleOption = None,
        at: AtOption = None,
        yes: YesOption = False,
        json: JsonOption = False,
        no_scan: NoScanOption = False,
        transfers: TransfersOption = None,
        max_delete: MaxDeleteOption = None,
    ) -> int:
        state.override(transfers=transfers, max_delete=max_delete)
        return _run(command, dry_run, rule, at, yes, json, no_scan)

    invoke.__doc__ = doc
    invoke.__name__ = command
    return invoke


def gc(
    dry_run: DryRunOption = False,
    rule: RuleOption = None,
    at: AtOption = None,
    yes: YesOption = False,
    json: JsonOption = False,
    no_scan: NoScanOption = False,
    mark: Annotated[
        str | None,
        typer.Option(
            "--mark",
            metavar="PLAN_ID",
            help="sweep exactly the orphans a saved plan lists (a --dry-run's), each re-checked",
        ),
    ] = None,
    transfers: TransfersOption = None,
    max_delete: MaxDeleteOption = None,
) -> int:
    """`run` restricted to the collect-orphans rules: objects no reference points at."""
    state.override(transfers=transfers, max_delete=max_delete)
    if mark is not None:
        if dry_run or rule or at or no_scan:
            raise UsageError(
                "--mark sweeps a saved plan as it is; it takes no --dry-run, --rule, --at "
                "or --no-scan",
                hint="'shelflife gc --dry-run' makes a fresh plan to review",
            )
        shelf = state.open()
        return _report(
            lambda: shelf.apply(
                mark, yes=yes, trigger="cli", command="gc", progress=RichProgress(enabled=not json)
            ),
            json=json,
        )
    return _run("gc", dry_run, rule, at, yes, json, no_scan)


def _run(
    command: str,
    dry_run: bool,
    rule: str | None,
    at: str | None,
    yes: bool,
    json: bool,
    no_scan: bool,
) -> int:
    shelf = state.open()
    when = instant(at)
    return _report(
        lambda: shelf.run(
            command=command,
            dry_run=dry_run,
            rule=rule,
            at=when,
            yes=yes,
            scan=not no_scan,
            trigger="cli",
            progress=RichProgress(enabled=not json),
        ),
        json=json,
    )


def _report(call: Callable[[], "RunOutcome"], *, json: bool) -> int:
    try:
        outcome = call()
    except RefusedError as exc:
        if not json:
            raise
        from shelflife.base.logs import redact

        hint = redact(exc.hint) if exc.hint else None
        print_refusal(redact(exc.message), hint)  # the run's JSON, with its "error"
        report(redact(exc.message), hint)
        return exc.exit_code
    if json:
        if outcome.dry_run:
            print_json_stream(outcome.header_json(), _plan_lists(outcome.plan))
        else:
            print_json(outcome.as_json())
        for refusal in outcome.refusals:  # also where a person watching the job looks
            err.print(f"refused: {refusal.reason}", markup=False)
        return outcome.exit_code
    if outcome.dry_run:
        show_plan(outcome.plan, command=outcome.command)
    else:
        show_run(outcome)
    return outcome.exit_code


def _plan_lists(result: "Plan") -> dict[str, Iterator[dict[str, Any]]]:
    return {
        "actions": (a.as_json() for a in result.iter_actions()),
        "skipped": (s.as_json() for s in result.iter_skipped()),
    }


def show_plan(result: "Plan", *, command: str = "plan") -> None:
    """A plan as a person reads it: actions grouped by rule, what is kept and why."""
    from rich.table import Table

    table = Table(
        title=f"plan {result.id} at {result.now:%Y-%m-%d %H:%M:%S} UTC", title_justify="left"
    )
    for name in ("rule", "action", "tiers", "objects", "bytes"):
        table.add_column(name, justify="right" if name in ("objects", "bytes") else "left")
    groups = result.groups
    for (rule, name, tier, to), (count, size) in groups.items():
        where = tier + (f" → {to}" if to else "")
        table.add_row(rule, name, where, str(count), format_size(size))
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)
    if groups:
        out.print(table)
        show_cost(result)
    elif not result.refusals:
        out.print("nothing to do: every rule is satisfied")
    if result.skip_count:
        out.print(f"{result.skip_count} selected objects are kept:")
        for skip in islice(result.iter_skipped(), 20):
            out.print(f"  {skip.tier}:{skip.key}: {skip.reason}", markup=False)
    for refusal in result.refusals:
        err.print(f"refused: {refusal.reason}", markup=False)
    _refusal_hint(result.refusals)
    for note in result.notes:
        out.print(f"note: {note}", markup=False)
    if result.unmatched and result.unmatched["count"]:
        err.print(
            f"{result.unmatched['count']} reference values match no tier's spelling, e.g. "
            f"{result.unmatched['examples'][:3]}",
            markup=False,
        )
    if groups and result.id and result.now > utcnow() + FUTURE_SLACK:
        out.print(
            f"saved as plan {result.id}, for review only: it was evaluated at "
            f"{result.now:%Y-%m-%d %H:%M:%S} UTC, in the future, so 'shelflife apply' refuses "
            "it; run 'shelflife plan' without --at for a plan to apply"
        )
    elif groups and result.id:
        sweep = f" (or 'shelflife gc --mark {result.id}')" if command == "gc" else ""
        out.print(
            f"saved as plan {result.id}: apply exactly this list, each action re-checked, "
            f"with 'shelflife apply {result.id}'{sweep}"
        )


def show_cost(result: "Plan") -> None:
    """The plan's cost per rule and in total, and where a move costs more than it saves."""
    from rich.markup import escape
    from rich.table import Table

    body = result.cost.as_json() if result.cost is not None else None
    if not body or not body.get("rules"):
        return
    table = Table(title=escape(f"cost ({body['basis']})"), title_justify="left")
    for name in ("rule", "one-off", "requests", "retrieval", "early deletion", "monthly"):
        table.add_column(name, justify="left" if name == "rule" else "right")
    table.add_column("pays back in", justify="right")

    def row(label: str, figures: dict[str, Any]) -> None:
        payback = figures.get("payback_months")
        table.add_row(
            label,
            format_money(figures["one_off"]),
            format_money(figures["requests"]),
            format_money(figures["retrieval"]),
            format_money(figures["early_deletion"]),
            format_money(figures["monthly_change"]),
            "never" if payback is None else f"{payback:.1f} months",
        )

    for rule, figures in body["rules"].items():
        row(rule, figures)
    if len(body["rules"]) > 1:
        row("total", body["total"])
    out.print(table)
    for warning in body.get("warnings", []):
        err.print(f"warning: cost: {warning}", markup=False)


def show_run(outcome: "RunOutcome") -> None:
    """What a run did: totals per action, moved bytes, rows changed, failures."""
    if outcome.recovered:
        out.print(f"recovered first: {outcome.recovered}")
    if outcome.scanned:
        scanned = ", ".join(f"{tier} {count}" for tier, count in outcome.scanned.items())
        out.print(f"scanned: {scanned} objects")
    for warning in outcome.plan.warnings:
        err.print(f"warning: {warning}", markup=False)
    data = outcome.header_json()
    for name, figures in data["totals"].items():
        out.print(f"{name}: {figures['objects']} objects ({format_size(figures['bytes'])})")
    for pair, size in data["moved_bytes"].items():
        out.print(f"moved {format_size(size)} {pair.replace('->', ' → ')}")
    if not data["totals"] and not outcome.refusals and not outcome.failed:
        out.print("nothing to do: every rule is satisfied")
    cost = data.get("cost")
    if cost and cost.get("rules"):
        total = cost["total"]
        out.print(
            f"estimated cost of the plan: {format_money(total['one_off'])} once, "
            f"{format_money(total['monthly_change'])} a month"
        )
    for label, count in outcome.rows.items():
        out.print(f"rows changed in {label}: {count}")
    for skip in outcome.skipped[:20]:
        out.print(f"  kept {skip.tier}:{skip.key}: {skip.reason}", markup=False)
    for failure in outcome.failed[:50]:
        err.print(f"failed {failure.tier}:{failure.key}: {failure.error}", markup=False)
    for refusal in outcome.refusals:
        err.print(f"refused: {refusal.reason}", markup=False)
    _refusal_hint(outcome.refusals)
    for note in outcome.plan.notes:
        out.print(f"note: {note}", markup=False)
    if outcome.stopped:
        err.print(f"stopped: {outcome.stopped}", markup=False)
    out.print(f"run {outcome.run_id}: {outcome.status}")


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", help="how many, newest first")] = 20,
    json: JsonOption = False,
) -> None:
    """Run history: start, end, trigger, status, totals per action, failures."""
    records = state.open().runs(limit)
    if json:
        print_json({"runs": [record.as_json() for record in records]})
        return
    if not records:
        out.print("no runs yet")
        return
    from rich.table import Table

    table = Table(caption="a run's id is its command and start time (UTC)")
    for name in ("run", "status", "took", "trigger", "actions", "failed"):
        table.add_column(name, no_wrap=name in ("run", "status", "took"))
    for record in records:
        body = record.as_json()
        took = "-" if body["duration_seconds"] is None else f"{body['duration_seconds']:.1f}s"
        actions = "\n".join(
            f"{name} {figures['objects']} ({format_size(figures['bytes'])})"
            for name, figures in record.totals.items()
        )
        table.add_row(
            record.id,
            record.status,
            took,
            record.trigger,
            actions or "-",
            str(record.failed_count),
        )
    out.print(table)


@policy_app.command("export")
def policy_export(
    tier: Annotated[str, typer.Option("--tier", "-t", help="an s3:// tier")],
    apply_it: Annotated[
        bool, typer.Option("--apply", help="put the policy on the bucket (other rules kept)")
    ] = False,
    noncurrent_days: Annotated[
        int, typer.Option(help="days a noncurrent version is kept on a versioned bucket")
    ] = 7,
    abort_multipart_days: Annotated[
        int, typer.Option(help="days before an incomplete multipart upload is aborted")
    ] = 7,
    json: JsonOption = False,
) -> None:
    """Write the rules a tier's bucket can enforce by itself as S3 lifecycle JSON."""
    from shelflife.service.policy import apply_policy, export_policy

    shelf = state.open()
    if tier not in shelf.config.tiers:
        raise UsageError(f"unknown tier {tier!r}", hint=f"known: {', '.join(shelf.config.tiers)}")
    versioned = shelf.versioned(tier) if shelf.config.tiers[tier].scheme == "s3" else None
    result = export_policy(
        shelf.config,
        tier,
        versioned=versioned,
        noncurrent_days=noncurrent_days,
        abort_multipart_days=abort_multipart_days,
    )
    kept: list[str] = []
    if apply_it:
        kept = apply_policy(shelf.config.tiers[tier], result)
    if json:
        body = result.as_json()
        if apply_it:
            body["applied"] = True
            body["kept_rules"] = kept
        print_json(body)
        return
    print(jsonlib.dumps(result.document, indent=2))
    for rule_id, reason in result.not_exported.items():
        err.print(f"not exported: {rule_id}: {reason}", markup=False)
    for note in result.notes:
        err.print(f"note: {note}", markup=False)
    if apply_it:
        err.print(
            f"applied to bucket {result.bucket}"
            + (f" (kept its other rules: {', '.join(kept)})" if kept else "")
        )


@policy_app.command("import")
def policy_import(
    file: Annotated[Path, typer.Argument(help="S3 lifecycle JSON")],
    tier: Annotated[str, typer.Option("--tier", "-t", help="the tier the rules apply to")] = "*",
    json: JsonOption = False,
) -> None:
    """Turn an S3 lifecycle JSON into shelflife [[rules]] (printed as TOML)."""
    from shelflife.service.policy import import_policy

    try:
        document = jsonlib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no file at {file}") from None
    except (OSError, UnicodeDecodeError, jsonlib.JSONDecodeError) as exc:
        raise UsageError(f"{file} is not JSON: {exc}") from None
    if isinstance(document, dict) and "LifecycleConfiguration" in document:
        document = document["LifecycleConfiguration"]
    if not isinstance(document, dict):
        raise UsageError(f"{file} is not an S3 lifecycle configuration")
    from shelflife.config import load_config

    config = load_config(state.config_path)
    result = import_policy(document, config, tier)
    if json:
        print_json(result.as_json())
        return
    print(result.as_toml(), end="")


def _refusal_hint(refusals: "list[Refusal]") -> None:
    if refusals:
        err.print(
            "hint: a refused rule did nothing on that tier (the others ran); "
            "'shelflife check' shows what the references hold, 'shelflife plan' the plan",
            markup=False,
        )

"""The dashboard at ``/`` and its pages (``/runs/{id}``, ``/orphans``): server-rendered
HTML, no JavaScript, no external assets.

Bars are CSS widths and the usage charts inline SVG; the dashboard refreshes itself every
30 seconds with a meta tag. The pages work offline and behind any proxy, and a test can
read every figure from their HTML.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from itertools import islice
from typing import Any
from urllib.parse import quote, urlencode

from shelflife.base.units import format_money, format_size
from shelflife.catalog.history import RunRecord
from shelflife.service.browse import Orphans, RunActions, TierSeries

REFRESH_SECONDS = 30

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #1d2329; background: #fafbfc; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.6em 0 .5em; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e3e6ea; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { position: relative; height: 14px; width: 240px; background: #e9edf1; border-radius: 3px; }
.fill { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px; background: #3b82f6; }
.fill.warning { background: #f59e0b; } .fill.critical { background: #dc2626; }
.mark { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #1d2329; }
.mark.low { background: #6b7280; }
.status { display: inline-block; padding: .1em .6em; border-radius: 1em; color: #fff; }
.healthy { background: #16a34a; } .warning { background: #d97706; }
.critical { background: #dc2626; }
.ok { color: #16a34a; } .partial, .refused, .failed { color: #dc2626; } .running { color: #2563eb; }
.muted { color: #6b7280; }
.usage { display: flex; align-items: center; gap: .6em; }
nav { margin: 0 0 1em; } nav a { margin-right: 1em; }
a { color: #2563eb; text-decoration: none; } a:hover { text-decoration: underline; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure.chart { margin: 0; background: #fff; border: 1px solid #e3e6ea; padding: .5em; }
figure.chart figcaption { font-weight: 600; margin-bottom: .3em; }
.chart text { font: 11px system-ui, sans-serif; fill: #4b5563; }
.chart .line { fill: none; stroke: #3b82f6; stroke-width: 2; }
.chart .point { fill: #3b82f6; } .chart .axis { stroke: #9ca3af; }
.chart .wm-high { stroke: #d97706; stroke-dasharray: 5 3; }
.chart .wm-low { stroke: #6b7280; stroke-dasharray: 2 3; }
.chart text.wm-high { fill: #b45309; stroke: none; }
.chart text.wm-low { fill: #4b5563; stroke: none; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.facts dt { color: #6b7280; } dl.facts dd { margin: 0; }
.pager a, .pager span { margin-right: .8em; }
p.error { color: #dc2626; } p.hint { color: #6b7280; }
"""

NAV = (
    "<nav><a href='/'>Dashboard</a><a href='/orphans'>Orphans</a><a href='/docs'>API docs</a></nav>"
)


def _bar(figures: dict[str, Any], status: str) -> str:
    ratio = figures.get("usage_ratio")
    if ratio is None:
        return '<span class="muted">no capacity set</span>'
    width = min(max(float(ratio), 0.0), 1.0) * 100
    high = float(figures.get("high_watermark", 0.8)) * 100
    low = float(figures.get("low_watermark", 0.7)) * 100
    level = "critical" if ratio >= 0.95 else "warning" if ratio >= high / 100 else ""
    return (
        f'<div class="bar" title="{ratio:.1%} used; watermarks {low:.0f}% / {high:.0f}%">'
        f'<div class="fill {level}" style="width:{width:.1f}%"></div>'
        f'<div class="mark low" style="left:{low:.1f}%"></div>'
        f'<div class="mark" style="left:{high:.1f}%"></div></div>'
    )


def _run_link(run_id: str) -> str:
    return f"<a href='/runs/{quote(run_id, safe='')}'>{escape(run_id)}</a>"


def render_dashboard(
    stats: dict[str, Any],
    plan: Any,
    runs: list[RunRecord],
    now: datetime,
    series: dict[str, TierSeries] | None = None,
) -> str:
    health = stats.get("health", {})
    status = escape(str(health.get("status", "healthy")))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>shelflife — {status}</title><style>{STYLE}</style></head><body>",
        "<h1>shelflife</h1>",
        NAV,
        f"<p>Health: <span id='health' class='status {status}'>{status}</span> "
        f"<span class='muted'>as of {now:%Y-%m-%d %H:%M:%S} UTC; refreshes every "
        f"{REFRESH_SECONDS} s</span></p>",
    ]
    reasons = health.get("reasons") or []
    if reasons:
        parts.append("<ul id='reasons'>")
        parts += [f"<li>{escape(str(reason))}</li>" for reason in reasons]
        parts.append("</ul>")
    parts.append("<h2>Tiers</h2><table id='tiers'><tr><th>tier</th><th>usage</th>")
    parts.append(
        "<th class='num'>used</th><th class='num'>capacity</th><th class='num'>objects</th>"
        "<th class='num'>referenced</th><th class='num'>orphans</th>"
        "<th class='num'>orphan bytes</th><th class='num'>quarantined</th></tr>"
    )
    for name, figures in stats.get("tiers", {}).items():
        ratio = figures.get("usage_ratio")
        capacity = figures.get("capacity")

        def count(field: str, figures: dict[str, Any] = figures) -> str:
            value = figures.get(field)
            return "–" if value is None else str(value)

        parts.append(
            f"<tr data-tier='{escape(name)}' data-objects='{figures.get('objects', 0)}' "
            f"data-bytes='{figures.get('bytes', 0)}' "
            f"data-usage='{'' if ratio is None else ratio}'>"
            f"<td>{escape(name)}</td><td><div class='usage'>{_bar(figures, status)}"
            f"{'' if ratio is None else f'<span>{ratio:.0%}</span>'}</div></td>"
            f"<td class='num'>{format_size(int(figures.get('used_bytes') or 0))}</td>"
            f"<td class='num'>{'–' if capacity is None else format_size(int(capacity))}</td>"
            f"<td class='num'>{count('objects')}</td>"
            f"<td class='num'>{count('referenced_objects')}</td>"
            f"<td class='num orphans'><a href='/orphans?{urlencode({'tier': name})}'>"
            f"{count('orphan_objects')}</a></td>"
            f"<td class='num'>{format_size(int(figures.get('orphan_bytes') or 0))}</td>"
            f"<td class='num'>{count('quarantined_objects')}</td></tr>"
        )
    parts.append("</table>")
    if series:
        parts.append("<h2>Usage over time</h2><div class='charts' id='usage'>")
        parts += [usage_chart(tier) for tier in series.values()]
        parts.append("</div>")
    parts.append("<h2>Next planned actions</h2>")
    if isinstance(plan, Exception):
        parts.append(f"<p id='plan' class='failed'>{escape(str(plan))}</p>")
    else:
        totals = plan.totals()
        if not totals:
            parts.append("<p id='plan'>Nothing to do: every rule is satisfied.</p>")
        else:
            parts.append("<table id='plan'><tr><th>action</th><th class='num'>objects</th>")
            parts.append("<th class='num'>bytes</th></tr>")
            for action, figures in totals.items():
                parts.append(
                    f"<tr data-action='{escape(action)}'><td>{escape(action)}</td>"
                    f"<td class='num'>{figures['objects']}</td>"
                    f"<td class='num'>{format_size(figures['bytes'])}</td></tr>"
                )
            parts.append("</table>")
            parts += _plan_cost(plan.cost.as_json() if plan.cost is not None else None)
            parts.append("<p class='muted'>First actions:</p><ul>")
            for action in islice(plan.iter_actions(), 10):
                where = action.tier + (f" → {action.to}" if action.to else "")
                parts.append(
                    f"<li>{escape(action.action)} {escape(action.key)} ({escape(where)}, "
                    f"{format_size(action.bytes)}, rule {escape(action.rule)})</li>"
                )
            parts.append("</ul>")
    parts.append("<h2>Last runs</h2>")
    if not runs:
        parts.append("<p id='runs'>No runs yet.</p>")
    else:
        parts.append("<table id='runs'><tr><th>run</th><th>trigger</th><th>started</th>")
        parts.append("<th class='num'>took</th><th>status</th><th>actions</th>")
        parts.append("<th class='num'>failed</th></tr>")
        for record in runs:
            body = record.as_json()
            took = body["duration_seconds"]
            actions = ", ".join(
                f"{name} {figures['objects']}" for name, figures in record.totals.items()
            )
            parts.append(
                f"<tr data-run='{escape(record.id)}' data-status='{escape(record.status)}'>"
                f"<td>{_run_link(record.id)}</td><td>{escape(record.trigger)}</td>"
                f"<td>{record.started_at:%Y-%m-%d %H:%M:%S}</td>"
                f"<td class='num'>{'' if took is None else f'{took:.1f} s'}</td>"
                f"<td class='{escape(record.status)}'>{escape(record.status)}</td>"
                f"<td class='actions'>{escape(actions) or '–'}</td>"
                f"<td class='num'>{record.failed_count}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def _plan_cost(cost: dict[str, Any] | None) -> list[str]:
    """The plan's cost per rule and in total (figures also in data attributes)."""
    if not cost or not cost.get("rules"):
        return []
    parts = [
        "<h3>Cost</h3><table id='plan-cost'><tr><th>rule</th><th class='num'>one-off</th>",
        "<th class='num'>requests</th><th class='num'>retrieval</th>",
        "<th class='num'>early deletion</th><th class='num'>monthly change</th>",
        "<th class='num'>pays back in</th></tr>",
    ]
    rows = [*cost["rules"].items(), ("total", cost["total"])]
    for rule, figures in rows:
        payback = figures.get("payback_months")
        attribute = "id='plan-cost-total'" if rule == "total" else f"data-rule='{escape(rule)}'"
        parts.append(
            f"<tr {attribute} data-one-off='{figures['one_off']}' "
            f"data-monthly='{figures['monthly_change']}'><td>{escape(rule)}</td>"
            + "".join(
                f"<td class='num'>{format_money(figures[name])}</td>"
                for name in ("one_off", "requests", "retrieval", "early_deletion", "monthly_change")
            )
            + f"<td class='num'>{'never' if payback is None else f'{payback:.1f} months'}</td></tr>"
        )
    parts.append(f"</table><p class='muted'>{escape(cost['basis'])}</p>")
    if cost.get("warnings"):
        parts.append("<ul id='cost-warnings'>")
        parts += [f"<li>{escape(str(warning))}</li>" for warning in cost["warnings"]]
        parts.append("</ul>")
    return parts


# -- shared page parts -------------------------------------------------------------------------


def _page(title: str, body: list[str], refresh: int | None = None) -> str:
    reload = "" if refresh is None else f"<meta http-equiv='refresh' content='{refresh}'>"
    return "".join(
        [
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{reload}",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>shelflife — {escape(title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{escape(title)}</h1>",
            NAV,
            *body,
            "</body></html>",
        ]
    )


def render_problem(title: str, message: str, hint: str | None = None) -> str:
    """A page that says what went wrong and what to do."""
    body = [f"<p class='error' id='error'>{escape(message)}</p>"]
    if hint:
        body.append(f"<p class='hint'>{escape(hint)}</p>")
    return _page(title, body)


def _pager(path: str, params: dict[str, str], total: int, offset: int, limit: int) -> str:
    """Links to the previous and next pages (``?page=`` from 1)."""
    pages = max(1, -(-total // limit))
    page = offset // limit + 1
    links = [f"<span>page {page} of {pages}</span>"]

    def link(number: int, text: str, rel: str) -> str:
        query = urlencode({**params, "page": str(number)})
        return f"<a rel='{rel}' href='{path}?{query}'>{text}</a>"

    if page > 1:
        links.append(link(page - 1, "← previous", "prev"))
    if page < pages:
        links.append(link(page + 1, "next →", "next"))
    return f"<p class='pager'>{''.join(links)}</p>"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


# -- usage over time ---------------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 420, 170
LEFT, RIGHT, TOP, BOTTOM = 60, 64, 10, 26  # margins for the axis labels


def usage_chart(series: TierSeries) -> str:
    """One tier's usage in every kept stats body, as inline SVG: the share of its capacity
    with the watermarks drawn (bytes, without watermarks, for a tier with no capacity)."""
    points = series.points
    name = escape(series.tier)
    caption = f"<figcaption>{name}</figcaption>"
    if not points:
        return (
            f"<figure class='chart' data-tier='{name}' data-points='0'>{caption}"
            "<p class='muted'>No stored figures yet.</p></figure>"
        )
    capacity = points[-1].capacity
    width, height = CHART_WIDTH - LEFT - RIGHT, CHART_HEIGHT - TOP - BOTTOM
    if capacity:
        values = [p.ratio or 0.0 for p in points]
        top = max(1.0, *values)
    else:
        values = [float(p.used_bytes) for p in points]
        top = max(values) or 1.0
    start, end = points[0].taken_at.timestamp(), points[-1].taken_at.timestamp()
    span = end - start

    def x(at: datetime) -> float:
        return LEFT + (width / 2 if span <= 0 else (at.timestamp() - start) / span * width)

    def y(value: float) -> float:
        return TOP + height - value / top * height

    def label(value: float) -> str:
        return f"{value:.0%}" if capacity else format_size(int(value))

    svg = [
        f"<svg class='chart' role='img' width='{CHART_WIDTH}' height='{CHART_HEIGHT}' "
        f"viewBox='0 0 {CHART_WIDTH} {CHART_HEIGHT}' aria-label='usage of tier {name}'>",
        f"<line class='axis' x1='{LEFT}' y1='{TOP + height}' x2='{LEFT + width}' "
        f"y2='{TOP + height}'/>",
        f"<line class='axis' x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{TOP + height}'/>",
    ]
    for tick in (0.0, top / 2, top):
        svg.append(
            f"<text x='{LEFT - 4}' y='{y(tick) + 4:.1f}' text-anchor='end'>{label(tick)}</text>"
        )
    svg.append(
        f"<text x='{LEFT}' y='{CHART_HEIGHT - 8}'>{points[0].taken_at:%m-%d %H:%M}</text>"
        f"<text x='{LEFT + width}' y='{CHART_HEIGHT - 8}' text-anchor='end'>"
        f"{points[-1].taken_at:%m-%d %H:%M}</text>"
    )
    if capacity:
        for kind, mark in (("high", series.high_watermark), ("low", series.low_watermark)):
            at = y(mark)
            svg.append(
                f"<line class='wm-{kind}' data-watermark='{kind}' data-value='{mark}' "
                f"x1='{LEFT}' y1='{at:.1f}' x2='{LEFT + width}' y2='{at:.1f}'/>"
                f"<text class='wm-{kind}' x='{LEFT + width + 4}' y='{at + 4:.1f}'>"
                f"{kind} {mark:.0%}</text>"
            )
    pairs = list(zip(points, values, strict=True))
    coords = " ".join(f"{x(p.taken_at):.1f},{y(v):.1f}" for p, v in pairs)
    svg.append(f"<polyline class='line' points='{coords}'/>")
    for point, value in pairs:
        ratio = "" if point.ratio is None else f"{point.ratio:.4f}"
        svg.append(
            f"<circle class='point' r='2.5' cx='{x(point.taken_at):.1f}' cy='{y(value):.1f}' "
            f"data-at='{point.taken_at.isoformat()}' data-used='{point.used_bytes}' "
            f"data-ratio='{ratio}'><title>{point.taken_at:%Y-%m-%d %H:%M:%S} UTC: "
            f"{format_size(point.used_bytes)}"
            f"{'' if point.ratio is None else f' ({point.ratio:.1%})'}</title></circle>"
        )
    svg.append("</svg>")
    note = (
        ""
        if capacity
        else "<p class='muted'>No capacity set: bytes stored, watermarks do not apply.</p>"
    )
    return (
        f"<figure class='chart' data-tier='{name}' data-points='{len(points)}'>{caption}"
        f"{''.join(svg)}{note}</figure>"
    )


# -- one run -----------------------------------------------------------------------------------


def render_run(record: RunRecord, actions: RunActions) -> str:
    body = record.as_json()
    took = body["duration_seconds"]
    facts = [
        (
            "status",
            f"<span id='run-status' class='{escape(record.status)}'>{escape(record.status)}</span>",
        ),
        ("trigger", f"<span id='run-trigger'>{escape(record.trigger)}</span>"),
        ("command", escape(record.command) + (" (dry run)" if record.dry_run else "")),
        ("started", f"{record.started_at:%Y-%m-%d %H:%M:%S} UTC"),
        (
            "finished",
            "–" if record.finished_at is None else f"{record.finished_at:%Y-%m-%d %H:%M:%S} UTC",
        ),
        (
            "took",
            f"<span id='run-duration' data-seconds='{'' if took is None else took}'>"
            f"{'still running' if took is None else f'{took:.1f} s'}</span>",
        ),
        ("plan", escape(record.plan_id or "–")),
        ("host", escape(f"{record.host or '–'} (pid {record.pid or '–'})")),
    ]
    parts = ["<dl class='facts'>"]
    parts += [f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts]
    parts.append("</dl>")
    if record.error:
        parts.append(f"<p class='error' id='run-error'>{escape(record.error)}</p>")
    parts.append("<h2>Totals per action</h2>")
    if not record.totals:
        parts.append("<p id='totals'>No action was taken.</p>")
    else:
        parts.append("<table id='totals'><tr><th>action</th><th class='num'>objects</th>")
        parts.append("<th class='num'>bytes</th></tr>")
        for action, figures in record.totals.items():
            parts.append(
                f"<tr data-action='{escape(action)}' data-objects='{figures['objects']}' "
                f"data-bytes='{figures['bytes']}'><td>{escape(action)}</td>"
                f"<td class='num'>{figures['objects']}</td>"
                f"<td class='num'>{format_size(figures['bytes'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append(f"<h2>Failures ({record.failed_count})</h2>")
    if not record.failures:
        parts.append("<p id='failures'>None.</p>")
    else:
        parts.append("<table id='failures'><tr><th>rule</th><th>tier</th><th>key</th>")
        parts.append("<th>error</th></tr>")
        for failure in record.failures:
            parts.append(
                f"<tr data-key='{escape(failure.get('key', ''))}'>"
                f"<td>{escape(failure.get('rule', ''))}</td>"
                f"<td>{escape(failure.get('tier', ''))}</td>"
                f"<td>{escape(failure.get('key', ''))}</td>"
                f"<td>{escape(failure.get('error', ''))}</td></tr>"
            )
        parts.append("</table>")
        if record.failed_count > len(record.failures):
            parts.append(
                f"<p class='muted'>The first {len(record.failures)} of {record.failed_count} "
                "failures are kept.</p>"
            )
    parts.append(f"<h2>Actions ({actions.total})</h2>")
    if not actions.items:
        parts.append(
            "<p id='actions' class='muted'>No action of this run is itemized in the catalog: "
            "moves are (from the migration journal) and so are the actions of a run fanned "
            "out to workers; other actions are counted in the totals above.</p>"
        )
    else:
        parts.append("<table id='actions'><tr><th>action</th><th>rule</th><th>tier</th>")
        parts.append("<th>key</th><th class='num'>bytes</th><th>outcome</th></tr>")
        for item in actions.items:
            where = item.tier + (f" → {item.to}" if item.to else "")
            detail = f" title='{escape(item.detail)}'" if item.detail else ""
            parts.append(
                f"<tr data-key='{escape(item.key)}' data-outcome='{escape(item.outcome)}'>"
                f"<td>{escape(item.action)}</td><td>{escape(item.rule)}</td>"
                f"<td>{escape(where)}</td><td>{escape(item.key)}</td>"
                f"<td class='num'>{format_size(item.bytes)}</td>"
                f"<td{detail}>{escape(item.outcome)}</td></tr>"
            )
        parts.append("</table>")
        path = f"/runs/{quote(record.id, safe='')}"
        parts.append(_pager(path, {}, actions.total, actions.offset, actions.limit))
    # a run still going reloads its page until it has finished
    return _page(f"run {record.id}", parts, 5 if record.status == "running" else None)


# -- orphans -----------------------------------------------------------------------------------


def render_orphans(found: Orphans, tier: str | None, tiers: list[str]) -> str:
    choices = ["<a href='/orphans'>all tiers</a>" if tier else "<strong>all tiers</strong>"]
    for name in tiers:
        if name == tier:
            choices.append(f"<strong>{escape(name)}</strong>")
        else:
            choices.append(f"<a href='/orphans?{urlencode({'tier': name})}'>{escape(name)}</a>")
    parts = [
        f"<p id='tier-choice'>Tier: {' · '.join(choices)}</p>",
        f"<p class='muted'>Objects no reference names, largest first, as of "
        f"{found.now:%Y-%m-%d %H:%M:%S} UTC (references compared by {escape(found.marking)}). "
        "A collect-orphans rule deletes those past its grace; pinned and leased ones stay.</p>",
        "<table id='orphan-tiers'><tr><th>tier</th><th class='num'>orphans</th>",
        "<th class='num'>bytes</th></tr>",
    ]
    for name, (count, size) in found.tiers.items():
        parts.append(
            f"<tr data-tier='{escape(name)}' data-objects='{count}' data-bytes='{size}'>"
            f"<td>{escape(name)}</td><td class='num'>{count}</td>"
            f"<td class='num'>{format_size(size)}</td></tr>"
        )
    parts.append("</table>")
    for name, reason in found.blocked.items():
        parts.append(
            f"<p class='error' data-blocked='{escape(name)}'>tier {escape(name)}: orphans "
            f"cannot be told: {escape(reason)}</p>"
        )
    if found.truncated:
        parts.append(
            f"<p class='muted' id='orphans-truncated' data-listed='{found.listed}' "
            f"data-total='{found.total}'>The largest {found.listed:,} of {found.total:,} "
            "orphans are listed; the counts above include every one.</p>"
        )
    if not found.items:
        parts.append("<p id='orphans'>No orphans.</p>")
        return _page("orphans", parts)
    parts.append("<table id='orphans'><tr><th>tier</th><th>key</th><th class='num'>size</th>")
    parts.append("<th class='num'>age</th><th>held</th></tr>")
    for orphan in found.items:
        age = max(0.0, (found.now - orphan.modified).total_seconds())
        held = ", ".join(
            word for word, flag in (("pinned", orphan.pinned), ("leased", orphan.leased)) if flag
        )
        parts.append(
            f"<tr data-tier='{escape(orphan.tier)}' data-key='{escape(orphan.key)}' "
            f"data-size='{orphan.size}'><td>{escape(orphan.tier)}</td>"
            f"<td>{escape(orphan.key)}</td><td class='num'>{format_size(orphan.size)}</td>"
            f"<td class='num' title='modified {orphan.modified:%Y-%m-%d %H:%M:%S} UTC'>"
            f"{_age(age)}</td><td>{held or '–'}</td></tr>"
        )
    parts.append("</table>")
    params = {} if tier is None else {"tier": tier}
    parts.append(_pager("/orphans", params, found.listed, found.offset, found.limit))
    return _page("orphans", parts)

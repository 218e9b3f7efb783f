"""The dashboard at ``/``: one server-rendered page, no JavaScript, no external assets.

Bars are CSS widths; the page refreshes itself every 30 seconds with a meta tag. It works
offline and behind any proxy, and a test can read every figure from its HTML.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from itertools import islice
from typing import Any

from shelflife.base.units import format_size
from shelflife.catalog.history import RunRecord

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
"""


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


def render_dashboard(stats: dict[str, Any], plan: Any, runs: list[RunRecord], now: datetime) -> str:
    health = stats.get("health", {})
    status = escape(str(health.get("status", "healthy")))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>shelflife — {status}</title><style>{STYLE}</style></head><body>",
        "<h1>shelflife</h1>",
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
            f"<td class='num orphans'>{count('orphan_objects')}</td>"
            f"<td class='num'>{format_size(int(figures.get('orphan_bytes') or 0))}</td>"
            f"<td class='num'>{count('quarantined_objects')}</td></tr>"
        )
    parts.append("</table>")
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
            parts.append("</table><p class='muted'>First actions:</p><ul>")
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
                f"<td>{escape(record.id)}</td><td>{escape(record.trigger)}</td>"
                f"<td>{record.started_at:%Y-%m-%d %H:%M:%S}</td>"
                f"<td class='num'>{'' if took is None else f'{took:.1f} s'}</td>"
                f"<td class='{escape(record.status)}'>{escape(record.status)}</td>"
                f"<td class='actions'>{escape(actions) or '–'}</td>"
                f"<td class='num'>{record.failed_count}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)

"""The status page as plain server-rendered HTML with an inline SVG chart (pure: no I/O, no JavaScript).

Every figure carries ``data-figure`` (and ``data-value`` for numbers) so that scripts and tests can
read the page without scraping its prose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import Any

from ingest.budget import ERROR_THRESHOLD, TIMEOUT_THRESHOLD, WARN_FRACTION, Budget

FORMAT_COLOURS = {"canvas": "#2a6fb0", "caliper": "#e07b1a", "lti_notice": "#3a9a4b"}
OTHER_COLOUR = "#8a8a8a"


@dataclass(frozen=True)
class EventsMinute:
    minute: datetime
    by_format: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_format.values())


@dataclass(frozen=True)
class AnswerCount:
    route: str
    code: int
    last_hour: int
    last_24h: int


@dataclass(frozen=True)
class NewestEvent:
    event_name: str
    newest: datetime | None


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the worker group has committed nothing here yet
    end: int
    lag: int
    committed_record_time: datetime | None = None  # when the last committed record was produced


@dataclass(frozen=True)
class StatusSnapshot:
    generated_at: datetime
    replica: str
    topic: str
    worker_group: str
    events_per_minute: list[EventsMinute] | None = None
    answers: list[AnswerCount] | None = None
    budget: Budget | None = None
    quarantine_unresolved: int | None = None
    quarantine_total: int | None = None
    newest_events: list[NewestEvent] | None = None
    partitions: list[PartitionLag] | None = None
    spool: dict[str, int] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def minutes_of_last_hour(now_minute: datetime, rows: list[Any]) -> list[EventsMinute]:
    """Sixty one-minute slots ending with the current minute, zeros included; rows have minute, format, n."""
    counts: dict[datetime, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row.minute, {})[row.format] = int(row.n)
    return [EventsMinute(m, counts.get(m, {})) for m in (now_minute - timedelta(minutes=59 - i) for i in range(60))]


# -- rendering -------------------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; margin: .3em 0; } th, td { padding: .2em .8em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #666; } .warn { color: #a15c00; font-weight: 600; } .bad { color: #b00020; font-weight: 600; }
.ok { color: #2d7a3a; } .legend span { display: inline-block; width: .9em; height: .9em; margin: 0 .3em 0 1em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(12em, 1fr)); gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6em .9em; }
.card .big { font-size: 1.6em; font-weight: 600; }
"""


def _n(value: int | None, figure: str, **attrs: str) -> str:
    """A number cell: shown with thousands separators, raw in data-value."""
    extra = "".join(f' data-{k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    if value is None:
        return f'<td class="n" data-figure="{figure}"{extra}>-</td>'
    return f'<td class="n" data-figure="{figure}" data-value="{value}"{extra}>{value:,}</td>'


def _time(value: datetime | None) -> str:
    return "-" if value is None else escape(value.strftime("%Y-%m-%d %H:%M:%S UTC"))


def _unavailable(snapshot: StatusSnapshot, source: str) -> str:
    reason = snapshot.errors.get(source, "not available")
    return f'<p class="bad" data-figure="unavailable" data-source="{source}">unavailable: {escape(reason)}</p>'


def _table(headers: list[str], rows: list[str], empty: str | None = None) -> list[str]:
    """A table of ``rows`` (each a ``<tr>``); with none, one row saying ``empty`` across the columns."""
    if not rows and empty is not None:
        rows = [f'<tr><td colspan="{len(headers)}">{empty}</td></tr>']
    return ["<table><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>", *rows, "</table>"]


def _table_section(s: StatusSnapshot, section: str, heading: str, headers: list[str], rows: list[str] | None,
                   empty: str) -> str:
    """A section of one table read from the database; ``rows`` None: the database was unavailable."""
    out = [f'<section id="{section}"><h2>{heading}</h2>']
    out.extend([_unavailable(s, "database")] if rows is None else _table(headers, rows, empty))
    out.append("</section>")
    return "\n".join(out)


def render_status(snapshot: StatusSnapshot) -> str:
    """The whole page."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="refresh" content="30">',
        "<title>canvas-stream status</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>canvas-stream status</h1>",
        f'<p class="meta">Generated <time id="generated-at">{_time(snapshot.generated_at)}</time> by ingress '
        f"<code>{escape(snapshot.replica)}</code>. Figures from PostgreSQL and the broker cover every replica and "
        "survive restarts; the spool is this replica's. Refreshes every 30 s.</p>",
        _cards(snapshot),
        _budget(snapshot),
        _events(snapshot),
        _workers(snapshot),
        _answers(snapshot),
        _newest(snapshot),
        "</body></html>",
    ]
    return "\n".join(parts)


def _cards(s: StatusSnapshot) -> str:
    hour = None if s.events_per_minute is None else sum(m.total for m in s.events_per_minute)
    lag = None if s.partitions is None else sum(p.lag for p in s.partitions)
    spool = None if s.spool is None else s.spool.get("records", 0)
    cards = [
        ("Events, last hour", hour, "events-last-hour-total"),
        ("Worker lag (messages)", lag, "worker-lag-total"),
        ("Quarantined, unresolved", s.quarantine_unresolved, "quarantine-unresolved"),
        ("Spool records (this replica)", spool, "spool-records"),
    ]
    out = ['<div class="grid">']
    for label, value, figure in cards:
        shown = "-" if value is None else f"{value:,}"
        raw = "" if value is None else f' data-value="{value}"'
        out.append(f'<div class="card"><div>{label}</div>'
                   f'<div class="big" id="{figure}" data-figure="{figure}"{raw}>{shown}</div></div>')
    out.append("</div>")
    if s.errors:
        out.append('<ul id="source-errors">' + "".join(
            f'<li class="bad">{escape(k)}: {escape(v)}</li>' for k, v in sorted(s.errors.items())) + "</ul>")
    return "\n".join(out)


def _budget(s: StatusSnapshot) -> str:
    out = ['<section id="budget"><h2>Canvas deactivation budget, last 24 hours</h2>',
           f'<p class="meta">Canvas switches a subscription off after about {TIMEOUT_THRESHOLD:,} timeouts (answers '
           f"slower than 15 s) or {ERROR_THRESHOLD:,} other errors (non-2xx) in 24 hours. Summed over every ingress "
           "replica from <code>canvas_stream.ingress_answers</code>; 403 refusals of foreign tenants count against the "
           "sender's subscription and are shown apart. Warns at "
           f"{WARN_FRACTION:.0%}.</p>"]
    if s.budget is None:
        out.append(_unavailable(s, "database"))
    else:
        rows = [f"<tr><td><code>{escape(r.route)}</code></td>"
                f"{_n(r.timeouts, 'budget-timeouts', route=r.route)}{_pct(r.timeouts / TIMEOUT_THRESHOLD)}"
                f"{_n(r.errors, 'budget-errors', route=r.route)}{_pct(r.errors / ERROR_THRESHOLD)}"
                f"{_n(r.foreign_tenant, 'budget-foreign-tenant', route=r.route)}</tr>" for r in s.budget.routes]
        out.extend(_table(["route", "timeouts", "% of threshold", "errors", "% of threshold",
                           "foreign-tenant refusals"], rows, "no errors or timeouts recorded in the last 24 hours"))
        warnings = s.budget.warnings()
        out.append('<ul id="budget-warnings">' + "".join(f'<li class="warn">{escape(w)}</li>' for w in warnings)
                   + "</ul>" if warnings else '<p class="ok" id="budget-warnings">Well within both thresholds.</p>')
    out.append("</section>")
    return "\n".join(out)


def _pct(fraction: float) -> str:
    css = "bad" if fraction >= 0.5 else "warn" if fraction >= WARN_FRACTION else ""
    return f'<td class="n {css}">{100 * fraction:.1f}%</td>'


def _events(s: StatusSnapshot) -> str:
    out = ['<section id="events"><h2>Events received per minute, last hour (by format)</h2>']
    if s.events_per_minute is None:
        out.append(_unavailable(s, "database"))
    else:
        out.append(events_chart(s.events_per_minute))
        totals: dict[str, int] = {}
        for minute in s.events_per_minute:
            for fmt, n in minute.by_format.items():
                totals[fmt] = totals.get(fmt, 0) + n
        rows = [f"<tr><td>{escape(fmt)}</td>{_n(totals[fmt], 'events-last-hour', format=fmt)}</tr>"
                for fmt in sorted(totals)]
        out.extend(_table(["format", "events in the last hour"], rows, "no events received in the last hour"))
    out.append("</section>")
    return "\n".join(out)


def _nice_ceiling(value: int) -> int:
    if value <= 5:
        return 5
    magnitude = 10 ** int(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def events_chart(minutes: list[EventsMinute], width: int = 720, height: int = 200) -> str:
    """A stacked bar per minute, one colour per format; a <title> on each bar names its figures."""
    left, bottom, top = 44, 22, 8
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = _nice_ceiling(max((m.total for m in minutes), default=0))
    bar_w = plot_w / max(1, len(minutes))
    formats = sorted({f for m in minutes for f in m.by_format}, key=lambda f: (f not in FORMAT_COLOURS, f))
    svg = [f'<svg id="events-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="events per minute, last hour">',
           f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>']
    for tick in (0, peak // 2, peak):
        y = top + plot_h - plot_h * tick / peak
        svg.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{tick:,}</text>')
    for i, minute in enumerate(minutes):
        x = left + i * bar_w
        y = top + plot_h
        label = minute.minute.strftime("%H:%M")
        for fmt in formats:
            n = minute.by_format.get(fmt, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            svg.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(1.0, bar_w - 2):.1f}" height="{h:.1f}" '
                       f'fill="{FORMAT_COLOURS.get(fmt, OTHER_COLOUR)}" data-minute="{label}" '
                       f'data-format="{escape(fmt)}" data-value="{n}"><title>{label} UTC, {escape(fmt)}: {n:,}'
                       "</title></rect>")
        if i % 10 == 0 or i == len(minutes) - 1:
            anchor = "end" if i == len(minutes) - 1 else "middle"
            tx = x + bar_w if anchor == "end" else x + bar_w / 2
            svg.append(f'<text x="{tx:.1f}" y="{height - 6}" font-size="11" text-anchor="{anchor}">{label}</text>')
    svg.append("</svg>")
    legend = "".join(f'<span style="background:{FORMAT_COLOURS.get(f, OTHER_COLOUR)}"></span>{escape(f)}'
                     for f in formats)
    return "\n".join(svg) + (f'<div class="legend">{legend}</div>' if legend else "")


def _workers(s: StatusSnapshot) -> str:
    out = [f'<section id="workers"><h2>Workers: group <code>{escape(s.worker_group)}</code> on topic '
           f"<code>{escape(s.topic)}</code></h2>",
           '<p class="meta">From the broker: the group\'s committed offsets against each partition\'s end offset. '
           "&quot;Committed up to&quot; is when the newest record the workers committed was produced.</p>"]
    if s.partitions is None:
        out.append(_unavailable(s, "broker"))
    else:
        out.extend(_table(["partition", "committed offset", "end offset", "lag", "committed up to"],
                          [_partition_row(p) for p in s.partitions]))
    out.append('<h2>Quarantine and spool</h2><table>')
    out.append(f"<tr><th>quarantined, unresolved</th>{_n(s.quarantine_unresolved, 'quarantine-unresolved-rows')}</tr>")
    out.append(f"<tr><th>quarantined, all time</th>{_n(s.quarantine_total, 'quarantine-total')}</tr>")
    spool = s.spool
    if spool is None:
        out.append('<tr><th>spool (this replica)</th><td>no spool configured (SPOOL_DIR)</td></tr>')
    else:
        out.append(f"<tr><th>spool records (this replica)</th>{_n(spool.get('records'), 'spool-records-detail')}</tr>"
                   f"<tr><th>spool bytes</th>{_n(spool.get('bytes'), 'spool-bytes')}</tr>"
                   f"<tr><th>spool limit (bytes)</th>{_n(spool.get('max_bytes'), 'spool-max-bytes')}</tr>")
    out.append("</table></section>")
    return "\n".join(out)


def _partition_row(p: PartitionLag) -> str:
    part = str(p.partition)
    return (f"<tr><td>{p.partition}</td>{_n(p.committed, 'committed-offset', partition=part)}"
            f"{_n(p.end, 'end-offset', partition=part)}{_n(p.lag, 'lag', partition=part)}"
            f"<td>{_time(p.committed_record_time)}</td></tr>")


def _answer_row(a: AnswerCount) -> str:
    attrs = {"route": a.route, "code": str(a.code)}
    return (f"<tr><td><code>{escape(a.route)}</code></td><td>{a.code}</td>"
            f"{_n(a.last_hour, 'answers-last-hour', **attrs)}{_n(a.last_24h, 'answers-24h', **attrs)}</tr>")


def _newest_row(e: NewestEvent) -> str:
    iso = "" if e.newest is None else f' data-value="{escape(e.newest.isoformat())}"'
    return (f"<tr><td>{escape(e.event_name)}</td><td data-figure=\"newest-event\" "
            f'data-event-name="{escape(e.event_name)}"{iso}>{_time(e.newest)}</td></tr>')


def _answers(s: StatusSnapshot) -> str:
    rows = None if s.answers is None else [_answer_row(a) for a in s.answers]
    return _table_section(s, "answers", "Answers by route and status (all replicas)",
                          ["route", "status", "last hour", "last 24 hours"], rows,
                          "no answers recorded in the last 24 hours")


def _newest(s: StatusSnapshot) -> str:
    rows = None if s.newest_events is None else [_newest_row(e) for e in s.newest_events]
    return _table_section(s, "newest", "Newest event time per event type", ["event type", "newest event time"],
                          rows, "no events yet")

"""Pure parts of the observability: Canvas's budget arithmetic, the stall rule, the status page HTML."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from types import SimpleNamespace

from canvas_stream.probes import CachedProbe
from ingest.budget import (
    ERROR,
    FOREIGN_TENANT,
    TIMEOUT,
    Budget,
    RouteBudget,
    Tally,
    budget_from_rows,
    classify,
)
from ingest.status_page import (
    AnswerCount,
    NewestEvent,
    PartitionLag,
    StatusSnapshot,
    minutes_of_last_hour,
    render_status,
)
from processors.watchdog import StallClock


def test_classify_as_canvas_counts():
    assert classify(200, 0.1) is None
    assert classify(204, 14.9) is None
    assert classify(200, 15.0) == TIMEOUT  # Canvas gave up before the 200 arrived
    assert classify(503, 16) == TIMEOUT  # counted once, as a timeout
    assert classify(401, 0.1) == ERROR
    assert classify(503, 0.1) == ERROR
    assert classify(403, 0.1) == FOREIGN_TENANT
    assert classify(403, 20) == FOREIGN_TENANT  # the stranger's subscription either way


def test_tally_counts_per_minute_route_and_code_and_resends_only_changes():
    tally = Tally()
    t0 = 1_700_000_000.0  # 22:13:20 UTC: minute starts at 22:13:00
    tally.record("/live-events", 200, 0.01, t0)
    tally.record("/live-events", 200, 16.0, t0 + 5)
    tally.record("/live-events", 503, 0.2, t0 + 10)
    tally.record("/live-events", 200, 0.01, t0 + 60)
    rows = dict(tally.take_dirty())
    minute = int(t0 // 60) * 60
    assert rows[(minute, "/live-events", 200)].answers == 2 and rows[(minute, "/live-events", 200)].slow == 1
    assert rows[(minute, "/live-events", 503)].answers == 1
    assert rows[(minute + 60, "/live-events", 200)].answers == 1
    assert tally.take_dirty() == []  # nothing changed since
    tally.record("/live-events", 503, 0.2, t0 + 11)
    again = dict(tally.take_dirty())
    assert list(again) == [(minute, "/live-events", 503)] and again[(minute, "/live-events", 503)].answers == 2
    tally.mark_dirty(again)  # a failed flush puts them back
    assert [k for k, _ in tally.take_dirty()] == [(minute, "/live-events", 503)]
    tally.forget_before(minute + 60)
    assert all(k[0] >= minute + 60 for k in tally.counts)


def test_budget_warns_at_ten_percent_of_either_threshold():
    quiet = Budget((RouteBudget("/live-events", timeouts=949, errors=2799, foreign_tenant=50_000),))
    assert quiet.warnings() == []  # foreign-tenant refusals never count against us
    loud = budget_from_rows([{"route": "/live-events", "timeouts": 950, "errors": 2800, "foreign_tenant": 0}])
    warnings = loud.warnings()
    assert len(warnings) == 2
    assert "950 timeouts" in warnings[0] and "9500" in warnings[0] and "10%" in warnings[0]
    assert "2800 errors" in warnings[1] and "28000" in warnings[1]
    assert loud.as_dict()["routes"]["/live-events"] == {"timeouts": 950, "errors": 2800, "foreign_tenant": 0}


def test_stall_clock_counts_only_lag_without_commit_while_the_database_answers():
    clock = StallClock(stall_seconds=10, started=0)
    clock.observe(1, lag=0, database_ok=True, last_commit=None)
    assert not clock.stalled(100)  # no lag: idle is not stalled, however long
    clock.observe(100, lag=5, database_ok=True, last_commit=None)
    assert clock.stuck_for(105) == 5 and not clock.stalled(105)  # the clock starts when lag appears
    assert clock.stalled(110)
    clock.observe(111, lag=5, database_ok=True, last_commit=109)
    assert not clock.stalled(118) and clock.stalled(119)  # a commit restarts it
    clock.observe(120, lag=5, database_ok=False, last_commit=109)
    clock.observe(125, lag=5, database_ok=False, last_commit=109)
    assert not clock.stalled(134)  # a database outage is not a stall: the period counts from its last sighting
    clock.observe(130, lag=5, database_ok=True, last_commit=109)
    assert not clock.stalled(134) and clock.stalled(135)
    clock.observe(141, lag=None, database_ok=True, last_commit=109)
    assert not clock.stalled(150)  # lag unknown (broker unreachable): no verdict
    clock.observe(151, lag=0, database_ok=True, last_commit=109)
    assert clock.lagging_since is None


def test_cached_probe_is_bounded_shared_and_cached():
    calls = 0
    now = [0.0]

    async def slow() -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return True

    async def scenario() -> None:
        probe = CachedProbe(slow, timeout=0.05, ttl=1.0, clock=lambda: now[0])
        assert await asyncio.gather(probe(), probe(), probe()) == [False, False, False]
        assert calls == 1 and "no answer" in (probe.last_error or "")
        assert await probe() is False and calls == 1  # cached
        now[0] = 2.0
        assert await probe() is False and calls == 2

    asyncio.run(scenario())


class Figures(HTMLParser):
    """Collects data-figure elements: (figure, attrs) -> value."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if "data-figure" in found:
            self.figures.append(found)


def test_status_page_shows_every_figure_with_raw_values():
    now_minute = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    rows = [SimpleNamespace(minute=now_minute - timedelta(minutes=2), format="canvas", n=7),
            SimpleNamespace(minute=now_minute, format="caliper", n=3),
            SimpleNamespace(minute=now_minute, format="canvas", n=1)]
    minutes = minutes_of_last_hour(now_minute, rows)
    assert len(minutes) == 60 and minutes[-1].minute == now_minute and minutes[0].total == 0
    snapshot = StatusSnapshot(
        generated_at=now_minute, replica="host:1:2", topic="deliveries", worker_group="workers <g>",
        events_per_minute=minutes,
        answers=[AnswerCount("/live-events", 200, 10, 11), AnswerCount("/live-events", 401, 1, 2)],
        budget=Budget((RouteBudget("/live-events", timeouts=1000, errors=2, foreign_tenant=3),)),
        quarantine_unresolved=4, quarantine_total=5,
        newest_events=[NewestEvent("course_created", now_minute)],
        partitions=[PartitionLag(0, 10, 12, 2, now_minute), PartitionLag(1, None, 3, 3)],
        spool={"records": 6, "bytes": 700, "segments": 1, "max_bytes": 1024},
        errors={},
    )
    page = render_status(snapshot)
    parser = Figures()
    parser.feed(page)
    by_name: dict[str, list[dict[str, str]]] = {}
    for f in parser.figures:
        by_name.setdefault(f["data-figure"], []).append(f)
    assert by_name["events-last-hour-total"][0]["data-value"] == "11"
    assert {f["data-format"]: f["data-value"] for f in by_name["events-last-hour"]} == {"canvas": "8", "caliper": "3"}
    assert by_name["worker-lag-total"][0]["data-value"] == "5"
    assert by_name["quarantine-unresolved"][0]["data-value"] == "4"
    assert by_name["spool-records"][0]["data-value"] == "6"
    assert by_name["budget-timeouts"][0]["data-value"] == "1000"
    assert by_name["budget-foreign-tenant"][0]["data-value"] == "3"
    assert {(f["data-code"], f["data-value"]) for f in by_name["answers-24h"]} == {("200", "11"), ("401", "2")}
    assert by_name["newest-event"][0]["data-event-name"] == "course_created"
    assert "10% of Canvas" in page or "11% of Canvas" in page  # 1000 of 9500 timeouts warns
    assert "workers &lt;g&gt;" in page and "<g>" not in page  # escaped
    assert len(re.findall(r"<rect ", page)) == 3  # one bar segment per (minute, format) with events
    assert "<script" not in page


def test_status_page_says_which_source_failed():
    snapshot = StatusSnapshot(generated_at=datetime.now(UTC), replica="r", topic="t", worker_group="g",
                              errors={"database": "ConnectionRefusedError: refused", "broker": "no answer within 5 s"})
    page = render_status(snapshot)
    assert "unavailable: ConnectionRefusedError" in page and "unavailable: no answer within 5 s" in page
    assert 'data-figure="quarantine-unresolved">-<' in page

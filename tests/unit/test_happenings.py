"""One happening, counted once: a Canvas and a Caliper delivery of one happening share its id, so
fact counts do not depend on how many subscriptions delivered it (pure: normalizer output only)."""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime

import pytest

from processors.normalize import IdPolicy, normalize
from processors.normalize.caliper import RULES
from processors.normalize.event_map import BOTH_FORMATS
from processors.normalize.happening import cause_of, happening_id
from processors.normalize.ids import canvas_event_shard
from processors.warehouse.writer import collapse
from tests.support.happenings import FACT_TABLES, fact_counts, paired_happenings, record

IDS = IdPolicy()  # no home shard set: each event's own shard counts as home

PAIRS = paired_happenings(3)


def _normalized(payloads):
    return [normalize(record(p), IDS) for p in payloads]


def _changes(outs):
    return [c for out in outs for c in out.changes]


def test_the_correlated_types_are_exactly_the_ones_canvas_sends_in_both_formats():
    assert set(BOTH_FORMATS) == {rule.event for rule in RULES}


def test_both_formats_give_the_fact_counts_of_one_format_alone():
    canvas = _normalized(c for c, _ in PAIRS)
    caliper = _normalized(k for _, k in PAIRS)
    counts = fact_counts(_changes(canvas))
    assert counts["grade_changes"] == counts["asset_accesses"] == counts["logins"] == 3  # something is counted
    assert fact_counts(_changes(caliper)) == counts
    assert fact_counts(_changes(canvas + caliper)) == counts
    # ... and the same entity rows: one row per object, whichever format named it.
    entity_rows = {(c.table, tuple(sorted(c.key.items()))) for c in _changes(canvas) if c.table not in FACT_TABLES}
    assert {(c.table, tuple(sorted(c.key.items()))) for c in _changes(canvas + caliper)
            if c.table not in FACT_TABLES} == entity_rows


def test_both_deliveries_stay_visible_as_events_of_one_happening():
    events = [e for out in _normalized(p for pair in PAIRS for p in pair) for e in out.events]
    assert len(events) == 2 * len(PAIRS) and len({e.event_id for e in events}) == len(events)
    per_happening = Counter(e.happening_id for e in events)
    assert len(per_happening) == len(PAIRS) and set(per_happening.values()) == {2}
    for happening in per_happening:
        assert sorted(e.format for e in events if e.happening_id == happening) == ["caliper", "canvas"]


def test_merged_fact_rows_do_not_depend_on_delivery_order():
    """Columns from both formats merge by the writer's per-column rule, whatever arrives first."""
    changes = _changes(_normalized(p for pair in PAIRS for p in pair))
    forward = {(m.table, tuple(sorted(m.key.items()))): (m.fields, m.versions) for m in collapse(changes)}
    backward = {(m.table, tuple(sorted(m.key.items()))): (m.fields, m.versions) for m in collapse(changes[::-1])}
    assert forward == backward
    grades = [m for m in collapse(changes) if m.table == "grade_changes"]
    assert len(grades) == 3
    for row in grades:  # Canvas-only columns survive the merge with the Caliper delivery
        assert row.fields["old_points_possible"] == 10 and row.fields["grading_complete"] is True
        assert row.fields["event_id"]  # one of the two deliveries


def _pair(name: str = "grade_change") -> tuple[dict, dict]:
    canvas, caliper = paired_happenings(1, types=[name], seed=5)[0]
    return copy.deepcopy(canvas), copy.deepcopy(caliper)


def _happening(payload: dict) -> str:
    return normalize(record(payload), IDS).events[0].happening_id


def test_time_precision_does_not_split_a_happening_but_another_second_does():
    canvas, caliper = _pair()
    item = caliper["data"][0]
    second = canvas["metadata"]["event_time"][:19]
    canvas["metadata"]["event_time"] = second + ".987Z"
    item["eventTime"] = second + "Z"  # whole seconds
    assert _happening(canvas) == _happening(caliper)
    item["eventTime"] = second[:17] + f"{(int(second[17:19]) + 1) % 60:02d}Z"
    assert _happening(canvas) != _happening(caliper)


def test_another_request_or_object_is_another_happening():
    canvas, _ = _pair()
    base = _happening(canvas)
    other_request = copy.deepcopy(canvas)
    other_request["metadata"]["request_id"] = "7d1f0a7e-0000-4000-8000-000000000001"
    other_submission = copy.deepcopy(canvas)  # e.g. "set default grade": one request, many submissions
    other_submission["body"]["submission_id"] = str(int(canvas["body"]["submission_id"]) + 1)
    assert len({base, _happening(other_request), _happening(other_submission)}) == 3


def test_page_views_of_one_request_differ_by_what_was_viewed():
    canvas, _ = _pair("asset_accessed")
    files = copy.deepcopy(canvas)
    files["body"]["asset_subtype"] = "files"
    assert _happening(canvas) != _happening(files)


def test_without_a_request_or_job_the_event_is_its_own_happening():
    canvas, caliper = _pair()
    del canvas["metadata"]["request_id"]
    del caliper["data"][0]["extensions"]["com.instructure.canvas"]["request_id"]
    out = normalize(record(canvas), IDS)
    assert out.events[0].happening_id == out.events[0].event_id
    assert [c.key for c in out.changes if c.table == "grade_changes"] == [
        {"happening_id": out.events[0].event_id, "event_time": out.events[0].event_time.replace(microsecond=0)}]
    assert _happening(caliper) == caliper["data"][0]["id"]
    # A background job is a cause too: the job's events correlate across formats.
    canvas["metadata"]["job_id"] = caliper["data"][0]["extensions"]["com.instructure.canvas"]["job_id"] = "8812"
    assert _happening(canvas) == _happening(caliper) != caliper["data"][0]["id"]


def test_a_type_sent_in_one_format_only_is_never_merged():
    payload = {"metadata": {"event_name": "course_grade_change", "event_time": "2031-05-06T07:08:09.123Z",
                            "request_id": "r-1"},
               "body": {"course_id": "5", "user_id": "6", "current_score": 80.0}}
    out = normalize(record(payload), IDS)
    assert out.events[0].happening_id == out.events[0].event_id
    assert {c.table: c.key for c in out.changes}["course_grade_changes"] == {
        "happening_id": out.events[0].event_id, "event_time": datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)}


@pytest.mark.parametrize("meta, expected", [
    ({"request_id": "abc"}, "request:abc"),
    ({"job_id": "17", "request_id": ""}, "job:17"),
    ({"job_id": 17}, "job:17"),
    ({"job_id": True}, None),
    ({}, None),
])
def test_cause(meta, expected):
    assert cause_of(meta) == expected


def test_happening_id_needs_cause_object_and_time():
    from datetime import UTC, datetime
    moment = datetime(2031, 1, 1, tzinfo=UTC)
    assert happening_id("e1", "grade_change", {"request_id": "r"}, moment, [5]) != "e1"
    assert happening_id("e1", "grade_change", {}, moment, [5]) == "e1"
    assert happening_id("e1", "grade_change", {"request_id": "r"}, None, [5]) == "e1"
    assert happening_id("e1", "grade_change", {"request_id": "r"}, moment, None) == "e1"


def test_metadata_columns_from_both_formats():
    canvas, caliper = _pair("asset_accessed")
    meta = canvas["metadata"]
    meta["real_user_id"] = "10000000000007"
    actor_ext = caliper["data"][0]["actor"].setdefault("extensions", {}).setdefault("com.instructure.canvas", {})
    actor_ext.update(real_user_id="10000000000007", user_login=meta["user_login"], user_sis_id=meta["user_sis_id"],
                     root_account_id=meta["root_account_id"])
    rows = []
    for payload in (canvas, caliper):
        out = normalize(record(payload), IDS)
        event = out.events[0]
        fact = next(c for c in out.changes if c.table == "asset_accesses")
        rows.append((event.real_user_id, event.user_login, event.user_sis_id, event.root_account_id,
                     event.request_id, fact.fields["real_user_id"], fact.fields["user_login"],
                     fact.fields["user_sis_id"]))
        assert fact.fields["root_account_uuid"] == event.root_account_uuid == meta["root_account_uuid"]
    stored = IDS.for_event(canvas_event_shard(meta)).lenient  # ids in the form the warehouse keeps them
    real_user = stored("10000000000007")
    assert real_user is not None
    assert rows[0] == rows[1] == (real_user, meta["user_login"], meta["user_sis_id"],
                                  stored(meta["root_account_id"]), meta["request_id"], real_user,
                                  meta["user_login"], meta["user_sis_id"])

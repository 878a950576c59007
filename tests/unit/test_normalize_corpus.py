"""Every example of the Canvas Live Events docs, in both formats, normalizes into real columns."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canvas_stream.records import FORMAT_CALIPER, FORMAT_CANVAS, SOURCE_LIVE_EVENT, Record, Verification
from processors.normalize import IdPolicy, normalize
from processors.normalize.apply import flatten_body
from processors.normalize.caliper import RULES
from processors.normalize.canvas import canvas_event_id
from processors.normalize.event_map import EVENTS, BodyField, EventValue, MetaField, resolve_event_name
from processors.normalize.ids import EventIds, canvas_event_shard
from processors.normalize.model import NormalizationError, parse_time
from processors.warehouse import tables
from processors.warehouse.schema import TABLE_SPECS, Kind
from tests.support.corpus import Example, documented_event_names, load_examples

EXAMPLES = load_examples()
IDS = IdPolicy()  # no home shard set: each event's own shard counts as home (what `dev` does)
EVENT_EXAMPLES = [e for e in EXAMPLES if e.kind == "event"]

# Known defects of the docs' own examples, asserted explicitly rather than skipped.
# user_updated's example has "updated_at": "019-11-01T19:11:01.163Z" (a 3-digit year): the
# field is not set (so it cannot clobber a good value) and is reported; the event is kept.
EXPECTED_UNKNOWN_FIELDS = {"canvas:user_updated#0": ["user_updated.updated_at:invalid"]}
# grade_override's example is labelled metadata.event_name "grade_change" (with a grade_override
# body); the event row keeps the name it was sent with, and the body is mapped as grade_override.
EXPECTED_EVENT_NAME = {"canvas:grade_override#0": "grade_change"}


def rec(payload: dict, fmt: str = FORMAT_CANVAS) -> Record:
    return Record(source=SOURCE_LIVE_EVENT, format=fmt, received_at="2024-01-01T00:00:00+00:00",
                  payload=payload, verification=Verification(signed=False))


def kind_ok(kind: Kind, value: object) -> bool:
    if value is None:
        return True
    return {
        Kind.ID: lambda v: isinstance(v, int) and not isinstance(v, bool),
        Kind.INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
        Kind.FLOAT: lambda v: isinstance(v, float),
        Kind.BOOL: lambda v: isinstance(v, bool),
        Kind.TIME: lambda v: isinstance(v, datetime) and v.tzinfo is not None,
        Kind.TEXT: lambda v: isinstance(v, str),
        Kind.JSON: lambda v: isinstance(v, list | dict | str | int | float | bool),
    }[kind](value)


def test_corpus_is_complete():
    assert len([e for e in EXAMPLES if e.format == "canvas"]) >= 82 + 9
    assert len([e for e in EXAMPLES if e.format == "caliper" and e.doc == "asset_accessed"]) == 40
    assert len(documented_event_names("canvas")) == 82
    assert len(documented_event_names("caliper")) == 32


def test_every_documented_event_type_is_mapped():
    assert documented_event_names("canvas") <= set(EVENTS)
    assert documented_event_names("caliper") <= {r.event for r in RULES}
    assert {r.event for r in RULES} <= set(EVENTS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.label)
def test_example_normalizes_into_real_columns(example: Example):
    out = normalize(example.record(), IDS)
    expected_events = 1 if example.format == "canvas" else len(example.payload["data"])
    assert len(out.events) == expected_events
    for change in out.changes:
        table = tables.TABLES[change.table]
        spec = TABLE_SPECS[change.table]
        assert set(change.key) == {c.name for c in table.primary_key.columns}, change
        assert all(v is not None for v in change.key.values())
        for column, value in {**change.key, **change.fields}.items():
            assert column in table.c, f"{change.table}.{column} is not a column"
            assert column not in tables.VERSION_COLUMNS
            assert kind_ok(spec.kinds[column], value), (change.table, column, value)
        assert change.version.split("|", 1)[1] in {e.event_id for e in out.events}
        assert example.label.split(":")[0] == "canvas" or change.key  # caliper changes are keyed too
        assert change.table in {t.name for t in tables.warehouse_tables()}
        fed_by = table.info["fed_by"]
        assert any(e.event_name in fed_by or resolve_event_name(e.event_name, {}) in fed_by for e in out.events) \
            or example.label in EXPECTED_EVENT_NAME


@pytest.mark.parametrize("example", EVENT_EXAMPLES, ids=lambda e: e.label)
def test_every_event_example_is_mapped(example: Example):
    out = normalize(example.record(), IDS)
    assert out.unknown_events == []
    assert out.unknown_fields == EXPECTED_UNKNOWN_FIELDS.get(example.label, [])
    names = {e.event_name for e in out.events}
    if example.format == "canvas":
        expected = EXPECTED_EVENT_NAME.get(example.label, example.payload["metadata"]["event_name"])
        assert names == {expected}
        assert example.doc == expected or example.label in EXPECTED_EVENT_NAME
    else:
        assert names == {example.doc}
    # Every event describes something: an entity row, a fact row, or both.
    assert out.changes, example.label


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.kind == "metadata"], ids=lambda e: e.label)
def test_metadata_examples_normalize(example: Example):
    out = normalize(example.record(), IDS)
    assert out.unknown_events == []
    assert out.unknown_fields == []


def _loose_equal(kind: Kind, raw: object, value: object, ids: EventIds) -> bool:
    if raw is None:
        return value is None
    if kind is Kind.ID:
        return value == ids(raw)
    if kind is Kind.TIME:
        return value == parse_time(raw)
    if kind in (Kind.FLOAT, Kind.INT):
        return value == float(raw)  # type: ignore[arg-type]
    if kind is Kind.TEXT and not isinstance(raw, str):
        return isinstance(value, str)
    return value == raw


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.format == "canvas"], ids=lambda e: e.label)
def test_canvas_fields_carry_the_examples_own_values(example: Example):
    """Each stored column holds the body value it came from (ids, names, scores, times, ...)."""
    body = example.payload["body"]
    meta = example.payload["metadata"]
    out = normalize(example.record(), IDS)
    ids = IDS.for_event(canvas_event_shard(meta))  # every id in its stored form for this event's shard
    event = out.events[0]
    assert event.event_time == parse_time(meta["event_time"])
    assert event.user_id == (ids(meta["user_id"]) if meta.get("user_id") else None)
    assert event.context_id == (ids(meta["context_id"]) if meta.get("context_id") else None)
    assert event.context_type == meta.get("context_type")
    assert event.event_id == canvas_event_id(example.payload)
    assert dict(event.payload) == {"metadata": meta, "body": body}
    spec = EVENTS[resolve_event_name(meta["event_name"], body)]
    flat = flatten_body(body, spec.flatten)
    for target, change in zip(spec.targets, out.changes, strict=True):
        assert change.table == target.table
        kinds = TABLE_SPECS[target.table].kinds
        for column, src in target.key.items():
            if isinstance(src, BodyField):
                assert change.key[column] == ids(flat[src.key])
            elif src is EventValue.EVENT_ID:
                assert change.key[column] == event.event_id
            elif src is EventValue.HAPPENING_ID:
                assert change.key[column] == event.happening_id
        for raw_key, raw in flat.items():
            column = target.rename.get(raw_key, raw_key)
            if column in change.fields:
                assert _loose_equal(kinds[column], raw, change.fields[column], ids), (raw_key, raw)


# Spot checks of key values straight from the docs' examples. Their root account is on shard 2107, so
# with no home shard set their shard-2107 ids are stored in local form (21070000000011086 -> 11086).
SPOT = [
    ("canvas:grade_change#0", "submissions", {"id": 11086},
     {"score": 5.0, "grade": "5", "grader_id": 987, "user_id": 48,
      "assignment_id": 355}),
    ("canvas:grade_change#0", "grade_changes", None,
     {"old_score": 4.0, "old_grade": "4", "points_possible": 1.0, "grading_complete": True, "muted": False,
      "student_sis_id": "ABC.123", "event_time": datetime(2019, 11, 1, 19, 11, 5, 222000, tzinfo=UTC)}),
    ("canvas:course_created#0", "courses", {"id": 56},
     {"name": "Linear Algebra", "account_id": 438, "workflow_state": "available"}),
    ("canvas:user_created#0", "users", {"id": 25999},
     {"name": "test user", "user_login": "test", "workflow_state": "pre_registered"}),
    ("canvas:enrollment_created#0", "enrollments", {"id": 46825},
     {"user_id": 20064, "course_id": 565, "type": "StudentEnrollment"}),
    ("canvas:assignment_updated#0", "assignments", {"id": 2030605},
     {"title": "A New Assignment For Today", "points_possible": 100.0, "course_id": 1279362,
      "assignment_id_duplicated_from": 420}),
    ("canvas:submission_created#0", "submissions", {"id": 12345567},
     {"score": 99.5, "attempt": 12, "workflow_state": "submitted", "late": False}),
    ("canvas:wiki_page_deleted#0", "wiki_pages", {"id": 9},
     {"title": "Page 1 Updated", "workflow_state": "deleted"}),
    ("canvas:attachment_deleted#0", "attachments", {"id": 606}, {"workflow_state": "deleted"}),
    ("canvas:course_completed#0", "course_progress", {"course_id": 565, "user_id": 123},
     {"requirement_count": 6, "completed_at": datetime(2019, 11, 5, 13, 38, 0, 218000, tzinfo=UTC)}),
    ("canvas:logged_in#0", "logins", None,
     {"user_id": 1, "event_name": "logged_in", "redirect_url": "https://oxana.instructure.com/",
      "client_ip": "93.184.216.34"}),
    ("canvas:grade_override#0", "scores", {"id": 43}, {"override_score": 90.0, "course_id": 46}),
    ("canvas:asset_accessed#0", "asset_accesses", None, {"asset_type": "group", "asset_id": 144}),
    ("caliper:grade_change#0", "submissions", {"id": 11086},
     {"score": 5.0, "grade": "5", "grader_id": 987, "user_id": 48}),
    ("caliper:enrollment_state_updated#0", "enrollment_states", {"enrollment_id": 1999},
     {"state": "deleted"}),
    ("caliper:wiki_page_deleted#0", "wiki_pages", {"id": 9}, {"workflow_state": "deleted"}),
    ("caliper:logged_in#0", "logins", None,
     {"user_id": 1, "session_id": "ef686f8ed684abf78cbfa1f6a58112b5",
      "redirect_url": "https://oxana.instructure.com/"}),
]


@pytest.mark.parametrize(("label", "table", "key", "expected"), SPOT, ids=[f"{s[0]}->{s[1]}" for s in SPOT])
def test_spot_values(label, table, key, expected):
    example = next(e for e in EXAMPLES if e.label == label)
    out = normalize(example.record(), IDS)
    [change] = [c for c in out.changes if c.table == table]
    if key is not None:
        assert dict(change.key) == key
    for column, value in expected.items():
        assert change.fields[column] == value, column


# --- behaviour beyond the corpus -------------------------------------------------------------

GRADE_CHANGE = next(e for e in EXAMPLES if e.label == "canvas:grade_change#0").payload


def test_event_id_ignores_jwt_claims_and_key_order():
    signed = {"iss": "https://live-events.canvas.instructure.com", "exp": 1, **copy.deepcopy(GRADE_CHANGE)}
    reordered = {"body": dict(reversed(list(GRADE_CHANGE["body"].items()))), "metadata": GRADE_CHANGE["metadata"]}
    ids = {canvas_event_id(p) for p in (GRADE_CHANGE, signed, reordered)}
    assert len(ids) == 1
    assert normalize(rec(signed), IDS).events[0].event_id in ids
    other = copy.deepcopy(GRADE_CHANGE)
    other["body"]["score"] = 6
    assert canvas_event_id(other) not in ids


def test_event_payload_excludes_jwt_claims():
    signed = {"iss": "x", "exp": 1, **copy.deepcopy(GRADE_CHANGE)}
    assert set(normalize(rec(signed), IDS).events[0].payload) == {"metadata", "body"}


def test_absent_keys_are_not_set_and_nulls_are():
    payload = copy.deepcopy(GRADE_CHANGE)
    del payload["body"]["score"]
    payload["body"]["grade"] = None
    [sub] = [c for c in normalize(rec(payload), IDS).changes if c.table == "submissions"]
    assert "score" not in sub.fields
    assert "grade" in sub.fields and sub.fields["grade"] is None
    assert "workflow_state" not in sub.fields  # grade_change carries no workflow_state


def test_version_orders_by_event_time_then_id():
    out = normalize(rec(copy.deepcopy(GRADE_CHANGE)), IDS)
    assert {c.version for c in out.changes} == {f"2019-11-01T19:11:05.222000Z|{out.events[0].event_id}"}


def test_unknown_event_is_kept_without_changes():
    payload = {"metadata": {"event_name": "brand_new_event", "event_time": "2024-01-01T00:00:00Z"}, "body": {"x": 1}}
    out = normalize(rec(payload), IDS)
    assert [e.event_name for e in out.events] == ["brand_new_event"]
    assert out.changes == [] and out.unknown_events == ["brand_new_event"]


def test_unknown_body_key_is_reported():
    payload = copy.deepcopy(GRADE_CHANGE)
    payload["body"]["new_field"] = "x"
    out = normalize(rec(payload), IDS)
    assert out.unknown_fields == ["grade_change.new_field"]
    assert all("new_field" not in c.fields for c in out.changes)


def test_missing_key_skips_only_that_change():
    payload = copy.deepcopy(GRADE_CHANGE)
    del payload["body"]["submission_id"]
    out = normalize(rec(payload), IDS)
    assert [c.table for c in out.changes] == ["grade_changes"]
    assert "grade_change.submission_id:missing_key" in out.unknown_fields


@pytest.mark.parametrize(
    "payload",
    [
        {"body": {}},
        {"metadata": "x", "body": {}},
        {"metadata": {"event_time": "2024-01-01T00:00:00Z"}, "body": {}},
        {"metadata": {"event_name": "grade_change"}, "body": {}},
        {"metadata": {"event_name": "grade_change", "event_time": "not a time"}, "body": {}},
        {"metadata": {"event_name": "grade_change", "event_time": "2024-01-01T00:00:00Z"}, "body": "x"},
        {"metadata": {"event_name": "grade_change", "event_time": "2024-01-01T00:00:00Z"}, "body": None},
    ],
)
def test_malformed_canvas_events_raise(payload):
    with pytest.raises(NormalizationError):
        normalize(rec(payload), IDS)


def test_caliper_undocumented_and_foreign_items_are_stored():
    envelope = {
        "sensor": "https://other.example/", "sendTime": "2024-01-01T00:00:00Z",
        "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p1",
        "data": [
            {"id": "urn:uuid:1", "type": "ToolUseEvent", "action": "Used", "eventTime": "2024-01-01T00:00:00Z",
             "actor": {"id": "urn:instructure:canvas:user:5", "type": "Person"}},
            {"id": "urn:uuid:2", "type": "NavigationEvent", "action": "NavigatedTo",
             "eventTime": "2024-01-01T00:00:00Z", "actor": {"id": "https://other.example/users/9"},
             "object": {"id": "https://other.example/page"}},
        ],
    }
    out = normalize(rec(envelope, FORMAT_CALIPER), IDS)
    assert [e.event_name for e in out.events] == ["caliper:ToolUseEvent/Used", "caliper:NavigationEvent/NavigatedTo"]
    assert [e.user_id for e in out.events] == [5, None]
    assert out.changes == []
    assert out.unknown_events == ["caliper:ToolUseEvent/Used", "caliper:NavigationEvent/NavigatedTo"]
    assert out.events[0].payload["data"] == [envelope["data"][0]]


def test_caliper_envelope_without_data_raises():
    with pytest.raises(NormalizationError):
        normalize(rec({"sensor": "x", "dataVersion": "y", "data": "nope"}, FORMAT_CALIPER), IDS)


def test_caliper_examples_keep_distinct_ids():
    """The docs reuse ids across examples; the corpus loader makes them unique, so none is lost."""
    ids = [e.event_id for ex in EXAMPLES if ex.format == "caliper" for e in normalize(ex.record(), IDS).events]
    assert len(ids) == len(set(ids))
    reused = [
        ex for ex in EXAMPLES
        if ex.format == "caliper" and ex.original_ids != [i["id"] for i in ex.payload["data"]]
    ]
    assert reused, "the docs are known to reuse ids (e.g. assignment_created / quiz_created)"


def test_every_table_is_fed():
    for table in tables.warehouse_tables():
        assert table.info["fed_by"], table.name
        assert table.comment


# --- properties ------------------------------------------------------------------------------


CANVAS_EVENTS = [e for e in EVENT_EXAMPLES if e.format == "canvas"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(example=st.sampled_from(CANVAS_EVENTS), data=st.data())
def test_subset_of_body_sets_exactly_what_it_carries(example: Example, data):
    """Drop any body keys: each change sets exactly the columns of the keys that remain."""
    body = example.payload["body"]
    keep = data.draw(st.sets(st.sampled_from(sorted(body)))) if body else set()
    payload = copy.deepcopy(example.payload)
    payload["body"] = {k: v for k, v in body.items() if k in keep}
    spec = EVENTS[resolve_event_name(payload["metadata"]["event_name"], payload["body"])]
    out = normalize(rec(payload), IDS)
    flat = flatten_body(payload["body"], spec.flatten)
    by_table = {c.table: c for c in out.changes}
    for target in spec.targets:
        sources = {s.key for s in target.key.values() if isinstance(s, BodyField)}
        if any(s not in flat for s in sources):
            assert target.table not in by_table  # no key, no change
            continue
        columns = TABLE_SPECS[target.table].data_columns
        expected = {
            target.rename.get(k, k) for k in flat
            if k not in sources and k not in target.ignore and target.rename.get(k, k) in columns
            and f"{payload['metadata']['event_name']}.{k}:invalid" not in out.unknown_fields  # reported
        }
        expected |= {c for c, src in target.extra.items()
                     if not isinstance(src, MetaField) or src.key in payload["metadata"]}
        assert set(by_table[target.table].fields) == expected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(example=st.sampled_from(CANVAS_EVENTS), data=st.data())
def test_hostile_values_never_crash(example: Example, data):
    """Any JSON value in any body field: at worst the field is reported, never an exception."""
    payload = copy.deepcopy(example.payload)
    for key in payload["body"]:
        if data.draw(st.booleans()):
            payload["body"][key] = data.draw(JSON_VALUES)
    out = normalize(rec(payload), IDS)
    assert len(out.events) == 1
    for change in out.changes:
        spec = TABLE_SPECS[change.table]
        for column, value in change.fields.items():
            assert kind_ok(spec.kinds[column], value), (column, value)
            if spec.kinds[column] in (Kind.ID, Kind.INT) and value is not None:
                assert -(2**63) <= value < 2**63


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(example=st.sampled_from([e for e in EVENT_EXAMPLES if e.format == "caliper"]), data=st.data())
def test_hostile_caliper_objects_never_crash(example: Example, data):
    payload = copy.deepcopy(example.payload)
    item = payload["data"][0]
    for key in list(item.get("object", {})):
        if key != "id" and data.draw(st.booleans()):
            item["object"][key] = data.draw(JSON_VALUES)
    for key in ("group", "actor", "session", "membership"):
        if key in item and data.draw(st.booleans()):
            item[key] = data.draw(JSON_VALUES)
    try:
        out = normalize(rec(payload, FORMAT_CALIPER), IDS)
    except NormalizationError:
        return
    assert len(out.events) == 1

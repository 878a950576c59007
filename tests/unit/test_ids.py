"""One id per Canvas object: the stored form depends on the settings and the event alone.

The property tests rewrite the corpus's examples (every event type that keys a row on a Canvas id,
both formats) to carry one object's id in the global or the local form, from events of the home
shard or of another one, and check that the row key is the object's one id (CD2's convention).
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canvas_stream import settings as app_settings
from canvas_stream.records import FORMAT_CALIPER, FORMAT_CANVAS, SOURCE_LIVE_EVENT, Record, Verification
from processors.normalize import IdPolicy, normalize
from processors.normalize import ids as ids_module
from processors.normalize.ids import (
    MAX_SHARD,
    SHARD_FACTOR,
    InvalidId,
    caliper_event_shard,
    canonical_id,
    canvas_event_shard,
    parse_id,
    shard_of,
)
from processors.warehouse.schema import TABLE_SPECS, Kind
from processors.warehouse.writer import collapse
from tests.support.corpus import Example, load_examples
from tests.support.ids import AsWritten, CanvasObject, replace_id, set_event_shard, written

HOME = 2107
FOREIGN = [1, 3, 1121, MAX_SHARD]  # other shards: a trust's other instances, a site-admin shard, the limit
EXAMPLES = load_examples()


# --- the scalar rule ---------------------------------------------------------------------------

@pytest.mark.parametrize(("number", "event_shard", "home", "stored"), [
    (21070000000000565, 2107, 2107, 565),  # home object, global form -> local
    (565, 2107, 2107, 565),  # home object, local form
    (30000000000042, 2107, 2107, 30000000000042),  # foreign object (cross-shard user) stays global
    (42, 3, 2107, 30000000000042),  # a local id in an event of shard 3 is shard 3's
    (21070000000000565, 3, 2107, 565),  # a home object named by a shard-3 event
    (565, None, 2107, 565),  # event shard unknown: a local id is read as the home shard's
    (21070000000000565, None, 2107, 565),
    (21070000000000565, 2107, None, 565),  # no home set: the event's own shard counts as home
    (30000000000042, 2107, None, 30000000000042),
    (42, 3, None, 42),  # ... so a shard-3 event's objects are local (single-shard assumption)
    (21070000000000565, None, None, 21070000000000565),  # nothing known: kept as written
    (0, 3, 2107, 0),
])
def test_canonical_id(number, event_shard, home, stored):
    assert canonical_id(number, event_shard, home) == stored


def test_parsing_accepts_canvas_forms_and_refuses_the_rest():
    assert parse_id("urn:instructure:canvas:course:21070000000000565") == 21070000000000565
    assert parse_id(" 565 ") == parse_id(565) == parse_id(565.0) == 565
    assert parse_id(None) is None and parse_id("") is None
    for bad in (True, "\uff15\uff16\uff15", "²", "12a", 1.5, [1], {"id": 1}, "9" * 20, 2**63, "0" * 30 + "1" * 20):
        with pytest.raises(InvalidId):
            parse_id(bad)
    assert parse_id("0" * 30 + "565") == 565


def test_shard_of_reads_only_global_form_ids():
    assert shard_of("21070000000000001") == shard_of(21070000000000001) == 2107
    assert shard_of("urn:instructure:canvas:account:21070000000000001") == 2107
    assert shard_of("1") is None and shard_of(1) is None
    assert shard_of(" 21070000000000001") is None  # strict, like the SQL mirror
    assert shard_of(True) is None and shard_of(2.107e16) is None
    assert shard_of((MAX_SHARD + 1) * SHARD_FACTOR) is None  # its local ids could not be made global


def test_event_shard_from_root_account_then_context():
    assert canvas_event_shard({"root_account_id": "21070000000000001", "context_id": "30000000000005"}) == 2107
    assert canvas_event_shard({"root_account_id": "1", "context_account_id": "30000000000005"}) == 3
    assert canvas_event_shard({"root_account_id": "1", "context_id": "565"}) is None
    item = {"actor": {"id": "urn:instructure:canvas:user:5", "extensions": {
        "com.instructure.canvas": {"root_account_id": "21070000000000001"}}},
        "group": {"id": "urn:instructure:canvas:course:30000000000565"}}
    assert caliper_event_shard(item) == 2107
    del item["actor"]["extensions"]
    assert caliper_event_shard(item) == 3  # the group (the event's context)
    assert caliper_event_shard({"actor": "x", "object": {"id": "urn:instructure:canvas:user:11210000000000001"}}) \
        == 1121


def test_settings_and_ids_agree_on_the_largest_shard():
    assert app_settings.MAX_SHARD == ids_module.MAX_SHARD
    with pytest.raises(ValueError):
        IdPolicy(MAX_SHARD + 1)


@settings(max_examples=500)
@given(value=st.one_of(st.integers(-(2**64), 2**64), st.text(max_size=25), st.floats(), st.booleans(), st.none(),
                       st.integers(0, 2**63).map(str), st.integers(0, 2**63).map(lambda n: f"urn:x:y:{n}")),
       home=st.one_of(st.none(), st.sampled_from([HOME, *FOREIGN])),
       event_shard=st.one_of(st.none(), st.sampled_from([HOME, *FOREIGN])))
def test_the_fast_path_agrees_with_parse_then_canonical(value, home, event_shard):
    ids = IdPolicy(home).for_event(event_shard)
    try:
        expected = parse_id(value)
    except InvalidId:
        with pytest.raises(InvalidId):
            ids(value)
        return
    got = ids(value)
    assert got == (None if expected is None else canonical_id(expected, event_shard, home))
    assert got is None or -(2**63) <= got < 2**63


@given(shard=st.sampled_from([HOME, *FOREIGN]), local=st.integers(1, SHARD_FACTOR - 1),
       event_shard=st.sampled_from([HOME, *FOREIGN]), home=st.one_of(st.none(), st.sampled_from([HOME, *FOREIGN])))
def test_either_form_of_one_object_gives_its_one_id(shard, local, event_shard, home):
    """The global form from any event, and the local form from an event of the object's own shard."""
    obj = CanvasObject(shard, local)
    effective_home = home if home is not None else event_shard
    assert canonical_id(obj.global_id, event_shard, home) == obj.stored(effective_home)
    assert canonical_id(obj.local, shard, home) == obj.stored(home if home is not None else shard)


# --- the property on the corpus ------------------------------------------------------------------

def _record(payload: dict, fmt: str) -> Record:
    return Record(source=SOURCE_LIVE_EVENT, format=FORMAT_CANVAS if fmt == "canvas" else FORMAT_CALIPER,
                  received_at="2024-01-01T00:00:00+00:00", payload=payload, verification=Verification(signed=True))


def _slots() -> dict[str, list[tuple[Example, str, int]]]:
    """table -> (example, id key column, the id as the example writes it) for every row keyed by a Canvas id."""
    out: dict[str, list[tuple[Example, str, int]]] = {}
    for example in EXAMPLES:
        if example.format == "caliper" and (len(example.payload["data"]) != 1
                                            or not isinstance(example.payload["data"][0].get("actor"), dict)):
            continue
        for change in normalize(example.record(), AsWritten()).changes:
            for column, value in change.key.items():
                if TABLE_SPECS[change.table].kinds[column] is Kind.ID:
                    out.setdefault(change.table, []).append((example, column, value))
    return out


SLOTS = _slots()
TABLES = sorted(SLOTS)


def test_the_property_covers_every_id_keyed_table_and_both_formats():
    keyed = {name for name, spec in TABLE_SPECS.items() if spec.versioned and spec.fed_by is None
             and any(c.kind is Kind.ID for c in spec.keys)}
    assert set(SLOTS) == keyed
    assert {e.format for slots in SLOTS.values() for e, _, _ in slots} == {"canvas", "caliper"}
    assert sum(len(s) for s in SLOTS.values()) > 100


@st.composite
def rendering(draw, slots, obj: CanvasObject, event_shard: int | None):
    """One event from a template of the table, carrying ``obj`` in a form its event may use."""
    example, column, old = draw(st.sampled_from(slots))
    shard = event_shard if event_shard is not None else draw(st.sampled_from([obj.shard, HOME, *FOREIGN]))
    form = draw(st.sampled_from(["global", "local"])) if shard == obj.shard else "global"
    as_int = draw(st.sampled_from([None, True, False]))  # Canvas sends strings, sometimes numbers
    payload = replace_id(example.payload, old, written(obj, form), as_int)
    payload = set_event_shard(payload, example.format, shard)
    return example, column, _record(payload, example.format)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), table=st.sampled_from(TABLES), shard=st.sampled_from([HOME, *FOREIGN]),
       local=st.integers(1, SHARD_FACTOR - 1), home_set=st.booleans())
def test_any_form_from_any_event_type_lands_on_the_objects_one_row(data, table, shard, local, home_set):
    """Two events of any types writing the table carry the object in either form, from events of any
    shard (home set) or of one shard (home unset: a single-shard institution); both land on one row."""
    obj = CanvasObject(shard, local)
    policy = IdPolicy(HOME if home_set else None)
    single = None if home_set else data.draw(st.sampled_from([HOME, *FOREIGN]))
    expected = obj.stored(HOME if home_set else single)
    keys = []
    changes = []
    for _ in range(2):
        example, column, record = data.draw(rendering(SLOTS[table], obj, single))
        out = normalize(record, policy)
        [change] = [c for c in out.changes if c.table == table and column in c.key][:1] or [None]
        assert change is not None, (example.label, out.unknown_fields)
        assert change.key[column] == expected, (example.label, column, obj, change.key)
        keys.append(dict(change.key))
        changes.append(change)
    if keys[0] == keys[1]:  # same template keys otherwise (composite keys): one merged row
        assert len(collapse(changes)) == 1


def test_caliper_urn_and_canvas_string_map_to_the_same_value():
    canvas = next(e for e in EXAMPLES if e.label == "canvas:grade_change#0")
    caliper = next(e for e in EXAMPLES if e.label == "caliper:grade_change#0")
    policy = IdPolicy(HOME)
    [a] = [c for c in normalize(canvas.record(), policy).changes if c.table == "submissions"]
    [b] = [c for c in normalize(caliper.record(), policy).changes if c.table == "submissions"]
    assert caliper.payload["data"][0]["object"]["id"] == "urn:instructure:canvas:submission:21070000000011086"
    assert canvas.payload["body"]["submission_id"] == "21070000000011086"
    assert a.key == b.key == {"id": 11086}


def test_event_rows_use_the_same_ids():
    example = next(e for e in EXAMPLES if e.label == "canvas:submission_created#0")
    payload = copy.deepcopy(example.payload)
    payload["metadata"].update(user_id="21070000000014012", context_id="565", context_type="Course")
    out = normalize(_record(payload, "canvas"), IdPolicy(HOME))
    assert (out.events[0].user_id, out.events[0].context_id) == (14012, 565)
    out = normalize(_record(payload, "canvas"), IdPolicy(3))  # an institution whose home is shard 3
    assert (out.events[0].user_id, out.events[0].context_id) == (21070000000014012, 21070000000000565)
    assert out.shards == [2107]


def test_an_event_column_that_is_not_an_id_is_left_empty_and_the_event_kept():
    example = next(e for e in EXAMPLES if e.label == "canvas:submission_created#0")
    payload = copy.deepcopy(example.payload)
    payload["metadata"].update(user_id=10**23, context_id="not an id")  # kept as received in the payload
    out = normalize(_record(payload, "canvas"), IdPolicy(HOME))
    assert (out.events[0].user_id, out.events[0].context_id) == (None, None)
    assert out.events[0].payload["metadata"]["user_id"] == 10**23
    assert out.changes


def test_the_worker_logs_each_shard_and_warns_when_a_second_one_appears_with_no_home_set():
    from structlog.testing import capture_logs

    from processors.app import ShardReport

    unset = ShardReport(None)
    with capture_logs() as logs:
        unset.update({2107: 5})
        unset.update({2107: 3})
        unset.update({3: 1})
    assert [(e["event"], e.get("shard")) for e in logs if e["log_level"] == "info"] == [
        ("events name a Canvas shard", 2107), ("events name a Canvas shard", 3)]
    assert [e["shards"] for e in logs if e["log_level"] == "warning"] == [[3, 2107]]
    with capture_logs() as logs:
        ShardReport(2107).update({2107: 1, 3: 1})
    assert not [e for e in logs if e["log_level"] == "warning"]  # a trust's other shard, with the home set

"""The generated per-event functions (``apply.generate``) do exactly what interpreting the plans does.

The interpreter below is the loop ``apply_mapping`` ran before the plans were generated into code; for
every event type of the map, random bodies and metadata (valid, invalid, null and absent values, keys
the map does not know) must give the same changes, in the same order, and the same problems.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.normalize.apply import _ABSENT, COMPILED, Invalid, Plan
from processors.normalize.event_map import BodyField, EventValue, MetaField
from processors.normalize.ids import EventIds, InvalidId
from processors.normalize.model import RowChange, happening_time, make_version


def _read(source: Any, body: dict[str, Any], meta: dict[str, Any], event_id: str,
          event_time: datetime | None, event_name: str) -> Any:
    if type(source) is BodyField:
        return body.get(source.key, _ABSENT)
    if type(source) is MetaField:
        return meta.get(source.key, _ABSENT)
    if source is EventValue.EVENT_ID:
        return event_id
    if source is EventValue.EVENT_TIME:
        return event_time
    if source is EventValue.HAPPENING_TIME:
        return happening_time(event_time)
    if source is EventValue.EVENT_NAME:
        return event_name
    raise TypeError(f"no value for source {source!r}")


def interpret(plans: tuple[Plan, ...], flat: dict[str, Any], meta: dict[str, Any], event_id: str,
              event_time: datetime | None, event_name: str, ids: EventIds, label: str, version: str,
              problems: list[str]) -> tuple[list[RowChange], list[tuple[dict[str, Any], str]]]:
    changes: list[RowChange] = []
    by_happening: list[tuple[dict[str, Any], str]] = []
    for plan in plans:
        key: dict[str, Any] | None = {}
        happening_column = None
        for slot in plan.keys:
            if slot.source is EventValue.HAPPENING_ID:
                happening_column = slot.column
                continue
            raw = _read(slot.source, flat, meta, event_id, event_time, event_name)
            try:
                value = None if raw is _ABSENT or raw is None else (slot.coerce or ids)(raw)
            except (Invalid, InvalidId):
                value = None
            if value is None:
                problems.append(f"{label}.{slot.source}:missing_key")
                key = None
                break
            key[slot.column] = value
        fields: dict[str, Any] = {}
        for raw_key, raw in flat.items():
            target = plan.columns.get(raw_key)
            if target is None:
                continue
            column, convert = target
            if raw is None:
                fields[column] = None
                continue
            try:
                fields[column] = (convert or ids)(raw)
            except (Invalid, InvalidId):
                problems.append(f"{label}.{raw_key}:invalid")
        for slot in plan.extras:
            raw = _read(slot.source, flat, meta, event_id, event_time, event_name)
            if raw is _ABSENT:
                continue
            try:
                fields[slot.column] = None if raw is None else (slot.coerce or ids)(raw)
            except (Invalid, InvalidId):
                problems.append(f"{label}.{slot.source}:invalid")
        if plan.constants:
            fields.update(plan.constants)
        if key is None:
            continue
        changes.append(RowChange(table=plan.table, key=key, fields=fields, version=version))
        if happening_column is not None:
            by_happening.append((key, happening_column))
    return changes, by_happening


NAMES = sorted(COMPILED)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from(["", "12", "10000000000012", "x", "true", "2024-01-02T03:04:05Z", "1.5",
                     "urn:instructure:canvas:user:7"]),
    st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
)


def _keys(name: str) -> tuple[list[str], list[str]]:
    """The body and metadata keys the event type's plans read, and a key none of them knows."""
    plans = COMPILED[name].plans
    body = {k for p in plans for k in p.columns}
    meta: set[str] = set()
    for plan in plans:
        for slot in (*plan.keys, *plan.extras):
            if type(slot.source) is BodyField:
                body.add(slot.source.key)
            elif type(slot.source) is MetaField:
                meta.add(slot.source.key)
    return sorted(body | {"not_in_the_map"}), sorted(meta | {"user_id"})


@st.composite
def events(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any], datetime | None]:
    name = draw(st.sampled_from(NAMES))
    body_keys, meta_keys = _keys(name)
    body = draw(st.dictionaries(st.sampled_from(body_keys), VALUES, max_size=len(body_keys)))
    meta = draw(st.dictionaries(st.sampled_from(meta_keys), VALUES, max_size=len(meta_keys)))
    when = draw(st.one_of(st.none(), st.just(datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))))
    return name, body, meta, when


@settings(max_examples=600, deadline=None)
@given(events(), st.sampled_from([None, 1, 2]))
def test_generated_function_matches_the_interpreted_plans(event: Any, shard: int | None) -> None:
    name, body, meta, when = event
    ids = EventIds(None, shard)
    version = make_version(when, "e1")
    compiled = COMPILED[name]
    expected_problems: list[str] = []
    got_problems: list[str] = []
    arguments = (body, meta, "e1", when, name, ids, "label")
    expected = interpret(compiled.plans, *arguments, version, expected_problems)
    got = compiled.run(*arguments, version, got_problems)
    assert [(c.table, list(c.key.items()), list(c.fields.items()), c.version) for c in got[0]] == \
        [(c.table, list(c.key.items()), list(c.fields.items()), c.version) for c in expected[0]]
    assert got[1] == expected[1]
    assert got_problems == expected_problems


def test_every_event_type_has_a_generated_function_that_makes_its_changes() -> None:
    """A body with every key the plans read, as a valid id: each target makes one change."""
    for name, compiled in COMPILED.items():
        body_keys, meta_keys = _keys(name)
        body = dict.fromkeys(body_keys, "12")
        meta = dict.fromkeys(meta_keys, "12")
        when = datetime(2024, 1, 2, tzinfo=UTC)
        changes, _ = compiled.run(body, meta, "e1", when, name, EventIds(None, None), name, "v", [])
        assert [c.table for c in changes] == [p.table for p in compiled.plans], name

"""The ``unnest`` writer against the executemany writer it replaced (kept as an oracle in
tests/support/reference_writer.py): random batches of row changes and events, written by each into
its own database, end in byte-identical tables; and the whole path (record bytes -> warehouse) on
the corpus gives the same tables as the unoptimized path."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream import migrate
from processors.normalize.model import EPOCH, EventRow, RowChange, make_version
from processors.warehouse import writer
from processors.warehouse.schema import TABLE_SPECS, Kind
from tests.support import identity, reference_writer
from tests.support.databases import create_database, drop_database
from tests.support.warehouse import empty_tables

T0 = datetime(2024, 5, 1, tzinfo=UTC)
# Tables with every kind of column, integer and text keys, composite keys and jsonb columns.
TABLES = ["submissions", "courses", "lti_notices", "asset_processor_submissions", "course_scores", "quizzes"]

# What PostgreSQL text and jsonb can hold: no NUL, no lone surrogate (both writers refuse those alike).
storable = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**12), st.floats(allow_nan=False, allow_infinity=False),
              st.text(storable, max_size=6)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(storable, max_size=4),
                                                                                  children, max_size=3)),
    max_leaves=6)


def value_of(kind: Kind):
    return {
        Kind.ID: st.integers(1, 2**62), Kind.INT: st.integers(-(2**40), 2**40),
        Kind.FLOAT: st.floats(allow_nan=False, allow_infinity=False, width=64),
        Kind.BOOL: st.booleans(),
        Kind.TIME: st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
        Kind.TEXT: st.text(alphabet=storable, max_size=12),
        Kind.JSON: json_values,
    }[kind]


@st.composite
def row_change(draw) -> RowChange:
    spec = TABLE_SPECS[draw(st.sampled_from(TABLES))]
    key = {c.name: draw(st.integers(1, 3) if c.kind is Kind.ID else st.sampled_from(["a", "b", "é"]))
           for c in spec.keys}
    columns = draw(st.lists(st.sampled_from(sorted(spec.data_columns)), max_size=5, unique=True))
    fields = {c: draw(st.one_of(st.none(), value_of(spec.kinds[c]))) for c in columns}
    moment = T0 + timedelta(seconds=draw(st.integers(0, 3)))  # few times: ties broken by event id
    return RowChange(spec.name, key, fields, make_version(moment, draw(st.sampled_from(["e1", "e2", "e3"]))))


@st.composite
def event_row(draw) -> tuple[EventRow, bool]:
    payload = draw(st.dictionaries(st.text(storable, max_size=5), json_values, max_size=4))
    event_id = draw(st.sampled_from(["a", "b", "c", "d"]))
    # An event's time is part of the event (and of the key): undated events are filed at the epoch.
    row = EventRow(event_id=event_id, event_name="x", format="canvas", event_time=T0 if event_id in "ab" else EPOCH,
                   received_at=T0 + timedelta(seconds=draw(st.integers(0, 9))),
                   user_id=draw(st.none() | st.integers(1, 9)), context_type=None, context_id=None, payload=payload,
                   subscription=draw(st.none() | st.sampled_from(["s1", "s2"])),
                   root_account_uuid=draw(st.none() | st.just("uuid-1")),
                   happening_id=draw(st.none() | st.sampled_from(["h1", "h2"])),
                   request_id=draw(st.none() | st.text(storable, max_size=5)),
                   real_user_id=draw(st.none() | st.integers(1, 9)),
                   user_login=draw(st.none() | st.text(storable, max_size=5)),
                   user_sis_id=draw(st.none() | st.text(storable, max_size=5)),
                   root_account_id=draw(st.none() | st.integers(1, 9)),
                   arrival=draw(st.none() | st.dictionaries(st.text(storable, max_size=5), json_values, max_size=3)))
    as_text = draw(st.booleans())  # the payload as the record's text, or encoded by the writer
    if as_text:
        row = dataclasses.replace(row, payload_json=json.dumps(payload, ensure_ascii=False).encode())
    return row, as_text


@pytest.fixture(scope="module")
def two_databases(postgres_server_url):
    names = [f"cs_test_ref_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    urls = [asyncio.run(create_database(postgres_server_url, name)) for name in names]
    try:
        for url in urls:
            migrate.upgrade(url)
        yield urls
    finally:
        for name in names:
            asyncio.run(drop_database(postgres_server_url, name))


async def write(url: str, batches: list[tuple[list[EventRow], list[RowChange]]], module) -> dict[str, list[str]]:
    engine = create_async_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await empty_tables(conn)
        for events, changes in batches:
            async with engine.begin() as conn:
                await module.insert_events(conn, events)
                await module.upsert_changes(conn, changes)
    finally:
        await engine.dispose()
    return await identity.dump(url)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(batches=st.lists(st.tuples(st.lists(event_row(), max_size=4), st.lists(row_change(), max_size=12)),
                        min_size=1, max_size=4))
def test_random_batches_give_byte_identical_tables_to_the_executemany_writer(two_databases, batches):
    old_url, new_url = two_databases
    plain = [([e for e, _ in events], changes) for events, changes in batches]
    old = asyncio.run(write(old_url, plain, reference_writer))
    new = asyncio.run(write(new_url, plain, writer))
    assert new == old
    assert any(new.values()) == any(events or changes for events, changes in plain)  # not vacuous


async def test_the_whole_path_on_the_corpus_gives_the_tables_of_the_unoptimized_path(postgres_server_url):
    report = await identity.compare(postgres_server_url, identity.corpus_inputs())
    assert report.differing == {}
    assert report.identical and report.rows > 300
    assert report.ids_checked > 100 and report.ids_wrong == 0

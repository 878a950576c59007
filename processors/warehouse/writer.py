"""The one place that writes to the warehouse: batched, collapsed, order-safe upserts.

Rule analysts can rely on: each column holds the value of the latest event (by event time, ties
broken by event id) that carried that column. Changes to the same row within a batch are merged
in Python first (PostgreSQL cannot touch a row twice in one statement); the same rule is then
applied in SQL against the stored ``field_versions``, so any order or number of deliveries ends
in identical tables.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from canvas_stream import json_codec
from canvas_stream.errors import CanvasStreamError
from processors.normalize.model import EventRow, RowChange

from . import tables

_TABLES: dict[str, Table] = {t.name: t for t in tables.warehouse_tables()}
_DIALECT = postgresql.dialect()
_QUOTE = _DIALECT.identifier_preparer.quote


class UnknownColumn(CanvasStreamError, ValueError):
    """A row change names a table or column the warehouse does not have: a normalizer bug.

    Normalizers produce valid changes by construction (the event map is checked against
    ``schema`` when compiled; tests cover the LTI normalizer), so the writer does not validate
    every column. It only notices a column it has no parameter for (the ``KeyError`` of the lookup
    it makes anyway); as a ValueError the sink treats it as poison and quarantines the message.
    """


@dataclass(slots=True)
class MergedChange:
    """All changes to one row in a batch, merged by the per-column latest-version rule."""

    table: str
    key: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def apply(self, change: RowChange) -> None:
        for column, value in change.fields.items():
            current = self.versions.get(column)
            if current is None or change.version > current:
                self.fields[column] = value
                self.versions[column] = change.version


@dataclass(slots=True)
class QuarantineRow:
    reason: str
    raw: str
    source: str | None = None

    @property
    def id(self) -> str:
        return hashlib.sha256(self.raw.encode("utf-8", "surrogatepass")).hexdigest()


def _row_key(change: RowChange) -> tuple[Any, ...]:
    """The row's key values in column order (sorted, so any key dict order names the same row)."""
    key = change.key
    return tuple(key.items()) if len(key) == 1 else tuple(sorted(key.items()))


def _merge(changes: Iterable[RowChange]) -> dict[tuple[str, tuple[Any, ...]], MergedChange]:
    merged: dict[tuple[str, tuple[Any, ...]], MergedChange] = {}
    for change in changes:
        key = (change.table, _row_key(change))
        row = merged.get(key)
        if row is None:  # the first change of a row sets every column it carries
            merged[key] = MergedChange(change.table, dict(change.key), dict(change.fields),
                                       dict.fromkeys(change.fields, change.version))
        else:
            row.apply(change)
    return merged


def collapse(changes: Iterable[RowChange]) -> list[MergedChange]:
    """Merge changes per (table, key); the result does not depend on the input order."""
    return list(_merge(changes).values())


def collapse_events(rows: Iterable[EventRow]) -> list[EventRow]:
    """One row per event id, keeping the earliest receipt (duplicates in one batch are common)."""
    best: dict[str, EventRow] = {}
    for row in rows:
        seen = best.get(row.event_id)
        if seen is None or row.received_at < seen.received_at:
            best[row.event_id] = row
    return list(best.values())


def _version_time(version: str) -> datetime:
    return datetime.fromisoformat(version.split("|", 1)[0].replace("Z", "+00:00"))


def _json_text(value: Any) -> str | None:
    """A jsonb parameter as text; None stays SQL NULL (as ``JSONB(none_as_null=True)`` binds it)."""
    return None if value is None else json_codec.dumps(value).decode("utf-8")


@dataclass(frozen=True, slots=True)
class _Statement:
    """One table's write, as constant SQL text: asyncpg prepares it once and every batch is one round
    trip with one array parameter per column (``unnest``), whatever the number of rows."""

    sql: str
    columns: tuple[str, ...]  # parameter order (after them, for versioned tables, the VERSION_PARTS)
    position: dict[str, int]  # column -> parameter index
    json_positions: tuple[int, ...]  # jsonb columns, sent as text and cast in SQL


# A row whose columns all carry one version (all but a few rows: one event set them) sends its
# field_versions as the column names and that version, which PostgreSQL builds into the same jsonb
# with ``jsonb_object`` instead of lexing ~2 kB of JSON per row (a version per column): backend CPU
# 5.4 -> 2.9 us per row. A row merged from events of different versions sends the JSON text.
VERSION_PARTS = ("versioned_columns", "single_version", "versioned_count")  # text (comma-joined), text, int


def _statement(table: Table, on_conflict: str) -> _Statement:
    columns = tuple(c.name for c in table.c)
    versioned = "field_versions" in columns
    names = ", ".join(_QUOTE(c) for c in columns)
    arrays, select, json_positions = [], [], []
    for i, column in enumerate(table.c):
        sql_type = column.type.compile(dialect=_DIALECT)
        is_json = sql_type in ("JSON", "JSONB")
        if is_json:
            json_positions.append(i)
        arrays.append(f"${i + 1}::{'text' if is_json else sql_type}[]")
        quoted = f"u.{_QUOTE(column.name)}"
        if versioned and column.name == "field_versions":
            select.append(f"coalesce({quoted}::jsonb, jsonb_object(string_to_array(u.{VERSION_PARTS[0]}, ','), "
                          f"array_fill(u.{VERSION_PARTS[1]}, ARRAY[u.{VERSION_PARTS[2]}])))")
        else:
            select.append(f"{quoted}::jsonb" if is_json else quoted)
    aliases = names
    if versioned:
        if set(VERSION_PARTS) & set(columns) or any("," in c for c in columns):
            raise ValueError(f"{table.name}: a column named like a version part, or with a comma")
        n = len(columns)
        arrays += [f"${n + 1}::text[]", f"${n + 2}::text[]", f"${n + 3}::int[]"]
        aliases += ", " + ", ".join(VERSION_PARTS)
    sql = (f"INSERT INTO {_DIALECT.identifier_preparer.format_table(table)} ({names}) "
           f"SELECT {', '.join(select)} FROM unnest({', '.join(arrays)}) AS u({aliases}) {on_conflict}")
    return _Statement(sql, columns, {c: i for i, c in enumerate(columns)}, tuple(json_positions))


@functools.cache
def _upsert_statement(name: str) -> _Statement:
    """Each data column takes the incoming value only when its version is newer than the stored one;
    ``field_versions`` keeps the newest version per column; an all-older delivery changes nothing."""
    table = _TABLES.get(name)
    if table is None:
        raise UnknownColumn(f"unknown table {name!r}")
    target = _DIALECT.identifier_preparer.format_table(table)
    functions = _QUOTE(table.schema)  # newer() and merge_versions() live beside the tables
    keys = [c.name for c in table.primary_key.columns]
    sets = []
    for column in table.c:
        if column.name in keys or column.name in tables.VERSION_COLUMNS:
            continue
        quoted, literal = _QUOTE(column.name), column.name.replace("'", "''")
        sets.append(f"{quoted} = CASE WHEN {functions}.newer(EXCLUDED.field_versions ->> '{literal}', "
                    f"{target}.field_versions ->> '{literal}') THEN EXCLUDED.{quoted} ELSE {target}.{quoted} END")
    sets.append(f"field_versions = {functions}.merge_versions({target}.field_versions, EXCLUDED.field_versions)")
    sets.append(f"last_event_at = greatest({target}.last_event_at, EXCLUDED.last_event_at)")
    return _statement(table, f"ON CONFLICT ({', '.join(_QUOTE(k) for k in keys)}) DO UPDATE SET {', '.join(sets)} "
                             f"WHERE NOT ({target}.field_versions @> EXCLUDED.field_versions)")


@functools.cache
def _events_statement() -> _Statement:
    target = _DIALECT.identifier_preparer.format_table(tables.events)
    # The key is (event_id, event_time): the partition key must be part of it, and an event's time is
    # part of the event, so a redelivery months later still conflicts with the row it made first.
    keys = ", ".join(_QUOTE(c.name) for c in tables.events.primary_key.columns)
    # the earliest receipt also names the subscription that delivered first (when it knows one),
    # and is the delivery a replay rebuilds
    return _statement(tables.events, f"ON CONFLICT ({keys}) DO UPDATE SET received_at = EXCLUDED.received_at, "
                                     f"subscription = coalesce(EXCLUDED.subscription, {target}.subscription), "
                                     f"arrival = coalesce(EXCLUDED.arrival, {target}.arrival) "
                                     f"WHERE EXCLUDED.received_at < {target}.received_at")


# The writer's statements have one plan whatever the batch: an INSERT .. SELECT from ``unnest`` of one
# array per column, the conflict arbiter being the key. With plan_cache_mode "auto" PostgreSQL plans them
# again at every execution (a custom plan, estimated cheaper than the generic one because it knows the
# arrays' lengths), which re-inlines ``newer()`` once per column: ~0.3 ms for each of a batch's ~50
# statements (backend CPU 76 -> 70 us/event, benchmarks/pg_write.py). A generic plan is made once per
# prepared statement, i.e. once per connection.
GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan"


async def use_generic_plans(conn: AsyncConnection) -> None:
    """Plan the writer's statements once per connection instead of once per batch (this transaction only)."""
    await conn.exec_driver_sql(GENERIC_PLANS)


def _by_table(changes: Iterable[RowChange]) -> dict[str, list[tuple[tuple[Any, ...], MergedChange]]]:
    """The merged rows of each table, with their key values (what they are sorted by)."""
    by_table: dict[str, list[tuple[tuple[Any, ...], MergedChange]]] = {}
    for (table, key), row in _merge(changes).items():
        rows = by_table.get(table)
        if rows is None:
            rows = by_table[table] = []
        rows.append((key, row))
    return by_table


_FIRST = operator.itemgetter(0)


async def upsert_changes(conn: AsyncConnection, changes: Iterable[RowChange]) -> int:
    """Collapse and upsert, one statement per table; returns the number of distinct rows written."""
    by_table = _by_table(changes)
    times: dict[str, datetime] = {}  # version -> its event time, parsed once per event
    encode = json_codec.dumps
    count = 0
    for name in sorted(by_table):  # a fixed order (tables, then keys) keeps concurrent workers from deadlocking
        statement = _upsert_statement(name)
        try:
            items = sorted(by_table[name], key=_FIRST)
        except TypeError:  # key values of mixed types: a normalizer bug, but still a total order
            items = sorted(by_table[name], key=lambda item: repr(item[0]))
        n = len(items)
        arrays: list[list[Any]] = [[None] * n for _ in statement.columns]
        # each column's list, by column name: one lookup per value instead of two
        column_of = {column: arrays[i] for column, i in statement.position.items()}
        versions_column = column_of["field_versions"]
        last_event_column = column_of["last_event_at"]
        versioned_columns: list[str | None] = [None] * n
        single_version: list[str | None] = [None] * n
        versioned_count: list[int | None] = [None] * n
        for i, (_, row) in enumerate(items):
            try:
                for column, value in row.key.items():
                    column_of[column][i] = value
                for column, value in row.fields.items():
                    column_of[column][i] = value
            except KeyError as exc:
                raise UnknownColumn(f"unknown column in {name}: {exc.args[0]!r}") from None
            versions = row.versions
            if versions:
                values = list(versions.values())
                latest = values[0]
                # one event set them all (a row's columns share its version object: count is an
                # identity test per value, where max() and all() compared each value twice)
                single = values.count(latest) == len(values)
                if not single:
                    latest = max(values)
                moment = times.get(latest)
                if moment is None:
                    moment = times[latest] = _version_time(latest)
                last_event_column[i] = moment
                if single:  # names + version, no JSON
                    versioned_columns[i], single_version[i] = ",".join(versions), latest
                    versioned_count[i] = len(values)
                    continue
            versions_column[i] = encode(versions).decode("utf-8")
        for j in statement.json_positions:
            if arrays[j] is not versions_column:
                arrays[j] = [None if v is None else encode(v).decode("utf-8") for v in arrays[j]]
        arrays += [versioned_columns, single_version, versioned_count]
        await conn.exec_driver_sql(statement.sql, _parameters(arrays, n))
        count += n
    return count


def _parameters(arrays: list[list[Any]], n: int) -> tuple[list[Any] | None, ...]:
    """The statement's parameters: a column that is NULL in every row goes as one NULL array, which
    ``unnest`` pads with NULLs, so the driver does not inspect ``n`` Nones (it checks every element)."""
    return tuple(None if column.count(None) == n else column for column in arrays)


async def insert_events(conn: AsyncConnection, rows: Iterable[EventRow]) -> int:
    """Insert distinct events, one statement; a repeat delivery only lowers ``received_at`` to the earliest.

    The payload goes as the record's own text when the normalizer could cut it out, else encoded once.
    """
    events = sorted(collapse_events(rows), key=lambda r: r.event_id)
    if not events:
        return 0
    statement = _events_statement()
    values = event_columns(events)
    try:
        parameters = tuple(values[c] for c in statement.columns)
    except KeyError as exc:  # a column of events that this function does not fill: caught by the tests
        raise UnknownColumn(f"events column not written: {exc.args[0]!r}") from None
    await conn.exec_driver_sql(statement.sql, _parameters(list(parameters), len(events)))
    return len(events)


def event_columns(events: list[EventRow]) -> dict[str, list[Any]]:
    """The events table's values, one list per column (jsonb as text), in the order of ``events``."""
    return {
        "event_id": [r.event_id for r in events],
        "event_name": [r.event_name for r in events],
        "format": [r.format for r in events],
        "event_time": [r.event_time for r in events],
        "received_at": [r.received_at for r in events],
        "user_id": [r.user_id for r in events],
        "context_type": [r.context_type for r in events],
        "context_id": [r.context_id for r in events],
        "payload": [(r.payload_json if r.payload_json is not None else json_codec.dumps(r.payload)).decode("utf-8")
                    for r in events],
        "subscription": [r.subscription for r in events],
        "root_account_uuid": [r.root_account_uuid for r in events],
        "happening_id": [r.happening_id or r.event_id for r in events],
        "request_id": [r.request_id for r in events],
        "real_user_id": [r.real_user_id for r in events],
        "user_login": [r.user_login for r in events],
        "user_sis_id": [r.user_sis_id for r in events],
        "root_account_id": [r.root_account_id for r in events],
        "arrival": [_json_text(r.arrival) for r in events],
    }


def _without_nul(text: str) -> str:
    """PostgreSQL text cannot hold NUL; keep it visible instead of failing the quarantine."""
    return text.replace("\x00", "\\u0000")


async def insert_quarantine(conn: AsyncConnection, rows: Iterable[QuarantineRow]) -> int:
    """Keep what could not be normalized, once per distinct raw message."""
    values = {
        r.id: {"id": r.id, "reason": r.reason[:2000], "source": r.source, "raw": _without_nul(r.raw)}
        for r in rows
    }
    if not values:
        return 0
    stmt = insert(tables.quarantine).values(list(values.values()))
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"reason": stmt.excluded.reason, "resolved": False},
    )
    await conn.execute(stmt)
    return len(values)

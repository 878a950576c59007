"""Two ways into the warehouse from the same input, and their tables compared row by row.

* unoptimized: the record as the ingress used to publish it (decoded payload *and* the raw token),
  decoded with ``json.loads``, normalized, the event payload encoded by SQLAlchemy's JSONB type,
  written by the executemany writer (``reference_writer``);
* optimized: the record as the ingress publishes it now (the payload's own text, once), decoded by
  ``processors.batch.prepare`` (msgspec), the stored payload cut from the record's text, written by
  ``processors.warehouse.writer`` through ``WarehouseSink`` (``unnest``, one statement per table).

Both in batches of the worker's size, into two fresh databases; every table is then dumped as
``SELECT t::text .. ORDER BY <primary key>``. Canvas event ids are also recomputed with the stdlib
(``sha256(json.dumps(.., sort_keys=True))``), the definition the ids had before msgspec. Used by
``benchmarks/identical.py`` and the integration tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from canvas_stream.settings import plain_database_url
from processors.normalize.ids import IdPolicy
from processors.warehouse.schema import SCHEMA
from tests.support.databases import create_database, drop_database

BATCH = 1000
IDS = IdPolicy()  # no home shard set, as the worker runs by default
RECEIVED_AT = "2026-01-01T00:00:00.000001+00:00"


@dataclass
class Input:
    claims: dict[str, Any]
    text: bytes  # the claims' JSON text as signed
    token: str  # what the old record carried again in ``raw``


@dataclass
class Report:
    events: int = 0
    tables: int = 0
    rows: int = 0
    differing: dict[str, str] = field(default_factory=dict)
    ids_checked: int = 0
    ids_wrong: int = 0

    @property
    def identical(self) -> bool:
        return not self.differing and not self.ids_wrong and self.rows > 0


def corpus_inputs() -> list[Input]:
    from tests.support.corpus import load_examples

    out = []
    for example in load_examples():
        if example.kind != "event":
            continue
        text = json.dumps(example.payload, separators=(",", ":"), ensure_ascii=False).encode()
        out.append(Input(json.loads(text), text, "unsigned"))
    return out


def _old_wire(item: Input) -> bytes:
    """The record exactly as the ingress published it before (payload decoded *and* the raw token)."""
    from canvas_stream.records import detect_format

    obj = {"source": "live_event", "format": detect_format(item.claims), "received_at": RECEIVED_AT,
           "payload": item.claims, "verification": {"signed": True, "kid": "k", "issuer": "i", "verified_at": "t"},
           "raw": item.token, "extra": {}, "v": 1}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _new_wire(item: Input) -> bytes:
    from canvas_stream.records import Verification
    from ingest.live_events import build_record

    _key, record = build_record(item.claims, Verification(True, "k", "i", "t"), item.text, RECEIVED_AT)
    return record.to_bytes()


async def _old_path(url: str, inputs: list[Input]) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from canvas_stream.records import Record, Verification
    from processors.normalize import normalize
    from processors.normalize.model import Normalized
    from tests.support import reference_writer

    engine = create_async_engine(url, pool_size=1)
    try:
        for start in range(0, len(inputs), BATCH):
            merged = Normalized()
            for item in inputs[start:start + BATCH]:
                obj = json.loads(_old_wire(item))
                record = Record(source=obj["source"], format=obj["format"], received_at=obj["received_at"],
                                payload=obj["payload"], verification=Verification(**obj["verification"]),
                                raw=obj["raw"])
                merged.extend(normalize(record, IDS))
            async with engine.begin() as conn:
                await reference_writer.insert_events(conn, merged.events)
                await reference_writer.upsert_changes(conn, merged.changes)
    finally:
        await engine.dispose()


async def _new_path(url: str, inputs: list[Input]) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from processors.batch import prepare
    from processors.sink import WarehouseSink

    engine = create_async_engine(url, pool_size=1)
    try:
        sink = WarehouseSink(engine)
        wire = [_new_wire(item) for item in inputs]
        for start in range(0, len(wire), BATCH):
            batch = prepare(wire[start:start + BATCH], IDS)
            if batch.quarantined():
                raise AssertionError(f"quarantined: {[q.reason for q in batch.quarantined()][:3]}")
            await sink.write(batch)
    finally:
        await engine.dispose()


async def dump(url: str) -> dict[str, list[str]]:
    """Every warehouse table's rows as text, in primary-key order (quarantine left out: it has now())."""
    import asyncpg

    from processors.warehouse import tables

    conn = await asyncpg.connect(plain_database_url(url))
    try:
        out = {}
        for table in tables.metadata.sorted_tables:
            if table.name == "quarantine":
                continue
            keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            rows = await conn.fetch(f'SELECT t::text AS row FROM {SCHEMA}."{table.name}" t ORDER BY {keys}')
            out[table.name] = [r["row"] for r in rows]
        return out
    finally:
        await conn.close()


def _stdlib_ids(inputs: list[Input]) -> set[str]:
    ids = set()
    for item in inputs:
        if isinstance(item.claims.get("metadata"), dict) and isinstance(item.claims.get("body"), dict):
            event = {"metadata": item.claims["metadata"], "body": item.claims["body"]}
            text = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            ids.add(hashlib.sha256(text.encode()).hexdigest())
    return ids


async def compare(server_url: str, inputs: list[Input]) -> Report:
    """Both paths into two fresh databases on ``server_url``; the tables compared; the databases dropped."""
    from canvas_stream import migrate

    names = [f"cs_identical_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    urls = [await create_database(server_url, name) for name in names]
    try:
        for url in urls:
            await asyncio.to_thread(migrate.upgrade, url)
        await _old_path(urls[0], inputs)
        await _new_path(urls[1], inputs)
        old, new = await dump(urls[0]), await dump(urls[1])
    finally:
        for name in names:
            await drop_database(server_url, name)
    report = Report(events=len(inputs), tables=len(old))
    for name, rows in old.items():
        report.rows += len(rows)
        if rows != new.get(name):
            first = next((i for i, (a, b) in enumerate(zip(rows, new.get(name, []), strict=False)) if a != b),
                         min(len(rows), len(new.get(name, []))))
            report.differing[name] = (f"{len(rows)} vs {len(new.get(name, []))} rows; first difference at row "
                                      f"{first}: {rows[first][:300] if first < len(rows) else None!r} vs "
                                      f"{new[name][first][:300] if first < len(new.get(name, [])) else None!r}")
    stored = {row.split(",", 1)[0].lstrip("(") for row in new.get("events", []) if ",canvas," in row}
    expected = _stdlib_ids(inputs)
    report.ids_checked = len(expected)
    report.ids_wrong = len(expected - stored)
    return report

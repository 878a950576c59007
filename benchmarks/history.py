"""History at scale: a warehouse of a few million events, upgraded to monthly partitions and measured.

    DATABASE_URL=postgresql://... .venv/bin/python -m benchmarks.history [--events 3000000] [--months 6]

A throwaway database on ``DATABASE_URL``'s server (dropped at the end) is migrated to revision 0013
(plain tables) and filled by ``benchmarks/fill.py``; then, in order:

1. the analyst queries on the plain tables, and a bulk copy of ``events`` and ``asset_accesses`` rows
   into them with every index in place (the comparison for 3 and 6);
2. the in-place upgrade to partitioned tables (migration 0014): seconds per million rows, and the row
   counts of every history table before and after;
3. the same bulk copy into the partitioned tables;
4. the writer path: events of the warehouse's own payloads (new ids and times) decoded and normalized
   (``processors.batch.prepare``), then written through ``processors.sink.WarehouseSink`` (the
   worker's ``insert_events`` + ``upsert_changes``) in batches of ``WORKER_BATCH_SIZE`` (1,000);
5. the queries analysts run, with and without a time range: milliseconds and partitions scanned
   (partition pruning), and the lookup of an event by id, with and without its time;
6. partition sizes per month (``events``, ``asset_accesses``);
7. an erasure of one student (``processors/privacy/erasure.py``): seconds, rows, and the scan of
   ``events`` it makes;
8. dropping the oldest month of ``events`` and ``asset_accesses`` through ``retention.apply_history``
   while a writer writes: seconds, and the writer's longest batch during the drop against its median;
9. the CPU per event of erasure screening and pseudonymization (``benchmarks.privacy.measure``).

Prints one JSON document; the figures are in docs/scaling.md. The machine's load average is
recorded at the start and the end: on a shared machine, compare figures of one run with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from canvas_stream import migrate
from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.privacy import erasure as erasure_module
from processors.privacy.erasure import EVENT_COLUMNS, PAGE, ErasureReport, ErasureRequest, erase, prefilter
from processors.privacy.match import SHARD_FACTOR, Matcher, Person
from processors.sink import WarehouseSink
from processors.warehouse import partitions, retention
from processors.warehouse.partitions import Month
from processors.warehouse.schema import SCHEMA
from tests.support import scenario
from tests.support.warehouse import warehouse_at

from . import privacy
from .fill import HOME_SHARD, fill_warehouse
from .queries import _explain

S = SCHEMA
HISTORY = ("events", "asset_accesses", "logins", "grade_changes")
BATCH = 1000  # the worker's default WORKER_BATCH_SIZE until 2026-12-03 (now 2,000); kept so runs compare


def _now() -> float:
    return time.perf_counter()


async def _scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.exec_driver_sql(sql)).scalar()


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    return {t: int(await _scalar(engine, f"SELECT count(*) FROM {S}.{t}")) for t in HISTORY}


# ---- bulk inserts: a copy of existing rows under new ids, every index in place ---------------------------

async def _columns(engine: AsyncEngine, table: str) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            f"'{S}' AND table_name = '{table}' ORDER BY ordinal_position")).scalars())


async def bulk_copy(engine: AsyncEngine, rows: int, tag: str, lo: datetime, hi: datetime) -> dict[str, float]:
    """Copy ``rows`` page views of [lo, hi) and their ``asset_accesses`` rows under new ids (``tag``
    before ``event_id`` and ``happening_id``): the rows are read into temporary tables first, then one
    timed INSERT .. SELECT per table, every index in place (a backfill's insert); rows per second."""
    window = f"event_time >= '{lo.isoformat()}' AND event_time < '{hi.isoformat()}'"
    columns = {t: await _columns(engine, t) for t in ("events", "asset_accesses")}

    def renamed(table: str) -> str:
        return ", ".join(f"'{tag}' || {c} AS {c}" if c in ("event_id", "happening_id") else c for c in columns[table])

    out: dict[str, float] = {}
    async with engine.connect() as conn:
        await conn.exec_driver_sql(
            f"CREATE TEMP TABLE copy_events AS SELECT {renamed('events')} FROM {S}.events "
            f"WHERE event_name = 'asset_accessed' AND {window} ORDER BY event_time LIMIT {rows}")
        await conn.exec_driver_sql(
            f"CREATE TEMP TABLE copy_asset_accesses AS SELECT {renamed('asset_accesses')} FROM {S}.asset_accesses "
            f"WHERE {window} AND '{tag}' || happening_id IN (SELECT happening_id FROM copy_events)")
        await conn.commit()
        for table in ("events", "asset_accesses"):
            started = _now()
            names = ", ".join(columns[table])
            result = await conn.exec_driver_sql(f"INSERT INTO {S}.{table} ({names}) SELECT {names} FROM copy_{table}")
            await conn.commit()
            out[f"{table}_rows"] = result.rowcount
            out[f"{table}_rows_per_s"] = round(result.rowcount / (_now() - started))
        await conn.exec_driver_sql("DROP TABLE copy_events, copy_asset_accesses")
        await conn.commit()
    return out


# ---- the writer path -------------------------------------------------------------------------------------

async def writer_batches(engine: AsyncEngine, batches: int, size: int, when: datetime,
                         tag: str) -> list[list[bytes]]:
    """``batches`` x ``size`` Kafka records of the warehouse's own payloads (the mix of the last
    ``batches * size`` events), as new events: a fresh request id and times from ``when`` on."""
    async with engine.connect() as conn:
        payloads = list((await conn.exec_driver_sql(
            f"SELECT payload FROM {S}.events ORDER BY event_time DESC LIMIT {batches * size}")).scalars())
    for i, payload in enumerate(payloads):
        meta = payload["metadata"]
        meta["request_id"] = f"{tag}-{i}"
        meta["event_time"] = (when + timedelta(milliseconds=37 * i)).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
    records = scenario.records(payloads)
    return [records[i:i + size] for i in range(0, len(records), size)]


async def write_batches(engine: AsyncEngine, batches: list[list[bytes]],
                        latencies: list[float] | None = None) -> dict[str, float]:
    """Prepare (CPU, timed apart) and write each batch through the worker's sink."""
    sink, ids = WarehouseSink(engine), IdPolicy(HOME_SHARD)
    prepare_s = write_s = 0.0
    events = 0
    for raws in batches:
        started = _now()
        batch = prepare(raws, ids)
        prepared = _now()
        await sink.write(batch)
        done = _now()
        prepare_s, write_s = prepare_s + prepared - started, write_s + done - prepared
        events += len(raws)
        if latencies is not None:
            latencies.append(done - prepared)
    return {"events": events, "prepare_us_per_event": round(prepare_s / events * 1e6, 1),
            "write_events_per_s": round(events / write_s), "rows_written": sink.rows_written}


# ---- queries ---------------------------------------------------------------------------------------------

def scanned(node: dict[str, Any], prefix: str) -> list[str]:
    """Relations named ``prefix``* that the plan really read (loops > 0; a pruned one is absent or
    never executed)."""
    out = []
    if node.get("Relation Name", "").startswith(prefix) and node.get("Actual Loops", 0) > 0:
        out.append(node["Relation Name"])
    for child in node.get("Plans", []):
        out += scanned(child, prefix)
    return out


def analyst_queries(month: Month, event_id: str, event_time: datetime, course: int) -> dict[str, str]:
    lo, hi = month.literal(), month.add(1).literal()
    one_month = f"event_time >= {lo} AND event_time < {hi}"
    dau = (f"SELECT date_trunc('day', event_time), count(DISTINCT user_id) FROM {S}.events "
           "WHERE event_name = 'asset_accessed' AND {where} GROUP BY 1")
    return {
        "count_one_month": f"SELECT count(*) FROM {S}.events WHERE {one_month}",
        "count_all_history": f"SELECT count(*) FROM {S}.events",
        "daily_active_users_one_month": dau.format(where=one_month),
        "daily_active_users_all_history": dau.format(where="true"),
        "one_course_one_month": f"SELECT count(*) FROM {S}.asset_accesses WHERE context_id = {course} AND {one_month}",
        "one_course_all_history": f"SELECT count(*) FROM {S}.asset_accesses WHERE context_id = {course}",
        "last_30_days_now_relative": f"SELECT count(*) FROM {S}.logins WHERE event_time > now() - interval '30 days'",
        "event_by_id_without_time": f"SELECT event_name FROM {S}.events WHERE event_id = '{event_id}'",
        "event_by_id_and_time": f"SELECT event_name FROM {S}.events WHERE event_id = '{event_id}' "
                                f"AND event_time = '{event_time.isoformat()}'",
    }


async def run_queries(engine: AsyncEngine, sqls: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Best of two runs after a warm-up: milliseconds (planning + execution), and the partitions read."""
    out = {}
    for label, sql in sqls.items():
        table = sql.split(f"FROM {S}.", 1)[1].split()[0]
        await _explain(engine, sql, analyze=True)
        runs = [await _explain(engine, sql, analyze=True) for _ in range(2)]
        best = min(runs, key=lambda r: r["Planning Time"] + r["Execution Time"])
        read = scanned(best["Plan"], table + "_")
        out[label] = {"ms": round(best["Planning Time"] + best["Execution Time"], 1),
                      "rows": best["Plan"].get("Actual Rows"), "partitions_scanned": len(read)}
    return out


async def partition_sizes(engine: AsyncEngine, table: str) -> dict[str, dict[str, float]]:
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql(
            "SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid) FROM pg_inherits i "
            f"JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '{S}.{table}'::regclass ORDER BY 1")).all()
    return {name: {"rows": max(n, 0), "mb": round(size / 2**20, 1),
                   "bytes_per_row": round(size / n) if n > 0 else None} for name, n, size in rows}


# ---- erasure and retention -------------------------------------------------------------------------------

async def erasure(engine: AsyncEngine) -> dict[str, Any]:
    """Erase two students of median activity: one as ``erase`` does now, one through the paged scan of
    ``events`` it made before (``paged_events``), for the comparison; and time, apart, one scan of the
    payloads with either id pattern (how many events each lets through to be normalized again)."""
    async with engine.connect() as conn:
        counts = (await conn.exec_driver_sql(
            f"SELECT user_id, count(*) FROM {S}.events WHERE user_id < {SHARD_FACTOR} GROUP BY 1 ORDER BY 2, 1")).all()
    (now_id, now_events), (before_id, before_events) = counts[len(counts) // 2], counts[len(counts) // 2 + 1]
    out: dict[str, Any] = {}
    for label, loose in (("payload_scan_id_pattern_now", False), ("payload_scan_id_pattern_before", True)):
        person = Person(now_id, HOME_SHARD * SHARD_FACTOR + now_id)
        pattern = prefilter(Matcher.of([person]), json_text=not loose).replace("'", "''")
        started = _now()
        matching = await _scalar(engine, f"SELECT count(*) FROM {S}.events WHERE payload::text ~* '{pattern}'")
        out[label] = {"seconds": round(_now() - started, 1), "events_matching": matching}
    for label, student, own in (("now", now_id, now_events), ("before", before_id, before_events)):
        started = _now()
        with statement_times(engine) as spent, contextlib.ExitStack() as stack:
            if label == "before":
                stack.enter_context(mock.patch.object(erasure_module, "_events", paged_events))
            report = await erase(engine, ErasureRequest(student, "benchmark", shard=HOME_SHARD), home_shard=HOME_SHARD)
        seconds = _now() - started
        left = await _scalar(engine, f"SELECT count(*) FROM {S}.events WHERE user_id = {student}")
        out[label] = {"user_id": student, "their_events": own, "seconds": round(seconds, 1),
                      "events_left_with_their_user_id": left, "rows": {t: dict(c) for t, c in report.rows.items()},
                      "slowest_statements_s": dict(spent.most_common(6))}
    return out


async def paged_events(engine: AsyncEngine, person: Person, matcher: Matcher, report: ErasureReport,
                       dry_run: bool, ids: IdPolicy, progress: Callable[[int], None] | None) -> None:
    """``erasure._events`` before the single key scan: pages of ``PAGE`` events in key order, each
    page found by a scan with the loose id pattern (any digit run), to the empty page at the end."""
    params = {"ids": sorted(person.stored_ids()), "identifiers": sorted(matcher.identifiers),
              "pattern": prefilter(matcher, json_text=False)}  # the id part as it was for jsonb too
    condition = ("(user_id = ANY(:ids) OR real_user_id = ANY(:ids) OR (lower(context_type) = 'user' AND "
                 "context_id = ANY(:ids)) OR lower(user_login) = ANY(:identifiers) OR lower(user_sis_id) = "
                 "ANY(:identifiers) OR payload::text ~* :pattern OR arrival::text ~* :pattern)")
    keys, last = ["event_id", "event_time"], None
    while True:
        async with engine.begin() as conn:
            sql = f"SELECT {', '.join(dict.fromkeys([*keys, *EVENT_COLUMNS]))} FROM {S}.events WHERE {condition}"
            sql += "" if last is None else " AND (event_id, event_time) > (:last_event_id, :last_event_time)"
            page = (await conn.execute(text(f"{sql} ORDER BY event_id, event_time LIMIT {PAGE}"),
                                       {**params, **(last or {})})).mappings().all()
            if not page:
                return
            for row in page:
                await erasure_module._one_event(conn, row, matcher, report, dry_run, ids, keys)
            last = {f"last_{k}": page[-1][k] for k in keys}


@contextlib.contextmanager
def statement_times(engine: AsyncEngine) -> Iterator[Counter[str]]:
    """Seconds spent in the database per statement (its first words and table), while inside."""
    spent: Counter[str] = Counter()

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info.setdefault("started", []).append(_now())

    def after(conn, cursor, statement, parameters, context, executemany) -> None:
        words = " ".join(statement.split())
        table = re.search(r"(?:FROM|INTO|UPDATE)\s+(\S+)", words)
        label = f"{' '.join(words.split()[:2])} .. {table.group(1) if table else ''}"
        spent[label] += round(_now() - conn.info["started"].pop(), 3)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    try:
        yield spent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)
        event.remove(engine.sync_engine, "after_cursor_execute", after)


async def drop_oldest_month(engine: AsyncEngine, months: int, now: datetime, batches: list[list[bytes]]) -> dict:
    """Retention drops the oldest month of events and asset_accesses while a writer writes ``batches``."""
    oldest = min(p.lower for p in (await _partitions(engine))["events"] if p.lower is not None)
    steady: list[float] = []
    await write_batches(engine, batches[:3], steady)  # the writer's batch time without a drop
    during: list[float] = []
    writing = asyncio.create_task(write_batches(engine, batches[3:], during))
    await asyncio.sleep(0.3)
    out: dict[str, Any] = {"month": str(oldest)}
    for table in ("events", "asset_accesses"):
        started = _now()
        actions = await retention.apply_history(engine, table, months - 1, now, dry_run=False)
        out[f"{table}_s"] = round(_now() - started, 2)
        out[f"{table}_actions"] = [a.describe() for a in actions]
    await writing
    out["writer_batch_s_median_before"] = round(statistics.median(steady), 3)
    out["writer_batch_s_max_during"] = round(max(during), 3)
    out["writer_batches_during"] = len(during)
    out["partitions_left"] = [p.name for p in (await _partitions(engine))["events"]]
    out["rows_left_in_dropped_month"] = int(await _scalar(
        engine, f"SELECT count(*) FROM {S}.events WHERE event_time >= {oldest.literal()} "
                f"AND event_time < {oldest.add(1).literal()}"))
    return out


async def _partitions(engine: AsyncEngine) -> dict[str, list[partitions.Partition]]:
    async with engine.begin() as conn:
        return await partitions.list_partitions(conn)


# ---- the whole run ----------------------------------------------------------------------------------------

def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def main(server: str, events: int, months: int, *, cpu: bool = True,
               log: Callable[[str], None] | None = print) -> dict[str, Any]:
    say = log or (lambda _line: None)
    now = datetime.now(UTC).replace(microsecond=0)
    out: dict[str, Any] = {"events": events, "months": months, "commit": _commit(),
                           "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                           "started": now.isoformat()}
    async with warehouse_at(server, "0013") as (url, engine):
        report = await fill_warehouse(engine, events=events, months=months, log=log)
        out["fill_plain"] = {"seconds": report.seconds["total"], "events_per_second": round(report.events_per_second),
                             "rows": report.rows}
        month = Month.of(now).add(-2)  # a whole month, two back
        async with engine.connect() as conn:
            sample = (await conn.exec_driver_sql(
                f"SELECT event_id, event_time, context_id FROM {S}.events WHERE event_name = 'asset_accessed' "
                f"AND context_type = 'Course' AND event_time >= {month.literal()} ORDER BY event_time LIMIT 1")).one()
        sqls = analyst_queries(month, sample[0], sample[1], sample[2])
        say("queries on plain tables")
        out["queries_plain"] = await run_queries(engine, sqls)
        copy_rows = max(1000, events // 20)
        window = (month.start(), month.add(1).start())
        out["bulk_copy_plain"] = await bulk_copy(engine, copy_rows, "plain-", *window)
        before = await row_counts(engine)
        await engine.dispose()  # the migration takes the tables' locks: no pooled connection in the way

        say("upgrading to 0014 (partitioned)")
        started = _now()
        await asyncio.to_thread(migrate.upgrade, url, "0014")
        seconds = _now() - started
        after = await row_counts(engine)
        out["upgrade"] = {"seconds": round(seconds, 1), "rows": sum(before.values()),
                          "s_per_million_rows": round(seconds / (sum(before.values()) / 1e6), 1),
                          "rows_before": before, "rows_after": after,
                          "partitions": {t: len(p) for t, p in (await _partitions(engine)).items() if p}}

        out["bulk_copy_partitioned"] = await bulk_copy(engine, copy_rows, "part-", *window)
        say("writer path")
        batches = await writer_batches(engine, 12, BATCH, Month.of(now).start() + timedelta(hours=1), "writer")
        out["writer_path"] = await write_batches(engine, batches)
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in HISTORY:
                await conn.exec_driver_sql(f"VACUUM (ANALYZE) {S}.{table}")

        say("queries on partitioned tables")
        out["queries_partitioned"] = await run_queries(engine, sqls)
        out["partition_sizes"] = {t: await partition_sizes(engine, t) for t in ("events", "asset_accesses")}

        say("erasure of two students: now, and as it was")
        out["erasure"] = await erasure(engine)

        say("retention: dropping the oldest month while a writer writes")
        writes = await writer_batches(engine, 40, 200, Month.of(now).start() + timedelta(hours=3), "during")
        out["retention_drop"] = await drop_oldest_month(engine, months, now, writes)
    if cpu:
        say("CPU per event of erasure screening and pseudonymization")
        out["privacy_cpu_per_event"] = privacy.measure()
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["finished"] = datetime.now(UTC).replace(microsecond=0).isoformat()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="History at scale: partitions, retention, erasure, measured.")
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--no-cpu", action="store_true", help="skip the per-event CPU of the privacy steps")
    arguments = parser.parse_args()
    database = os.environ.get("DATABASE_URL", "").strip()
    if not database:
        raise SystemExit("DATABASE_URL must name a PostgreSQL server (a throwaway database is created on it)")
    found = asyncio.run(main(database, arguments.events, arguments.months, cpu=not arguments.no_cpu,
                             log=lambda line: print(line, flush=True)))
    print(json.dumps(found, indent=2, default=str))

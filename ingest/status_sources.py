"""The figures of the status page, each read from a source that is right with several replicas and
across restarts: PostgreSQL (events, quarantine, the answers of every ingress replica) and the
broker's admin API (the worker group's committed offsets against the end offsets). Only the spool
depth is this replica's own. Every read is bounded in time; a failing source blanks its figures
and says why, it never fails the page.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from canvas_stream.lazy_engine import LazyEngine
from canvas_stream.settings import Settings, warehouse_sql
from ingest.answers import BUDGET_SQL, AnswerLedger
from ingest.budget import budget_from_rows
from ingest.status_page import AnswerCount, NewestEvent, PartitionLag, StatusSnapshot, minutes_of_last_hour

log = structlog.get_logger(__name__)

T = TypeVar("T")

SOURCE_TIMEOUT = 5.0

EVENTS_PER_MINUTE_SQL = text(warehouse_sql("""
    SELECT date_trunc('minute', received_at) AS minute, format, count(*) AS n
    FROM {schema}.events
    WHERE received_at >= date_trunc('minute', now()) - interval '59 minutes'
    GROUP BY 1, 2
"""))
# Newest event time per event name without reading the whole table: a loose index scan over
# events_name_time_idx (one index probe per distinct name).
NEWEST_PER_TYPE_SQL = text(warehouse_sql("""
    WITH RECURSIVE names(name) AS (
        SELECT min(event_name) FROM {schema}.events
        UNION ALL
        SELECT (SELECT min(event_name) FROM {schema}.events WHERE event_name > names.name)
        FROM names WHERE names.name IS NOT NULL
    )
    SELECT name AS event_name,
           (SELECT max(event_time) FROM {schema}.events WHERE event_name = names.name) AS newest
    FROM names WHERE name IS NOT NULL
"""))
ANSWERS_SQL = text(warehouse_sql("""
    SELECT route, code,
           sum(answers) FILTER (WHERE minute >= now() - interval '1 hour') AS last_hour,
           sum(answers) AS last_24h
    FROM {schema}.ingress_answers
    WHERE minute > now() - interval '24 hours'
    GROUP BY route, code
    ORDER BY route, code
"""))
QUARANTINE_SQL = text(warehouse_sql("SELECT count(*) FILTER (WHERE NOT resolved), count(*) FROM {schema}.quarantine"))


class StatusSources:
    """Reads a :class:`StatusSnapshot`; owns one small database engine and two broker clients."""

    def __init__(self, settings: Settings, *, answers: AnswerLedger | None = None, spool: Any = None) -> None:
        self.settings = settings
        self.answers = answers
        self.spool = spool  # a callable returning the spool stats, or None
        self._db = (None if settings.database_url is None else
                    LazyEngine(settings.require_database_url(), pool_size=2, max_overflow=0))
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._kafka_lock = asyncio.Lock()

    @property
    def engine(self) -> AsyncEngine | None:
        return None if self._db is None else self._db.engine

    async def snapshot(self, replica: str) -> StatusSnapshot:
        errors: dict[str, str] = {}
        database, kafka = await asyncio.gather(
            self._bounded("database", self._from_database(), errors),
            self._bounded("broker", self._from_broker(), errors),
        )
        db = database or {}
        return StatusSnapshot(
            generated_at=datetime.now(UTC),
            replica=replica,
            topic=self.settings.kafka_topic,
            worker_group=self.settings.worker_group_id,
            events_per_minute=db.get("events_per_minute"),
            answers=db.get("answers"),
            budget=db.get("budget"),
            quarantine_unresolved=db.get("quarantine_unresolved"),
            quarantine_total=db.get("quarantine_total"),
            newest_events=db.get("newest_events"),
            partitions=kafka,
            spool=self.spool() if self.spool is not None else None,
            errors=errors,
        )

    async def _bounded(self, name: str, work: Awaitable[T], errors: dict[str, str]) -> T | None:
        try:
            async with asyncio.timeout(SOURCE_TIMEOUT):
                return await work
        except TimeoutError:
            errors[name] = f"no answer within {SOURCE_TIMEOUT:g} s"
        except Exception as exc:
            errors[name] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return None

    # -- PostgreSQL --------------------------------------------------------------------------------

    async def _from_database(self) -> dict[str, Any]:
        engine = self.engine
        if engine is None:
            raise RuntimeError("DATABASE_URL is not set on this ingress")
        async with engine.connect() as conn:
            await conn.execute(text("SET statement_timeout = '4s'"))
            now_minute = (await conn.execute(text(warehouse_sql("SELECT date_trunc('minute', now())")))).scalar_one()
            per_minute = list(await conn.execute(EVENTS_PER_MINUTE_SQL))
            answers = [AnswerCount(r.route, r.code, int(r.last_hour or 0), int(r.last_24h or 0))
                       for r in await conn.execute(ANSWERS_SQL)]
            budget = budget_from_rows(dict(r._mapping) for r in await conn.execute(BUDGET_SQL))
            unresolved, total = (await conn.execute(QUARANTINE_SQL)).one()
            newest = [NewestEvent(r.event_name, r.newest) for r in await conn.execute(NEWEST_PER_TYPE_SQL)]
            await conn.rollback()
        return {
            "events_per_minute": minutes_of_last_hour(now_minute, per_minute),
            "answers": answers,
            "budget": budget,
            "quarantine_unresolved": int(unresolved),
            "quarantine_total": int(total),
            "newest_events": sorted(newest, key=lambda n: (n.newest is None, n.newest), reverse=True),
        }

    # -- broker --------------------------------------------------------------------------------------

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            bootstrap = self.settings.require_kafka()
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=4000)
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                        request_timeout_ms=4000, max_partition_fetch_bytes=64 * 1024)
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                await _close(admin, consumer)
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def _from_broker(self) -> list[PartitionLag]:
        async with self._kafka_lock:
            try:
                return await self._read_group_lag()
            except BaseException:
                admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
                await _close(admin, consumer)  # a fresh connection next time
                raise

    async def _read_group_lag(self) -> list[PartitionLag]:
        admin, consumer = await self._clients()
        topic = self.settings.kafka_topic
        await consumer.topics()  # refresh metadata
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise RuntimeError(f"topic {topic} not found")
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = await admin.list_consumer_group_offsets(self.settings.worker_group_id, partitions=tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        offsets = {tp: committed[tp].offset if tp in committed and committed[tp].offset >= 0 else None for tp in tps}
        times = await self._committed_record_times(consumer, {tp: o for tp, o in offsets.items()
                                                              if o is not None and o > starts[tp]})
        out = []
        for tp in tps:
            position = offsets[tp] if offsets[tp] is not None else starts[tp]
            out.append(PartitionLag(tp.partition, offsets[tp], ends[tp], max(0, ends[tp] - position), times.get(tp)))
        return out

    async def _committed_record_times(self, consumer: AIOKafkaConsumer,
                                      committed: dict[TopicPartition, int]) -> dict[TopicPartition, datetime]:
        """When the last record the workers committed on each partition was produced (its timestamp)."""
        if not committed:
            return {}
        consumer.assign(list(committed))
        for tp, offset in committed.items():
            consumer.seek(tp, offset - 1)
        found: dict[TopicPartition, datetime] = {}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while len(found) < len(committed):
                    batch = await consumer.getmany(timeout_ms=500)
                    for tp, records in batch.items():
                        for record in records:
                            if record.offset == committed[tp] - 1 and tp not in found:
                                found[tp] = datetime.fromtimestamp(record.timestamp / 1000, UTC)
                                consumer.pause(tp)
        consumer.assign([])
        return found

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        await _close(admin, consumer)
        if self._db is not None:
            await self._db.dispose()


async def _close(admin: AIOKafkaAdminClient | None, consumer: AIOKafkaConsumer | None) -> None:
    for client in (consumer, admin):
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await (client.stop() if isinstance(client, AIOKafkaConsumer) else client.close())

"""One command: start the real pieces, measure them and this machine's limits, print the table.

    .venv/bin/python -m benchmarks.run --quick            # ~2-3 minute smoke run
    .venv/bin/python -m benchmarks.run                    # full run (adds a 10-minute soak)
    .venv/bin/python -m benchmarks.run --soak-minutes 2 --profile --experiments

Everything it starts (broker, database, ingress, workers, minimal programs, wrk, py-spy) is stopped
on exit, error, Ctrl-C or SIGTERM. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from canvas_stream.embedded.broker import EmbeddedKafka
from canvas_stream.embedded.process import free_port
from canvas_stream.settings import async_database_url
from ingest.publish import ensure_topic
from processors.warehouse.schema import SCHEMA

from . import infra, limits, load
from .infra import Proc
from .pool import ISSUER, Pool, build_pool

PARTITIONS = 6
# Workers run with a 10 s session timeout: tansu delays a new group's first join by half of it (the
# default 20 s would add 10 s of idle time to every worker start; rates and CPU figures exclude it anyway).
SESSION_SECONDS = "10"


@dataclass
class Mode:
    name: str
    pool: int
    http_seconds: float  # each closed-loop run
    latency_seconds: float  # open loop at the fixed rate
    rate: float
    scaling: tuple[int, ...]
    soak_minutes: float
    kafka_values: int
    copy_rows: int
    experiment_events: int = 8000
    experiment_reps: int = 1
    soak_rate: float = 500
    identical_events: int = 3000


QUICK = Mode("quick", pool=24_000, http_seconds=4, latency_seconds=8, rate=1000, scaling=(1, 2), soak_minutes=0,
             kafka_values=10_000, copy_rows=10_000, identical_events=1000)
FULL = Mode("full", pool=80_000, http_seconds=12, latency_seconds=30, rate=1000, scaling=(1, 2, 3),
            soak_minutes=10, kafka_values=40_000, copy_rows=40_000, experiment_events=10_000, experiment_reps=3,
            identical_events=12_000)


@dataclass
class Results:
    started: str
    mode: str
    machine: dict[str, Any]
    postgres: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def put(self, key: str, value: Any) -> None:
        self.figures[key] = value
        print(f"  {key} = {_fmt(value)}", flush=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Bench:
    """One run's servers, event pool and results; each section is a method."""

    mode: Mode
    pool: Pool
    kafka: str
    pg: infra.Postgres
    jwks_url: str
    res: Results
    use_wrk: bool
    peaks: dict[str, int] = field(default_factory=dict)
    broker_pid: int | None = None  # tansu: its CPU is part of every end-to-end event's cost

    # ---- helpers --------------------------------------------------------------------------------
    def topic(self, stem: str) -> str:
        name = f"bench-{stem}-{uuid.uuid4().hex[:6]}"
        asyncio.run(ensure_topic(self.kafka, name, PARTITIONS))
        return name

    def topic_size(self, topic: str) -> int:
        async def run() -> int:
            from aiokafka import AIOKafkaConsumer, TopicPartition

            consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka)
            await consumer.start()
            try:
                parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
                return sum((await consumer.end_offsets(parts)).values())
            finally:
                await consumer.stop()

        return asyncio.run(run())

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LTI_", "LIVE_EVENTS_", "KAFKA_", "WORKER_", "DATABASE_URL"))}
        env.update(LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def ingress(self, topic: str) -> tuple[Proc, str]:
        port = free_port()
        env = self.env(KAFKA_BOOTSTRAP_SERVERS=self.kafka, KAFKA_TOPIC=topic, LIVE_EVENTS_JWKS_URL=self.jwks_url,
                       LIVE_EVENTS_ISSUER=ISSUER, HOST="127.0.0.1", PORT=str(port),
                       LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true")
        proc = Proc("ingress", infra.cli_cmd("ingress", "--port", str(port)), env).start()
        infra.wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
        return proc, f"http://127.0.0.1:{port}/live-events"

    def worker(self, topic: str, group: str, **extra: str) -> Proc:
        port = free_port()
        env = self.env(KAFKA_BOOTSTRAP_SERVERS=self.kafka, KAFKA_TOPIC=topic, KAFKA_PARTITIONS=str(PARTITIONS),
                       DATABASE_URL=self.pg.url, WORKER_GROUP_ID=group, WORKER_STATUS_PORT=str(port),
                       WORKER_SESSION_TIMEOUT_SECONDS=SESSION_SECONDS, **extra)
        proc = Proc("worker", infra.cli_cmd("worker"), env).start()
        infra.wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout=90)
        return proc

    def minimal(self, kind: str, *args: str) -> tuple[Proc, str]:
        port = free_port()
        proc = Proc(f"min-{kind}", infra.python_cmd("-m", "benchmarks.minimal", kind, "--port", str(port),
                                                     "--jwks", self.jwks_url, *args), self.env()).start()
        if kind in ("noop", "verify", "verify-produce", "peer"):
            infra.wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        return proc, f"http://127.0.0.1:{port}/live-events"

    def sql(self, query: str, *args: Any) -> Any:
        async def run() -> Any:
            import asyncpg

            conn = await asyncpg.connect(self.pg.url)
            try:
                return await conn.fetchval(query, *args)
            finally:
                await conn.close()

        return asyncio.run(run())

    def pg_cpu(self) -> float:
        """CPU seconds used so far by the server backends connected to the benchmark database."""
        import psutil

        pids = self.sql("SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity WHERE datname = $1 "
                        "AND pid <> pg_backend_pid()", self.pg.name)
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
        return total

    def set_payload_compression(self, method: str) -> None:
        """On events and each of its partitions: the setting on a partitioned table does not reach them."""
        names = self.sql("SELECT array_agg(c.oid::regclass::text) FROM pg_class c WHERE c.oid = $1::regclass "
                         "OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)",
                         f"{SCHEMA}.events")
        for name in names:
            self.sql(f"ALTER TABLE {name} ALTER COLUMN payload SET COMPRESSION {method}")

    def broker_cpu(self) -> float:
        """CPU seconds used so far by the broker process (0 when it is not known)."""
        import psutil

        if self.broker_pid is None:
            return 0.0
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(self.broker_pid).cpu_times()
            return t.user + t.system
        return 0.0

    def cpu_split(self, roles: dict[str, float], pg0: float, broker0: float, client_cpu_s: float | None,
                  events: int) -> dict[str, float]:
        """CPU us per committed event of each process of an end-to-end run (``roles``: CPU seconds used)."""
        n = max(events, 1)
        split = {name: seconds / n * 1e6 for name, seconds in roles.items()}
        split["postgresql"] = (self.pg_cpu() - pg0) / n * 1e6
        split["broker"] = (self.broker_cpu() - broker0) / n * 1e6
        if client_cpu_s is not None:
            split["load generator"] = client_cpu_s / n * 1e6
        split["total"] = sum(split.values())
        return {k: round(v, 1) for k, v in split.items()}

    def count(self, table: str) -> int:
        return int(self.sql(f"SELECT count(*) FROM {table}"))

    def checksum(self) -> str:
        """md5 over every warehouse table's rows (received_at comes from the topic, so equal runs match)."""
        names = self.sql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = "
                         f"'{SCHEMA}' AND tablename <> 'quarantine'").split(",")
        parts = [self.sql(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {SCHEMA}.{n} t")
                 for n in names]
        return ",".join(p[:8] for p in parts)

    def truncate(self) -> None:
        tables = self.sql("SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') FROM pg_tables "
                          f"WHERE schemaname = '{SCHEMA}'")
        self.sql(f"TRUNCATE {tables}")

    def closed(self, url: str, seconds: float | None = None, cpu_of: Proc | None = None) -> load.LoadResult:
        """Closed-loop load; with ``cpu_of``, its CPU seconds during the load go in ``extra["cpu_s"]``."""
        cpu0 = cpu_of.cpu_seconds() if cpu_of is not None else 0.0
        res = self._closed(url, seconds)
        if cpu_of is not None:
            res.extra["cpu_s"] = cpu_of.cpu_seconds() - cpu0
        return res

    def _closed(self, url: str, seconds: float | None = None) -> load.LoadResult:
        seconds = seconds or self.mode.http_seconds
        if self.use_wrk:
            return load.closed_loop(url, self.pool.tokens_path, self.pool.tokens, seconds)
        return asyncio.run(load._aiohttp_closed(url, self.pool.tokens, seconds, 64, None))

    def drain(self, table: str, expect: int, procs: list[Proc], timeout: float = 300.0,
              since: float | None = None) -> dict[str, float]:
        """Poll ``table`` until it holds ``expect`` rows; rate from the first row (or ``since``) to the last.

        ``cpu_us_per_row``: CPU of ``procs`` between the first and the last row seen, per row in between
        (startup and idle time left out)."""
        first_t = since
        last_n, last_t = 0, time.perf_counter()
        first_cpu: tuple[float, int] | None = None
        last_cpu = (0.0, 0)
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            n = self.count(table)
            t = time.perf_counter()
            cpu = sum(p.cpu_seconds() for p in procs)
            if n > 0 and first_t is None:
                first_t, first_n = t, n
            if n > 0 and first_cpu is None:
                first_cpu = (cpu, n)
            if n != last_n:
                last_n, last_t = n, t
                last_cpu = (cpu, n)
            if n >= expect:
                break
            for p in procs:
                if not p.alive():
                    raise RuntimeError(f"{p.name} died:\n{p.output()}")
            if t - last_t > 60:
                break  # stalled
            time.sleep(0.25)
        if first_t is None:
            return {"rows": 0, "rate": 0.0, "seconds": 0.0, "cpu_us_per_row": 0.0}
        base = 0 if since is not None else first_n
        seconds = max(last_t - first_t, 1e-6)
        cpu_us = 0.0
        if first_cpu is not None and last_cpu[1] > first_cpu[1]:
            cpu_us = (last_cpu[0] - first_cpu[0]) / (last_cpu[1] - first_cpu[1]) * 1e6
        return {"rows": last_n, "rate": (last_n - base) / seconds, "seconds": seconds, "cpu_us_per_row": cpu_us}

    def peak(self, role: str, proc: Proc) -> None:
        self.peaks[role] = max(self.peaks.get(role, 0), proc.peak_rss)

    # ---- phases ---------------------------------------------------------------------------------
    def limits(self) -> None:
        r = self.res
        log("limit: raw RS256 verify (cryptography, one core)")
        r.put("limit.rs256_verify_per_s", limits.raw_verify_rate(self.pool.tokens, self.pool.key))

        log("limit: aiohttp no-op handler")
        proc, url = self.minimal("noop")
        try:
            res = self.closed(url, cpu_of=proc)
            r.put("limit.noop", _load(res))
            if self.use_wrk:
                aio = asyncio.run(load._aiohttp_closed(url, self.pool.tokens, 3, 64, None))
                r.put("client_overhead", {"wrk_us_per_req": res.client_us_per_request,
                                          "aiohttp_us_per_req": aio.client_us_per_request,
                                          "aiohttp_client_max_req_s": aio.rate})
            else:
                r.put("client_overhead", {"aiohttp_us_per_req": res.client_us_per_request})
        finally:
            proc.stop()

        log("limit: aiohttp + fast RS256 verify")
        proc, url = self.minimal("verify")
        try:
            r.put("limit.verify", _load(self.closed(url, cpu_of=proc)))
        finally:
            proc.stop()

        log("limit: aiohttp + fast verify + aiokafka produce awaiting the ack (minimal ingress)")
        topic = self.topic("min-ingress")
        proc, url = self.minimal("verify-produce", "--bootstrap", self.kafka, "--topic", topic)
        try:
            r.put("limit.verify_produce", _load(self.closed(url, cpu_of=proc)))
            self.peak("min-ingress", proc)
        finally:
            proc.stop()

        log("limit: raw aiokafka produce and consume (our record bytes)")
        records = self.records(self.mode.kafka_values)
        r.put("record_bytes_avg", sum(map(len, records)) / len(records))
        r.put("token_bytes_avg", sum(map(len, self.pool.tokens[:len(records)])) / len(records))
        produced, consumed = asyncio.run(limits.kafka_produce_consume(self.kafka, self.topic("raw"), records))
        r.put("limit.kafka_produce_msg_s", produced)
        r.put("limit.kafka_consume_msg_s", consumed)

        log("limit: PostgreSQL COPY of the same events rows")
        rows = limits.event_rows(records[: self.mode.copy_rows])
        r.put("limit.pg_copy_rows_s", asyncio.run(limits.copy_rate(self.pg.url, rows)))
        if self.pg.lz4:
            r.put("limit.pg_copy_rows_s_lz4", asyncio.run(limits.copy_rate(self.pg.url, rows, "lz4")))

    def records(self, n: int) -> list[bytes]:
        from canvas_stream.records import Verification
        from ingest.live_events import build_record

        out = []
        for i in range(min(n, len(self.pool))):
            _key, rec = build_record(self.pool.claims(i), Verification(True, "bench-2048", ISSUER, limits.now()),
                                     self.pool.claims_json(i))
            out.append(rec.to_bytes())
        return out

    def minimal_pipeline(self) -> None:
        log("limit: minimal pipeline end to end (fast verify, aiokafka, batched asyncpg)")
        topic = self.topic("min-pipe")
        consumer, _ = self.minimal("consumer", "--bootstrap", self.kafka, "--topic", topic, "--dsn", self.pg.url,
                                   "--group", f"g-{topic}")
        ingress, url = self.minimal("verify-produce", "--bootstrap", self.kafka, "--topic", topic)
        try:
            time.sleep(3)  # consumer joins its group
            before = self.count("bench_min_events")
            ingress0, consumer0 = ingress.cpu_seconds(), consumer.cpu_seconds()
            pg0, broker0 = self.pg_cpu(), self.broker_cpu()
            started = time.perf_counter()
            res = self.closed(url)
            time.sleep(0.5)
            distinct = min(self.topic_size(topic), len(self.pool))
            out = self.drain("bench_min_events", before + distinct, [consumer], since=started)
            n = max(out["rows"] - before, 1)
            # Each process's CPU read once at the end: the split and the figures below agree (a second
            # pg_cpu() would also count the first one's query).
            ingress_s, consumer_s = ingress.cpu_seconds() - ingress0, consumer.cpu_seconds() - consumer0
            split = self.cpu_split({"ingress": ingress_s, "consumer": consumer_s}, pg0, broker0, res.client_cpu_s, n)
            self.res.put("limit.min_pipeline_cpu_split", split)
            self.res.put("limit.min_pipeline", {"ingress_rate": res.rate, "committed_rate": out["rate"],
                                                "rows": out["rows"] - before, "p99_ms": res.p99_ms,
                                                "cpu_us_per_event": (ingress_s + consumer_s) / n * 1e6,
                                                "consumer_cpu_us_per_event": consumer_s / n * 1e6,
                                                "pg_cpu_us_per_event": split["postgresql"]})
        finally:
            ingress.stop()
            consumer.stop()

    def our_ingress(self) -> str:
        log("ours: ingress alone (canvas-stream ingress), 64 connections")
        topic = self.topic("ours")
        proc, url = self.ingress(topic)
        try:
            res = self.closed(url, cpu_of=proc)
            self.res.put("ours.ingress", _load(res))
            self.res.put("ours.ingress_cpu_us_per_event", _load(res)["cpu_us_per_event"])
            self.peak("ingress", proc)
            self.filled = (topic, min(self.topic_size(topic), len(self.pool)))
        finally:
            proc.stop()
        return topic

    def our_workers(self, counts: tuple[int, ...]) -> None:
        topic, distinct = self.filled
        for n in counts:
            log(f"ours: {n} worker(s) draining {distinct} events from the topic into PostgreSQL")
            self.truncate()
            group = f"g-{uuid.uuid4().hex[:6]}"
            started = time.perf_counter()
            workers = [self.worker(topic, group) for _ in range(n)]
            try:
                ready = time.perf_counter() - started
                out = self.drain(f"{SCHEMA}.events", distinct, workers)
                pg_cpu = self.pg_cpu()
                if n == 1:
                    size = self.sql("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace ns "
                                    f"ON ns.oid = c.relnamespace WHERE ns.nspname = '{SCHEMA}' AND c.relkind = 'r'")
                    self.res.put("ours.storage_bytes_per_event", int(size) / max(out["rows"], 1))
                self.res.put(f"ours.workers_{n}", {"rate": out["rate"], "rows": out["rows"], "startup_s": ready,
                                                   "cpu_us_per_event": out["cpu_us_per_row"],
                                                   "pg_cpu_us_per_event": pg_cpu / max(out["rows"], 1) * 1e6})
                for w in workers:
                    w.sample()
                    self.peak("worker", w)
            finally:
                for w in workers:
                    w.stop()

    def faust_noop(self) -> None:
        topic, distinct = self.filled
        for take in (False, True):
            label = "take_events" if take else "plain"
            log(f"limit: faust no-op agent ({label}) on the same topic")
            args = ["--bootstrap", self.kafka, "--topic", topic, "--group", f"noop-{uuid.uuid4().hex[:6]}",
                    "--expect", str(distinct)] + (["--take"] if take else [])
            proc, _ = self.minimal("faust-noop", *args)
            try:
                deadline = time.monotonic() + 120
                rate = 0.0
                first_cpu: tuple[float, int] | None = None
                last_cpu = (0.0, 0)
                while time.monotonic() < deadline:
                    lines = [ln for ln in proc.output(20000).splitlines() if ln.startswith("PROGRESS")]
                    cpu = proc.cpu_seconds()
                    if lines:
                        _, n, t, first = lines[-1].split()
                        if first_cpu is None:
                            first_cpu = (cpu, int(n))
                        if int(n) != last_cpu[1]:
                            last_cpu = (cpu, int(n))
                        if int(n) >= distinct:
                            rate = int(n) / max(float(t) - float(first), 1e-6)
                            break
                    if not proc.alive():
                        raise RuntimeError(proc.output())
                    time.sleep(0.1)
                self.res.put(f"limit.faust_noop_{label}", rate)
                if first_cpu is not None and last_cpu[1] > first_cpu[1]:
                    self.res.put(f"limit.faust_noop_{label}_cpu_us_per_event",
                                 (last_cpu[0] - first_cpu[0]) / (last_cpu[1] - first_cpu[1]) * 1e6)
            finally:
                proc.stop()

    def end_to_end(self) -> tuple[Proc, Proc, str]:
        log("ours: end to end under 64 connections (ingress + 1 worker)")
        self.truncate()
        topic = self.topic("e2e")
        worker = self.worker(topic, f"g-{topic}")
        ingress, url = self.ingress(topic)
        self.warm(url)
        before = self.topic_size(topic)
        ingress0, worker0, pg0, broker0 = ingress.cpu_seconds(), worker.cpu_seconds(), self.pg_cpu(), self.broker_cpu()
        started = time.perf_counter()
        res = self.closed(url)
        time.sleep(0.5)
        out = self.drain(f"{SCHEMA}.events", min(self.topic_size(topic) - before, len(self.pool)), [worker, ingress],
                         since=started)
        self.res.put("ours.e2e_cpu_split", self.cpu_split(
            {"ingress": ingress.cpu_seconds() - ingress0, "worker": worker.cpu_seconds() - worker0},
            pg0, broker0, res.client_cpu_s, int(out["rows"])))
        self.res.put("ours.e2e", {"ingress_rate": res.rate, "committed_rate": out["rate"], "rows": out["rows"],
                                  "p99_ms": res.p99_ms})
        return ingress, worker, url

    def warm(self, url: str) -> None:
        """POST 200 events and wait until they are rows (the worker has joined its group), then empty."""
        n = 200
        out = asyncio.run(load.open_loop(url, self.pool.tokens, self.pool.event_ids, 200, n / 200, self.pg.url,
                                         start=len(self.pool) - n, settle=90))
        if out.e2e_seen < out.tracked:
            log(f"warm-up: only {out.e2e_seen}/{out.tracked} tracked events became rows")
        self.truncate()

    def latency(self, url: str, seconds: float, label: str = "ours.latency") -> None:
        log(f"ours: open loop at {self.mode.rate:.0f} events/s for {seconds:.0f}s, POST -> row visible")
        self.truncate()
        out = asyncio.run(load.open_loop(url, self.pool.tokens, self.pool.event_ids, self.mode.rate, seconds,
                                         self.pg.url))
        self.res.put(label, {"sent": out.sent, "ok": out.ok, "http_p50_ms": out.p50_ms, "http_p99_ms": out.p99_ms,
                             "e2e_p50_ms": out.e2e_p50_ms, "e2e_p99_ms": out.e2e_p99_ms, "seen": out.e2e_seen,
                             "tracked": out.tracked, "client_cpu_s": out.client_cpu_s,
                             "poll_resolution_ms": out.poll_ms})

    def soak(self, url: str, ingress: Proc, worker: Proc, minutes: float) -> None:
        """Open loop at ``soak_rate`` for ``minutes``; RSS of both roles after every chunk. The tables are
        emptied each time the pool of signed events wraps, so every event stays new to the database."""
        rate = self.mode.soak_rate
        log(f"ours: soak, {minutes:g} min at {rate:.0f} events/s")
        chunk_events = max(1000, len(self.pool) // 4)
        chunk = min(60.0, chunk_events / rate)
        series: list[dict[str, float]] = []
        end = time.monotonic() + minutes * 60
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() < end - 1:
            start = sent % len(self.pool)
            if start == 0 or start + chunk * rate > len(self.pool):  # the pool wraps: empty the tables
                self.truncate()
                start = 0
            seconds = min(chunk, end - time.monotonic())
            out = asyncio.run(load.open_loop(url, self.pool.tokens, self.pool.event_ids, rate, seconds,
                                             self.pg.url, start=start, settle=5))
            sent += out.sent
            series.append({"t_min": round((time.monotonic() - t0) / 60, 2), "ingress_mb": ingress.sample() / 2**20,
                           "worker_mb": worker.sample() / 2**20, "http_p99_ms": round(out.p99_ms, 1),
                           "e2e_p99_ms": round(out.e2e_p99_ms, 1), "unseen": out.tracked - out.e2e_seen,
                           "non_2xx": out.sent - out.ok})
            log(f"  soak {series[-1]}")
        self.res.put("ours.soak", {"minutes": minutes, "rate": rate, "events": sent, "series": series})

    def peer(self) -> None:
        log("peer: per-event receiver (PyJWT decode, one INSERT per request, no broker)")
        proc, url = self.minimal("peer", "--dsn", self.pg.url)
        try:
            res = self.closed(url, cpu_of=proc)
            self.res.put("peer", _load(res))
        finally:
            proc.stop()

    def profile(self, seconds: float) -> None:
        from . import profile

        log(f"profile: py-spy on the ingress under 64 connections ({seconds:.0f}s)")
        topic = self.topic("prof")
        proc, url = self.ingress(topic)
        try:
            spy = profile.start(proc.pid, seconds)
            res = self.closed(url, seconds)
            self.res.put("profile.ingress", {"rate_under_profiler": res.rate,
                                             "top": profile.summarize(profile.finish(spy))})
        finally:
            proc.stop()
        filled = min(self.topic_size(topic), len(self.pool))
        log("profile: py-spy on one worker draining the topic (attached at its first committed row)")
        self.truncate()
        worker = self.worker(topic, f"g-{uuid.uuid4().hex[:6]}")
        try:
            deadline = time.monotonic() + 120
            while self.count(f"{SCHEMA}.events") == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            spy = profile.start(worker.pid, 600)
            out = self.drain(f"{SCHEMA}.events", filled, [worker])
            self.res.put("profile.worker", {"rate_under_profiler": out["rate"],
                                            "top": profile.summarize(profile.finish(spy))})
        finally:
            worker.stop()

    def experiments(self, reps: int) -> None:
        """Settings against the same baseline, interleaved (baseline, A, B, ..., baseline, A, ...) ``reps``
        times so the other engineers' load hits all variants alike; medians are reported. Worker variants
        are checked to leave the same tables (md5 of every table)."""
        import statistics

        log(f"experiment: filling a topic with {self.mode.experiment_events} records for the worker variants")
        topic = self.topic("exp-worker")
        records = self.records(self.mode.experiment_events)
        asyncio.run(limits.kafka_produce_consume(self.kafka, topic, records, consume=False))
        distinct = len(records)
        worker_variants: list[tuple[str, dict[str, str], str | None]] = [
            ("baseline", {}, None), ("batch_4000", {"WORKER_BATCH_SIZE": "4000"}, None),
            ("batch_1000", {"WORKER_BATCH_SIZE": "1000"}, None),
        ]
        if self.pg.lz4:  # jsonb is lz4 there (migration 0015): what pglz on events.payload costs (the rest stays lz4)
            worker_variants.append(("pglz_payload", {}, "pglz"))
        baseline_digest = ""
        wruns: dict[str, list[dict[str, Any]]] = {}
        for rep in range(reps):
            for label, extra, compression in worker_variants:
                log(f"experiment {rep + 1}/{reps}: worker {label}")
                self.truncate()
                if compression:
                    self.set_payload_compression(compression)
                worker = self.worker(topic, f"g-{uuid.uuid4().hex[:6]}", **extra)
                try:
                    pg0 = self.pg_cpu()
                    out = self.drain(f"{SCHEMA}.events", distinct, [worker])
                    pg_cpu = self.pg_cpu() - pg0
                finally:
                    worker.stop()
                    if compression:
                        self.set_payload_compression("lz4")
                digest = self.checksum() if rep == 0 else baseline_digest
                baseline_digest = digest if label == "baseline" else baseline_digest
                wruns.setdefault(label, []).append({"rate": out["rate"], "cpu_us": out["cpu_us_per_row"],
                                                    "pg_us": pg_cpu / max(out["rows"], 1) * 1e6,
                                                    "same": digest == baseline_digest})
        for label, values in wruns.items():
            self.res.put(f"exp.worker.{label}", {
                "rate": statistics.median(v["rate"] for v in values),
                "cpu_us_per_event": statistics.median(v["cpu_us"] for v in values),
                "pg_cpu_us_per_event": statistics.median(v["pg_us"] for v in values),
                "same_tables_as_baseline": all(v["same"] for v in values),
                "runs": [round(v["rate"]) for v in values]})

    def identical(self, events: int) -> None:
        """The warehouse the optimized path builds equals the unoptimized path's, on the same input."""
        from . import identical

        log(f"check: unoptimized vs optimized path on the corpus + {events} pool events, tables compared")
        inputs = identical.corpus_inputs() + identical.pool_inputs(events)
        report = asyncio.run(identical.compare(async_database_url(self.pg.server_url), inputs))
        self.res.put("identical", {"identical": report.identical, "events": report.events, "tables": report.tables,
                                   "rows": report.rows, "differing": report.differing,
                                   "ids_checked": report.ids_checked, "ids_wrong": report.ids_wrong})


def _load(res: load.LoadResult) -> dict[str, Any]:
    out = {"rate": res.rate, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms, "errors": res.errors,
           "requests": res.requests, "tool": res.tool}
    if "cpu_s" in res.extra:  # the server's CPU while the load ran, per answered request
        out["cpu_us_per_event"] = res.extra["cpu_s"] / max(res.ok, 1) * 1e6
    return out


# ---- the table ---------------------------------------------------------------------------------

def table(res: Results, peaks: dict[str, int]) -> str:
    f = res.figures

    def g(path: str, default: Any = None) -> Any:
        node: Any = f
        for part in path.split("/"):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    rows: list[tuple[str, str, str, str, str]] = []

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}" if a and b else "n/a"

    def add(what: str, ours: Any, limit_name: str, limit: Any, target: str, met: bool | None) -> None:
        verdict = "" if met is None else ("MET" if met else "NOT MET")
        shown_limit = f"{limit_name} {_fmt(limit)}" if limit is not None else limit_name
        rows.append((what, _fmt(ours) if ours is not None else "n/a", shown_limit, target, verdict))

    ing = g("ours.ingress/rate")
    vp = g("limit.verify_produce/rate")
    p99 = g("ours.ingress/p99_ms")
    r_ing = (ing / vp) if ing and vp else None
    add("ingress events/s (64 conn)", ing, "min verify+produce", vp, f">=0.90x: {ratio(ing, vp)}",
        None if r_ing is None else r_ing >= 0.9)
    add("ingress p50 / p99 ms (64 conn)", f"{_fmt(g('ours.ingress/p50_ms'))} / {_fmt(p99)}", "min p99",
        g("limit.verify_produce/p99_ms"), "p99 < 50 ms", None if p99 is None else p99 < 50)
    add("  ingress vs no-op handler", ing, "aiohttp no-op", g("limit.noop/rate"), ratio(ing, g("limit.noop/rate")),
        None)
    add("  ingress vs verify-only handler", ing, "aiohttp+verify", g("limit.verify/rate"),
        ratio(ing, g("limit.verify/rate")), None)
    ing_cpu, vp_cpu = g("ours.ingress_cpu_us_per_event"), g("limit.verify_produce/cpu_us_per_event")
    add("  ingress CPU us/event", ing_cpu, "min verify+produce", vp_cpu, f"x{ratio(ing_cpu, vp_cpu)}", None)
    w1 = g("ours.workers_1/rate")
    noop = g("limit.faust_noop_plain")
    add("worker events/s, topic -> committed", w1, "faust no-op", noop, f">=0.70x: {ratio(w1, noop)}",
        None if not (w1 and noop) else w1 / noop >= 0.7)
    add("  worker vs faust take_events no-op", w1, "take no-op", g("limit.faust_noop_take_events"),
        ratio(w1, g("limit.faust_noop_take_events")), None)
    add("  worker vs raw aiokafka consume", w1, "aiokafka", g("limit.kafka_consume_msg_s"),
        ratio(w1, g("limit.kafka_consume_msg_s")), None)
    add("  worker vs PostgreSQL COPY of the rows", w1, "COPY", g("limit.pg_copy_rows_s"),
        ratio(w1, g("limit.pg_copy_rows_s")), None)
    w_cpu, noop_cpu = g("ours.workers_1/cpu_us_per_event"), g("limit.faust_noop_take_events_cpu_us_per_event")
    add("  worker CPU us/event", w_cpu, "faust take no-op", noop_cpu, f"x{ratio(w_cpu, noop_cpu)}", None)
    min_consumer_cpu = g("limit.min_pipeline/consumer_cpu_us_per_event")
    add("  worker CPU us/event vs the minimal consumer", w_cpu, "min consumer", min_consumer_cpu,
        f"x{ratio(w_cpu, min_consumer_cpu)}", None)
    add("  PostgreSQL backend CPU us/event", g("ours.workers_1/pg_cpu_us_per_event"), "min pipeline",
        g("limit.min_pipeline/pg_cpu_us_per_event"), "", None)
    e2e = g("ours.e2e/committed_rate")
    mp = g("limit.min_pipeline/committed_rate")
    add("end-to-end committed events/s (64 conn)", e2e, "min pipeline", mp, f">=1.0x: {ratio(e2e, mp)}",
        None if not (e2e and mp) else e2e >= mp)
    ours_split, min_split = g("ours.e2e_cpu_split") or {}, g("limit.min_pipeline_cpu_split") or {}
    if ours_split and min_split:
        add("  end-to-end CPU us/event, every process", ours_split.get("total"), "min pipeline",
            min_split.get("total"), f"x{ratio(ours_split.get('total'), min_split.get('total'))}", None)
    lp99 = g("ours.latency/e2e_p99_ms")
    add(f"end-to-end p50 / p99 ms at {res.figures.get('rate', 1000):.0f}/s open loop",
        f"{_fmt(g('ours.latency/e2e_p50_ms'))} / {_fmt(lp99)}", "poll resolution ms",
        g("ours.latency/poll_resolution_ms"), "p99 < 1000 ms", None if lp99 is None else lp99 < 1000)
    add("  ingress p50 / p99 ms at the fixed rate",
        f"{_fmt(g('ours.latency/http_p50_ms'))} / {_fmt(g('ours.latency/http_p99_ms'))}", "", None, "", None)
    peer = g("peer/rate")
    add("per-event peer events/s (PyJWT + INSERT)", peer, "ours e2e", e2e, f"ours/peer: {ratio(e2e, peer)}",
        None if not (e2e and peer) else e2e >= 2 * peer)
    for n in (1, 2, 3):
        w = g(f"ours.workers_{n}/rate")
        if w:
            add(f"scaling: {n} worker(s) events/s", w, "1 worker", w1, ratio(w, w1), None)
    soak = g("ours.soak")
    if soak and soak.get("series"):
        s = soak["series"]
        half = s[len(s) // 2:]
        grow_i = half[-1]["ingress_mb"] - half[0]["ingress_mb"]
        grow_w = half[-1]["worker_mb"] - half[0]["worker_mb"]
        flat = grow_i < 10 and grow_w < 20
        add(f"soak {soak['minutes']:g} min: RSS MB ingress / worker, start -> end",
            f"{s[0]['ingress_mb']:.0f}->{s[-1]['ingress_mb']:.0f} / {s[0]['worker_mb']:.0f}->{s[-1]['worker_mb']:.0f}",
            "second-half growth MB", f"{grow_i:.1f} / {grow_w:.1f}", "flat (<10/<20 MB)", flat)
        non_2xx = sum(c.get("non_2xx", 0) for c in s)
        unseen = sum(c.get("unseen", 0) for c in s)
        add(f"soak {soak['minutes']:g} min: non-2xx answers / sampled events never stored", f"{non_2xx} / {unseen}",
            "events sent", f"{soak['events']}", "0 / 0", non_2xx == 0 and unseen == 0)
    same = g("identical")
    if same:
        add("warehouse tables vs the unoptimized path", f"{same['rows']} rows, {same['tables']} tables",
            "events", same["events"], "byte-identical", same["identical"])
    add("peak RSS MB ingress / worker", f"{peaks.get('ingress', 0) / 2**20:.0f} / {peaks.get('worker', 0) / 2**20:.0f}",
        "min ingress", f"{peaks.get('min-ingress', 0) / 2**20:.0f}", "", None)
    widths = [max(len(r[i]) for r in [*rows, ("what", "ours", "limit", "ratio / target", "")]) for i in range(5)]
    lines = []
    header = ("what", "ours", "limit", "ratio / target", "")
    for r in [header, tuple("-" * w for w in widths), *rows]:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    exp_lines = []
    for role in ("ingress", "worker"):
        base = g(f"exp.{role}.baseline/rate")
        for key, value in f.items():
            if key.startswith(f"exp.{role}.") and isinstance(value, dict) and base:
                label = key.split(".", 2)[2]
                extra = f", p99 {value['p99_ms']:.0f} ms" if "p99_ms" in value else ""
                if "pg_cpu_us_per_event" in value:
                    extra += f", PostgreSQL {value['pg_cpu_us_per_event']:.0f} us/event"
                same = "" if value.get("same_tables_as_baseline", True) else "  TABLES DIFFER"
                exp_lines.append(f"  {role:7} {label:24} {value['rate']:8,.0f}/s  x{value['rate'] / base:4.2f}  "
                                 f"{value.get('cpu_us_per_event', 0):5.0f} us/event{extra}  runs {value.get('runs')}"
                                 f"{same}")
    if exp_lines:
        lines.append("")
        lines.append("settings, measured (median of interleaved runs; x = ratio to the default):")
        lines.extend(exp_lines)
    lim = [("raw RS256 verify /s/core", g("limit.rs256_verify_per_s")),
           ("aiohttp no-op req/s", g("limit.noop/rate")), ("aiohttp+verify req/s", g("limit.verify/rate")),
           ("min verify+produce req/s", vp), ("aiokafka produce msg/s", g("limit.kafka_produce_msg_s")),
           ("aiokafka consume msg/s", g("limit.kafka_consume_msg_s")), ("faust no-op msg/s", noop),
           ("faust take_events no-op msg/s", g("limit.faust_noop_take_events")),
           ("PostgreSQL COPY rows/s", g("limit.pg_copy_rows_s")), ("  with lz4", g("limit.pg_copy_rows_s_lz4")),
           ("min pipeline committed/s", mp), ("client overhead", g("client_overhead"))]
    lines.append("")
    lines.append("machine limits: " + "; ".join(f"{k} {_fmt(v)}" for k, v in lim if v is not None))
    cpu = [("min verify+produce", vp_cpu), ("aiohttp no-op", g("limit.noop/cpu_us_per_event")),
           ("aiohttp+verify", g("limit.verify/cpu_us_per_event")),
           ("faust no-op", g("limit.faust_noop_plain_cpu_us_per_event")),
           ("faust take no-op", noop_cpu), ("min consumer", min_consumer_cpu),
           ("min pipeline (both processes)", g("limit.min_pipeline/cpu_us_per_event")),
           ("min pipeline PostgreSQL", g("limit.min_pipeline/pg_cpu_us_per_event"))]
    for label, split in (("ours", g("ours.e2e_cpu_split")), ("min pipeline", g("limit.min_pipeline_cpu_split"))):
        if split:
            lines.append(f"end-to-end CPU us/committed event, {label}: "
                         + "; ".join(f"{k} {_fmt(v)}" for k, v in split.items()))
    lines.append("CPU us/event of the minimal programs: "
                 + "; ".join(f"{k} {_fmt(v)}" for k, v in cpu if v is not None))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~2-3 minute smoke run")
    parser.add_argument("--soak-minutes", type=float, default=None, help="soak length (full default 10, quick 0)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="py-spy profiles of ingress and worker (default: on in full mode)")
    parser.add_argument("--experiments", action=argparse.BooleanOptionalAction, default=None,
                        help="measure worker settings against the default (default: on in full mode)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    parser.add_argument("--no-wrk", action="store_true", help="use the aiohttp client even if wrk is installed")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    if args.soak_minutes is not None:
        mode.soak_minutes = args.soak_minutes
    if args.profile is None:
        args.profile = not args.quick
    if args.experiments is None:
        args.experiments = not args.quick
    infra.install_signal_handlers()
    res = Results(datetime.now(UTC).isoformat(timespec="seconds"), mode.name, infra.machine())
    res.figures["rate"] = mode.rate
    use_wrk = load.have_wrk() and not args.no_wrk
    log(f"canvas-stream benchmark ({mode.name}); logs in {infra.LOG_DIR}; load generator: "
        f"{'wrk' if use_wrk else 'aiohttp client'}")
    started = time.monotonic()
    bench: Bench | None = None
    try:
        pool = build_pool(mode.pool, log=log)
        with infra.RssSampler(), infra.JwksHttp([pool.jwk()]) as jwks, EmbeddedKafka() as kafka, \
                infra.Postgres() as pg:
            res.postgres = f"{pg.kind} (lz4: {'yes' if pg.lz4 else 'no'})"
            log(f"broker: tansu {kafka.bootstrap_servers}; PostgreSQL: {res.postgres}")
            bench = Bench(mode, pool, kafka.bootstrap_servers, pg, jwks.url, res, use_wrk, broker_pid=kafka.pid)
            bench.limits()
            bench.our_ingress()
            bench.our_workers(mode.scaling)
            bench.faust_noop()
            bench.minimal_pipeline()
            bench.peer()
            ingress, worker, url = bench.end_to_end()
            try:
                bench.latency(url, mode.latency_seconds)
                if mode.soak_minutes > 0:
                    bench.soak(url, ingress, worker, mode.soak_minutes)
                bench.peak("ingress", ingress)
                bench.peak("worker", worker)
            finally:
                ingress.stop()
                worker.stop()
            bench.identical(mode.identical_events)
            # Optional sections: a failure in one is reported and the table of the rest still printed.
            for wanted, section in ((args.profile, lambda: bench.profile(10)),
                                    (args.experiments, lambda: bench.experiments(mode.experiment_reps))):
                if wanted:
                    try:
                        section()
                    except Exception as exc:  # reported in the results; the run goes on
                        log(f"section failed: {exc!r}")
                        res.figures.setdefault("failed_sections", []).append(repr(exc)[:300])
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        infra.stop_all()
    res.figures["elapsed_s"] = round(time.monotonic() - started, 1)
    res.figures["load_at_end"] = os.getloadavg()
    peaks = bench.peaks if bench else {}
    res.figures["peak_rss"] = peaks
    print()
    print(f"canvas-stream benchmark, {mode.name} mode, {res.started}, {res.machine.get('cpus')} CPUs "
          f"({res.machine.get('cpu', '?')}), PostgreSQL: {res.postgres}, load at start "
          f"{res.machine['load_at_start'][0]:.2f} / end {res.figures['load_at_end'][0]:.2f}, "
          f"{res.figures['elapsed_s']:.0f}s")
    print(table(res, peaks))
    out = args.json or (infra.LOG_DIR / "results.json")
    out.write_text(json.dumps(asdict(res), indent=1, default=str))
    print(f"\nall figures: {out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())

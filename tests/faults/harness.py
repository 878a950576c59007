"""Scaffolding for the fault suite: real processes, signed events with known ids, warehouse checks.

Every blocking step (starting/stopping a broker, a database or a role) runs in a thread, so the
test's event loop keeps serving the JWKS that the ingress processes fetch from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import signal
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from canvas_stream.embedded.broker import EmbeddedKafka
from canvas_stream.embedded.process import ServerProcess, free_port
from canvas_stream.settings import plain_database_url
from ingest.publish import ensure_topic
from processors.normalize.canvas import canvas_event_id
from processors.warehouse.schema import SCHEMA
from tests.support.corpus import CORPUS
from tests.support.jwt_helpers import rsa_key, sign
from tests.support.procs import Role, role_env, wait_until

ISSUER = "https://live-events.canvas.instructure.com"
KID = "fault-key"
PARTITIONS = 4

# Faust's defaults wait 60 s before a SIGKILLed member's partitions move; tests cannot.
FAST_GROUP = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1", "BROKER_REBALANCE_TIMEOUT": "20"}


def _example(fmt: str, name: str) -> dict:
    doc = json.loads((CORPUS / fmt / f"{name}.json").read_text())
    return copy.deepcopy(doc["examples"][0]["payload"])


_COURSE = _example("canvas", "course_created")


@dataclass(frozen=True)
class Event:
    event_id: str
    payload: dict

    def token(self) -> str:
        """A fresh signature each time (Canvas re-signs retries; the event id must not change)."""
        now = int(time.time())
        return sign({"iss": ISSUER, "iat": now, "exp": now + 600, **self.payload}, rsa_key(KID), KID)


def canvas_event(tag: str, i: int) -> Event:
    payload = copy.deepcopy(_COURSE)
    course = str(21070000000000000 + (zlib.crc32(tag.encode()) % 10_000) * 100_000 + i)
    payload["metadata"]["context_id"] = course
    payload["metadata"]["context_type"] = "Course"
    payload["metadata"]["event_time"] = f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
    payload["metadata"]["request_id"] = f"{tag}-{i}"
    payload["body"]["course_id"] = course
    payload["body"]["name"] = f"{tag} course {i}"
    return Event(canvas_event_id(payload), payload)


def make_events(tag: str, n: int) -> list[Event]:
    return [canvas_event(tag, i) for i in range(n)]


def with_duplicates(events: list[Event], seed: int = 7) -> list[Event]:
    """Every event once, a third of them again, shuffled (Canvas delivers at least once, unordered)."""
    rng = random.Random(seed)
    out = list(events) + rng.sample(events, len(events) // 3)
    rng.shuffle(out)
    return out


@dataclass
class Sender:
    """Posts signed events like Canvas does and remembers which ones got a 2xx."""

    url: str
    accepted: set[str] = field(default_factory=set)
    refused: list[tuple[str, int]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    async def post(self, session: aiohttp.ClientSession, event: Event) -> int:
        try:
            async with session.post(f"{self.url}/live-events", data=event.token(),
                                    timeout=aiohttp.ClientTimeout(total=20)) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.statuses.append(status)
        if 200 <= status < 300:
            self.accepted.add(event.event_id)
        else:
            self.refused.append((event.event_id, status))
        return status

    async def send(self, events: Iterable[Event], concurrency: int = 8) -> list[int]:
        queue = list(events)
        results: list[int] = []
        async with aiohttp.ClientSession() as session:
            async def one(batch: list[Event]) -> None:
                for event in batch:
                    results.append(await self.post(session, event))

            await asyncio.gather(*(one(queue[i::concurrency]) for i in range(concurrency)))
        return results


async def event_ids(database_url: str) -> set[str]:
    conn = await asyncpg.connect(plain_database_url(database_url))
    try:
        return {r[0] for r in await conn.fetch(f"select event_id from {SCHEMA}.events")}
    finally:
        await conn.close()


async def quarantine_rows(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_database_url(database_url))
    try:
        return list(await conn.fetch(f"select id, reason, source, raw, retried_at, resolved from {SCHEMA}.quarantine"))
    finally:
        await conn.close()


async def wait_for_events(database_url: str, expected: set[str], timeout: float = 90.0,
                          logs: str | Callable[[], str] = "") -> None:
    """Wait until the events table holds exactly ``expected`` (an extra id fails at once)."""

    async def check() -> bool:
        try:
            got = await event_ids(database_url)
        except (OSError, asyncpg.PostgresError):
            return False
        extra = got - expected
        assert not extra, f"{len(extra)} events in the warehouse that were never accepted"
        return got == expected

    try:
        await wait_until(check, timeout=timeout, interval=0.5, message="the accepted events in the events table")
    except AssertionError:
        got = await event_ids(database_url)
        quarantined = [(r["reason"][:200], r["source"]) for r in await quarantine_rows(database_url)]
        raise AssertionError(
            f"missing {len(expected - got)} of {len(expected)} accepted events, extra {len(got - expected)}; "
            f"missing ids {sorted(expected - got)[:5]}; quarantined {quarantined[:5]}\n"
            f"{logs() if callable(logs) else logs}"  # read when it failed, not when the wait began
        ) from None


def ingress_role(*, jwks_url: str, bootstrap: str, topic: str, spool_dir: Path | None = None,
                 port: int | None = None, **extra: str) -> Role:
    env = role_env(
        PORT=str(port or free_port()), HOST="127.0.0.1", LIVE_EVENTS_JWKS_URL=jwks_url, LIVE_EVENTS_ISSUER=ISSUER,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic, KAFKA_ACK_TIMEOUT_SECONDS="2",
        LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true", **extra,  # binding itself: tests/integration/test_tenant_binding.py
    )
    if spool_dir is not None:
        env["SPOOL_DIR"] = str(spool_dir)
    else:
        env.pop("SPOOL_DIR", None)
    role = Role("ingress", env)
    role.url = f"http://127.0.0.1:{env['PORT']}"  # type: ignore[attr-defined]
    return role


def worker_role(*, database_url: str, bootstrap: str, topic: str, group: str, status_port: int | None = None,
                **extra: str) -> Role:
    env = role_env(
        DATABASE_URL=database_url, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic,
        KAFKA_PARTITIONS=str(PARTITIONS), WORKER_GROUP_ID=group, WORKER_BATCH_SECONDS="0.1",
        WORKER_BATCH_SIZE="50", WORKER_STATUS_PORT=str(status_port or free_port()), **FAST_GROUP, **extra,
    )
    role = Role("worker", env)
    role.status_url = f"http://127.0.0.1:{env['WORKER_STATUS_PORT']}"  # type: ignore[attr-defined]
    return role


async def http_status(url: str) -> tuple[int, dict | None]:
    try:
        async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            try:
                return r.status, await r.json(content_type=None)
            except ValueError:
                return r.status, None
    except (aiohttp.ClientError, TimeoutError):
        return 0, None


async def wait_healthy(role: Role, timeout: float = 60.0) -> None:
    base = getattr(role, "url", None) or role.status_url  # type: ignore[attr-defined]

    async def up() -> bool:
        assert role.proc is not None and role.proc.poll() is None, f"{role.role} exited:\n{role.output()}"
        return (await http_status(f"{base}/healthz"))[0] == 200

    await wait_until(up, timeout=timeout, interval=0.3, message=f"{role.role} /healthz")


async def start(role: Role) -> Role:
    await asyncio.to_thread(role.start)
    return role


async def stop(role: Role) -> None:
    await asyncio.to_thread(role.stop)


async def kill(role: Role) -> None:
    await asyncio.to_thread(role.kill)


def logs(*roles: Role) -> str:
    return "\n".join(f"--- {r.role} (pid {r.proc.pid if r.proc else None}) ---\n{r.output()}" for r in roles)


class Processes(list[Role]):
    """The roles a test started; the ``processes`` fixture stops them at teardown, newest first."""

    async def launch(self, *roles: Role, healthy: bool = True) -> None:
        """Register ``roles`` (so they are stopped even if the test fails), start them side by side
        and, unless ``healthy`` is false, wait until each answers ``/healthz``."""
        self.extend(roles)
        await asyncio.gather(*(start(role) for role in roles))
        if healthy:
            await asyncio.gather(*(wait_healthy(role) for role in roles))


def restarted(role: Role) -> Role:
    """A new, unstarted process of the same role with the same environment (so the same ports)."""
    again = Role(role.role, role.env)
    for attr in ("url", "status_url"):
        if hasattr(role, attr):
            setattr(again, attr, getattr(role, attr))
    return again


def send_signal(pid: int, sig: int) -> None:
    """``sig`` to ``pid``, which may have exited already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@contextlib.contextmanager
def paused(server: ServerProcess) -> Iterator[None]:
    """The server's process stopped (SIGSTOP): alive, holding its sockets, answering nothing; it
    continues (SIGCONT) on the way out."""
    pid = server.pid
    assert pid is not None, f"{type(server).__name__} is not running"
    send_signal(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        send_signal(pid, signal.SIGCONT)


async def deliveries(broker: EmbeddedKafka) -> tuple[str, str]:
    """A test's own broker and its ``deliveries`` topic, created (after a restart too: the test broker
    keeps nothing across one): (bootstrap servers, topic)."""
    await ensure_topic(broker.bootstrap_servers, "deliveries", PARTITIONS)
    return broker.bootstrap_servers, "deliveries"

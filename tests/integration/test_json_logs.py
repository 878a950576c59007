"""LOG_FORMAT=json: every line the real ingress and worker processes write is one JSON object, and
an exception's traceback is a structured field (not lines of text), also in the worker, whose
faust runtime would otherwise install its own plain-text handler."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import aiohttp
import pytest

from canvas_stream.embedded.process import free_port
from ingest.publish import ensure_topic
from tests.support.events import ISSUER, example, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import Role, role_env, wait_until

pytestmark = pytest.mark.slow


def json_lines(role: Role) -> list[dict]:
    """Every line of the role's output, parsed; fails on the first line that is not a JSON object."""
    lines = [line for line in role.log.read_text(errors="replace").splitlines() if line.strip()]
    assert lines, f"{role.role} wrote nothing"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"{role.role}: not a JSON line: {line!r}\n{role.output()}") from None
        assert isinstance(record, dict) and "event" in record and "level" in record, line
        records.append(record)
    return records


def structured_traceback(records: list[dict]) -> dict:
    """The first record with an exception, which must be a list of frames, not text."""
    with_exception = [r for r in records if "exception" in r]
    assert with_exception, "no record carries an exception"
    exception = with_exception[0]["exception"]
    assert isinstance(exception, list) and exception, exception
    first = exception[0]
    assert first["exc_type"] and isinstance(first["frames"], list) and first["frames"], first
    assert all({"filename", "lineno", "name"} <= set(frame) for frame in first["frames"])
    return with_exception[0]


@pytest.fixture
async def jwks():
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as server:
        yield server


async def get(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            await r.read()
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def test_ingress_and_worker_write_only_json_lines(jwks, kafka_bootstrap, migrated_database_url, engine,
                                                        unique_topic):
    topic = f"{unique_topic}logs"
    await ensure_topic(kafka_bootstrap, topic, 2)
    port, status_port = free_port(), free_port()
    common = dict(LOG_FORMAT="json", KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic,
                  DATABASE_URL=migrated_database_url)
    ingress = Role("ingress", role_env(LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true",
            **common, PORT=str(port), HOST="127.0.0.1", LIVE_EVENTS_JWKS_URL=jwks.url,
                                       LIVE_EVENTS_ISSUER=ISSUER))
    worker = Role("worker", role_env(LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true",
            **common, KAFKA_PARTITIONS="2", WORKER_GROUP_ID=f"{topic}-g",
                                     WORKER_STATUS_PORT=str(status_port), WORKER_BATCH_SECONDS="0.1"))
    try:
        await asyncio.to_thread(ingress.start)
        await asyncio.to_thread(worker.start)

        async def up() -> bool:
            for role in (ingress, worker):
                assert role.proc is not None and role.proc.poll() is None, role.output()
            return (await get(f"http://127.0.0.1:{port}/healthz")) == 200 == (
                await get(f"http://127.0.0.1:{status_port}/healthz"))

        await wait_until(up, timeout=60, message="ingress and worker up")
        event = example("canvas", "course_created")
        event["metadata"]["request_id"] = str(uuid.uuid4())
        async with aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{port}/live-events",
                                                              data=signed(event)) as response:
            assert response.status == 200, await response.text()

        async def stored() -> bool:
            from sqlalchemy import text

            async with engine.connect() as conn:
                return (await conn.execute(text("select count(*) from canvas_stream.events"))).scalar_one() == 1

        await wait_until(stored, timeout=60, message="the event in canvas_stream.events")
    finally:
        await asyncio.to_thread(ingress.stop)
        await asyncio.to_thread(worker.stop)

    for role in (ingress, worker):
        records = json_lines(role)
        assert any(r["level"] == "info" for r in records), records
    assert any(r["event"] == "canvas-stream ingress listening" for r in json_lines(ingress))
    assert any(r.get("logger", "").startswith(("faust", "mode", "aiokafka", "processors", "canvas_stream"))
               for r in json_lines(worker)), json_lines(worker)


@pytest.mark.parametrize("role_name", ["ingress", "worker"])
async def test_a_crash_is_one_json_line_with_a_structured_traceback(role_name, kafka_bootstrap,
                                                                     migrated_database_url, unique_topic):
    """A real failure: the port the role must listen on is taken. The process exits non-zero and its
    traceback arrives as an ``exception`` field of a JSON line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        env = role_env(LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true",
                LOG_FORMAT="json", KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=f"{unique_topic}x",
                       DATABASE_URL=migrated_database_url, HOST="127.0.0.1")
        if role_name == "ingress":
            env.update(PORT=str(free_port()), ADMIN_PORT=busy)
        else:
            env.update(WORKER_STATUS_PORT=busy, WORKER_GROUP_ID=f"{unique_topic}g")
        role = Role(role_name, env)
        try:
            await asyncio.to_thread(role.start)
            assert role.proc is not None
            code = await asyncio.to_thread(role.proc.wait, 60)
        finally:
            await asyncio.to_thread(role.stop)
    assert code != 0, role.output()
    record = structured_traceback(json_lines(role))
    assert "address" in json.dumps(record["exception"]).lower() or "errno" in json.dumps(record["exception"]).lower()

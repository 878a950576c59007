"""``canvas-stream send`` as a load test against a real ingress and worker that trust dev's key set, and
refused by an ingress that does not (as in production)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request

import pytest
from sqlalchemy import func, select

from canvas_stream.devkeys import DevJwks, dev_kid, ensure_dev_key
from canvas_stream.embedded.process import free_port
from ingest.publish import ensure_topic
from processors.warehouse import tables
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import Role, role_env, running, wait_until


def send(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANVAS_STREAM_", "LIVE_EVENTS_"))}
    return subprocess.run([sys.executable, "-m", "canvas_stream.cli", "send", *args], env=env,
                          capture_output=True, text=True, timeout=180)


async def test_dev_key_set_serves_the_test_key_and_the_upstream_keys(tmp_path):
    key = ensure_dev_key(tmp_path)
    assert ensure_dev_key(tmp_path).private_numbers() == key.private_numbers()  # kept across runs
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as upstream:
        with DevJwks(key, upstream.url) as jwks:
            assert await asyncio.to_thread(jwks.wait_first_fetch, 10)
            document = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(jwks.url, timeout=5).read()))
            assert [k["kid"] for k in document["keys"]] == [dev_kid(key), "current"]
    with DevJwks(key, f"http://127.0.0.1:{free_port()}/jwks") as offline:  # no upstream: the test key alone
        assert await asyncio.to_thread(offline.wait_first_fetch, 10)
        document = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(offline.url, timeout=5).read()))
        assert [k["kid"] for k in document["keys"]] == [dev_kid(key)] and offline.upstream_error


@pytest.fixture
async def stack(engine, kafka_bootstrap, unique_topic, migrated_database_url, tmp_path):
    """Ingress and worker as dev runs them: the ingress's key set is dev's (test key + upstream)."""
    topic = f"{unique_topic}send"
    await ensure_topic(kafka_bootstrap, topic, 2)
    port = free_port()
    key = ensure_dev_key(tmp_path)
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as upstream:
        with DevJwks(key, upstream.url) as jwks:
            env = role_env(LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true",
                    DATABASE_URL=migrated_database_url, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
                           KAFKA_TOPIC=topic, KAFKA_PARTITIONS="2", WORKER_GROUP_ID=f"{topic}-workers",
                           WORKER_BATCH_SECONDS="0.1", PORT=str(port), HOST="127.0.0.1", LIVE_EVENTS_JWKS_URL=jwks.url)
            ingress, worker = Role("ingress", env), Role("worker", env)
            with running(ingress, worker):
                yield f"http://127.0.0.1:{port}/live-events", tmp_path / "dev-signing-key.pem", engine, worker


async def test_a_load_test_of_both_formats_writes_one_row_per_copy(stack):
    url, key, engine, worker = stack
    result = None
    for _ in range(60):  # the ingress may still be starting
        result = await asyncio.to_thread(send, "--url", url, "--key", str(key), "--format", "both", "--count", "40",
                                         "--rate", "200", "grade_change", "logged_in")
        if "error x" not in result.stdout:
            break
        await asyncio.sleep(0.5)
    assert result is not None and result.returncode == 0, result.stdout + result.stderr
    assert "sent 40 event(s)" in result.stdout and ": 200 x40; latency p50" in result.stdout, result.stdout

    async def rows() -> int:
        async with engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(tables.events))).scalar_one()

    await wait_until(lambda: _at_least(rows, 40), timeout=90, message=f"40 events\n{worker.output()}")
    async with engine.connect() as conn:
        by_kind = dict((await conn.execute(select(tables.events.c.event_name, func.count())
                                           .group_by(tables.events.c.event_name))).all())
        grades = (await conn.execute(select(func.count()).select_from(tables.grade_changes))).scalar_one()
        submissions = (await conn.execute(select(func.count()).select_from(tables.submissions))).scalar_one()
    assert by_kind == {"grade_change": 20, "logged_in": 20}
    assert grades == 20 and submissions == 20  # fresh ids: every copy grades another submission
    quarantined = (await _scalar(engine, select(func.count()).select_from(tables.quarantine)))
    assert quarantined == 0


async def _at_least(rows, n: int) -> bool:
    return await rows() >= n


async def _scalar(engine, stmt):
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).scalar_one()


async def test_an_ingress_without_the_dev_key_set_refuses_the_test_key(kafka_bootstrap, unique_topic, tmp_path):
    topic = f"{unique_topic}prod"
    await ensure_topic(kafka_bootstrap, topic, 1)
    port = free_port()
    ensure_dev_key(tmp_path)
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as canvas_keys:
        env = role_env(LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true",
                KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic, PORT=str(port), HOST="127.0.0.1",
                       LIVE_EVENTS_JWKS_URL=canvas_keys.url)
        with running(Role("ingress", env)):
            result = None
            for _ in range(60):
                result = await asyncio.to_thread(send, "--url", f"http://127.0.0.1:{port}/live-events",
                                                 "--key", str(tmp_path / "dev-signing-key.pem"))
                if not result.stdout.startswith("error"):
                    break
                await asyncio.sleep(0.5)
    assert result is not None and result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("401 canvas course_created") and "unknown kid" in result.stdout, result.stdout


def test_send_without_a_key_says_where_it_comes_from(tmp_path):
    result = send("--key", str(tmp_path / "missing.pem"))
    assert result.returncode == 2
    assert "canvas-stream dev` creates the test key" in result.stderr and "Traceback" not in result.stderr

"""``canvas-stream doctor`` against a real broker, a real PostgreSQL and a real JWKS server: a healthy
setup passes, and each broken piece fails with its own line (and exit status 1; bad settings 2)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from email.utils import formatdate

import pytest
from aiohttp import web

from canvas_stream.embedded.process import free_port
from ingest.publish import ensure_topic
from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.sink import WarehouseSink
from tests.support import databases, scenario
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key

PARTITIONS = 2
ROOT_ACCOUNT_UUID = "Qm7xT2vKp9LsD4wHc8NbR3yFj6ZaE1gUo5VtXiWe"


def doctor(env: dict[str, str]) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run doctor; its lines by check name: {check: (status, detail)}."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(
        ("DATABASE_", "KAFKA_", "LOG_", "LIVE_EVENTS_", "LTI_", "SPOOL_", "CANVAS_STREAM_", "CANVAS_HOME_"))}
    clean.update(env)
    result = subprocess.run([sys.executable, "-m", "canvas_stream.cli", "doctor", "--timeout", "4"], env=clean,
                            capture_output=True, text=True, timeout=120)
    lines: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        status, rest = line[:4].strip(), line[6:]
        check = "lti jwks" if rest.startswith("lti jwks") else rest.split()[0]
        lines[check] = (status, rest[len(check):].strip())
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, lines


@pytest.fixture
async def healthy(kafka_bootstrap, unique_topic, migrated_database_url, engine, tmp_path):
    """Settings of a deployment where every check passes (the warehouse emptied: no events yet)."""
    topic = f"{unique_topic}doctor"
    await ensure_topic(kafka_bootstrap, topic, PARTITIONS)
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as jwks:
        yield {
            "DATABASE_URL": migrated_database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic,
            "KAFKA_PARTITIONS": str(PARTITIONS), "LIVE_EVENTS_JWKS_URL": jwks.url,
            "SPOOL_DIR": str(tmp_path / "spool"), "LIVE_EVENTS_ROOT_ACCOUNT_UUIDS": ROOT_ACCOUNT_UUID,
        }


def assert_only_failure(lines: dict[str, tuple[str, str]], failing: str, expected: str) -> None:
    assert lines[failing][0] == "FAIL" and expected in lines[failing][1], lines[failing]
    for check, (status, detail) in lines.items():
        if check not in (failing, "tenant") and not (failing == "database" and check in ("budget", "shards")):
            assert status == "ok", (check, status, detail)  # the budget and the shards are read from the database


async def test_a_healthy_setup_passes(healthy):
    status, lines = await asyncio.to_thread(doctor, healthy)
    assert status == 0, lines
    assert set(lines) == {"settings", "database", "broker", "topic", "budget", "shards", "jwks", "clock", "tenant",
                          "spool"}
    assert lines["shards"] == ("ok", "no events yet: nothing to check CANVAS_HOME_SHARD against")
    assert "last 24 h, every replica" in lines["budget"][1]
    for check in ("settings", "database", "broker", "topic", "jwks", "clock", "spool"):
        assert lines[check][0] == "ok", (check, lines[check])
    assert "migrations at head" in lines["database"][1]
    assert f"{PARTITIONS} partitions" in lines["topic"][1]
    assert "1 RSA signing key" in lines["jwks"][1]
    # The tenant binding is ok where the setting exists; older versions warn that they cannot bind.
    assert lines["tenant"] in {("ok", "bound by LIVE_EVENTS_ROOT_ACCOUNT_UUIDS")} or (
        lines["tenant"][0] == "warn" and "cannot bind" in lines["tenant"][1])


async def test_a_wrong_database_url_fails_its_line(healthy):
    env = dict(healthy, DATABASE_URL=f"postgresql://canvas:pw@127.0.0.1:{free_port()}/warehouse")
    status, lines = await asyncio.to_thread(doctor, env)
    assert status == 1
    assert_only_failure(lines, "database", "cannot connect to postgresql://canvas:***@127.0.0.1")


async def test_a_database_not_migrated_fails_its_line(healthy, postgres_server_url):
    name = f"cs_doctor_{uuid.uuid4().hex[:8]}"
    url = await databases.create_database(postgres_server_url, name)
    try:
        status, lines = await asyncio.to_thread(doctor, dict(healthy, DATABASE_URL=url))
    finally:
        await databases.drop_database(postgres_server_url, name)
    assert status == 1
    assert_only_failure(lines, "database", "not migrated: run `canvas-stream migrate`")


async def test_a_missing_topic_fails_its_line_and_is_not_created(healthy, kafka_bootstrap):
    missing = healthy["KAFKA_TOPIC"] + "-missing"
    status, lines = await asyncio.to_thread(doctor, dict(healthy, KAFKA_TOPIC=missing))
    assert status == 1
    assert_only_failure(lines, "topic", f"{missing} does not exist")
    status, lines = await asyncio.to_thread(doctor, dict(healthy, KAFKA_TOPIC=missing))
    assert lines["topic"][0] == "FAIL"  # asking did not auto-create it


async def test_partitions_other_than_configured_fail_the_topic_line(healthy):
    status, lines = await asyncio.to_thread(doctor, dict(healthy, KAFKA_PARTITIONS="6"))
    assert status == 1
    assert_only_failure(lines, "topic", f"has {PARTITIONS} partitions, KAFKA_PARTITIONS is 6")


async def test_an_unreachable_broker_fails_its_line(healthy):
    status, lines = await asyncio.to_thread(doctor, dict(healthy, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"))
    assert status == 1
    assert lines["broker"][0] == "FAIL" and "unreachable" in lines["broker"][1]
    assert lines["topic"][0] == "skip"
    assert lines["database"][0] == lines["jwks"][0] == "ok"


async def test_an_unreachable_jwks_fails_its_line(healthy):
    url = f"http://127.0.0.1:{free_port()}/jwks"
    status, lines = await asyncio.to_thread(doctor, dict(healthy, LIVE_EVENTS_JWKS_URL=url))
    assert status == 1
    assert lines["jwks"] == ("FAIL", f"{url} unreachable: connection refused")
    assert lines["clock"][0] == "skip"
    assert lines["database"][0] == lines["broker"][0] == lines["topic"][0] == "ok"


async def test_an_unparseable_jwks_and_a_skewed_clock_fail_their_lines(healthy):
    async def skewed(request: web.Request) -> web.Response:
        body = json.dumps({"keys": [{"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}]})
        return web.Response(text=body, content_type="application/json", headers={"Date": formatdate(
            time.time() - 600, usegmt=True)})

    app = web.Application()
    app.router.add_get("/jwks", skewed)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        status, lines = await asyncio.to_thread(
            doctor, dict(healthy, LIVE_EVENTS_JWKS_URL=f"http://127.0.0.1:{port}/jwks"))
    finally:
        await runner.cleanup()
    assert status == 1
    assert lines["jwks"][0] == "FAIL" and "no usable RSA signing key" in lines["jwks"][1]
    assert lines["clock"][0] == "FAIL" and "ahead of 127.0.0.1" in lines["clock"][1]
    assert "tokens will be refused" in lines["clock"][1]


async def test_the_shards_line_names_the_shard_recent_events_carry_and_what_to_set(healthy, engine):
    home = [scenario.canvas_event("course_created", scenario.T[1], {"course_id": scenario.COURSE, "name": "Algebra"}),
            scenario.canvas_event("user_created", scenario.T[2], {"user_id": scenario.STUDENT, "name": "Student"})]
    await WarehouseSink(engine).write(prepare(scenario.records(home), IdPolicy(None)))  # as a worker with it unset

    status, lines = await asyncio.to_thread(doctor, healthy)
    assert status == 0
    assert lines["shards"][0] == "warn", lines["shards"]
    assert "latest 2 events" in lines["shards"][1] and f"name shard {scenario.HOME}" in lines["shards"][1]
    assert f"set CANVAS_HOME_SHARD={scenario.HOME}" in lines["shards"][1]

    status, lines = await asyncio.to_thread(doctor, dict(healthy, CANVAS_HOME_SHARD=str(scenario.HOME)))
    assert status == 0 and lines["shards"][0] == "ok", lines["shards"]
    assert lines["shards"][1].startswith("the latest 2 events (since 2024-03-10 00:00 UTC)")  # their received_at
    assert lines["shards"][1].endswith(f"name the home shard {scenario.HOME} (2 events)")

    status, lines = await asyncio.to_thread(doctor, dict(healthy, CANVAS_HOME_SHARD="5"))
    assert status == 1
    assert_only_failure(lines, "shards", "CANVAS_HOME_SHARD=5, but the latest 2 events")
    assert f"set CANVAS_HOME_SHARD={scenario.HOME}" in lines["shards"][1]

    other = [scenario.canvas_event("user_created", scenario.T[3], {"user_id": 42, "name": "Guest"}, shard=3)]
    await WarehouseSink(engine).write(prepare(scenario.records(other), IdPolicy(None)))
    status, lines = await asyncio.to_thread(doctor, healthy)
    assert status == 1
    assert_only_failure(lines, "shards", f"name shards {scenario.HOME} (2 events), 3 (1 event) and "
                                         "CANVAS_HOME_SHARD is unset")


async def test_an_unwritable_spool_fails_its_line(healthy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    status, lines = await asyncio.to_thread(doctor, dict(healthy, SPOOL_DIR=str(blocker / "spool")))
    assert status == 1
    assert_only_failure(lines, "spool", "not writable (SPOOL_DIR)")


@pytest.mark.parametrize(("change", "expected"), [
    ({"PORT": "abc"}, "bad setting PORT='abc'"),
    ({"DATABASE_URL": None}, "DATABASE_URL is not set"),
])
async def test_bad_settings_exit_2(healthy, change, expected):
    env = {k: v for k, v in {**healthy, **change}.items() if v is not None}
    status, lines = await asyncio.to_thread(doctor, env)
    assert status == 2
    assert lines["settings"][0] == "FAIL" and expected in lines["settings"][1]
    assert "database" not in lines

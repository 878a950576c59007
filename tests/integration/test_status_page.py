"""The status page on the ingress's admin port, loaded in headless Chromium after events went through
the real pipeline (ingress and worker processes, broker, PostgreSQL): what it shows matches the
database and the broker."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from canvas_stream.embedded.process import free_port
from ingest.publish import ensure_topic
from tests.support.events import ISSUER, example, signed
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.procs import Role, role_env, wait_until
from tests.support.topics import committed

pytestmark = pytest.mark.slow

PARTITIONS = 2


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (Debian package `chromium`; .ci/run installs it)")
        pytest.skip("chromium is not installed")
    return found


def browse(url: str, profile: Path, *extra: str) -> str:
    """Load ``url`` in headless Chromium; returns the DOM after rendering (or Chromium's stdout)."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", f"--user-data-dir={profile}", *extra, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, str]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self._in_title = tag == "title"
        if "data-figure" in found:
            self.figures.append(found)

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title and not self.title:  # the page's <title>, not an SVG bar's
            self.title = data

    def values(self, figure: str, key: str | None = None) -> dict[str, int]:
        return {(f.get(key, "") if key else ""): int(f["data-value"]) for f in self.figures
                if f["data-figure"] == figure and "data-value" in f}


@pytest.fixture
async def jwks():
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as server:
        yield server


async def test_status_page_in_chromium_matches_the_database(jwks, kafka_bootstrap, migrated_database_url, engine,
                                                            unique_topic, tmp_path):
    chromium()  # fail (CI) or skip before starting anything
    topic = f"{unique_topic}status"
    group = f"{topic}-workers"
    await ensure_topic(kafka_bootstrap, topic, PARTITIONS)
    port, admin_port, status_port = free_port(), free_port(), free_port()
    common = dict(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, KAFKA_TOPIC=topic, DATABASE_URL=migrated_database_url,
                  WORKER_GROUP_ID=group, KAFKA_PARTITIONS=str(PARTITIONS))
    ingress = Role("ingress", role_env(LIVE_EVENTS_ALLOW_ANY_ACCOUNT="true",
            **common, PORT=str(port), ADMIN_PORT=str(admin_port), HOST="127.0.0.1",
                                       LIVE_EVENTS_JWKS_URL=jwks.url, LIVE_EVENTS_ISSUER=ISSUER,
                                       SPOOL_DIR=str(tmp_path / "spool")))
    worker = Role("worker", role_env(**common, WORKER_STATUS_PORT=str(status_port), WORKER_BATCH_SECONDS="0.1"))
    try:
        await asyncio.to_thread(ingress.start)
        await asyncio.to_thread(worker.start)
        base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"

        async def up() -> bool:
            for role in (ingress, worker):
                assert role.proc is not None and role.proc.poll() is None, role.output()
            try:
                async with aiohttp.ClientSession() as http:
                    for url in (f"{base}/readyz", f"{admin}/readyz", f"http://127.0.0.1:{status_port}/healthz"):
                        async with http.get(url) as r:
                            if r.status != 200:
                                return False
                return True
            except aiohttp.ClientError:
                return False

        await wait_until(up, timeout=60, message="ingress (both ports) and worker up")

        sent = {"canvas": 0, "caliper": 0}
        async with aiohttp.ClientSession() as http:
            for i in range(7):
                fmt, name = ("canvas", "course_created") if i % 2 == 0 else ("caliper", "logged_in")
                event = example(fmt, name)
                if fmt == "canvas":
                    event["metadata"]["request_id"] = str(uuid.uuid4())
                else:
                    for item in event["data"]:
                        item["id"] = f"urn:uuid:{uuid.uuid4()}"
                async with http.post(f"{base}/live-events", data=signed(event)) as r:
                    assert r.status == 200, await r.text()
                sent[fmt] += 1 if fmt == "canvas" else len(event["data"])  # a Caliper item is a row
            for _ in range(3):  # refused: errors in Canvas's budget
                async with http.post(f"{base}/live-events", data=b'{"unsigned": true}') as r:
                    assert r.status == 401
            async with http.get(f"{base}/status") as r:
                assert r.status == 404  # the status page is not on the public port
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 404  # neither are the metrics
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:  # a message that is not a canvas-stream record: the worker quarantines it
            await producer.send_and_wait(topic, b"\x00not a record", key=b"poison")
        finally:
            await producer.stop()

        async def settled() -> dict | None:
            async with engine.connect() as conn:
                events = (await conn.execute(text("select count(*) from canvas_stream.events"))).scalar_one()
                quarantined = (await conn.execute(text("select count(*) from canvas_stream.quarantine"))).scalar_one()
                answers = (await conn.execute(text(
                    "select coalesce(sum(answers), 0) from canvas_stream.ingress_answers"))).scalar_one()
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{status_port}/readyz") as r:
                lag = (await r.json()).get("lag")
            done = events == sum(sent.values()) and quarantined == 1 and answers == 10 and lag == 0
            return {"events": events} if done else None

        await wait_until(settled, timeout=90, interval=0.5,
                         message=f"events stored, poison quarantined, answers flushed\n{worker.output()}")
        # Prometheus scrapes the worker's own /metrics: what it counted is there.
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{status_port}/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain"), (r.status, r.headers)
            scraped = await r.text()
        assert "canvas_stream_worker_quarantined_total 1.0" in scraped, scraped[:2000]
        # The worker group commits its offsets to the broker within a second: every record (7 + the poison).
        await wait_until(lambda: _all_committed(kafka_bootstrap, topic, group, 7 + 1), timeout=30,
                         message=f"the worker group's offsets committed\n{worker.output()}")

        dom = await asyncio.to_thread(browse, f"{admin}/status", tmp_path / "chromium-profile", "--dump-dom")
        shot = tmp_path / "status.png"
        await asyncio.to_thread(browse, f"{admin}/status", tmp_path / "chromium-profile",
                                f"--screenshot={shot}", "--window-size=1280,2200", "--hide-scrollbars")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        if os.environ.get("STATUS_PAGE_SCREENSHOT"):
            shutil.copy(shot, os.environ["STATUS_PAGE_SCREENSHOT"])

        page = Figures()
        page.feed(dom)
        assert page.title == "canvas-stream status"
        assert 'id="events-chart"' in dom and "<rect" in dom
        assert "source-errors" not in dom, dom[:3000]

        async with engine.connect() as conn:
            by_format = {f: int(n) for f, n in await conn.execute(text(
                "select format, count(*) from canvas_stream.events where received_at >= date_trunc('minute', now()) "
                "- interval '59 minutes' group by format"))}
            unresolved = (await conn.execute(text(
                "select count(*) from canvas_stream.quarantine where not resolved"))).scalar_one()
            answers = {(r, str(c)): int(n) for r, c, n in await conn.execute(text(
                "select route, code, sum(answers) from canvas_stream.ingress_answers group by route, code"))}
            newest = {name: t for name, t in await conn.execute(text(
                "select event_name, max(event_time) from canvas_stream.events group by event_name"))}

        assert by_format == sent
        assert page.values("events-last-hour", "data-format") == by_format
        assert page.values("events-last-hour-total") == {"": sum(by_format.values())}
        assert page.values("quarantine-unresolved") == {"": unresolved} == {"": 1}
        assert {(f["data-route"], f["data-code"]): int(f["data-value"]) for f in page.figures
                if f["data-figure"] == "answers-24h"} == answers == {("/live-events", "200"): 7,
                                                                     ("/live-events", "401"): 3}
        assert page.values("budget-errors", "data-route") == {"/live-events": 3}
        assert page.values("budget-timeouts", "data-route") == {"/live-events": 0}
        shown_newest = {f["data-event-name"]: f.get("data-value") for f in page.figures
                        if f["data-figure"] == "newest-event"}
        assert shown_newest == {name: t.isoformat() for name, t in newest.items()}
        # The broker's view of the worker group: everything produced is committed.
        ends = page.values("end-offset", "data-partition")
        committed = page.values("committed-offset", "data-partition")
        assert len(ends) == PARTITIONS and sum(ends.values()) == 7 + 1
        assert committed == ends and page.values("worker-lag-total") == {"": 0}
        assert page.values("spool-records") == {"": 0}
        assert "committed up to" in dom and "UTC" in dom
    finally:
        await asyncio.to_thread(ingress.stop)
        await asyncio.to_thread(worker.stop)


async def _all_committed(bootstrap: str, topic: str, group: str, records: int) -> bool:
    return await committed(bootstrap, topic, group, PARTITIONS) >= records

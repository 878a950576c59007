"""LTI PNS notices over real HTTP, a real broker, a worker subprocess and PostgreSQL.

The notices are built as Canvas builds them (:mod:`tests.support.lti`).
"""

from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from canvas_stream.embedded.process import free_port
from canvas_stream.keys import generate_private_key, public_jwk
from canvas_stream.settings import Settings
from ingest.app import create_app
from ingest.jwks import JwksCache
from ingest.nonces import NonceClaim, PostgresNonces
from ingest.publish import KafkaPublisher
from processors.warehouse import tables
from processors.warehouse.notice_ledger import WarehouseNoticeLedger
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key
from tests.support.lti import (
    CLAIM,
    CLIENT_ID,
    DEPLOYMENT,
    ISSUER,
    KID,
    b64sha256,
    batch,
    jwt_of,
    nid,
    notice,
)
from tests.support.procs import Role, running, wait_until, worker_env
from tests.support.topics import created_topic

LTI_DEPLOYMENTS = tables.TABLES["lti_deployments"]
CONTEXT_COPIES = tables.TABLES["context_copies"]
ASSET_SUBMISSIONS = tables.TABLES["asset_processor_submissions"]

# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def platform():
    async with JwksServer([jwk_for(rsa_key("lti-current"), KID)]) as server:
        yield server


@pytest.fixture(scope="module")
async def lti_topic(kafka_bootstrap):
    return await created_topic(kafka_bootstrap, f"t-lti-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
async def db(migrated_database_url):
    engine = create_async_engine(migrated_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def worker(db, kafka_bootstrap, lti_topic, database_url):
    role = Role("worker", worker_env(database_url, kafka_bootstrap, lti_topic))
    with running(role):
        yield role


@pytest.fixture
async def clients(platform, kafka_bootstrap, lti_topic):
    """Factory of ingress clients (each has its own app, LTI key cache and recent-id memory)."""
    made: list[TestClient] = []

    async def make(jwks_url: str | None = None, bootstrap: str | None = None,
                   nonce_store: PostgresNonces | None = None, **overrides) -> TestClient:
        values = {"kafka_bootstrap_servers": bootstrap or kafka_bootstrap, "kafka_topic": lti_topic,
                  "kafka_ack_timeout_seconds": 5, "lti_platform_jwks_url": jwks_url or platform.url,
                  "lti_platform_issuer": ISSUER, "lti_client_id": CLIENT_ID, "jwks_refetch_cooldown_seconds": 0,
                  "database_url": None, "lti_deployment_ids": None, "lti_private_key_file": None}
        values.update(overrides)
        settings = Settings(**values)
        publisher = KafkaPublisher(settings.kafka_bootstrap_servers, lti_topic,
                                   ack_timeout=settings.kafka_ack_timeout_seconds)
        # As the CLI wires it: with a warehouse, stored notice ids are looked up there, and the
        # nonces are shared in it (an explicit nonce_store overrides, e.g. an unreachable one).
        ledger = WarehouseNoticeLedger(settings.require_database_url()) if settings.database_url else None
        nonces = nonce_store or (PostgresNonces(settings.require_database_url()) if settings.database_url else None)
        app = create_app(settings, publisher=publisher, live_events_jwks=JwksCache(platform.url),
                         notice_ledger=ledger, nonce_store=nonces)
        client = TestClient(TestServer(app))
        await client.start_server()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def post(client: TestClient, body: str, path: str = f"/lti/notices/{DEPLOYMENT}") -> tuple[int, dict]:
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    return response.status, await response.json()


def statuses(doc: dict) -> list[str]:
    return [r["status"] for r in doc["results"]]


async def rows(engine, table, *where):
    async with engine.connect() as conn:
        return (await conn.execute(select(table).where(*where))).all()


async def count(engine, table, *where) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


async def published_ids(bootstrap: str, topic: str) -> list[str]:
    """Notice ids of every record on the topic so far."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    ids: list[str] = []
    try:
        while True:
            batch_ = await consumer.getmany(timeout_ms=3000)
            if not batch_:
                break
            for messages in batch_.values():
                for m in messages:
                    ids.append(json.loads(m.value)["payload"][CLAIM + "notice"]["id"])
    finally:
        await consumer.stop()
    return ids


# ---- tests ----------------------------------------------------------------------------------------

async def test_batch_of_three_types_and_a_forged_notice(clients, worker, db):
    client = await clients()
    hello = notice("LtiHelloWorldNotice", timestamp="2025-03-19T11:11:17Z")
    copy_ = notice("LtiContextCopyNotice")
    ap = notice("LtiAssetProcessorSubmissionNotice", timestamp="2025-08-01T12:45:56Z")
    forged = notice("LtiContextCopyNotice")
    body = batch(jwt_of(hello), jwt_of(copy_), jwt_of(ap), jwt_of(forged, key_name="attacker"))

    status, doc = await post(client, body)
    assert status == 200, doc
    assert statuses(doc) == ["accepted", "accepted", "accepted", "rejected"]
    assert [r["index"] for r in doc["results"]] == [0, 1, 2, 3]
    assert [r["notice_id"] for r in doc["results"][:3]] == [nid(hello), nid(copy_), nid(ap)]
    assert doc["results"][3]["notice_id"] is None  # nothing from a forged token is trusted
    assert "bad signature" in doc["results"][3]["error"]

    t = tables
    ids = [nid(hello), nid(copy_), nid(ap)]
    await wait_until(lambda: count(db, t.lti_notices, t.lti_notices.c.notice_id.in_(ids)), timeout=90,
                     message=f"3 notices in canvas_stream.lti_notices; worker log:\n{worker.output()}")
    await wait_until(lambda: _n_at_least(db, t.lti_notices, 3, t.lti_notices.c.notice_id.in_(ids)), timeout=30,
                     message="all 3 notices")
    assert await count(db, t.lti_notices, t.lti_notices.c.notice_id == nid(forged)) == 0

    stored = {r.notice_id: r for r in await rows(db, t.lti_notices, t.lti_notices.c.notice_id.in_(ids))}
    assert stored[nid(hello)].notice_type == "LtiHelloWorldNotice"
    assert stored[nid(hello)].context_type == "Account"
    assert stored[nid(copy_)].issuer == ISSUER and stored[nid(copy_)].client_id == CLIENT_ID
    assert stored[nid(copy_)].deployment_id == DEPLOYMENT
    assert stored[nid(copy_)].context_id == "4dde05e8ca1973bcca9bffc13e1548820eee93a3"
    assert stored[nid(ap)].user_sub == ap["sub"] and stored[nid(ap)].kid == KID
    assert stored[nid(ap)].claims[CLAIM + "submission"]["id"] == "d6446aaf-3f71-4eea-b2fd-20bd8d151506:1"
    assert stored[nid(ap)].jwt.count(".") == 2
    assert stored[nid(hello)].notice_timestamp.isoformat() == "2025-03-19T11:11:17+00:00"

    events = await rows(db, tables.events, tables.events.c.event_id.in_([f"lti-notice:{i}" for i in ids]))
    assert sorted((e.event_name, e.format) for e in events) == sorted(
        [("LtiHelloWorldNotice", "lti_notice"), ("LtiContextCopyNotice", "lti_notice"),
         ("LtiAssetProcessorSubmissionNotice", "lti_notice")])

    [dep] = await rows(db, LTI_DEPLOYMENTS, LTI_DEPLOYMENTS.c.deployment_id == DEPLOYMENT)
    assert dep.client_id == CLIENT_ID
    assert dep.hello_world_at.isoformat() == "2025-03-19T11:11:17+00:00"
    assert dep.hello_world_notice_id == nid(hello)

    [cc] = await rows(db, CONTEXT_COPIES, CONTEXT_COPIES.c.context_id == "4dde05e8ca1973bcca9bffc13e1548820eee93a3")
    assert cc.origin_context_id == "5098686ffc86cae4e0784b533a18af229ff5074e"
    assert (cc.context_title, cc.context_label, cc.notice_id) == ("Biology 2", "BIO-2", nid(copy_))

    [sub] = await rows(db, ASSET_SUBMISSIONS,
                       ASSET_SUBMISSIONS.c.submission_id == "d6446aaf-3f71-4eea-b2fd-20bd8d151506:1")
    assert sub.activity_id == "d79c2ded-b078-4e8e-b090-dd1d380fc596"
    assert sub.for_user_id == "972fd8aa-7f57-4d11-9400-916a0ed0d31d"
    assert sub.assets[0]["sha256_checksum"] == b64sha256(b"<p>essay v1</p>")
    assert sub.report_url.endswith("/asset_processors/83/reports")
    assert sub.notice_id == nid(ap)


async def _n_at_least(engine, table, n, *where) -> bool:
    return await count(engine, table, *where) >= n


async def test_duplicate_notice_id_is_acknowledged_and_stored_once(clients, worker, db, database_url,
                                                                   kafka_bootstrap, lti_topic):
    client = await clients(database_url=database_url)
    first = notice("LtiContextCopyNotice")
    status, doc = await post(client, batch(jwt_of(first)))
    assert (status, statuses(doc)) == (200, ["accepted"]), doc

    # Re-signed with a new nonce and iat, same notice id; and twice within one batch.
    again = {**first, "nonce": str(uuid.uuid4()), "iat": first["iat"] + 1}
    status, doc = await post(client, batch(jwt_of(again), jwt_of(again)))
    assert (status, statuses(doc)) == (200, ["duplicate", "duplicate"]), doc
    assert {r["notice_id"] for r in doc["results"]} == {nid(first)}

    t = tables.lti_notices
    await wait_until(lambda: count(db, t, t.c.notice_id == nid(first)), timeout=90,
                     message=f"notice stored; worker log:\n{worker.output()}")

    # A fresh ingress (restart, or another replica) has no memory: PostgreSQL answers instead.
    fresh = await clients(database_url=database_url)
    status, doc = await post(fresh, batch(jwt_of(again)))
    assert (status, statuses(doc)) == (200, ["duplicate"]), doc

    assert await count(db, t, t.c.notice_id == nid(first)) == 1
    assert await count(db, tables.events, tables.events.c.event_id == f"lti-notice:{nid(first)}") == 1
    assert (await published_ids(kafka_bootstrap, lti_topic)).count(nid(first)) == 1


async def test_invalid_claims_are_rejected_one_by_one(clients):
    client = await clients()
    now = int(time.time())
    cases = {
        "audience mismatch": notice("LtiHelloWorldNotice", aud="someone-else", azp="someone-else"),
        "azp mismatch": notice("LtiHelloWorldNotice", aud=[CLIENT_ID, "other"], azp="other"),
        "token expired": notice("LtiHelloWorldNotice", iat=now - 7200),  # exp = now - 1 h
        "issuer mismatch": notice("LtiHelloWorldNotice", iss="https://evil.example"),
        "LTI version": notice("LtiHelloWorldNotice", **{CLAIM + "version": "1.1"}),
        "nonce": notice("LtiHelloWorldNotice", nonce=None),
        "notice.type": notice("LtiHelloWorldNotice",
                              **{CLAIM + "notice": {"id": "x", "timestamp": "2025-01-01T00:00:00Z"}}),
        "deployment_id": notice("LtiHelloWorldNotice", **{CLAIM + "deployment_id": None}),
    }
    good = notice("LtiHelloWorldNotice")
    body = batch(*(jwt_of(c) for c in cases.values()), jwt_of(good))
    status, doc = await post(client, body, path="/lti/notices")
    assert status == 200, doc  # every notice is either stored or permanently rejected
    assert statuses(doc) == ["rejected"] * len(cases) + ["accepted"]
    for (expected, claims), result in zip(cases.items(), doc["results"], strict=False):
        assert expected in result["error"], (expected, result)
        if CLAIM + "notice" in claims and "id" in claims[CLAIM + "notice"]:
            assert result["notice_id"] == nid(claims)  # signature was good, so the id is worth reporting
    # an audience given as a list that contains us, with azp = us, is fine
    ok = notice("LtiHelloWorldNotice", aud=[CLIENT_ID, "other"], azp=CLIENT_ID)
    status, doc = await post(client, batch(jwt_of(ok)), path="/lti/notices")
    assert (status, statuses(doc)) == (200, ["accepted"]), doc


async def test_rotated_platform_key_costs_one_refetch(clients):
    async with JwksServer([jwk_for(rsa_key("lti-current"), KID)]) as jwks:
        client = await clients(jwks_url=jwks.url)
        status, doc = await post(client, batch(jwt_of(notice("LtiHelloWorldNotice"))))
        assert (status, statuses(doc)) == (200, ["accepted"]) and jwks.requests == 1

        jwks.keys = [jwk_for(rsa_key("lti-current"), KID), jwk_for(rsa_key("lti-next"), "2025-03-01")]
        rotated = [jwt_of(notice("LtiHelloWorldNotice"), "lti-next", "2025-03-01") for _ in range(3)]
        status, doc = await post(client, batch(*rotated))
        assert (status, statuses(doc)) == (200, ["accepted"] * 3), doc
        assert jwks.requests == 2  # one refetch for the new kid, then served from the cache

        status, doc = await post(client, batch(jwt_of(notice("LtiHelloWorldNotice"), "attacker", "no-such-kid")))
        assert statuses(doc) == ["rejected"] and "unknown kid" in doc["results"][0]["error"]

        # The live-events key set is never consulted for LTI notices (separate cache, separate URL).
        live = jwt_of(notice("LtiHelloWorldNotice"), "current", "2024-02-29")
        status, doc = await post(client, batch(live))
        assert statuses(doc) == ["rejected"]


async def test_deployment_must_match_path_and_allow_list(clients):
    client = await clients()
    other = notice("LtiContextCopyNotice", deployment="107:aaaa")
    status, doc = await post(client, batch(jwt_of(other)))  # posted to /lti/notices/<DEPLOYMENT>
    assert statuses(doc) == ["rejected"] and "does not match the handler URL" in doc["results"][0]["error"]
    status, doc = await post(client, batch(jwt_of(other)), path="/lti/notices/107:aaaa")
    assert statuses(doc) == ["accepted"], doc

    allow = await clients(lti_deployment_ids=f"{DEPLOYMENT}, 200:bbbb")
    status, doc = await post(allow, batch(jwt_of(notice("LtiContextCopyNotice", deployment="107:aaaa")),
                                          jwt_of(notice("LtiContextCopyNotice"))), path="/lti/notices")
    assert status == 200 and statuses(doc) == ["rejected", "accepted"], doc
    assert "LTI_DEPLOYMENT_IDS" in doc["results"][0]["error"]


async def test_resubmission_with_new_notice_id_updates_the_same_row(clients, worker, db):
    client = await clients()
    submission = f"{uuid.uuid4()}:1"
    first = notice("LtiAssetProcessorSubmissionNotice", timestamp="2025-08-02T10:00:00Z",
                   **{CLAIM + "submission": {"id": submission}})
    # "Resubmit All Files": same submission and time, new notice id, issued later, new checksum.
    second = copy.deepcopy(first)
    second[CLAIM + "notice"]["id"] = str(uuid.uuid4())
    second["nonce"] = str(uuid.uuid4())  # a new JWT, so a new nonce (the same one would be a replay)
    second["iat"] += 30
    second["exp"] += 30
    second[CLAIM + "assetservice"]["assets"][0]["sha256_checksum"] = b64sha256(b"<p>essay v2</p>")

    # The later notice arrives first: the row must still end with it.
    for claims in (second, first):
        status, doc = await post(client, batch(jwt_of(claims)))
        assert (status, statuses(doc)) == (200, ["accepted"]), doc

    t = tables
    both = t.lti_notices.c.notice_id.in_([nid(first), nid(second)])
    await wait_until(lambda: _n_at_least(db, t.lti_notices, 2, both), timeout=90,
                     message=f"both notices stored; worker log:\n{worker.output()}")
    where = ASSET_SUBMISSIONS.c.submission_id == submission
    [row] = await rows(db, ASSET_SUBMISSIONS, where)
    assert row.notice_id == nid(second)
    assert row.assets[0]["sha256_checksum"] == b64sha256(b"<p>essay v2</p>")


async def test_unusable_bodies_and_broker_outage(clients, tmp_path):
    client = await clients()
    for body, expected in [("not json", "not valid JSON"), ('{"notices": []}', "empty"),
                           ('{"jwt": "a.b.c"}', "'notices' list"),
                           (json.dumps({"notices": ["a.b.c"] * 101}), "too many notices")]:
        response = await client.post("/lti/notices", data=body)
        assert response.status == 400 and expected in (await response.json())["error"], body
    status, doc = await post(client, json.dumps({"notices": [42, {"jwt": "x" * 70_000}, "not-a-jwt"]}))
    assert status == 200 and statuses(doc) == ["rejected"] * 3, doc
    assert "larger than" in doc["results"][1]["error"]

    # Broker down: the valid notice is not durable, so the batch gets 503 and says which one.
    down = await clients(bootstrap="127.0.0.1:9", kafka_ack_timeout_seconds=1)
    good, forged = notice("LtiHelloWorldNotice"), notice("LtiHelloWorldNotice")
    status, doc = await post(down, batch(jwt_of(good), jwt_of(forged, key_name="attacker")))
    assert status == 503 and statuses(doc) == ["failed", "rejected"], doc
    assert doc["results"][0]["notice_id"] == nid(good) and "not stored" in doc["results"][0]["error"]

    # Not configured: refuse rather than accept notices whose audience cannot be checked.
    unconfigured = await clients(lti_client_id=None)
    response = await unconfigured.post("/lti/notices", data=batch(jwt_of(good)))
    assert response.status == 503 and "LTI_CLIENT_ID" in (await response.json())["error"]

    # The tool's public key set: empty until a key is configured, then its public half only.
    response = await client.get("/.well-known/jwks.json")
    assert (response.status, await response.json()) == (200, {"keys": []})
    key = generate_private_key(tmp_path / "tool.pem")
    keyed = await clients(lti_private_key_file=str(tmp_path / "tool.pem"), lti_tool_key_id="tool-1")
    doc = await (await keyed.get("/.well-known/jwks.json")).json()
    assert doc == {"keys": [public_jwk(key, "tool-1")]} and "d" not in doc["keys"][0]


# ---- replay protection ----------------------------------------------------------------------------

async def test_a_replayed_nonce_is_rejected_per_notice_on_every_replica(clients, db, database_url):
    one = await clients(database_url=database_url)
    two = await clients(database_url=database_url)  # another replica: shares only PostgreSQL
    original = notice("LtiContextCopyNotice")
    replay = notice("LtiContextCopyNotice", nonce=original["nonce"])  # a new notice id under a seen nonce
    other = notice("LtiContextCopyNotice")

    status, doc = await post(one, batch(jwt_of(original), jwt_of(replay), jwt_of(other)))
    assert status == 200 and statuses(doc) == ["accepted", "rejected", "accepted"], doc
    assert doc["results"][1]["notice_id"] == nid(replay)  # the signature was good: worth naming
    assert doc["results"][1]["error"] == "invalid notice: nonce already used by another notice (replay)"

    status, doc = await post(two, batch(jwt_of(replay), jwt_of(original)))
    assert statuses(doc)[0] == "rejected", doc
    assert statuses(doc)[1] in ("accepted", "duplicate"), doc  # the same notice is no replay (duplicate once stored)
    status, doc = await post(one, batch(jwt_of(original)))
    assert statuses(doc) == ["duplicate"], doc  # the same notice re-sent stays a duplicate

    async with db.connect() as conn:
        row = (await conn.execute(text("SELECT notice_id, expires_at FROM canvas_stream.lti_nonces WHERE nonce = :n"),
                                  {"n": original["nonce"]})).one()
    assert row.notice_id == nid(original)
    assert row.expires_at.timestamp() == original["exp"] + 60  # exp + LTI_LEEWAY_SECONDS


async def test_an_unreachable_nonce_store_fails_open_counted_and_shown(clients):
    down = PostgresNonces(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere")
    client = await clients(nonce_store=down)
    before = REGISTRY.get_sample_value("canvas_stream_lti_nonce_store_unavailable_total") or 0.0
    first = notice("LtiHelloWorldNotice")
    status, doc = await post(client, batch(jwt_of(first)))
    assert (status, statuses(doc)) == (200, ["accepted"]), doc  # Canvas never resends: accept, do not lose it
    assert REGISTRY.get_sample_value("canvas_stream_lti_nonce_store_unavailable_total") == before + 1
    ready = await (await client.get("/readyz")).json()
    assert ready["lti_nonces"].startswith("memory only (PostgreSQL unreachable")
    status, doc = await post(client, batch(jwt_of(notice("LtiHelloWorldNotice", nonce=first["nonce"]))))
    assert statuses(doc) == ["rejected"], doc  # this replica's memory still catches a replay


async def test_expired_nonces_are_purged_in_bounded_batches_and_taken_over(db, database_url):
    store = PostgresNonces(database_url, purge_batch=2)
    tag = uuid.uuid4().hex
    try:
        async with db.begin() as conn:
            await conn.execute(text(
                "INSERT INTO canvas_stream.lti_nonces (nonce, notice_id, expires_at) "
                "SELECT :tag || '-' || i, 'old', now() - interval '1 minute' FROM generate_series(1, 5) i"),
                {"tag": tag})
            await conn.execute(text("INSERT INTO canvas_stream.lti_nonces (nonce, notice_id, expires_at) "
                                    "VALUES (:n, 'live', now() + interval '1 hour')"), {"n": f"{tag}-live"})
        # An expired row not purged yet is taken over: its token is refused by its exp anyway.
        owners = await store.claim([NonceClaim(f"{tag}-1", "new", time.time() + 3600),
                                    NonceClaim(f"{tag}-live", "intruder", time.time() + 3600)])
        assert owners == {f"{tag}-1": "new", f"{tag}-live": "live"}
        assert await store.purge() >= 4  # the other four expired rows, two per statement
        async with db.connect() as conn:
            left = dict((await conn.execute(text("SELECT nonce, notice_id FROM canvas_stream.lti_nonces "
                                                 "WHERE nonce LIKE :p"), {"p": f"{tag}-%"})).all())
        assert left == {f"{tag}-1": "new", f"{tag}-live": "live"}
    finally:
        await store.close()

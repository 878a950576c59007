"""Signed example events, an in-process ingress client and a worker behind it, shared by the
integration tests."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator

from aiohttp.test_utils import TestClient, TestServer

from canvas_stream.settings import Settings
from ingest.app import create_app
from ingest.jwks import JwksCache
from ingest.publish import KafkaPublisher
from tests.support.corpus import CORPUS
from tests.support.jwt_helpers import JwksServer, jwk_for, rsa_key, sign
from tests.support.procs import Role, running, worker_env
from tests.support.topics import created_topic

ISSUER = "https://live-events.canvas.instructure.com"


def example(fmt: str, name: str) -> dict:
    return copy.deepcopy(json.loads((CORPUS / fmt / f"{name}.json").read_text())["examples"][0]["payload"])


def signed(event: dict, kid: str = "current") -> str:
    now = int(time.time())
    return sign({"iss": ISSUER, "iat": now, "exp": now + 300, **event}, rsa_key(kid), kid)


async def make_client(jwks_url: str, bootstrap: str, topic: str, **overrides) -> TestClient:
    overrides.setdefault("live_events_allow_any_account", True)  # binding: tests/integration/test_tenant_binding.py
    settings = Settings(kafka_bootstrap_servers=bootstrap, kafka_topic=topic, live_events_jwks_url=jwks_url,
                        live_events_issuer=ISSUER, kafka_ack_timeout_seconds=3, **overrides)
    publisher = KafkaPublisher(bootstrap, topic, ack_timeout=3)
    cache = JwksCache(jwks_url, refetch_cooldown=30)
    client = TestClient(TestServer(create_app(settings, publisher=publisher, live_events_jwks=cache)))
    await client.start_server()
    return client


@contextlib.asynccontextmanager
async def ingress_and_worker(bootstrap: str, topic: str, database_url: str) -> AsyncIterator[tuple[TestClient, Role]]:
    """The pipeline: an in-process ingress that trusts the ``current`` test key (post :func:`signed`
    events to it), publishing to ``topic`` (created, 3 partitions), and a worker process storing them."""
    await created_topic(bootstrap, topic)
    async with JwksServer([jwk_for(rsa_key("current"), "current")]) as jwks:
        client = await make_client(jwks.url, bootstrap, topic)
        worker = Role("worker", worker_env(database_url, bootstrap, topic))
        try:
            with running(worker):
                yield client, worker
        finally:
            await client.close()

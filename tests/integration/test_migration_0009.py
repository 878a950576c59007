"""Migration 0009 upgrades an existing warehouse in place: its notices and deployments stay,
canvas_stream.lti_nonces and canvas_stream.lti_handler_subscriptions appear (and work: the ingress's nonce claim
and the hello-world query run on them), and a downgrade removes only them."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from sqlalchemy import text

from canvas_stream import migrate
from canvas_stream.lti_handlers import read_hello_world_checks, record_subscription
from ingest.nonces import NonceClaim, PostgresNonces
from tests.support.warehouse import warehouse_at

NEW_TABLES = ("lti_nonces", "lti_handler_subscriptions")


async def test_0009_adds_the_nonce_and_subscription_tables_in_place(postgres_server_url):
    async with warehouse_at(postgres_server_url, "0007b") as (url, engine):
        nonces = PostgresNonces(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(
                    "insert into canvas_stream.lti_notices (notice_id, notice_type, deployment_id, received_at) "
                    "values ('hello-1', 'LtiHelloWorldNotice', '106:abc', now())"))
                await conn.execute(text("insert into canvas_stream.lti_deployments (deployment_id, client_id) "
                                        "values ('106:abc', '100')"))
            await asyncio.to_thread(migrate.upgrade, url)

            assert await nonces.claim([NonceClaim("n-1", "hello-1", time.time() + 60)]) == {"n-1": "hello-1"}
            async with engine.begin() as conn:
                await record_subscription(conn, deployment_id="106:abc", notice_type="LtiHelloWorldNotice",
                                          handler="https://tool.example/lti/notices/106:abc", max_batch_size=None,
                                          pns_url="https://canvas.example/api/lti/notice-handlers/106",
                                          set_at=datetime.now(UTC))
            async with engine.connect() as conn:
                [check] = await read_hello_world_checks(conn)
                assert (check.deployment_id, check.hello_world_received_at is not None) == ("106:abc", True)
                assert (await conn.execute(text("select count(*) from canvas_stream.lti_notices"))).scalar_one() == 1
                client = text("select client_id from canvas_stream.lti_deployments")
                assert (await conn.execute(client)).scalar_one() == "100"
                described = text("select obj_description('canvas_stream.lti_nonces'::regclass)")
                comment = (await conn.execute(described)).scalar()
                assert comment and "replay protection" in comment

            await nonces.close()
            await asyncio.to_thread(migrate.downgrade, url, "0007b")
            async with engine.connect() as conn:
                for table in NEW_TABLES:
                    gone = text(f"select to_regclass('canvas_stream.{table}')")
                    assert (await conn.execute(gone)).scalar_one() is None
                assert (await conn.execute(text("select count(*) from canvas_stream.lti_notices"))).scalar_one() == 1
                deployments = text("select count(*) from canvas_stream.lti_deployments")
                assert (await conn.execute(deployments)).scalar_one() == 1
        finally:
            await nonces.close()

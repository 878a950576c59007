"""Minimal programs that measure this machine's limits, and the per-event peer to beat.

Run as ``python -m benchmarks.minimal <kind> [options]``; each serves or consumes until SIGTERM.

* ``noop``            aiohttp POST handler that reads the body and answers 200
* ``verify``          + fast RS256 verification (cryptography directly)
* ``verify-produce``  + aiokafka produce awaiting the ack (acks=all), the minimal ingress
* ``consumer``        aiokafka consumer -> batched asyncpg INSERT .. SELECT unnest(..) ON CONFLICT DO NOTHING,
                      offsets committed after the transaction (the minimal pipeline's second half)
* ``peer``            the per-event design of most Canvas receivers: PyJWT decode, then one INSERT
                      per request into PostgreSQL (asyncpg pool), no broker
* ``faust-noop``      a faust-streaming agent that does nothing (``--take`` uses take_events batches)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

ISSUER = "https://live-events.canvas.instructure.com"
MIN_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
    event_id text PRIMARY KEY, event_name text, format text, received_at timestamptz,
    payload jsonb)"""


def _b64(seg: bytes) -> bytes:
    return base64.urlsafe_b64decode(seg + b"=" * (-len(seg) % 4))


class FastVerifier:
    """Split, RSA-verify, decode; checks iss and exp. Only as strict as a benchmark needs."""

    def __init__(self, jwks_url: str) -> None:
        import urllib.request

        from ingest.jwks import parse_jwks

        with urllib.request.urlopen(jwks_url, timeout=5) as resp:
            self.keys = parse_jwks(resp.read())

    def verify(self, token: bytes) -> dict[str, Any]:
        h, p, s = token.strip().split(b".")
        header = json.loads(_b64(h))
        key = self.keys[header["kid"]]
        key.verify(_b64(s), h + b"." + p, padding.PKCS1v15(), hashes.SHA256())
        claims = json.loads(_b64(p))
        if claims.get("iss") != ISSUER or claims.get("exp", 0) + 1800 < time.time():
            raise ValueError("bad claims")
        return claims


def event_identity(claims: dict[str, Any]) -> tuple[str, str, str]:
    """(event_id, event_name, format) like the real normalizers compute them."""
    if isinstance(claims.get("metadata"), dict):
        event = {"metadata": claims.get("metadata"), "body": claims.get("body")}
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest(), str(claims["metadata"].get("event_name")), "canvas"
    data = claims.get("data") or [{}]
    return str(data[0].get("id")), f"{data[0].get('type')}/{data[0].get('action')}", "caliper"


async def serve(app: Any, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print(f"listening on {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


async def run_http(args: argparse.Namespace) -> None:
    from aiohttp import web

    app = web.Application(client_max_size=1024 * 1024)
    verifier = FastVerifier(args.jwks) if args.kind != "noop" else None
    producer = None
    pool = None
    if args.kind == "verify-produce":
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=1,
                                    max_request_size=4 * 1024 * 1024)
        await producer.start()
    if args.kind == "peer":
        import asyncpg

        pool = await asyncpg.create_pool(args.dsn, min_size=args.pool, max_size=args.pool)
        await pool.execute(MIN_TABLE.format(name="bench_peer_events"))

    async def noop(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text='{"status":"accepted"}', content_type="application/json")

    async def verify_only(request: web.Request) -> web.Response:
        verifier.verify(await request.read())  # type: ignore[union-attr]
        return web.Response(text='{"status":"accepted"}', content_type="application/json")

    async def verify_produce(request: web.Request) -> web.Response:
        raw = await request.read()
        claims = verifier.verify(raw)  # type: ignore[union-attr]
        value = json.dumps({"received_at": datetime.now(UTC).isoformat(), "payload": claims},
                           separators=(",", ":")).encode()
        await producer.send_and_wait(args.topic, value, key=event_identity(claims)[0].encode()[:16])  # type: ignore[union-attr]
        return web.Response(text='{"status":"accepted"}', content_type="application/json")

    async def peer(request: web.Request) -> web.Response:
        import jwt

        raw = await request.read()
        header = jwt.get_unverified_header(raw)
        claims = jwt.decode(raw, verifier.keys[header["kid"]], algorithms=["RS256"], issuer=ISSUER,  # type: ignore[union-attr]
                            leeway=1800)
        event_id, name, fmt = event_identity(claims)
        await pool.execute(  # type: ignore[union-attr]
            "INSERT INTO bench_peer_events VALUES ($1, $2, $3, now(), $4::jsonb) ON CONFLICT DO NOTHING",
            event_id, name, fmt, json.dumps(claims))
        return web.Response(text='{"status":"accepted"}', content_type="application/json")

    handler = {"noop": noop, "verify": verify_only, "verify-produce": verify_produce, "peer": peer}[args.kind]
    app.router.add_post("/live-events", handler)
    app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))  # type: ignore[arg-type,return-value]
    try:
        await serve(app, args.port)
    finally:
        if producer is not None:
            await producer.stop()
        if pool is not None:
            await pool.close()


async def run_consumer(args: argparse.Namespace) -> None:
    import asyncpg
    from aiokafka import AIOKafkaConsumer

    conn = await asyncpg.connect(args.dsn)
    await conn.execute(MIN_TABLE.format(name=args.table))
    consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sql = (f"INSERT INTO {args.table} SELECT * FROM unnest($1::text[], $2::text[], $3::text[], "
           "$4::timestamptz[], $5::jsonb[]) ON CONFLICT DO NOTHING")
    print("consuming", flush=True)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=args.batch)
            if not batches:
                continue
            ids, names, fmts, times, payloads = [], [], [], [], []
            seen: set[str] = set()
            for messages in batches.values():
                for m in messages:
                    rec = json.loads(m.value)
                    claims = rec["payload"]
                    event_id, name, fmt = event_identity(claims)
                    if event_id in seen:
                        continue
                    seen.add(event_id)
                    ids.append(event_id)
                    names.append(name)
                    fmts.append(fmt)
                    times.append(datetime.fromisoformat(rec["received_at"]))
                    payloads.append(json.dumps(claims))
            async with conn.transaction():
                await conn.execute(sql, ids, names, fmts, times, payloads)
            await consumer.commit()
    finally:
        await consumer.stop()
        await conn.close()


def run_faust_noop(args: argparse.Namespace) -> None:
    import faust

    app = faust.App(args.group, broker=f"kafka://{args.bootstrap}", store="memory://", value_serializer="raw",
                    key_serializer="raw", topic_disable_leader=True, consumer_auto_offset_reset="earliest",
                    web_enabled=False, stream_buffer_maxsize=4096, broker_commit_every=1000,
                    broker_commit_interval=1.0, broker_session_timeout=10)
    topic = app.topic(args.topic, partitions=args.partitions)
    state = {"n": 0, "first": 0.0}

    def report() -> None:
        if state["n"] == 1:
            state["first"] = time.time()
        if state["n"] % 1000 == 0 or state["n"] == args.expect:
            print(f"PROGRESS {state['n']} {time.time():.4f} {state['first']:.4f}", flush=True)

    if args.take:
        @app.agent(topic)
        async def noop_take(stream: Any) -> None:
            async for events in stream.take_events(1000, within=0.2):
                for _ in events:
                    state["n"] += 1
                    report()
    else:
        @app.agent(topic)
        async def noop(stream: Any) -> None:
            async for _value in stream:
                state["n"] += 1
                report()

    sys.argv = [sys.argv[0]]
    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["noop", "verify", "verify-produce", "peer", "consumer", "faust-noop"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--jwks", default="")
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--topic", default="")
    parser.add_argument("--group", default="bench-min")
    parser.add_argument("--dsn", default="")
    parser.add_argument("--table", default="bench_min_events")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--take", action="store_true")
    args = parser.parse_args()
    if args.kind == "faust-noop":
        run_faust_noop(args)
    elif args.kind == "consumer":
        asyncio.run(run_consumer(args))
    else:
        asyncio.run(run_http(args))


if __name__ == "__main__":
    main()

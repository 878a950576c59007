"""The aiohttp ingress: verify, publish, answer. Routes stay thin; the logic is in pure modules."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from canvas_stream.loop import install_fast_loop
from canvas_stream.records import FORMAT_CALIPER, FORMAT_CANVAS, FORMAT_UNKNOWN, Verification, now_iso
from canvas_stream.settings import Settings
from ingest.jwks import JwksCache, KeyUnavailable, verify_with
from ingest.live_events import BadBody, build_record, classify_body
from ingest.publish import KafkaPublisher, PublishFailed
from ingest.spool import Spool
from ingest.verify import TokenRejected

log = structlog.get_logger(__name__)

RESPONSES = Counter("canvas_stream_ingress_responses_total", "Ingress answers", ["route", "status"])
LATENCY = Histogram("canvas_stream_ingress_seconds", "Time to answer", ["route"])

SETTINGS_KEY = web.AppKey("settings", Settings)
PUBLISHER_KEY = web.AppKey("publisher", KafkaPublisher)
LIVE_JWKS_KEY = web.AppKey("live_events_jwks", JwksCache)


def error(status: int, message: str) -> web.Response:
    """A short JSON error: never a stack trace, a token or a secret."""
    return web.json_response({"error": message}, status=status)


async def verify_live_event(
    token: str, jwks: JwksCache, settings: Settings, verified_at: str | None = None
) -> tuple[dict[str, Any], Verification, bytes]:
    """The claims, how they were verified, and their JSON text as signed."""
    verified = await verify_with(
        token, jwks, issuer=settings.live_events_issuer, leeway=settings.live_events_leeway_seconds
    )
    claims = verified.claims
    verification = Verification(signed=True, kid=verified.kid, issuer=claims.get("iss"),
                                verified_at=verified_at or now_iso())
    return claims, verification, verified.claims_json


# Per-request work done once: the metric children and the success bodies.
_LIVE_LATENCY = LATENCY.labels("live-events")
_LIVE_RESPONSES: dict[int, Any] = {}
_ACCEPTED = {fmt: json.dumps({"status": "accepted", "format": fmt}).encode()
             for fmt in (FORMAT_CANVAS, FORMAT_CALIPER, FORMAT_UNKNOWN)}


def _count_response(status: int) -> None:
    child = _LIVE_RESPONSES.get(status)
    if child is None:
        child = _LIVE_RESPONSES[status] = RESPONSES.labels("live-events", str(status))
    child.inc()


async def post_live_event(request: web.Request) -> web.Response:
    """One Canvas live event per POST; 200 only once Kafka acknowledged it."""
    settings = request.app[SETTINGS_KEY]
    started = time.perf_counter()
    status = 500
    try:
        response = await _handle_live_event(request, settings)
        status = response.status
        return response
    finally:
        _count_response(status)
        _LIVE_LATENCY.observe(time.perf_counter() - started)


async def _handle_live_event(request: web.Request, settings: Settings) -> web.Response:
    try:
        async with asyncio.timeout(settings.http_read_timeout_seconds):  # a slow body is not a reason to wait
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "body too large")
    except TimeoutError:
        return error(408, "request body too slow")
    try:
        body = classify_body(raw)
    except BadBody as exc:
        return error(400, exc.reason)
    received_at = now_iso()  # also the verification time: one clock read per request
    if body.token is not None:
        try:
            payload, verification, payload_json = await verify_live_event(
                body.token, request.app[LIVE_JWKS_KEY], settings, received_at)
        except TokenRejected as exc:
            log.info("live event rejected", reason=exc.reason)
            return error(401, f"invalid token: {exc.reason}")
        except KeyUnavailable:
            log.warning("live events JWKS unavailable")
            return error(503, "signing keys unavailable; retry later")
    else:
        if not settings.live_events_allow_unsigned:
            return error(401, "unsigned events are not accepted (sign the payload in Canvas Data Services)")
        assert body.payload is not None
        payload, verification, payload_json = body.payload, Verification(signed=False), body.payload_json
    key, record = build_record(payload, verification, payload_json, received_at)
    try:
        await request.app[PUBLISHER_KEY].publish(key, record.to_bytes())
    except PublishFailed as exc:
        log.warning("publish failed", error=str(exc))
        return error(503, exc.public)
    return web.Response(body=_ACCEPTED[record.format], content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the broker answers and the live-event keys are loaded (or unsigned is allowed)."""
    settings = request.app[SETTINGS_KEY]
    broker = await request.app[PUBLISHER_KEY].ready()
    jwks = request.app[LIVE_JWKS_KEY]
    keys = jwks.ready
    if not keys and not settings.live_events_allow_unsigned:
        try:
            await jwks.refresh()
            keys = jwks.ready
        except Exception:
            keys = False
    body: dict[str, Any] = {"broker": "ok" if broker else "unavailable",
                            "live_events_keys": "ok" if keys else "unavailable"}
    spool = request.app[PUBLISHER_KEY].spool_stats()
    if spool is not None:  # with a spool, events are still accepted (durably) while the broker is down
        body["spool"] = spool
        broker = broker or spool["bytes"] < spool["max_bytes"]
    ok = broker and (keys or settings.live_events_allow_unsigned)
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    settings: Settings,
    *,
    publisher: KafkaPublisher | None = None,
    live_events_jwks: JwksCache | None = None,
) -> web.Application:
    """Build the ingress; collaborators can be injected (tests use real ones on loopback)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS_KEY] = settings
    app[PUBLISHER_KEY] = publisher or KafkaPublisher(
        settings.require_kafka(), settings.kafka_topic, ack_timeout=settings.kafka_ack_timeout_seconds,
        spool=Spool(settings.spool_dir, settings.spool_max_bytes) if settings.spool_dir else None,
    )
    app[LIVE_JWKS_KEY] = live_events_jwks or JwksCache(
        settings.live_events_jwks_url, refetch_cooldown=settings.jwks_refetch_cooldown_seconds
    )
    app.router.add_post("/live-events", post_live_event)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    from ingest.lti_routes import add_lti_routes  # late: lti_routes imports this module

    add_lti_routes(app, settings)  # POST /lti/notices[/{deployment_id}], GET /.well-known/jwks.json

    async def lifecycle(app: web.Application):
        await app[PUBLISHER_KEY].start()
        yield
        await app[PUBLISHER_KEY].stop()
        await app[LIVE_JWKS_KEY].close()

    app.cleanup_ctx.append(lifecycle)
    return app


def run_ingress(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM."""
    install_fast_loop()
    app = create_app(settings)
    print(f"canvas-stream ingress listening on http://{settings.host}:{settings.port} "
          "(POST /live-events, POST /lti/notices)", flush=True)
    # keepalive_timeout is armed when a connection opens and not reset by partial data, so it also
    # closes a client that never finishes its request headers (slowloris); the body has its own deadline.
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                keepalive_timeout=settings.http_read_timeout_seconds)

"""The aiohttp ingress: verify, publish, answer. Routes stay thin; the logic is in pure modules."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from canvas_stream.loop import install_fast_loop
from canvas_stream.records import Verification, now_iso
from canvas_stream.settings import Settings
from ingest.answers import AnswerLedger, answers_middleware
from ingest.jwks import JwksCache, KeyUnavailable, verify_with
from ingest.live_events import BadBody, build_record, classify_body
from ingest.publish import KafkaPublisher, PublishFailed
from ingest.spool import Spool
from ingest.verify import TokenRejected

log = structlog.get_logger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
PUBLISHER_KEY = web.AppKey("publisher", KafkaPublisher)
LIVE_JWKS_KEY = web.AppKey("live_events_jwks", JwksCache)
ANSWERS_KEY = web.AppKey("answers", AnswerLedger)


def error(status: int, message: str) -> web.Response:
    """A short JSON error: never a stack trace, a token or a secret."""
    return web.json_response({"error": message}, status=status)


async def verify_live_event(token: str, jwks: JwksCache, settings: Settings) -> tuple[dict[str, Any], Verification]:
    verified = await verify_with(
        token, jwks, issuer=settings.live_events_issuer, leeway=settings.live_events_leeway_seconds
    )
    claims = verified.claims
    verification = Verification(signed=True, kid=verified.kid, issuer=claims.get("iss"), verified_at=now_iso())
    return claims, verification


async def post_live_event(request: web.Request) -> web.Response:
    """One Canvas live event per POST; 200 only once Kafka acknowledged it."""
    return await _handle_live_event(request, request.app[SETTINGS_KEY])  # timed by answers_middleware


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
    if body.token is not None:
        try:
            payload, verification = await verify_live_event(body.token, request.app[LIVE_JWKS_KEY], settings)
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
        payload, verification = body.payload, Verification(signed=False)
    key, record = build_record(payload, verification, raw)
    try:
        await request.app[PUBLISHER_KEY].publish(key, record.to_bytes())
    except PublishFailed as exc:
        log.warning("publish failed", error=str(exc))
        return error(503, exc.public)
    return web.json_response({"status": "accepted", "format": record.format})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the broker answers now (or, with a spool, the spool has room) and, when this ingress
    serves live events, their keys are loaded. The detail also carries the 24-hour Canvas budget."""
    settings = request.app[SETTINGS_KEY]
    publisher = request.app[PUBLISHER_KEY]
    broker = await publisher.ready()
    body: dict[str, Any] = {"broker": "ok" if broker else "unavailable"}
    keys_needed = settings.live_events_enabled and not settings.live_events_allow_unsigned
    keys = True
    if not settings.live_events_enabled:
        body["live_events_keys"] = "disabled"
    else:
        jwks = request.app[LIVE_JWKS_KEY]
        keys = jwks.ready
        if not keys and keys_needed:
            try:
                await jwks.refresh()
                keys = jwks.ready
            except Exception:
                keys = False
        body["live_events_keys"] = "ok" if keys else "unavailable"
    spool = publisher.spool_stats()
    if spool is not None:  # with a spool, events are still accepted (durably) while the broker is down
        body["spool"] = spool
        broker = broker or spool["bytes"] < spool["max_bytes"]
    answers = request.app.get(ANSWERS_KEY)
    if answers is not None:
        budget = answers.budget
        body["canvas_budget"] = budget.as_dict() if budget is not None else "unknown (PostgreSQL not read yet)"
        if budget is not None and budget.warnings():
            body["warnings"] = budget.warnings()
    ok = broker and (keys or not keys_needed)
    return web.json_response(body, status=200 if ok else 503)


def create_app(
    settings: Settings,
    *,
    publisher: KafkaPublisher | None = None,
    live_events_jwks: JwksCache | None = None,
    answers: AnswerLedger | None = None,
) -> web.Application:
    """Build the public ingress; collaborators can be injected (tests use real ones on loopback).

    ``answers`` (run_ingress passes one when DATABASE_URL is set) records Canvas's answers in
    PostgreSQL for the 24-hour deactivation budget. /metrics and /status are on the admin app.
    """
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[answers_middleware(answers)])
    app[SETTINGS_KEY] = settings
    app[PUBLISHER_KEY] = publisher or KafkaPublisher(
        settings.require_kafka(), settings.kafka_topic, ack_timeout=settings.kafka_ack_timeout_seconds,
        spool=Spool(settings.spool_dir, settings.spool_max_bytes) if settings.spool_dir else None,
    )
    app[LIVE_JWKS_KEY] = live_events_jwks or JwksCache(
        settings.live_events_jwks_url, refetch_cooldown=settings.jwks_refetch_cooldown_seconds
    )
    if answers is not None:
        app[ANSWERS_KEY] = answers
    if settings.live_events_enabled:
        app.router.add_post("/live-events", post_live_event)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    from ingest.lti_routes import add_lti_routes  # late: lti_routes imports this module

    add_lti_routes(app, settings)  # POST /lti/notices[/{deployment_id}], GET /.well-known/jwks.json

    async def lifecycle(app: web.Application):
        await app[PUBLISHER_KEY].start()
        if answers is not None:
            await answers.start()
        yield
        if answers is not None:
            await answers.stop()
        await app[PUBLISHER_KEY].stop()
        await app[LIVE_JWKS_KEY].close()

    app.cleanup_ctx.append(lifecycle)
    return app


def run_ingress(settings: Settings) -> None:
    """Serve the public port and the admin port until SIGINT/SIGTERM."""
    from ingest.admin import serve_admin

    install_fast_loop()
    answers = AnswerLedger(settings.require_database_url()) if settings.database_url is not None else None
    app = create_app(settings, answers=answers)
    app.cleanup_ctx.insert(0, serve_admin(settings))  # first: a taken admin port fails before anything starts
    routes = "POST /live-events, POST /lti/notices" if settings.live_events_enabled else "POST /lti/notices"
    log.info("canvas-stream ingress listening", url=f"http://{settings.host}:{settings.port}", routes=routes,
             admin=f"http://{settings.host}:{settings.admin_port}",
             canvas_budget="canvas.ingress_answers" if answers is not None else "off (DATABASE_URL not set)")
    # keepalive_timeout is armed when a connection opens and not reset by partial data, so it also
    # closes a client that never finishes its request headers (slowloris); the body has its own deadline.
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                keepalive_timeout=settings.http_read_timeout_seconds)

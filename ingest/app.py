"""The aiohttp ingress: verify, publish, answer. Routes stay thin; the logic is in pure modules."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from canvas_stream.records import (
    DELIVERY_HTTPS,
    FORMAT_CALIPER,
    FORMAT_CANVAS,
    FORMAT_UNKNOWN,
    Delivery,
    Verification,
    now_iso,
)
from canvas_stream.settings import Settings
from canvas_stream.tenancy import DeliveryKind, TenantPolicy, token_subscription_id
from ingest.answers import AnswerLedger, answers_middleware
from ingest.binding import admit
from ingest.deadline import (
    NotAcknowledgedInTime,
    ResponseDeadline,
    publish_within_deadline,
    read_body,
    settle_late_publishes,
)
from ingest.hello_world import HelloWorldWatch
from ingest.http import PUBLISHER_KEY, SETTINGS_KEY, error
from ingest.jwks import JwksCache, KeyUnavailable
from ingest.live_events import BadBody, build_record, classify_body
from ingest.lti_routes import LTI_STATE_KEY, NoticeLedger, add_lti_routes
from ingest.nonces import NonceBackend
from ingest.publish import KafkaPublisher, PublishFailed, RecordRefused
from ingest.spool import Spool
from ingest.verify import TokenPolicy, TokenRejected, verify_with

log = structlog.get_logger(__name__)

LIVE_JWKS_KEY = web.AppKey("live_events_jwks", JwksCache)
LIVE_POLICY_KEY = web.AppKey("live_events_policy", TokenPolicy)
ANSWERS_KEY = web.AppKey("answers", AnswerLedger)
TENANT_POLICY_KEY = web.AppKey("tenant_policy", TenantPolicy)


def live_events_policy(settings: Settings) -> TokenPolicy:
    """Canvas signs live events with its own issuer and documents no audience."""
    return TokenPolicy(issuer=settings.live_events_issuer, leeway=settings.live_events_leeway_seconds)


async def verify_live_event(
    token: str, app: web.Application, verified_at: str | None = None
) -> tuple[dict[str, Any], Verification, bytes]:
    """The claims, how they were verified, and their JSON text as signed."""
    verified = await verify_with(token, app[LIVE_JWKS_KEY], app[LIVE_POLICY_KEY])
    claims = verified.claims
    verification = Verification(signed=True, kid=verified.kid, issuer=claims.get("iss"),
                                verified_at=verified_at or now_iso())
    return claims, verification, verified.claims_json


# The success bodies, encoded once.
_ACCEPTED = {fmt: json.dumps({"status": "accepted", "format": fmt}).encode()
             for fmt in (FORMAT_CANVAS, FORMAT_CALIPER, FORMAT_UNKNOWN)}


async def post_live_event(request: web.Request) -> web.Response:
    """One Canvas live event per POST; 200 only once Kafka acknowledged it (timed by answers_middleware)."""
    app = request.app  # a property behind a property: looked up once
    settings = app[SETTINGS_KEY]
    try:
        raw = await read_body(request, settings.http_read_timeout_seconds)  # a slow body is not a reason to wait
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
            payload, verification, payload_json = await verify_live_event(body.token, app, received_at)
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
    subscription = token_subscription_id(payload) if verification.signed else None  # unsigned: no claim to trust
    kind = DeliveryKind.SIGNED_HTTPS if verification.signed else DeliveryKind.UNSIGNED_HTTPS
    refusal = admit(app[TENANT_POLICY_KEY], kind, payload, subscription)
    if refusal is not None:
        return error(403, f"refused: {refusal.value}")
    delivery = Delivery(method=DELIVERY_HTTPS, subscription_id=subscription)
    key, record = build_record(payload, verification, payload_json, received_at, delivery=delivery)
    [outcome] = await publish_within_deadline(request, app[PUBLISHER_KEY].publish, [(key, record.to_bytes())])
    if outcome is not None:  # acknowledged: None (checked first, the common case)
        if isinstance(outcome, RecordRefused):  # no retry can help: not 503
            log.error("publish refused for the record's size", error=str(outcome))  # our limit or the broker's
            return error(413, outcome.public)
        if isinstance(outcome, PublishFailed | NotAcknowledgedInTime):
            log.warning("publish failed", error=str(outcome) or outcome.__class__.__name__)
            return error(503, outcome.public)
        raise outcome
    return web.Response(body=_ACCEPTED[record.format], content_type="application/json")


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
    warnings: list[str] = []
    answers = request.app.get(ANSWERS_KEY)
    if answers is not None:
        budget = answers.budget
        body["canvas_budget"] = budget.as_dict() if budget is not None else "unknown (PostgreSQL not read yet)"
        if budget is not None:
            warnings.extend(budget.warnings())
    lti = request.app.get(LTI_STATE_KEY)
    if lti is not None and lti.policy is not None:  # LTI notices configured (LTI_CLIENT_ID)
        body["lti_nonces"] = lti.replays.state
        if lti.hello_world is not None:
            body["lti_hello_world"] = lti.hello_world.detail()
            warnings.extend(lti.hello_world.warnings())
    if warnings:  # warnings never change the status code
        body["warnings"] = warnings
    ok = broker and (keys or not keys_needed)
    return web.json_response(body, status=200 if ok else 503)


def create_app(
    settings: Settings,
    *,
    publisher: KafkaPublisher | None = None,
    live_events_jwks: JwksCache | None = None,
    notice_ledger: NoticeLedger | None = None,
    answers: AnswerLedger | None = None,
    nonce_store: NonceBackend | None = None,
    hello_world: HelloWorldWatch | None = None,
) -> web.Application:
    """Build the public ingress; collaborators can be injected (tests use real ones on loopback).

    ``notice_ledger``: where stored LTI notice ids are looked up (none: in-memory ids only).
    ``nonce_store``: the LTI nonces every replica shares (none: this replica's memory only).
    ``hello_world``: the hello-world check of LTI deployments, shown in /readyz (none: not checked).
    ``answers`` (run_ingress passes one when DATABASE_URL is set) records Canvas's answers in
    PostgreSQL for the 24-hour deactivation budget. /metrics and /status are on the admin app.
    """
    # One middleware: the answer ledger times and counts every answer, the deadline's 503s too (the
    # deadline runs inside it: a middleware layer is a coroutine and a call per request).
    middlewares = [answers_middleware(answers, ResponseDeadline(settings.response_deadline_seconds))]
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[SETTINGS_KEY] = settings
    app[PUBLISHER_KEY] = publisher or KafkaPublisher(
        settings.require_kafka(), settings.kafka_topic, ack_timeout=settings.kafka_ack_timeout_seconds,
        spool=Spool(settings.spool_dir, settings.spool_max_bytes) if settings.spool_dir else None,
        max_record_bytes=settings.kafka_max_record_bytes,
    )
    app[LIVE_JWKS_KEY] = live_events_jwks or JwksCache(
        settings.live_events_jwks_url, refetch_cooldown=settings.jwks_refetch_cooldown_seconds
    )
    app[LIVE_POLICY_KEY] = live_events_policy(settings)
    if answers is not None:
        app[ANSWERS_KEY] = answers
    app[TENANT_POLICY_KEY] = TenantPolicy.from_settings(settings)
    if settings.live_events_enabled:
        app.router.add_post("/live-events", post_live_event)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    # POST /lti/notices[/{deployment_id}], GET /.well-known/jwks.json
    add_lti_routes(app, settings, notice_ledger, nonce_store, hello_world)

    async def lifecycle(app: web.Application):
        await app[PUBLISHER_KEY].start()
        if answers is not None:
            await answers.start()
        yield
        if answers is not None:
            await answers.stop()
        await settle_late_publishes(app, settings.kafka_ack_timeout_seconds)
        await app[PUBLISHER_KEY].stop()
        await app[LIVE_JWKS_KEY].close()

    app.cleanup_ctx.append(lifecycle)
    return app

"""LTI routes of the ingress: PNS notices in, the tool's public key set out.

Why 200 means durable: Canvas never retries a notice, so the answer is 200 only once the broker
acknowledged every valid notice of the batch; otherwise 503 says which ones are not stored.
Duplicates (same ``notice.id``) are answered from a bounded in-memory set of recently accepted
ids and, when DATABASE_URL is set, from the ``lti_notices`` table (best effort: the worker's primary
key on ``notice_id`` is what guarantees a notice is never stored twice).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import Counter

from canvas_stream.keys import KeyFileError, load_private_key, public_jwk
from canvas_stream.records import Verification, now_iso
from canvas_stream.settings import Settings
from ingest.app import PUBLISHER_KEY, error
from ingest.jwks import JwksCache, KeyUnavailable
from ingest.notices import (
    MAX_JWT_BYTES,
    STATUS_ACCEPTED,
    STATUS_DUPLICATE,
    STATUS_FAILED,
    STATUS_REJECTED,
    BadBatch,
    Notice,
    NoticePolicy,
    NoticeResult,
    batch_response,
    build_record,
    parse_batch,
    peek_notice_id,
    validate_notice,
)
from ingest.verify import TokenRejected, decode_claims, parse_compact, verify_signature

log = structlog.get_logger(__name__)

NOTICES = Counter("canvas_stream_lti_notices_total", "LTI notices by outcome", ["status"])
RESPONSES = Counter("canvas_stream_lti_responses_total", "LTI notice batch answers", ["status"])

RECENT_IDS = 10_000
READ_TIMEOUT = 10.0  # seconds for the whole body; a slow sender must not hold a handler


class RecentNotices:
    """Ids of recently accepted notices, oldest evicted first (bounded memory)."""

    def __init__(self, size: int = RECENT_IDS) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, notice_id: object) -> bool:
        return notice_id in self._ids

    def add(self, notice_id: str) -> None:
        self._ids[notice_id] = None
        self._ids.move_to_end(notice_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


class NoticeLedger:
    """Optional lookup of stored notice ids in PostgreSQL; any failure only disables it briefly."""

    def __init__(self, database_url: str | None, *, timeout: float = 2.0, backoff: float = 30.0) -> None:
        self._url = database_url
        self._timeout = timeout
        self._backoff = backoff
        self._skip_until = 0.0
        self._engine: Any = None

    async def known(self, ids: Iterable[str]) -> set[str]:
        wanted = sorted(set(ids))
        if not self._url or not wanted or time.monotonic() < self._skip_until:
            return set()
        try:
            from sqlalchemy import select
            from sqlalchemy.ext.asyncio import create_async_engine

            from processors.warehouse.tables import lti_notices

            if self._engine is None:
                self._engine = create_async_engine(self._url, pool_size=1, max_overflow=2)
            async with asyncio.timeout(self._timeout), self._engine.connect() as conn:
                stmt = select(lti_notices.c.notice_id).where(lti_notices.c.notice_id.in_(wanted))
                return set((await conn.execute(stmt)).scalars())
        except Exception as exc:  # never fatal: the worker's primary key still dedupes
            self._skip_until = time.monotonic() + self._backoff
            log.warning("notice duplicate lookup in PostgreSQL failed; in-memory ids only for now",
                        error=exc.__class__.__name__)
            return set()

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


class LtiState:
    """Everything the LTI routes keep between requests."""

    def __init__(self, settings: Settings, jwks: JwksCache) -> None:
        self.settings = settings
        self.jwks = jwks
        try:
            self.policy: NoticePolicy | None = NoticePolicy.from_settings(settings)
        except ValueError:
            self.policy = None
        self.recent = RecentNotices()
        database_url = settings.require_database_url() if settings.database_url is not None else None
        self.ledger = NoticeLedger(database_url)
        self.tool_jwks = _tool_jwks(settings)


LTI_STATE_KEY = web.AppKey("lti_state", LtiState)


def _tool_jwks(settings: Settings) -> dict[str, Any]:
    """The tool's public key set; empty (with a logged reason) when no usable key is configured."""
    if not settings.lti_private_key_file:
        return {"keys": []}
    try:
        key = load_private_key(settings.lti_private_key_file)
    except KeyFileError as exc:
        log.error("LTI tool key unusable; serving an empty key set", error=str(exc))
        return {"keys": []}
    return {"keys": [public_jwk(key, settings.lti_tool_key_id)]}


class NoticeRejected(Exception):
    """A notice refused on its own; ``notice_id`` only once the signature proved it authentic."""

    def __init__(self, reason: str, notice_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.notice_id = notice_id


async def _verify(token: str, state: LtiState, path_deployment_id: str | None) -> tuple[Notice, str]:
    """Signature (platform JWKS, by kid) then claims; raises NoticeRejected or KeyUnavailable."""
    assert state.policy is not None
    claims: dict[str, Any] | None = None
    try:
        parts = parse_compact(token, max_len=MAX_JWT_BYTES)
        key = await state.jwks.get_key(parts.kid)
        verify_signature(parts, key)
        claims = decode_claims(parts)
        notice = validate_notice(claims, state.policy, path_deployment_id=path_deployment_id)
    except TokenRejected as exc:
        raise NoticeRejected(exc.reason, peek_notice_id(claims) if claims else None) from None
    return notice, parts.kid


async def post_notices(request: web.Request) -> web.Response:
    """A PNS batch: every notice verified on its own; per-notice results in request order."""
    state = request.app[LTI_STATE_KEY]
    path_deployment_id = request.match_info.get("deployment_id")
    try:
        async with asyncio.timeout(getattr(state.settings, "http_read_timeout_seconds", READ_TIMEOUT)):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        RESPONSES.labels("413").inc()
        return error(413, "body too large")
    except TimeoutError:
        RESPONSES.labels("408").inc()
        return error(408, "request body too slow")
    if state.policy is None:
        RESPONSES.labels("503").inc()
        log.error("LTI notice received but LTI_CLIENT_ID is not set")
        return error(503, "LTI notices are not configured on this receiver (LTI_CLIENT_ID)")
    try:
        slots = parse_batch(raw)
    except BadBatch as exc:
        RESPONSES.labels("400").inc()
        return error(400, exc.reason)

    results: list[NoticeResult] = []
    valid: list[tuple[NoticeResult, str, str]] = []  # result, token, kid
    for slot in slots:
        if slot.token is None:
            results.append(NoticeResult(slot.index, STATUS_REJECTED, error=slot.error))
            continue
        try:
            notice, kid = await _verify(slot.token, state, path_deployment_id)
        except NoticeRejected as exc:
            results.append(
                NoticeResult(slot.index, STATUS_REJECTED, exc.notice_id, error=f"invalid notice: {exc.reason}")
            )
            continue
        except KeyUnavailable:
            log.warning("LTI platform JWKS unavailable", url=state.jwks.url)
            results.append(NoticeResult(slot.index, STATUS_FAILED, error="platform signing keys unavailable"))
            continue
        result = NoticeResult(slot.index, STATUS_ACCEPTED, notice.notice_id, notice=notice)
        results.append(result)
        valid.append((result, slot.token, kid))

    await _publish_new(request.app, state, valid, path_deployment_id)

    for r in results:
        NOTICES.labels(r.status).inc()
        n = r.notice
        log.info("lti notice", index=r.index, status=r.status, notice_id=r.notice_id, error=r.error,
                 notice_type=n.notice_type if n else None, deployment_id=n.deployment_id if n else None)
    status, body = batch_response(results)
    RESPONSES.labels(str(status)).inc()
    return web.Response(body=body, status=status, content_type="application/json")


async def _publish_new(app: web.Application, state: LtiState, valid: list[tuple[NoticeResult, str, str]],
                       path_deployment_id: str | None) -> None:
    """Mark duplicates, then publish the rest and wait for every broker acknowledgement."""
    if not valid:
        return
    unseen = [r.notice_id for r, _, _ in valid if r.notice_id not in state.recent]
    stored = await state.ledger.known(i for i in unseen if i)
    batch_ids: set[str] = set()
    pending: list[tuple[NoticeResult, bytes, bytes]] = []
    assert state.policy is not None
    for result, token, kid in valid:
        nid = result.notice_id or ""
        if nid in state.recent or nid in stored or nid in batch_ids:
            result.status = STATUS_DUPLICATE
            continue
        batch_ids.add(nid)
        assert result.notice is not None
        verification = Verification(signed=True, kid=kid, issuer=state.policy.issuer, verified_at=now_iso())
        key, record = build_record(result.notice, verification, token, client_id=state.policy.client_id,
                                   path_deployment_id=path_deployment_id)
        pending.append((result, key, record.to_bytes()))
    publisher = app[PUBLISHER_KEY]
    outcomes = await asyncio.gather(*(publisher.publish(k, v) for _, k, v in pending), return_exceptions=True)
    for (result, _, _), outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            log.warning("notice publish failed", notice_id=result.notice_id, error=str(outcome)[:200])
            result.status = STATUS_FAILED
            result.error = "event store unavailable; not stored"
        else:
            state.recent.add(result.notice_id or "")


async def get_tool_jwks(request: web.Request) -> web.Response:
    """The tool's public key set (what the platform uses to check our token assertions)."""
    body = request.app[LTI_STATE_KEY].tool_jwks
    return web.json_response(body, headers={"Cache-Control": "public, max-age=300"})


def add_lti_routes(app: web.Application, settings: Settings) -> None:
    """Register the LTI routes with their own platform key cache (never the live-events one)."""
    jwks = JwksCache(settings.lti_platform_jwks_url, refetch_cooldown=settings.jwks_refetch_cooldown_seconds)
    app[LTI_STATE_KEY] = LtiState(settings, jwks)
    app.router.add_post("/lti/notices", post_notices)
    app.router.add_post("/lti/notices/{deployment_id}", post_notices)
    app.router.add_get("/.well-known/jwks.json", get_tool_jwks)

    async def close_lti(app: web.Application) -> None:
        state = app[LTI_STATE_KEY]
        await state.jwks.close()
        await state.ledger.close()

    app.on_cleanup.append(close_lti)

"""LTI routes of the ingress: PNS notices in, the tool's public key set out.

Why 200 means durable: Canvas never retries a notice, so the answer is 200 only once the broker
acknowledged every valid notice of the batch; otherwise 503 says which ones are not stored.
Duplicates (same ``notice.id``) are answered from a bounded in-memory set of recently accepted
ids and, when a :class:`NoticeLedger` is wired in (the CLI does when DATABASE_URL is set), from
the warehouse (best effort: the worker's primary key on ``notice_id`` is what guarantees a notice
is never stored twice). A notice whose nonce was seen under another notice id is a replay and is
rejected (:mod:`ingest.nonces`). The whole answer is bounded by the response deadline
(:mod:`ingest.deadline`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import Counter

from canvas_stream.errors import Refused
from canvas_stream.keys import KeyFileError, load_private_key, public_jwk
from canvas_stream.metrics import LTI_NONCE_REPLAYS
from canvas_stream.records import Verification, now_iso
from canvas_stream.settings import Settings
from ingest.deadline import NotAcknowledgedInTime, publish_within_deadline, read_body
from ingest.hello_world import HelloWorldWatch
from ingest.http import PUBLISHER_KEY, error
from ingest.jwks import JwksCache, KeyUnavailable
from ingest.nonces import NonceBackend, ReplayGuard, claim_for
from ingest.notices import (
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
from ingest.verify import ClaimsRejected, TokenRejected, verify_with

log = structlog.get_logger(__name__)

NOTICES = Counter("canvas_stream_lti_notices_total", "LTI notices by outcome", ["status"])
RESPONSES = Counter("canvas_stream_lti_responses_total", "LTI notice batch answers", ["code"])

RECENT_IDS = 10_000
READ_TIMEOUT = 10.0  # seconds for the whole body; a slow sender must not hold a handler
REPLAY_ERROR = "invalid notice: nonce already used by another notice (replay)"


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


class NoticeLedger(Protocol):
    """Which notice ids are stored already (the warehouse). The ingress imports no table: an
    implementation (``processors.warehouse.notice_ledger``) is passed in by whoever builds the app."""

    async def known(self, ids: Sequence[str]) -> set[str]: ...

    async def close(self) -> None: ...


class StoredNotices:
    """Best-effort use of a ledger: a bounded wait, and a failure only disables it for a while."""

    def __init__(self, ledger: NoticeLedger | None, *, timeout: float = 2.0, backoff: float = 30.0) -> None:
        self._ledger = ledger
        self._timeout = timeout
        self._backoff = backoff
        self._skip_until = 0.0

    async def known(self, ids: Iterable[str]) -> set[str]:
        wanted = sorted(set(ids))
        if self._ledger is None or not wanted or time.monotonic() < self._skip_until:
            return set()
        try:
            async with asyncio.timeout(self._timeout):
                return await self._ledger.known(wanted)
        except Exception as exc:  # never fatal: the worker's primary key still dedupes
            self._skip_until = time.monotonic() + self._backoff
            log.warning("notice duplicate lookup in PostgreSQL failed; in-memory ids only for now",
                        error=exc.__class__.__name__)
            return set()

    async def close(self) -> None:
        if self._ledger is not None:
            await self._ledger.close()


class LtiState:
    """Everything the LTI routes keep between requests."""

    def __init__(self, settings: Settings, jwks: JwksCache, ledger: NoticeLedger | None = None,
                 nonces: NonceBackend | None = None, hello_world: HelloWorldWatch | None = None) -> None:
        self.settings = settings
        self.jwks = jwks
        try:
            self.policy: NoticePolicy | None = NoticePolicy.from_settings(settings)
        except ValueError:
            self.policy = None
        self.recent = RecentNotices()
        self.stored = StoredNotices(ledger)
        self.replays = ReplayGuard(nonces)
        self.hello_world = hello_world
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


class NoticeRejected(Refused):
    """A notice refused on its own; ``notice_id`` only once the signature proved it authentic."""

    def __init__(self, reason: str, notice_id: str | None = None) -> None:
        super().__init__(reason)
        self.notice_id = notice_id


async def _verify(token: str, state: LtiState, path_deployment_id: str | None) -> tuple[Notice, str]:
    """The token (platform JWKS, by kid), then the LTI claims; raises NoticeRejected or KeyUnavailable."""
    assert state.policy is not None
    try:
        verified = await verify_with(token, state.jwks, state.policy.token_policy)
    except ClaimsRejected as exc:
        raise NoticeRejected(exc.reason, peek_notice_id(exc.claims)) from None
    except TokenRejected as exc:
        raise NoticeRejected(exc.reason) from None
    try:
        notice = validate_notice(verified.claims, state.policy, path_deployment_id=path_deployment_id)
    except TokenRejected as exc:
        raise NoticeRejected(exc.reason, peek_notice_id(verified.claims)) from None
    return notice, verified.kid


async def post_notices(request: web.Request) -> web.Response:
    """A PNS batch: every notice verified on its own; per-notice results in request order."""
    state = request.app[LTI_STATE_KEY]
    path_deployment_id = request.match_info.get("deployment_id")
    try:
        raw = await read_body(request, getattr(state.settings, "http_read_timeout_seconds", READ_TIMEOUT))
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

    valid = await _reject_replays(state, valid)
    await _publish_new(request, state, valid, path_deployment_id)

    for r in results:
        NOTICES.labels(r.status).inc()
        n = r.notice
        log.info("lti notice", index=r.index, status=r.status, notice_id=r.notice_id, error=r.error,
                 notice_type=n.notice_type if n else None, deployment_id=n.deployment_id if n else None)
    status, body = batch_response(results)
    RESPONSES.labels(str(status)).inc()
    return web.Response(body=body, status=status, content_type="application/json")


async def _reject_replays(state: LtiState, valid: list[tuple[NoticeResult, str, str]]
                          ) -> list[tuple[NoticeResult, str, str]]:
    """Reject the notices whose nonce was seen under another notice id; the rest go on."""
    if not valid:
        return valid
    now = time.time()
    leeway = state.policy.leeway if state.policy is not None else 0.0
    claims = []
    for result, _, _ in valid:
        assert result.notice is not None
        c = result.notice.claims
        claims.append(claim_for(c["nonce"], result.notice_id or "", float(c["exp"]), leeway, now))
    verdicts = await state.replays.replays(claims)
    kept = []
    for item, replay in zip(valid, verdicts, strict=True):
        if replay:
            result = item[0]
            LTI_NONCE_REPLAYS.inc()
            log.warning("lti notice nonce replayed under another notice id; rejected", notice_id=result.notice_id)
            result.status, result.error = STATUS_REJECTED, REPLAY_ERROR
        else:
            kept.append(item)
    return kept


async def _publish_new(request: web.Request, state: LtiState, valid: list[tuple[NoticeResult, str, str]],
                       path_deployment_id: str | None) -> None:
    """Mark duplicates, then publish the rest and wait for every broker acknowledgement."""
    if not valid:
        return
    unseen = [r.notice_id for r, _, _ in valid if r.notice_id not in state.recent]
    stored = await state.stored.known(i for i in unseen if i)
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
    publisher = request.app[PUBLISHER_KEY]
    outcomes = await publish_within_deadline(request, publisher.publish, [(k, v) for _, k, v in pending])
    for (result, _, _), outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, NotAcknowledgedInTime):
            log.warning("notice not acknowledged within the response deadline", notice_id=result.notice_id)
            result.status = STATUS_FAILED
            result.error = "event store did not acknowledge within the response deadline; it may still be stored"
        elif outcome is not None:
            log.warning("notice publish failed", notice_id=result.notice_id, error=str(outcome)[:200])
            result.status = STATUS_FAILED
            result.error = "event store unavailable; not stored"
        else:
            state.recent.add(result.notice_id or "")


async def get_tool_jwks(request: web.Request) -> web.Response:
    """The tool's public key set (what the platform uses to check our token assertions)."""
    body = request.app[LTI_STATE_KEY].tool_jwks
    return web.json_response(body, headers={"Cache-Control": "public, max-age=300"})


def add_lti_routes(app: web.Application, settings: Settings, ledger: NoticeLedger | None = None,
                   nonces: NonceBackend | None = None, hello_world: HelloWorldWatch | None = None) -> None:
    """Register the LTI routes with their own platform key cache (never the live-events one).

    ``nonces``: the shared nonce store (none: this replica's memory only); ``hello_world``: the
    hello-world check shown in /readyz (none: not checked)."""
    jwks = JwksCache(settings.lti_platform_jwks_url, refetch_cooldown=settings.jwks_refetch_cooldown_seconds)
    app[LTI_STATE_KEY] = LtiState(settings, jwks, ledger, nonces, hello_world)
    app.router.add_post("/lti/notices", post_notices)
    app.router.add_post("/lti/notices/{deployment_id}", post_notices)
    app.router.add_get("/.well-known/jwks.json", get_tool_jwks)

    async def lti_lifecycle(app: web.Application):
        state = app[LTI_STATE_KEY]
        if state.policy is not None:
            await state.replays.start()
            if state.hello_world is not None:
                await state.hello_world.start()
        yield
        if state.hello_world is not None:
            await state.hello_world.stop()
        await state.replays.stop()
        await state.jwks.close()
        await state.stored.close()

    app.cleanup_ctx.append(lti_lifecycle)

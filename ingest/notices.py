"""Pure handling of an LTI Platform Notification Service POST: split, check, record, answer.

Why per notice: a PNS batch may mix good and bad JWTs, and Canvas never retries, so one bad
notice must not cost the others. A notice token is verified like any other
(:func:`ingest.verify.verify_with` with :attr:`NoticePolicy.token_policy`, in :mod:`ingest.lti_routes`,
because keys may need fetching); what LTI adds on top of that is here, plain data in, plain data out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from canvas_stream.errors import Refused
from canvas_stream.formats import (
    CLAIM_DEPLOYMENT_ID,
    CLAIM_NOTICE,
    CLAIM_VERSION,
    FORMAT_LTI_NOTICE,
    LTI_VERSION,
    SOURCE_LTI_NOTICE,
)
from canvas_stream.records import Record, Verification, now_iso
from canvas_stream.settings import Settings
from ingest.live_events import BadBody, parse_json_object
from ingest.verify import TokenPolicy, TokenRejected

__all__ = [
    "MAX_JWT_BYTES",
    "MAX_NOTICES",
    "BadBatch",
    "Notice",
    "NoticePolicy",
    "NoticeResult",
    "Slot",
    "batch_response",
    "build_record",
    "parse_batch",
    "peek_notice_id",
    "validate_notice",
]

#: Canvas sends one notice per POST in practice; a handler's max_batch_size is usually <= 100.
MAX_NOTICES = 100
#: A notice JWT is a few KiB; 64 KiB leaves room for many assets without letting one notice
#: dominate the request.
MAX_JWT_BYTES = 64 * 1024
MAX_ID_LEN = 255

STATUS_ACCEPTED = "accepted"
STATUS_DUPLICATE = "duplicate"
STATUS_REJECTED = "rejected"
STATUS_FAILED = "failed"  # valid, but not acknowledged by the broker (or keys unavailable): 503


class BadBatch(Refused, ValueError):
    """The body as a whole is unusable (400); ``reason`` is safe to return."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One element of ``notices[]``: a token to verify, or why the element itself is unusable."""

    index: int
    token: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NoticePolicy:
    """What a notice must satisfy besides its signature (from LTI_* settings)."""

    issuer: str
    client_id: str
    deployment_ids: frozenset[str] = frozenset()
    leeway: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> NoticePolicy:
        if not settings.lti_client_id:
            raise ValueError("LTI_CLIENT_ID is not set")
        return cls(
            issuer=settings.lti_platform_issuer,
            client_id=settings.lti_client_id,
            deployment_ids=settings.deployment_ids(),
            leeway=float(settings.lti_leeway_seconds),
        )

    @property
    def token_policy(self) -> TokenPolicy:
        """The registered-claim checks every notice JWT passes (LTI 1.3 core s5.1.2 and PNS)."""
        return TokenPolicy(
            issuer=self.issuer,
            audience=self.client_id,
            leeway=self.leeway,
            require=("iss", "aud", "exp", "iat"),
            max_len=MAX_JWT_BYTES,
        )


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice whose claims passed every check."""

    notice_id: str
    notice_type: str
    timestamp: str
    deployment_id: str
    claims: dict[str, Any]


@dataclass(slots=True)
class NoticeResult:
    """What happened to one element of the batch, in request order."""

    index: int
    status: str
    notice_id: str | None = None
    error: str | None = None
    notice: Notice | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "notice_id": self.notice_id, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        return out


def parse_batch(raw: bytes, *, max_notices: int = MAX_NOTICES, max_jwt_bytes: int = MAX_JWT_BYTES) -> list[Slot]:
    """``{"notices": [{"jwt": "..."} | "<jwt>", ...]}`` -> one slot per element.

    Raises BadBatch when there is nothing to work on (not JSON, no list, empty, too many).
    A malformed element is a rejected slot, not a failed batch.
    """
    try:
        body = parse_json_object(raw.strip())
    except BadBody as exc:
        raise BadBatch(exc.reason) from None
    notices = body.get("notices")
    if not isinstance(notices, list):
        raise BadBatch("body must be an object with a 'notices' list")
    if not notices:
        raise BadBatch("'notices' is empty")
    if len(notices) > max_notices:
        raise BadBatch(f"too many notices in one batch ({len(notices)} > {max_notices})")
    slots: list[Slot] = []
    for index, element in enumerate(notices):
        token = element.get("jwt") if isinstance(element, dict) else element
        if not isinstance(token, str) or not token.strip():
            slots.append(Slot(index, error="notice must be {\"jwt\": \"<compact JWS>\"} or a JWS string"))
        elif len(token) > max_jwt_bytes:
            slots.append(Slot(index, error=f"notice JWT larger than {max_jwt_bytes} bytes"))
        else:
            slots.append(Slot(index, token=token.strip()))
    return slots


def _short_string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TokenRejected(f"missing or invalid {name}")
    if len(value) > MAX_ID_LEN:
        raise TokenRejected(f"{name} too long")
    return value


def _check_timestamp(value: Any) -> str:
    text = _short_string(value, "notice.timestamp")
    try:
        datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise TokenRejected("notice.timestamp is not ISO-8601") from None
    return text


def peek_notice_id(claims: dict[str, Any]) -> str | None:
    """The notice id, if the claims carry a sane one (to label a rejection)."""
    notice = claims.get(CLAIM_NOTICE)
    nid = notice.get("id") if isinstance(notice, dict) else None
    return nid if isinstance(nid, str) and 0 < len(nid) <= MAX_ID_LEN else None


def validate_notice(claims: dict[str, Any], policy: NoticePolicy, *, path_deployment_id: str | None = None) -> Notice:
    """The LTI checks of a PNS notice whose token passed :attr:`NoticePolicy.token_policy`; raises TokenRejected.

    Not required on purpose: ``sub``, ``roles``, ``message_type``, ``target_link_uri`` (Canvas's
    HelloWorld and ContextCopy notices lack them).
    """
    if claims.get(CLAIM_VERSION) != LTI_VERSION:
        raise TokenRejected(f"LTI version must be {LTI_VERSION}")
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise TokenRejected("missing claim 'nonce'")
    if len(nonce) > MAX_ID_LEN:  # it becomes a key of canvas_stream.lti_nonces
        raise TokenRejected("nonce too long")
    notice = claims.get(CLAIM_NOTICE)
    if not isinstance(notice, dict):
        raise TokenRejected("missing notice claim")
    notice_id = _short_string(notice.get("id"), "notice.id")
    notice_type = _short_string(notice.get("type"), "notice.type")
    timestamp = _check_timestamp(notice.get("timestamp"))
    deployment_id = _short_string(claims.get(CLAIM_DEPLOYMENT_ID), "deployment_id")
    if path_deployment_id is not None and deployment_id != path_deployment_id:
        raise TokenRejected("deployment_id does not match the handler URL")
    if policy.deployment_ids and deployment_id not in policy.deployment_ids:
        raise TokenRejected("deployment_id is not allowed (LTI_DEPLOYMENT_IDS)")
    return Notice(notice_id, notice_type, timestamp, deployment_id, claims)


def kafka_key(notice: Notice) -> bytes:
    """Type + deployment: notices of one kind for one deployment stay in order on one partition."""
    return f"lti:{notice.notice_type}:{notice.deployment_id}".encode()[:512]


def build_record(
    notice: Notice,
    verification: Verification,
    token: str,
    *,
    client_id: str,
    path_deployment_id: str | None = None,
    received_at: str | None = None,
) -> tuple[bytes, Record]:
    """The Kafka key and record for a verified notice; the JWT is kept for later audit."""
    record = Record(
        source=SOURCE_LTI_NOTICE,
        format=FORMAT_LTI_NOTICE,
        received_at=received_at or now_iso(),
        payload=notice.claims,
        verification=verification,
        raw=token,
        extra={"client_id": client_id, "path_deployment_id": path_deployment_id},
    )
    return kafka_key(notice), record


def batch_response(results: list[NoticeResult]) -> tuple[int, bytes]:
    """200 when nothing is pending a retry, else 503 (some valid notice is not durable)."""
    status = 503 if any(r.status == STATUS_FAILED for r in results) else 200
    body = {"results": [r.to_json() for r in results]}
    return status, json.dumps(body, separators=(",", ":")).encode()

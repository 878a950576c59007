"""The one record format on the wire between the ingress and the workers.

The ingress publishes what it verified (source, key id, issuer, times and the payload), so a worker
never needs signing keys and a replay can re-normalize from the topic or from ``canvas.events``.
One copy of the event per record: the payload's JSON text as it was verified (a live event's raw
token is not repeated; an LTI notice keeps its JWT in ``raw`` because ``lti_notices.jwt`` stores
it). Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from canvas_stream import json_codec

RECORD_VERSION = 1
SOURCE_LIVE_EVENT = "live_event"
SOURCE_LTI_NOTICE = "lti_notice"

FORMAT_CANVAS = "canvas"
FORMAT_CALIPER = "caliper"
FORMAT_UNKNOWN = "unknown"


class RecordError(ValueError):
    """A Kafka message that is not a canvas-stream record (quarantined, never retried forever)."""


@dataclass(frozen=True, slots=True)
class Verification:
    """How the ingress established that a delivery is authentic."""

    signed: bool
    kid: str | None = None
    issuer: str | None = None
    verified_at: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """A verified delivery, as published to Kafka."""

    source: str
    format: str
    received_at: str
    payload: dict[str, Any]
    verification: Verification
    raw: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    v: int = RECORD_VERSION
    # The payload's JSON text when it is at hand (the verified token's payload segment, the unsigned
    # body, or the record's own bytes on the worker): published and stored as is, never re-encoded.
    payload_json: bytes | None = field(default=None, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """Compact JSON: the small envelope encoded, the payload's own text spliced in when known."""
        v = self.verification
        envelope = json_codec.dumps({
            "source": self.source,
            "format": self.format,
            "received_at": self.received_at,
            "verification": {"signed": v.signed, "kid": v.kid, "issuer": v.issuer, "verified_at": v.verified_at},
            "raw": self.raw,
            "extra": self.extra,
            "v": self.v,
        })
        # The stdlib encodes a payload without text: it writes NaN/Infinity, which the worker refuses
        # (quarantine), where msgspec would silently write null.
        payload = self.payload_json if self.payload_json is not None else json.dumps(
            self.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        return b"".join((envelope[:-1], b',"payload":', payload, b"}"))

    @property
    def received_datetime(self) -> datetime:
        return datetime.fromisoformat(self.received_at)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def record_from_bytes(data: bytes) -> Record:
    """Decode a Kafka message value (once); raises RecordError for anything else."""
    try:
        obj = json_codec.loads(data)
    except ValueError as exc:  # UnicodeDecodeError included
        raise RecordError("message is not JSON") from exc
    if not isinstance(obj, dict) or obj.get("v") != RECORD_VERSION:
        raise RecordError("message is not a canvas-stream record")
    try:
        verification = Verification(**obj["verification"])
        record = Record(
            source=str(obj["source"]),
            format=str(obj["format"]),
            received_at=str(obj["received_at"]),
            payload=obj["payload"],
            verification=verification,
            raw=obj.get("raw"),
            extra=obj.get("extra") or {},
            payload_json=json_codec.payload_text(data),
        )
        record.received_datetime  # noqa: B018 - validates the timestamp
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"record is malformed: {exc.__class__.__name__}") from exc
    if not isinstance(record.payload, dict):
        raise RecordError("record payload is not an object")
    return record


def detect_format(payload: Any) -> str:
    """Canvas format is ``{metadata, body}``; Caliper is the envelope with ``data[]``."""
    if isinstance(payload, dict):
        if isinstance(payload.get("metadata"), dict) and "body" in payload:
            return FORMAT_CANVAS
        if isinstance(payload.get("data"), list) and ("sensor" in payload or "dataVersion" in payload):
            return FORMAT_CALIPER
    return FORMAT_UNKNOWN


def partition_key(payload: dict[str, Any], fmt: str) -> bytes:
    """Key so that events about one course (else one user) land on one partition, in order."""
    if fmt == FORMAT_CANVAS:
        meta = payload.get("metadata") or {}
        body = payload.get("body") if isinstance(payload.get("body"), dict) else {}
        if meta.get("context_type") == "Course" and meta.get("context_id"):
            return f"course:{meta['context_id']}".encode()
        if body.get("course_id"):
            return f"course:{body['course_id']}".encode()
        user = meta.get("user_id") or body.get("user_id")
        if user:
            return f"user:{user}".encode()
        return f"event:{meta.get('event_name', '')}".encode()
    if fmt == FORMAT_CALIPER:
        data = payload.get("data") or []
        first = data[0] if data and isinstance(data[0], dict) else {}
        group = first.get("group") if isinstance(first.get("group"), dict) else {}
        actor = first.get("actor") if isinstance(first.get("actor"), dict) else {}
        for candidate in (group.get("id"), actor.get("id")):
            if isinstance(candidate, str) and candidate:
                return candidate.encode()[:256]
        return b"caliper"
    return b"unknown"

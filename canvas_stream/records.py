"""The one record format on the wire between the ingress and the workers.

The ingress publishes what it verified (source, key id, issuer, times and the payload), so a worker
never needs signing keys and a replay can re-normalize from the topic or from the ``events`` table.
One copy of the event per record: the payload's JSON text as it was verified (a live event's raw
token is not repeated; an LTI notice keeps its JWT in ``raw`` because ``lti_notices.jwt`` stores
it). Pure: no I/O.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from canvas_stream import json_codec
from canvas_stream.errors import CanvasStreamError
from canvas_stream.formats import (
    FORMAT_CALIPER,
    FORMAT_CANVAS,
    FORMAT_UNKNOWN,
    SOURCE_LIVE_EVENT,
    SOURCE_LTI_NOTICE,
)

# The sources and formats are defined in canvas_stream.formats; they stay importable from here
# because the record is where readers look for them.
__all__ = [
    "FORMAT_CALIPER",
    "FORMAT_CANVAS",
    "FORMAT_UNKNOWN",
    "RECORD_VERSION",
    "SOURCE_LIVE_EVENT",
    "SOURCE_LTI_NOTICE",
    "Record",
    "RecordError",
    "Verification",
    "arrival_of",
    "detect_format",
    "now_iso",
    "partition_key",
    "record_from_arrival",
    "record_from_bytes",
]

RECORD_VERSION = 1

# ``Record.extra`` key: the delivery was authentic but is not an event (e.g. an SQS body that is not
# JSON); the worker quarantines the record with this reason instead of guessing.
EXTRA_NOT_AN_EVENT = "not_an_event"


@dataclass(slots=True)
class Verification:
    """How the ingress established that a delivery is authentic."""

    signed: bool
    kid: str | None = None
    issuer: str | None = None
    verified_at: str | None = None


DELIVERY_HTTPS = "https"
DELIVERY_SQS = "sqs"


@dataclass(slots=True)
class Delivery:
    """How the event reached us: the Data Services subscription (HTTPS) or the queue (SQS) it came by."""

    method: str  # DELIVERY_HTTPS | DELIVERY_SQS
    subscription_id: str | None = None  # signed HTTPS: the token's subscription.id
    queue: str | None = None  # SQS: the queue URL
    message_id: str | None = None  # SQS: the message id

    @property
    def delivered_by(self) -> str | None:
        """The subscription, or for SQS the queue (the queue is the subscription)."""
        return self.subscription_id or self.queue


@dataclass(slots=True)
class Record:
    """A verified delivery, as published to Kafka.

    Never changed once built, but not frozen (nor are ``Verification`` and ``Delivery``): a frozen
    dataclass sets each field through ``object.__setattr__``, and the worker builds all three for
    every message it decodes (~1 us of its ~130 us per event).
    """

    source: str
    format: str
    received_at: str
    payload: dict[str, Any]
    verification: Verification
    raw: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    delivery: Delivery | None = None
    v: int = RECORD_VERSION
    # The payload's JSON text when it is at hand (the verified token's payload segment, the unsigned
    # body, or the record's own bytes on the worker): published and stored as is, never re-encoded.
    payload_json: bytes | None = field(default=None, compare=False, repr=False)
    # ``received_at`` parsed, once (validation and every normalizer read it).
    _received: datetime | None = field(default=None, init=False, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """Compact JSON: the small envelope encoded, the payload's own text spliced in when known."""
        v, d = self.verification, self.delivery
        envelope = json_codec.dumps({
            "source": self.source,
            "format": self.format,
            "received_at": self.received_at,
            "verification": {"signed": v.signed, "kid": v.kid, "issuer": v.issuer, "verified_at": v.verified_at},
            "raw": self.raw,
            "extra": self.extra,
            "delivery": None if d is None else {"method": d.method, "subscription_id": d.subscription_id,
                                                "queue": d.queue, "message_id": d.message_id},
            "v": self.v,
        })
        # The stdlib encodes a payload without text: it writes NaN/Infinity, which the worker refuses
        # (quarantine), where msgspec would silently write null.
        payload = self.payload_json if self.payload_json is not None else json.dumps(
            self.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        return b"".join((envelope[:-1], b',"payload":', payload, b"}"))

    @property
    def received_datetime(self) -> datetime:
        moment = self._received
        if moment is None:
            moment = datetime.fromisoformat(self.received_at)
            self._received = moment  # a cache, not state
        return moment


def arrival_of(record: Record, *, with_raw: bool = False) -> dict[str, Any]:
    """Everything a record carries besides its payload and receipt time, as JSON (``events.arrival``).

    With the payload and ``received_at`` that ``events`` keeps, :func:`record_from_arrival` rebuilds
    the record the worker normalized, so a replay normalizes exactly what the live path did. ``raw``
    is kept only where the normalizer reads it (an LTI notice's JWT); a live event's raw body is its
    payload again, signed.
    """
    v, d = record.verification, record.delivery
    out: dict[str, Any] = {
        "source": record.source,
        "verification": {"signed": v.signed, "kid": v.kid, "issuer": v.issuer, "verified_at": v.verified_at},
    }
    if d is not None:
        out["delivery"] = {"method": d.method, "subscription_id": d.subscription_id, "queue": d.queue,
                           "message_id": d.message_id}
    if record.extra:
        out["extra"] = record.extra
    if with_raw and record.raw is not None:
        out["raw"] = record.raw
    return out


# -- decoding: a stored arrival or a Kafka message back into a Record -----------------------------


class RecordError(CanvasStreamError, ValueError):
    """A Kafka message that is not a canvas-stream record (quarantined, never retried forever)."""


def record_from_arrival(arrival: dict[str, Any], *, fmt: str, payload: dict[str, Any], received_at: str) -> Record:
    """The record an ``events`` row came from (see :func:`arrival_of`); raises RecordError when malformed."""
    try:
        delivery = arrival.get("delivery")
        return Record(
            source=str(arrival["source"]),
            format=fmt,
            received_at=received_at,
            payload=payload,
            verification=Verification(**arrival["verification"]),
            raw=arrival.get("raw"),
            extra=dict(arrival.get("extra") or {}),
            delivery=Delivery(**delivery) if delivery else None,
        )
    except (AttributeError, KeyError, TypeError) as exc:
        raise RecordError(f"stored arrival is malformed: {exc.__class__.__name__}") from exc


# The text of the current second, "YYYY-MM-DDTHH:MM:SS", made once per second: ``isoformat`` formats
# every field on every call (~11k instructions; the ingress stamps every event).
_second_text: tuple[int, str] = (-1, "")


def iso_of_ns(ns: int) -> str:
    """``datetime.fromtimestamp(ns / 1e9, UTC).isoformat()`` to the microsecond (floored, as
    ``datetime.now`` does), with the date and time of day formatted once per second."""
    global _second_text
    seconds, micros = divmod(ns // 1000, 1_000_000)
    second, text = _second_text
    if second != seconds:
        text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_text = (seconds, text)
    # isoformat leaves the fraction out when it is zero
    return f"{text}.{micros:06d}+00:00" if micros else f"{text}+00:00"


def now_iso() -> str:
    """The current UTC time as ``datetime.now(UTC).isoformat()`` writes it."""
    return iso_of_ns(time.time_ns())


def record_from_bytes(data: bytes | None) -> Record:
    """Decode a Kafka message value (once); raises RecordError for anything else, a record with no
    value (a tombstone: anyone may write one to the topic) included."""
    try:
        obj = json_codec.loads(data)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError included; TypeError: no value at all
        raise RecordError("message has no value" if data is None else "message is not JSON") from exc
    if not isinstance(obj, dict) or obj.get("v") != RECORD_VERSION:
        raise RecordError("message is not a canvas-stream record")
    try:
        verification = Verification(**obj["verification"])
        delivery = Delivery(**obj["delivery"]) if obj.get("delivery") else None  # absent in older records
        record = Record(
            source=str(obj["source"]),
            format=str(obj["format"]),
            received_at=str(obj["received_at"]),
            payload=obj["payload"],
            verification=verification,
            raw=obj.get("raw"),
            extra=obj.get("extra") or {},
            payload_json=json_codec.payload_text(data),
            delivery=delivery,
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
    try:
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
    except UnicodeEncodeError:
        # An id with a lone surrogate escape ("\ud800" is valid JSON; records keep such text with
        # surrogatepass): no key of its own, but published, not a 500 that Canvas would retry forever.
        return f"{fmt}:unkeyable".encode()
    return b"unknown"

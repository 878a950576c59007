"""Pure handling of one SQS message: what it is, and the Kafka record it becomes. No I/O.

Canvas's SQS delivery puts the event JSON (Canvas or Caliper format, no JWT: the queue's access
policy is the authentication) in the message body. An event becomes the same record the HTTPS
ingress publishes (``ingest.live_events.build_record``), with the delivery method, queue and
message id on it; a body that is not an event becomes a record the worker quarantines with the
reason (so it is kept, and can be deleted from the queue: no poison loop); an event of another
tenant is refused by the same binding as HTTPS.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from canvas_stream.records import (
    DELIVERY_SQS,
    EXTRA_NOT_AN_EVENT,
    FORMAT_UNKNOWN,
    SOURCE_LIVE_EVENT,
    Delivery,
    Record,
    Verification,
    now_iso,
)
from canvas_stream.tenancy import DeliveryKind, Refusal, TenantPolicy
from ingest.live_events import BadBody, build_record, parse_json_object


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """The parts of a received SQS message that matter here."""

    queue_url: str
    message_id: str
    receipt_handle: str
    body: str
    sent_timestamp_ms: int | None = None

    @classmethod
    def from_api(cls, queue_url: str, message: Mapping[str, Any]) -> SqsMessage:
        """From one entry of ReceiveMessage's ``Messages``."""
        attributes = message.get("Attributes") or {}
        sent = attributes.get("SentTimestamp")
        return cls(
            queue_url=queue_url,
            message_id=str(message.get("MessageId") or ""),
            receipt_handle=str(message["ReceiptHandle"]),
            body=message.get("Body") if isinstance(message.get("Body"), str) else "",
            sent_timestamp_ms=int(sent) if isinstance(sent, str) and sent.isdigit() else None,
        )

    @property
    def received_at(self) -> str:
        """When the message entered our queue (the same for every redelivery), else now."""
        if self.sent_timestamp_ms is None:
            return now_iso()
        return datetime.fromtimestamp(self.sent_timestamp_ms / 1000, UTC).isoformat()

    @property
    def delivery(self) -> Delivery:
        return Delivery(method=DELIVERY_SQS, queue=self.queue_url, message_id=self.message_id or None)


class Action(enum.Enum):
    PUBLISH = "publish"  # an event: publish, then delete
    QUARANTINE = "quarantine"  # not an event: publish for the quarantine, then delete
    REFUSE = "refuse"  # another tenant's event: delete without publishing


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one message; ``key``/``value`` are the Kafka record (empty when refused)."""

    message: SqsMessage
    action: Action
    key: bytes = b""
    value: bytes = b""
    reason: str | None = None
    refusal: Refusal | None = None
    payload: dict[str, Any] | None = None


def quarantine_record(message: SqsMessage, reason: str, raw: bytes) -> tuple[bytes, Record]:
    """A record the worker stores in ``canvas_stream.quarantine`` with ``reason`` and the body as received
    (bytes that are not UTF-8 escaped, as the ingress does)."""
    record = Record(
        source=SOURCE_LIVE_EVENT,
        format=FORMAT_UNKNOWN,
        received_at=message.received_at,
        payload={},
        verification=Verification(signed=False, verified_at=now_iso()),
        raw=raw.decode("utf-8", errors="backslashreplace"),
        extra={EXTRA_NOT_AN_EVENT: reason},
        delivery=message.delivery,
    )
    return f"sqs:{message.message_id}".encode()[:256], record


def plan_message(message: SqsMessage, policy: TenantPolicy, *, max_body_bytes: int) -> Plan:
    """Decide one message's fate: publish it as an event, quarantine it, or refuse it."""
    raw = message.body.encode("utf-8", errors="surrogatepass")
    try:
        if len(raw) > max_body_bytes:
            raise BadBody(f"body larger than MAX_BODY_BYTES ({max_body_bytes})")
        payload = parse_json_object(raw)
    except BadBody as exc:
        key, record = quarantine_record(message, f"SQS message is not an event: {exc.reason}", raw)
        return Plan(message, Action.QUARANTINE, key, record.to_bytes(), reason=exc.reason)
    refusal = policy.decide(DeliveryKind.SQS, payload)
    if refusal is not None:
        return Plan(message, Action.REFUSE, reason=refusal.value, refusal=refusal, payload=payload)
    verification = Verification(signed=False, verified_at=now_iso())  # the queue's access policy authenticated it
    # The body is the payload's own JSON text: it travels as is (one copy, not encoded again).
    key, record = build_record(payload, verification, raw, message.received_at, delivery=message.delivery)
    return Plan(message, Action.PUBLISH, key, record.to_bytes())

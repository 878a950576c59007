"""Pure handling of a Live Events POST body: what it is, and the record it becomes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from canvas_stream.errors import Refused
from canvas_stream.formats import SOURCE_LIVE_EVENT
from canvas_stream.records import Delivery, Record, Verification, detect_format, now_iso, partition_key
from ingest.json_guard import nested_deeper_than


class BadBody(Refused, ValueError):
    """The body is neither a JSON object nor a compact JWS; ``reason`` is safe to return."""


@dataclass(frozen=True, slots=True)
class Body:
    """A classified body: ``token`` for a signed delivery, ``payload`` (and its text) for plain JSON."""

    token: str | None = None
    payload: dict[str, Any] | None = None
    payload_json: bytes | None = None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict UTF-8 JSON object with bounded nesting (a JSON bomb is refused, not parsed)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("body is not UTF-8") from None
    if nested_deeper_than(text):
        raise BadBody("JSON nested too deeply")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadBody("body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadBody("JSON body is not an object")
    return value


def classify_body(raw: bytes) -> Body:
    """``{...}`` is an unsigned event; anything else is a compact JWS, maybe wrapped in quotes."""
    stripped = raw.strip()
    if not stripped:
        raise BadBody("empty body")
    if stripped[:1] == b"{":
        return Body(payload=parse_json_object(stripped), payload_json=stripped)
    if stripped[:1] == b'"' and stripped[-1:] == b'"' and len(stripped) >= 2:
        stripped = stripped[1:-1].strip()
    try:
        token = stripped.decode("ascii")
    except UnicodeDecodeError:
        raise BadBody("token is not ASCII") from None
    first = token.find(".")  # exactly two dots, found with memchr rather than counted char by char
    second = token.find(".", first + 1) if first >= 0 else -1
    if second < 0 or token.find(".", second + 1) >= 0:
        raise BadBody("body is neither JSON nor a compact JWT")
    return Body(token=token)


def build_record(
    payload: dict[str, Any], verification: Verification, payload_json: bytes | None, received_at: str | None = None,
    delivery: Delivery | None = None,
) -> tuple[bytes, Record]:
    """The Kafka key and record for a verified event (any format; unknown ones are quarantined later),
    for either delivery method (HTTPS or SQS).

    One copy of the event: ``payload_json`` (the verified token's payload segment, or the unsigned
    body) travels as is; the raw token is not repeated (the worker never reads it, and ``verification``
    says how the event was checked).
    """
    fmt = detect_format(payload)
    record = Record(
        source=SOURCE_LIVE_EVENT,
        format=fmt,
        received_at=received_at or now_iso(),
        payload=payload,
        verification=verification,
        payload_json=payload_json,
        delivery=delivery,
    )
    return partition_key(payload, fmt), record

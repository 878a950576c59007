"""Pure handling of a Live Events POST body: what it is, and the record it becomes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from canvas_stream.records import SOURCE_LIVE_EVENT, Record, Verification, detect_format, now_iso, partition_key

MAX_JSON_DEPTH = 64


class BadBody(ValueError):
    """The body is neither a JSON object nor a compact JWS; ``reason`` is safe to return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Body:
    """A classified body: ``token`` for a signed delivery, ``payload`` (and its text) for plain JSON."""

    token: str | None = None
    payload: dict[str, Any] | None = None
    payload_json: bytes | None = None


def _depth_ok(text: str, limit: int) -> bool:
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict UTF-8 JSON object with bounded nesting (a JSON bomb is refused, not parsed)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("body is not UTF-8") from None
    if not _depth_ok(text, MAX_JSON_DEPTH):
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
    if token.count(".") != 2:
        raise BadBody("body is neither JSON nor a compact JWT")
    return Body(token=token)


def build_record(
    payload: dict[str, Any], verification: Verification, payload_json: bytes | None, received_at: str | None = None
) -> tuple[bytes, Record]:
    """The Kafka key and record for a verified event (any format; unknown ones are quarantined later).

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
    )
    return partition_key(payload, fmt), record

"""Canvas-format live events (``{metadata, body}``) to an event row and row changes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from canvas_stream import json_codec
from canvas_stream.records import Record, arrival_of
from canvas_stream.tenancy import canvas_root_account_uuid

from .apply import add_event, apply_mapping
from .event_map import resolve_event_name
from .ids import IdPolicy, canvas_event_shard
from .model import NormalizationError, Normalized, parse_time


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: the text event ids hash."""
    return json_codec.canonical(value).decode()


# Where a stored payload that canvas-stream rewrote (pseudonymized, or redacted by an erasure) keeps
# its original id: the id is the hash of the payload as Canvas sent it (processors/privacy).
PINNED_ID_KEY = "canvas_stream_event_id"
_HEX = "0123456789abcdef"


def canvas_event_id(payload: Mapping[str, Any]) -> str:
    """sha256 of the canonical ``{metadata, body}``: JWT claims (iss, exp, ...) are left out, so a
    retry that Canvas re-signs maps to the same id. A stored payload rewritten after it arrived
    carries its original id under ``PINNED_ID_KEY``."""
    pinned = payload.get(PINNED_ID_KEY)
    if type(pinned) is str and len(pinned) == 64 and not pinned.strip(_HEX):
        return pinned
    event = {"metadata": payload.get("metadata"), "body": payload.get("body")}
    return hashlib.sha256(json_codec.canonical(event)).hexdigest()


class _EventText(msgspec.Struct):
    metadata: msgspec.Raw = msgspec.Raw(b"")
    body: msgspec.Raw = msgspec.Raw(b"")


_EVENT_TEXT = msgspec.json.Decoder(_EventText)


def stored_text(record: Record) -> bytes | None:
    """The stored payload ``{metadata, body}`` as JSON, cut from the record's text (None: not at hand)."""
    if record.payload_json is None:
        return None
    found = json_codec.member_text(record.payload_json, _EVENT_TEXT)
    if found is None or not found.metadata or not found.body:
        return None
    return b"".join((b'{"metadata":', found.metadata, b',"body":', found.body, b"}"))


def normalize_canvas(record: Record, ids: IdPolicy) -> Normalized:
    payload = record.payload
    meta = payload.get("metadata")
    if not isinstance(meta, dict):
        raise NormalizationError("canvas event without a metadata object")
    name = meta.get("event_name")
    if not isinstance(name, str) or not name:
        raise NormalizationError("canvas event without metadata.event_name")
    if meta.get("event_time") in (None, ""):
        raise NormalizationError(f"{name[:60]}: no metadata.event_time")
    event_time = parse_time(meta.get("event_time"))
    body = payload.get("body")
    if not isinstance(body, dict):
        raise NormalizationError(f"{name[:60]}: body is not an object")

    event_id = canvas_event_id(payload)
    shard = canvas_event_shard(meta)
    event_ids = ids.for_event(shard)
    out = Normalized(shards=[] if shard is None else [shard])
    mapped = resolve_event_name(name, body)
    applied = apply_mapping(mapped, meta, body, event_id=event_id, event_time=event_time, ids=event_ids,
                            label=name)
    context_type = meta.get("context_type")
    add_event(out, applied, meta, event_ids, event_id=event_id, name=name, fmt="canvas", event_time=event_time,
              received_at=record.received_datetime, payload={"metadata": meta, "body": body},
              payload_json=stored_text(record), context_type=context_type if isinstance(context_type, str) else None,
              root_account_uuid=canvas_root_account_uuid(meta),
              subscription=record.delivery.delivered_by if record.delivery else None, arrival=arrival_of(record))
    return out

"""The one internal model both event formats normalize into.

Normalizers are pure: a verified record goes in, plain row changes come out. Nothing here
imports aiohttp, faust or SQLAlchemy, so the corpus tests run without servers and the stream
engine stays replaceable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from canvas_stream.errors import CanvasStreamError

from .ids import InvalidId, parse_id


class NormalizationError(CanvasStreamError, ValueError):
    """An authentic event we cannot turn into rows; the worker quarantines it with this reason."""


@dataclass(slots=True)
class EventRow:
    """One row of the ``events`` table: a distinct event, whatever else it feeds.

    Not frozen, though nothing changes it after it is built (``dataclasses.replace`` makes the
    pseudonymized copy): a frozen dataclass sets each of its 20 fields through ``object.__setattr__``,
    which made building one per event ~2.5x dearer.
    """

    event_id: str
    event_name: str
    format: str  # "canvas" | "caliper" | "lti_notice"
    event_time: datetime  # history_time(): the epoch when the event carries no time (a partition key)
    received_at: datetime
    user_id: int | None
    context_type: str | None
    context_id: int | None
    payload: Mapping[str, Any]
    # ``payload`` as JSON text, when it could be taken from the record's own text: the writer stores
    # it as is instead of encoding ``payload`` again.
    payload_json: bytes | None = field(default=None, compare=False, repr=False)
    subscription: str | None = None  # the delivering subscription id, or the SQS queue
    root_account_uuid: str | None = None
    happening_id: str | None = None  # see ``happening``; None: the event id
    request_id: str | None = None
    real_user_id: int | None = None
    user_login: str | None = None
    user_sis_id: str | None = None
    root_account_id: int | None = None
    arrival: Mapping[str, Any] | None = None  # the record's delivery context (replay rebuilds the record)


@dataclass(slots=True)
class RowChange:
    """The columns one event carries for one row of an entity or fact table (not frozen, for the
    same reason as ``EventRow``; never changed once built).

    ``version`` orders changes: the latest event time wins per column, ties broken by event id,
    so any order or number of deliveries ends in the same row.
    """

    table: str
    key: Mapping[str, Any]
    fields: Mapping[str, Any]
    version: str


@dataclass(slots=True)
class Normalized:
    """Everything one record turns into, plus what the mapping did not recognise."""

    events: list[EventRow] = field(default_factory=list)
    changes: list[RowChange] = field(default_factory=list)
    unknown_events: list[str] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)
    shards: list[int] = field(default_factory=list)  # the Canvas shard of each event that names one

    def extend(self, other: Normalized) -> None:
        self.events.extend(other.events)
        self.changes.extend(other.changes)
        self.unknown_events.extend(other.unknown_events)
        self.unknown_fields.extend(other.unknown_fields)
        self.shards.extend(other.shards)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def history_time(event_time: datetime | None) -> datetime:
    """The time an ``events`` row is filed under: the event's own time, or the epoch when it has none.

    It is the partition key, so it is never NULL, and it depends on the event alone (never on when it
    was received): a redelivery a month later lands in the same partition and hits the same key.
    """
    return EPOCH if event_time is None else event_time


def happening_time(event_time: datetime | None) -> datetime:
    """The time a fact row is filed under: the happening's time truncated to the second (the epoch
    without one). The Canvas and the Caliper delivery of one happening share the second (it is part of
    ``happening_id``) but may differ below it, so the fact's key, partition included, is the same for
    both and for every redelivery."""
    return history_time(event_time).replace(microsecond=0)


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 (Canvas sends milliseconds and a ``Z``) to an aware UTC datetime; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise NormalizationError(f"time is not a string: {type(value).__name__}")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise NormalizationError(f"unparseable time {value[:40]!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def make_version(event_time: datetime | None, event_id: str) -> str:
    """A string that sorts like (event time, event id) under byte order (COLLATE "C")."""
    moment = event_time  # parse_time's times are already in UTC (its own tzinfo): no astimezone for them
    if moment is None or moment.tzinfo is not UTC:
        moment = (moment or EPOCH).astimezone(UTC)
    if moment.year < 1000:  # strftime does not pad %Y; isoformat would (and is 5x faster otherwise)
        return f"{moment.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z|{event_id}"
    return f"{moment.isoformat(timespec='microseconds')[:-6]}Z|{event_id}"  # less its "+00:00"


def to_id(value: Any) -> int | None:
    """A Canvas id as written (string or number, either form, or a Caliper urn) as an int; None if absent.

    The form is left as the event wrote it: the stored form comes from ``ids.EventIds``.
    """
    try:
        return parse_id(value)
    except InvalidId as exc:
        raise NormalizationError(str(exc)) from exc

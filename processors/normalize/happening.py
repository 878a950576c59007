"""One happening, counted once: the id a Canvas and a Caliper delivery of the same happening share.

An institution subscribed in both formats (or moving from one to the other) receives each happening
twice, as two events with different event ids. Fact tables are keyed by the happening instead, so a
grade change, a page view or a login is one row however many subscriptions delivered it; both
deliveries stay in ``events`` with the same ``happening_id``. Pure: no I/O.

A happening is identified by what both formats carry, read after normalization (so both compare
the same coerced values):

- its cause: the Canvas web request (``metadata.request_id`` / the Caliper ``com.instructure.canvas``
  extension's ``request_id``), else the background job (``job_id``);
- its event type: the Canvas name both formats are mapped under;
- its object: the columns ``event_map.BOTH_FORMATS`` names (e.g. the submission of a grade_change,
  the asset of a page view, the user of a login), read from the event's row changes;
- its time, truncated to the second (the two formats may carry different precision).

Only types Canvas sends in both formats are correlated, and only when the cause, the object and the
time are known: a type sent in one format cannot arrive as two different events, and without a cause
two genuinely different happenings could look alike. In every other case the happening is the event
itself (``happening_id == event_id``), which never merges two happenings.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from .event_map import BOTH_FORMATS
from .model import RowChange

# Bumped if the derivation ever changes (ids would change, so a replay is needed).
DERIVATION = "happening/1"
_SEPARATOR = "\x1f"  # ASCII unit separator: not part of an id, a name or a request id


def cause_of(meta: Mapping[str, Any]) -> str | None:
    """The request (or, for an event of a background job, the job) that emitted the event."""
    request = meta.get("request_id")
    if isinstance(request, str) and request:
        return f"request:{request}"
    job = meta.get("job_id")
    if isinstance(job, str | int) and not isinstance(job, bool) and str(job):
        return f"job:{job}"
    return None


def object_of(event_name: str, changes: Iterable[RowChange]) -> list[Any] | None:
    """The object columns of a correlated event type, read from its row changes; None when the type is
    not correlated or the event names no object."""
    where = BOTH_FORMATS.get(event_name)
    if where is None:
        return None
    for change in changes:
        if change.table == where.table:
            key, fields = change.key, change.fields
            values = [key[c] if c in key else fields.get(c) for c in where.columns]
            return None if values.count(None) == len(values) else values
    return None


def happening_id(event_id: str, event_name: str, meta: Mapping[str, Any], event_time: datetime | None,
                 obj: list[Any] | None) -> str:
    """The happening id of one event: derived from cause, type, object and second, else the event id."""
    if obj is None or event_time is None:
        return event_id
    cause = cause_of(meta)
    if cause is None:
        return event_id
    second = math.floor(event_time.timestamp())  # whole seconds since the epoch, UTC
    values = _SEPARATOR.join(f"{type(v).__name__}:{v}" for v in obj)  # ids and names, typed
    text = _SEPARATOR.join((DERIVATION, cause, event_name, values, str(second)))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def metadata_columns(meta: Mapping[str, Any], to_id: Callable[[Any], int | None]) -> dict[str, Any]:
    """What an event's metadata says about the acting user and the request, as ``events`` columns.

    ``to_id`` reads a Canvas id the way the event's ``user_id`` is read (None when it is not one).
    """
    real_user, root_account = meta.get("real_user_id"), meta.get("root_account_id")
    return {
        "request_id": _text(meta.get("request_id")),
        "real_user_id": None if real_user is None else to_id(real_user),
        "user_login": _text(meta.get("user_login")),
        "user_sis_id": _text(meta.get("user_sis_id")),
        "root_account_id": None if root_account is None else to_id(root_account),
    }

"""What erasure does to one event and the rows it feeds (pure): drop it, or keep it redacted.

The rule is the schema's (``schema.PersonRef``): an event is **about** a person when a row it feeds
names them in a SUBJECT column (their enrollment, their page view, their submission, their
post): such an event and all its rows are dropped. Any other event that names them (as grader,
observer, masquerading admin, uploader, in a URL) is kept with them redacted: REFERENCE columns
cleared, ids and identifiers in text and JSON replaced, tokens that name them dropped. The
``erase`` command applies this to stored events (normalizing their payloads again) and the
workers to events arriving after an erasure (``guard``), so both end in the same rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from processors.normalize.model import EventRow, Normalized, RowChange
from processors.privacy.match import _JWS, Matcher
from processors.privacy.pseudonymize import pin_event_id
from processors.warehouse.schema import TABLE_SPECS, Kind, Personal, PersonRef, Role


@dataclass(frozen=True)
class PersonColumn:
    name: str
    kind: Kind
    ref: PersonRef

    def applies(self, row: dict[str, Any]) -> bool:
        """The column's condition holds (``None`` when the row does not say: treated as holding only if
        the column is unconditional)."""
        if self.ref.when is None:
            return True
        column, value = self.ref.when
        return str(row.get(column, "")).lower() == value.lower()


def _person_columns(role: Role) -> dict[str, tuple[PersonColumn, ...]]:
    return {name: tuple(PersonColumn(c.name, c.kind, c.person) for c in spec.all_columns()
                        if c.person is not None and c.person.role is role)
            for name, spec in TABLE_SPECS.items()}


SUBJECT_COLUMNS = _person_columns(Role.SUBJECT)
REFERENCE_COLUMNS = _person_columns(Role.REFERENCE)
CONTENT_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c.name for c in spec.all_columns() if c.personal in (Personal.CONTENT, Personal.NAME))
    for name, spec in TABLE_SPECS.items()
}
# Text columns that identify someone by value (login, email, SIS or LTI id) without naming the row's
# person in the schema: cleared in kept rows when they hold one of the people's identifiers.
IDENTIFYING_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c.name for c in spec.all_columns() if c.kind is Kind.TEXT and c.person is None
                and c.personal in (Personal.LOGIN, Personal.EMAIL, Personal.USER_ID))
    for name, spec in TABLE_SPECS.items()
}
TOKEN_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c.name for c in spec.all_columns() if c.personal is Personal.TOKEN)
    for name, spec in TABLE_SPECS.items()
}


def names_person(matcher: Matcher, column: PersonColumn, value: Any) -> bool:
    """A typed column's value is one of the people (ids in their stored form)."""
    return value is not None and matcher.column_matches(value)


def row_is_about(matcher: Matcher, table: str, row: dict[str, Any]) -> bool:
    """A row (key and fields together) whose SUBJECT column names one of the people."""
    return any(c.name in row and c.applies(row) and names_person(matcher, c, row[c.name])
               for c in SUBJECT_COLUMNS.get(table, ()))


def redact_value(matcher: Matcher, value: Any, *, names: bool, linked: bool = False) -> tuple[Any, int]:
    """A text or JSON column value with the people redacted; names only where the value (or its row,
    ``linked``) names them otherwise."""
    if isinstance(value, str):
        if _JWS.match(value) and matcher.token_names_someone(value):
            return None, 1
        try:
            parsed = json.loads(value) if value[:1] in "{[" else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict | list):  # a JSON document kept as text (a quarantined record)
            redacted, found = matcher.redact(parsed, names=names, linked=linked)
            if found.count:
                return json.dumps(redacted, separators=(",", ":"), ensure_ascii=False), found.count
            return value, 0
        text, count = matcher.redact_text(value)
        if (count or linked) and names:
            text, more = matcher.redact_text(text, names=True)
            count += more
        return text, count
    redacted, found = matcher.redact(value, names=names, linked=linked)
    return redacted, found.count


def redact_row(matcher: Matcher, table: str, row: dict[str, Any], *, names: bool) -> tuple[dict[str, Any], int]:
    """The columns of a kept row that change: references cleared (and what they clear), content redacted."""
    changed: dict[str, Any] = {}
    for column in REFERENCE_COLUMNS.get(table, ()):
        if column.name in row and column.applies(row) and names_person(matcher, column, row[column.name]):
            changed[column.name] = None
            changed.update(dict.fromkeys((c for c in column.ref.clears if c in row), None))
    for name in IDENTIFYING_COLUMNS.get(table, ()):
        if name in row and name not in changed and matcher.is_identifier(row[name]):
            changed[name] = None
    linked = bool(changed)
    for name in TOKEN_COLUMNS.get(table, ()):
        if name in row and name not in changed and isinstance(row[name], str) and \
                (linked or matcher.token_names_someone(row[name])):
            changed[name] = None
    for name in CONTENT_COLUMNS.get(table, ()):
        if name in row and name not in changed and row[name] is not None:
            value, count = redact_value(matcher, row[name], names=names, linked=linked)
            if count:
                changed[name] = value
    return changed, len(changed)


def event_of(change: RowChange) -> str:
    """The event id a row change came from: its version ends with ``|<event id>``."""
    return change.version.rpartition("|")[2]


def changes_by_event(normalized: Normalized) -> dict[str, list[RowChange]]:
    """Row changes grouped by the event that made them; changes of no event row (Caliper entity
    describes) under ``""``."""
    ids = {e.event_id for e in normalized.events}
    grouped: dict[str, list[RowChange]] = defaultdict(list)
    for change in normalized.changes:
        event_id = event_of(change)
        grouped[event_id if event_id in ids else ""].append(change)
    return grouped


def event_is_about(matcher: Matcher, changes: Iterable[RowChange]) -> bool:
    return any(row_is_about(matcher, c.table, {**c.key, **c.fields}) for c in changes)


def redact_event(matcher: Matcher, row: EventRow, *, names: bool) -> tuple[EventRow, int]:
    """A kept event: the acting user (with their login and SIS id), a masquerading user and a user
    context cleared; the payload and the arrival (an LTI notice's token) redacted."""
    payload, found = matcher.redact(row.payload, names=names)
    count = found.count
    updates: dict[str, Any] = {}
    if matcher.is_stored_id(row.user_id) or matcher.is_identifier(row.user_login):
        updates.update(user_id=None, user_login=None, user_sis_id=None)
        count += 1
    elif matcher.is_identifier(row.user_sis_id):
        updates["user_sis_id"] = None
        count += 1
    if matcher.is_stored_id(row.real_user_id):
        updates["real_user_id"] = None
        count += 1
    if str(row.context_type or "").lower() == "user" and matcher.is_stored_id(row.context_id):
        updates["context_id"] = None
        count += 1
    if found.count:
        updates.update(payload=pin_event_id(payload, row), payload_json=None)
    if row.arrival is not None:
        arrival, in_arrival = matcher.redact(row.arrival, names=names, linked=bool(count))
        if in_arrival.count:
            updates["arrival"] = arrival
            count += in_arrival.count
    return (replace(row, **updates), count) if updates else (row, count)


def redact_change(matcher: Matcher, change: RowChange, *, names: bool) -> tuple[RowChange, int]:
    row = {**change.key, **change.fields}
    changed, count = redact_row(matcher, change.table, row, names=names)
    fields = {k: v for k, v in changed.items() if k not in change.key}
    if not fields:
        return change, count
    return replace(change, fields={**change.fields, **fields}), count


@dataclass
class Screened:
    normalized: Normalized
    dropped: list[str] = field(default_factory=list)  # event ids left out: about an erased person
    redacted: list[str] = field(default_factory=list)  # event ids kept with someone redacted


def screen(normalized: Normalized, matcher: Matcher, *, names: bool = False) -> Screened:
    """Drop the events about the people (with their rows); redact the others that name them."""
    if not matcher:
        return Screened(normalized)
    grouped = changes_by_event(normalized)
    out = Normalized(unknown_events=normalized.unknown_events, unknown_fields=normalized.unknown_fields,
                     shards=normalized.shards)
    result = Screened(out)
    for event in normalized.events:
        changes = grouped.get(event.event_id, [])
        if event_is_about(matcher, changes):
            result.dropped.append(event.event_id)
            continue
        kept, count = redact_event(matcher, event, names=names)
        redacted_changes = []
        for change in changes:
            new, n = redact_change(matcher, change, names=names)
            redacted_changes.append(new)
            count += n
        out.events.append(kept)
        out.changes.extend(redacted_changes)
        if count:
            result.redacted.append(event.event_id)
    for change in grouped.get("", []):  # changes of no event row (Caliper entity describes): screened alone
        if not row_is_about(matcher, change.table, {**change.key, **change.fields}):
            out.changes.append(redact_change(matcher, change, names=names)[0])
    return result

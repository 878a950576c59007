"""Pseudonymization at ingest (``PSEUDONYMIZE=true``): keyed hashes instead of IP addresses, user
agents, logins and emails, before anything is stored. Pure.

A value becomes ``hmac:`` + the first 32 hex digits of HMAC-SHA256(key, value): the same value gives
the same pseudonym (counts of distinct users, sessions or devices still work, joins between tables
too) but nobody without the key can tell the value back, not even by trying every IPv4 address.
Logins and emails are compared case-insensitively by Canvas, so they are lower-cased first. Values
that already are pseudonyms are left alone, so a record retried from the quarantine is not hashed
twice. Signed tokens (``lti_notices.jwt``, the raw token in a quarantined record) encode the same
data in base64 and are dropped (``lti_notices.jwt``, ``events.arrival``'s copy of it). The key is a
setting (``PSEUDONYMIZATION_KEY``) and never logged.

Where: the worker's sink, on every prepared batch before its transaction (and on a message it
quarantines as poison), so nothing reaches PostgreSQL in clear; the stored payloads are the hashed
ones, so ``replay`` rebuilds the same tables, and a record retried from the quarantine hashes to the
same pseudonyms (a pseudonym is left alone). The Kafka topic still carries the deliveries as Canvas
sent them, for the topic's retention (docs/privacy.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from processors.batch import PreparedBatch
from processors.normalize.canvas import PINNED_ID_KEY
from processors.normalize.model import EventRow, Normalized, RowChange
from processors.privacy.match import _JWS
from processors.warehouse.schema import PSEUDONYMIZED, TABLE_SPECS, Kind, Personal

PREFIX = "hmac:"
_PSEUDONYM = re.compile(r"^hmac:[0-9a-f]{32}$")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

# Keys of event payloads (Canvas metadata and bodies, Caliper extensions, LTI claims) by kind.
PAYLOAD_KEYS: dict[str, Personal] = {
    **dict.fromkeys(("client_ip", "remote_ip", "ip_address", "ip"), Personal.IP_ADDRESS),
    **dict.fromkeys(("user_agent", "http_user_agent"), Personal.USER_AGENT),
    **dict.fromkeys(("user_login", "login_id", "login", "unique_id", "sis_login_id"), Personal.LOGIN),
    **dict.fromkeys(("email", "user_email", "email_address"), Personal.EMAIL),
}
# Column -> kind, per table, from the schema; and the token columns dropped.
COLUMNS: dict[str, dict[str, Personal]] = {
    name: {c.name: c.personal for c in spec.all_columns() if c.personal in PSEUDONYMIZED}
    for name, spec in TABLE_SPECS.items()
}
TOKEN_COLUMNS: dict[str, frozenset[str]] = {
    name: frozenset(c.name for c in spec.all_columns() if c.personal is Personal.TOKEN)
    for name, spec in TABLE_SPECS.items()
}
JSON_COLUMNS: dict[str, frozenset[str]] = {
    name: frozenset(c.name for c in spec.all_columns() if c.kind is Kind.JSON and c.personal is Personal.CONTENT)
    for name, spec in TABLE_SPECS.items()
}
TEXT_COLUMNS: dict[str, frozenset[str]] = {  # free text: the email addresses in it
    name: frozenset(c.name for c in spec.all_columns() if c.kind is Kind.TEXT and c.personal is Personal.CONTENT)
    for name, spec in TABLE_SPECS.items()
}


@dataclass(frozen=True)
class Pseudonymizer:
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) < 32:
            raise ValueError("the pseudonymization key must be at least 32 bytes")

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymizer(key=***)"

    def pseudonym(self, value: str, kind: Personal) -> str:
        if _PSEUDONYM.match(value):
            return value
        text = value.strip().lower() if kind in (Personal.LOGIN, Personal.EMAIL) else value
        return PREFIX + hmac.new(self.key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]

    def value(self, value: Any, kind: Personal) -> Any:
        if isinstance(value, str) and value:
            return self.pseudonym(value, kind)
        if isinstance(value, list):
            return [self.value(v, kind) for v in value]
        return value

    def text(self, value: str) -> str:
        """Emails anywhere in free text; a whole token is dropped (it encodes everything)."""
        if len(value) > 30 and value.count(".") == 2 and _JWS.match(value):
            return ""
        if "@" not in value:  # the common case, without running the regular expression
            return value
        return _EMAIL.sub(lambda m: self.pseudonym(m.group(0), Personal.EMAIL), value)

    def _string(self, value: str) -> str | None:
        """A string inside JSON: unchanged in the common case (no '@', not a token), a dropped token None."""
        if "@" not in value and (len(value) <= 30 or "." not in value):
            return value
        return self.text(value) or (None if value else value)

    def json(self, value: Any) -> Any:
        """A copy of a JSON value with the known keys hashed and emails in any string hashed (the hot
        path of pseudonymization: dispatched on exact types, as JSON decoders produce them)."""
        kind_of = PAYLOAD_KEYS.get
        t = type(value)
        if t is dict:
            out = {}
            for k, v in value.items():
                tv = type(v)
                if tv is str:
                    kind = kind_of(k)
                    out[k] = (self.pseudonym(v, kind) if v else v) if kind is not None else self._string(v)
                elif tv is dict:
                    out[k] = self.json(v)
                elif tv is list:
                    kind = kind_of(k)
                    out[k] = self.value(v, kind) if kind is not None else [self.json(x) for x in v]
                else:
                    out[k] = v
            return out
        if t is list:
            return [self.json(v) for v in value]
        if t is str:
            return self._string(value)
        if isinstance(value, Mapping):  # another mapping type: as a dict
            return self.json(dict(value))
        return value

    # --- what the worker writes ------------------------------------------------------------------

    def event(self, row: EventRow) -> EventRow:
        """The payload (and its text: the writer stores ``payload_json`` as is), the arrival (an LTI
        notice's token) and the event's own login column."""
        payload = pin_event_id(self.json(row.payload), row)
        arrival = self.json(row.arrival) if row.arrival is not None else None
        login = self.value(row.user_login, Personal.LOGIN)
        return replace(row, payload=payload, payload_json=None, arrival=arrival, user_login=login)

    def change(self, change: RowChange) -> RowChange:
        kinds, tokens = COLUMNS.get(change.table, {}), TOKEN_COLUMNS.get(change.table, ())
        jsons, texts = JSON_COLUMNS.get(change.table, ()), TEXT_COLUMNS.get(change.table, ())
        if not (kinds or tokens or jsons or texts):
            return change
        fields = dict(change.fields)
        touched = False
        for column in fields.keys() & kinds.keys():
            fields[column] = self.value(fields[column], kinds[column])
            touched = True
        for column in fields.keys() & tokens:
            fields[column] = None
            touched = True
        for column in fields.keys() & jsons:
            fields[column] = self.json(fields[column])
            touched = True
        for column in fields.keys() & texts:
            if isinstance(fields[column], str):
                fields[column] = self.text(fields[column]) or None
                touched = True
        return replace(change, fields=fields) if touched else change

    def normalized(self, normalized: Normalized) -> Normalized:
        return Normalized(events=[self.event(e) for e in normalized.events],
                          changes=[self.change(c) for c in normalized.changes],
                          unknown_events=normalized.unknown_events, unknown_fields=normalized.unknown_fields,
                          shards=normalized.shards)

    def batch(self, batch: PreparedBatch) -> None:
        """Every item of a prepared batch, in place: rows, payloads and quarantined messages."""
        for item in batch.items:
            if item.normalized is not None:
                item.normalized = self.normalized(item.normalized)
            if item.quarantine is not None:
                item.quarantine.raw = self.raw(item.quarantine.raw)

    def raw(self, raw: str) -> str:
        """A quarantined message: a JSON record gets its payload hashed and its token dropped."""
        try:
            record = json.loads(raw)
        except ValueError:
            return self.text(raw)
        return json.dumps(self.json(record), separators=(",", ":"), ensure_ascii=False)


def pin_event_id(payload: Any, row: EventRow) -> Any:
    """Record an event's id in a rewritten payload, so that normalizing the stored payload again
    (``replay``) finds the same id, although the Canvas id is the hash of the original payload."""
    if not isinstance(payload, dict) or payload == row.payload:
        return payload
    if row.format == "canvas":
        return {**payload, PINNED_ID_KEY: row.event_id}
    if row.format == "caliper":
        data = payload.get("data")
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict) and not data[0].get("id"):
            return {**payload, "data": [{**data[0], "id": row.event_id}]}
    return payload

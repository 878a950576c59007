"""``canvas-stream erase``: remove or redact one person across every table, and keep an audit row.

Steps, each in short transactions (an interrupted erasure is finished by running it again):

1. Find who the person is: their ids in both forms, and the identifiers the warehouse holds for
   them (uuid, login, SIS id, LTI ids, email, names) from their rows and their own events.
2. Record the request (``erasures``: who asked, when; no personal data) and add the person to the
   suppression list (``erased_users``: ids and opaque ids only), then wait for every write
   transaction that began before (``guard.GUARD_LOCK``): from here on workers redact them on arrival.
3. Per table, as the schema declares (``schema.PersonRef``, ``schema.Owned``): delete the rows about
   the person (and rows owned by those, e.g. comments on their submissions); clear the columns of
   other people's rows that name them; redact the text and JSON columns that mention them.
4. ``events``: every event that names them is normalized again from its stored payload and arrival
   (as ``replay`` does); an event about them (it feeds a row about them) is deleted, any other is
   kept with them redacted (payload, arrival with an LTI notice's token, the acting-user columns).
   ``quarantine``: raw messages and reasons are redacted.
5. Record per table how many rows were deleted and redacted, and the completion time.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from canvas_stream.errors import CanvasStreamError
from processors.normalize import IdPolicy, normalize
from processors.normalize.model import EventRow
from processors.privacy.guard import GUARD_LOCK
from processors.privacy.match import (
    SHARD_FACTOR,
    Matcher,
    Person,
    id_forms,
    normalized_words,
    salted_hash,
    stored_forms,
    suppressed,
)
from processors.privacy.screen import (
    CONTENT_COLUMNS,
    IDENTIFYING_COLUMNS,
    REFERENCE_COLUMNS,
    SUBJECT_COLUMNS,
    TOKEN_COLUMNS,
    PersonColumn,
    event_is_about,
    redact_event,
    redact_row,
    redact_value,
)
from processors.replay import stored_record
from processors.warehouse import partitions
from processors.warehouse.schema import SCHEMA, TABLE_SPECS, Kind

log = structlog.get_logger(__name__)

PAGE = 500
# Handled apart (events, quarantine) or erasure's own bookkeeping.
SPECIAL_TABLES = frozenset({"events", "quarantine", "erasures", "erased_users"})
USER_URN = "urn:instructure:canvas:user:"


class ErasureError(CanvasStreamError, ValueError):
    """The request cannot be carried out as given (e.g. the global form of a local id is unknown)."""


@dataclass(frozen=True)
class ErasureRequest:
    user_id: int
    requested_by: str
    shard: int | None = None
    logins: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()  # LTI user ids, uuids, SIS ids known to the requester


@dataclass
class ErasureReport:
    erasure_id: str | None
    dry_run: bool
    rows: dict[str, Counter[str]] = field(default_factory=dict)
    shard_known: bool = True

    def count(self, table: str, what: str, n: int = 1) -> None:
        if n:
            self.rows.setdefault(table, Counter())[what] += n

    def lines(self) -> list[str]:
        verb = "would be" if self.dry_run else "were"
        out = [f"{table}: {', '.join(f'{n} {what}' for what, n in sorted(c.items()))} {verb} affected"
               for table, c in sorted(self.rows.items())]
        return out or ["the warehouse holds nothing about this person"]


def _q(name: str) -> str:
    return f'"{SCHEMA}"."{name}"'


def _ids_param(person: Person) -> list[int]:
    """The person's id as id columns hold it (``match.stored_forms``)."""
    return sorted(person.stored_ids())


def _urns(person: Person) -> list[str]:
    """The person's Caliper URNs, as text columns keyed by an entity id hold them."""
    return sorted(f"{USER_URN}{i}" for i in person.ids())


def _column_condition(column: PersonColumn, params: dict[str, Any], prefix: str = "") -> str:
    """SQL: the column names the person (ids for id columns, identifiers for text ones), when its
    condition holds."""
    name = f"{prefix}{column.name}"
    if column.kind is Kind.ID:
        condition = f"{name} = ANY(:ids)"
    else:
        condition = f"(lower({name}) = ANY(:identifiers) OR {name} = ANY(:urns))"
    if column.ref.when is not None:
        other, value = column.ref.when
        key = f"when_{len(params)}"
        params[key] = value.lower()
        condition = f"({condition} AND lower({prefix}{other}) = :{key})"
    return condition


def prefilter(matcher: Matcher, *, json_text: bool) -> str:
    """A PostgreSQL regular expression (for ``~*``) that every value mentioning the people matches:
    their id texts as digit runs, their identifiers (as jsonb renders them when ``json_text``).

    In jsonb's text (``json_text``) an id the matcher finds starts a JSON value (after ``"``, ``[``
    or the space of ``": "`` and ``", "``) or follows a user position in a text (``:user:``-like URN
    kinds, ``/users/``, ``user_id=``): never a digit run inside a date, an IP address or a hex digest,
    which the loose form lets through for a small id in almost every event (each then normalized
    again in Python). The colon stays a single character, not the URN kinds spelled out: an
    alternation there made each row's match 2.5x slower (docs/privacy.md); it lets through the times
    of the day (``T08:17:``) for ids below 60 only."""
    def are(literal: str) -> str:
        return re.sub(r"([^\w\s])", r"\\\1", literal).replace(" ", "[ ]")

    ids = "|".join(are(t) for t in sorted(matcher.id_texts, key=len, reverse=True))
    before = '(^|["/=[ :])' if json_text else "(^|[^0-9])"
    parts = [f"{before}({ids})([^0-9]|$)"] if ids else []
    for identifier in sorted(matcher.identifiers):
        parts.append(are(json.dumps(identifier)[1:-1] if json_text else identifier))
    return "|".join(parts) or "$^"


# --- 1. who -------------------------------------------------------------------------------------

async def _infer_shard(conn: AsyncConnection, local_id: int) -> int | None:
    """The shard of a local user id when neither the request nor ``CANVAS_HOME_SHARD`` says it: the
    shard of a stored global id with that local part (a user of another shard), else the shard of the
    events stored with that user id (``event_shard``: their root account's); None when nothing says."""
    rows = (await conn.execute(text(
        f"SELECT DISTINCT id / {SHARD_FACTOR} FROM {_q('users')} WHERE id >= {SHARD_FACTOR} "
        f"AND id % {SHARD_FACTOR} = :local UNION SELECT DISTINCT user_id / {SHARD_FACTOR} FROM {_q('events')} "
        f"WHERE user_id >= {SHARD_FACTOR} AND user_id % {SHARD_FACTOR} = :local "
        f'UNION SELECT DISTINCT "{SCHEMA}".event_shard(format, payload) FROM {_q("events")} '
        "WHERE user_id = :local"), {"local": local_id})).scalars().all()
    shards = sorted(int(r) for r in rows if r is not None)
    if len(shards) > 1:
        raise ErasureError(f"local id {local_id} exists on several shards {shards}: give the global id")
    return shards[0] if shards else None


async def identify(conn: AsyncConnection, request: ErasureRequest, home_shard: int | None = None) -> Person:
    """The person with every identifier the warehouse holds for them. A local id is of the request's
    shard, else of ``CANVAS_HOME_SHARD`` (the Canvas UI shows the home shard's ids local), else of
    the shard the warehouse tells (``_infer_shard``)."""
    shard = request.shard if request.shard is not None else home_shard
    if shard is None and request.user_id < SHARD_FACTOR:
        shard = await _infer_shard(conn, request.user_id)
    local, global_ = id_forms(request.user_id, shard)
    stored = stored_forms(local, global_, home_shard)
    ids = sorted(stored)
    identifiers = {*request.logins, *request.emails, *request.identifiers}
    opaque = {i for i in request.identifiers if _OPAQUE.match(i)}
    names = set(request.names)
    queries = [
        (f"SELECT name, short_name, sortable_name, uuid, user_login, user_sis_id FROM {_q('users')} "
         "WHERE id = ANY(:ids)", ("n", "n", "n", "o", "i", "i")),
        (f"SELECT user_name FROM {_q('enrollments')} WHERE user_id = ANY(:ids)", ("n",)),
        (f"SELECT user_name, user_email FROM {_q('course_progress')} WHERE user_id = ANY(:ids)", ("n", "i")),
        (f"SELECT lti_user_id FROM {_q('submissions')} WHERE user_id = ANY(:ids)", ("o",)),
        (f"SELECT student_sis_id FROM {_q('grade_changes')} WHERE user_id = ANY(:ids)", ("i",)),
        (f"SELECT user_login, user_sis_id FROM {_q('events')} WHERE user_id = ANY(:ids)", ("i", "i")),
        (f"SELECT name FROM {_q('caliper_entities')} WHERE id = ANY(:urns) AND type = 'Person'", ("n",)),
    ]
    for sql, kinds in queries:
        for row in await conn.execute(text(f"SELECT DISTINCT * FROM ({sql}) found"),
                                      {"ids": ids, "urns": [f"{USER_URN}{i}" for i in (local, global_) if i]}):
            for value, kind in zip(row, kinds, strict=True):
                if isinstance(value, str) and value.strip():
                    (names if kind == "n" else identifiers).add(value.strip())
                    if kind == "o":
                        opaque.add(value.strip())
    return Person(local, global_, frozenset(identifiers), frozenset(names), opaque=frozenset(opaque), stored=stored)


def identifier_hashes(person: Person, salt: str, opaque: list[str]) -> list[str]:
    """Salted hashes of what the suppression list must recognise but not keep: login, email, SIS id, names."""
    values = {*(i for i in person.identifiers if i not in opaque), *person.names}
    return sorted({salted_hash(salt, v) for v in values if normalized_words(v)})


_OPAQUE = re.compile(r"^[0-9a-fA-F-]{20,}$")


def opaque_identifiers(person: Person, request: ErasureRequest) -> list[str]:
    """What the suppression list keeps in clear besides ids: opaque ids only (the user's uuid, LTI user
    ids), never a login, email, SIS id or name (those are kept as salted hashes)."""
    personal = {*request.logins, *request.emails, *request.names}
    return sorted(i for i in person.opaque if i not in personal)


# --- 3. tables ------------------------------------------------------------------------------------

def _params(matcher: Matcher, person: Person) -> dict[str, Any]:
    return {"ids": _ids_param(person), "identifiers": sorted(matcher.identifiers), "urns": _urns(person)}


async def _delete_subject_rows(engine: AsyncEngine, person: Person, matcher: Matcher, report: ErasureReport,
                               dry_run: bool) -> None:
    """Rows owned by the person's rows first (their keys are gone after), then the person's rows."""
    for name, spec in TABLE_SPECS.items():
        if name in SPECIAL_TABLES:
            continue
        for col in spec.all_columns():
            if col.owned_by is None:
                continue
            owner = col.owned_by.table
            owner_cols = SUBJECT_COLUMNS[owner]
            params = _params(matcher, person)
            owned_by = " OR ".join(_column_condition(c, params) for c in owner_cols)
            condition = f"{col.name} IN (SELECT id FROM {_q(owner)} WHERE {owned_by})"
            if col.owned_by.when is not None:
                params["owned_when"] = col.owned_by.when[1]
                condition += f" AND {col.owned_by.when[0]} = :owned_when"
            await _delete(engine, name, condition, params, report, dry_run, "deleted (owned by the person's rows)")
    for name, columns in SUBJECT_COLUMNS.items():
        if name in SPECIAL_TABLES or not columns:
            continue
        params = _params(matcher, person)
        condition = " OR ".join(_column_condition(c, params) for c in columns)
        await _delete(engine, name, condition, params, report, dry_run, "deleted")


async def _delete(engine: AsyncEngine, table: str, condition: str, params: dict[str, Any], report: ErasureReport,
                  dry_run: bool, label: str) -> None:
    async with engine.begin() as conn:
        sql = (f"SELECT count(*) FROM {_q(table)} WHERE {condition}" if dry_run
               else f"WITH gone AS (DELETE FROM {_q(table)} WHERE {condition} RETURNING 1) SELECT count(*) FROM gone")
        report.count(table, label, int((await conn.execute(text(sql), params)).scalar() or 0))


def _key_columns(table: str) -> list[str]:
    return [c.name for c in TABLE_SPECS[table].keys]


async def _redact_rows(engine: AsyncEngine, person: Person, matcher: Matcher, report: ErasureReport,
                       dry_run: bool) -> None:
    """Other people's rows that name the person: references cleared, content redacted."""
    for name, spec in TABLE_SPECS.items():
        if name in SPECIAL_TABLES:
            continue
        refs = REFERENCE_COLUMNS[name]
        identifying = IDENTIFYING_COLUMNS[name]
        texts = [*CONTENT_COLUMNS[name], *TOKEN_COLUMNS[name], *identifying]
        if not refs and not texts:
            continue
        params = _params(matcher, person)
        conditions = [_column_condition(c, params) for c in refs]
        conditions += [f"lower({c}) = ANY(:identifiers)" for c in identifying]
        pattern_json, pattern_text = prefilter(matcher, json_text=True), prefilter(matcher, json_text=False)
        params.update(pattern_json=pattern_json, pattern_text=pattern_text)
        for column in [*CONTENT_COLUMNS[name], *TOKEN_COLUMNS[name]]:
            kind = spec.kinds[column]
            conditions.append(f"{column}::text ~* :pattern_json" if kind is Kind.JSON
                              else f"{column} ~* :pattern_text")
        if any(TABLE_SPECS[name].kinds[c] is Kind.TEXT for c in TOKEN_COLUMNS[name]):
            conditions.append(" OR ".join(f"{c} IS NOT NULL" for c in TOKEN_COLUMNS[name]))  # tokens: decoded below
        keys = _key_columns(name)
        conditions_of_refs = [c.ref.when[0] for c in refs if c.ref.when is not None]
        wanted = list(dict.fromkeys([*keys, *(c.name for c in refs), *conditions_of_refs,
                                     *(x for c in refs for x in c.ref.clears), *texts]))
        async with engine.begin() as conn:
            found = await conn.execute(text(
                f"SELECT {', '.join(wanted)} FROM {_q(name)} WHERE {' OR '.join(conditions)}"), params)
            rows = found.mappings().all()
            for row in rows:
                texts = [v if isinstance(v, str) else json.dumps(v) for v in row.values()
                         if isinstance(v, str | dict | list)]
                # names that earlier erasures kept only as hashes, recovered from the row itself
                changed, _ = redact_row(matcher.recover(texts), name, dict(row), names=True)
                changed = {k: v for k, v in changed.items() if k not in keys}
                if not changed:
                    continue
                report.count(name, "redacted")
                if dry_run:
                    continue
                where = " AND ".join(f"{k} = :k_{i}" for i, k in enumerate(keys))
                values = {f"v_{i}": _bind(name, k, v) for i, (k, v) in enumerate(changed.items())}
                values.update({f"k_{i}": row[k] for i, k in enumerate(keys)})
                casts = ", ".join(f"{k} = CAST(:v_{i} AS jsonb)" if TABLE_SPECS[name].kinds[k] is Kind.JSON
                                  else f"{k} = :v_{i}" for i, k in enumerate(changed))
                await conn.execute(text(f"UPDATE {_q(name)} SET {casts} WHERE {where}"), values)


def _bind(table: str, column: str, value: Any) -> Any:
    if TABLE_SPECS[table].kinds[column] is Kind.JSON:
        return None if value is None else json.dumps(value)
    return value


# --- 4. events and quarantine -----------------------------------------------------------------------

EVENT_COLUMNS = ("event_id", "event_name", "format", "event_time", "received_at", "user_id", "context_type",
                 "context_id", "payload", "arrival", "real_user_id", "user_login", "user_sis_id")
# What redacting a kept event may change (the rest is about the event, not a person).
REDACTED_EVENT_COLUMNS = ("user_id", "context_id", "real_user_id", "user_login", "user_sis_id", "payload", "arrival")


async def _event_keys(engine: AsyncEngine, person: Person, matcher: Matcher) -> list[tuple[Any, ...]]:
    """The keys of every event that names the person: one scan of ``events`` (its payloads read as
    text against ``prefilter``), a statement per monthly partition (short statements, no snapshot held
    across the whole history), in key order."""
    params: dict[str, Any] = {"ids": _ids_param(person), "identifiers": sorted(matcher.identifiers),
                              "pattern": prefilter(matcher, json_text=True)}
    condition = ("(user_id = ANY(:ids) OR real_user_id = ANY(:ids) "
                 "OR (lower(context_type) = 'user' AND context_id = ANY(:ids)) "
                 "OR lower(user_login) = ANY(:identifiers) OR lower(user_sis_id) = ANY(:identifiers) "
                 "OR payload::text ~* :pattern OR arrival::text ~* :pattern)")
    keys = _key_columns("events")
    async with engine.begin() as conn:
        parts = [p.name for p in (await partitions.list_partitions(conn)).get("events", [])] or ["events"]
    found: list[tuple[Any, ...]] = []
    for part in parts:
        async with engine.begin() as conn:
            rows = await conn.execute(text(f"SELECT {', '.join(keys)} FROM {_q(part)} WHERE {condition}"), params)
            found += [tuple(r) for r in rows]
    return sorted(found)


async def _events(engine: AsyncEngine, person: Person, matcher: Matcher, report: ErasureReport, dry_run: bool,
                  ids: IdPolicy, progress: Callable[[int], None] | None) -> None:
    """Every event that names the person: their keys found in one scan, then page by page in key order
    (one transaction per page; an event changed in between is judged as it is then)."""
    keys = _key_columns("events")
    columns = ", ".join(f"e.{c}" for c in dict.fromkeys([*keys, *EVENT_COLUMNS]))
    found = await _event_keys(engine, person, matcher)
    types = {"event_id": "text", "event_time": "timestamptz"}
    arrays = ", ".join(f"CAST(:k{i} AS {types.get(k, 'text')}[])" for i, k in enumerate(keys))
    sql = (f"SELECT {columns} FROM {_q('events')} e JOIN unnest({arrays}) AS k({', '.join(keys)}) "
           f"USING ({', '.join(keys)}) ORDER BY {', '.join(f'e.{k}' for k in keys)}")
    for first in range(0, len(found), PAGE):
        chunk = found[first:first + PAGE]
        async with engine.begin() as conn:
            page = (await conn.execute(text(sql), {f"k{i}": [key[i] for key in chunk] for i in range(len(keys))})
                    ).mappings().all()
            for row in page:
                await _one_event(conn, row, matcher, report, dry_run, ids, keys)
        if progress is not None:
            progress(len(page))


async def _one_event(conn: AsyncConnection, row: Any, matcher: Matcher, report: ErasureReport, dry_run: bool,
                     ids: IdPolicy, keys: list[str]) -> None:
    """Normalize the stored event again (as ``replay`` does): delete it if it is about the person, else
    redact it."""
    matcher = matcher.recover([json.dumps(row["payload"], ensure_ascii=False)])  # names kept as hashes
    try:
        changes = normalize(stored_record(row["format"], row["payload"], row["received_at"], row["arrival"]),
                            ids).changes
    except Exception:  # a stored event that no longer normalizes: judged by its columns and payload alone
        changes = []
    key = {f"k_{k}": row[k] for k in keys}
    where = " AND ".join(f"{k} = :k_{k}" for k in keys)
    if event_is_about(matcher, changes):
        report.count("events", "deleted")
        if not dry_run:
            await conn.execute(text(f"DELETE FROM {_q('events')} WHERE {where}"), key)
        return
    stored = EventRow(row["event_id"], row["event_name"], row["format"], row["event_time"], row["received_at"],
                      row["user_id"], row["context_type"], row["context_id"], row["payload"],
                      real_user_id=row["real_user_id"], user_login=row["user_login"], user_sis_id=row["user_sis_id"],
                      arrival=row["arrival"])
    kept, count = redact_event(matcher, stored, names=True)
    if not count:
        return
    report.count("events", "redacted")
    if not dry_run:
        values = {c: getattr(kept, c) for c in REDACTED_EVENT_COLUMNS}
        values["payload"] = json.dumps(values["payload"])
        values["arrival"] = None if values["arrival"] is None else json.dumps(values["arrival"])
        sets = ", ".join(f"{c} = CAST(:{c} AS jsonb)" if c in ("payload", "arrival") else f"{c} = :{c}"
                         for c in REDACTED_EVENT_COLUMNS)
        await conn.execute(text(f"UPDATE {_q('events')} SET {sets} WHERE {where}"), {**key, **values})


async def earlier_erasures(conn: AsyncConnection, person: Person) -> list[Person]:
    """The person as earlier erasures put them on the suppression list (ids, opaque ids, hashes)."""
    rows = (await conn.execute(text(
        f"SELECT erasure_id, local_id, global_id, stored_ids, identifiers, identifier_hashes "
        f"FROM {_q('erased_users')} WHERE local_id = :local AND (global_id IS NULL OR CAST(:global AS bigint) IS NULL "
        "OR global_id = :global)"), {"local": person.local_id, "global": person.global_id})).all()
    return [suppressed(r) for r in rows]


async def _quarantine(engine: AsyncEngine, matcher: Matcher, report: ErasureReport, dry_run: bool) -> None:
    table = _q("quarantine")
    async with engine.begin() as conn:
        rows = (await conn.execute(text(
            f"SELECT id, raw, reason FROM {table} WHERE raw ~* :p OR reason ~* :p"),
            {"p": prefilter(matcher, json_text=False) + "|" + prefilter(matcher, json_text=True)})).all()
        for row in rows:
            found = matcher.recover([row.raw, row.reason])  # names that earlier erasures kept as hashes
            raw, n_raw = redact_value(found, row.raw, names=True)
            reason, n_reason = redact_value(found, row.reason, names=True)
            if not (n_raw or n_reason):
                continue
            report.count("quarantine", "redacted")
            if dry_run:
                continue
            raw = raw if isinstance(raw, str) else ""
            new_id = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
            # The id is the hash of the stored message: a later delivery of it, redacted on arrival, is the same row.
            await conn.execute(text(f"DELETE FROM {table} WHERE id = :new_id AND id <> :id"),
                               {"new_id": new_id, "id": row.id})
            await conn.execute(text(f"UPDATE {table} SET id = :new_id, raw = :raw, reason = :reason WHERE id = :id"),
                               {"new_id": new_id, "raw": raw, "reason": reason or "", "id": row.id})


# --- the whole erasure ------------------------------------------------------------------------------

async def erase(engine: AsyncEngine, request: ErasureRequest, *, home_shard: int | None = None,
                dry_run: bool = False, progress: Callable[[int], None] | None = None) -> ErasureReport:
    """Erase one person; ``home_shard`` must be the workers' ``CANVAS_HOME_SHARD`` (it decides the
    form their ids are stored in, and how stored events normalize again)."""
    if not request.requested_by.strip():
        raise ErasureError("say who asked for the erasure (--requested-by)")
    async with engine.connect() as conn:
        person = await identify(conn, request, home_shard)
        earlier = await earlier_erasures(conn, person)
    # An earlier erasure of the same person (interrupted, or their data came back from a backup) knows
    # what this request may not: their opaque ids, and hashes that recover their names from a text.
    matcher = Matcher.of([person, *earlier])
    report = ErasureReport(None, dry_run, shard_known=person.global_id is not None)
    if not dry_run:
        report.erasure_id = str(uuid.uuid4())
        async with engine.begin() as conn:
            await conn.execute(text(f"INSERT INTO {_q('erasures')} (id, requested_by) VALUES (:id, :by)"),
                               {"id": report.erasure_id, "by": request.requested_by.strip()[:500]})
            opaque = opaque_identifiers(person, request)
            await conn.execute(text(
                f"INSERT INTO {_q('erased_users')} (erasure_id, global_id, local_id, stored_ids, identifiers, "
                "identifier_hashes) VALUES (:id, :global_id, :local_id, CAST(:stored AS jsonb), "
                "CAST(:identifiers AS jsonb), CAST(:hashes AS jsonb))"),
                {"id": report.erasure_id, "global_id": person.global_id, "local_id": person.local_id,
                 "stored": json.dumps(sorted(person.stored_ids())), "identifiers": json.dumps(opaque),
                 "hashes": json.dumps(identifier_hashes(person, report.erasure_id, opaque))})
        async with engine.connect() as conn:  # every write transaction that began before now is over
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": GUARD_LOCK})
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": GUARD_LOCK})
            await conn.commit()
    await _delete_subject_rows(engine, person, matcher, report, dry_run)
    await _redact_rows(engine, person, matcher, report, dry_run)
    await _events(engine, person, matcher, report, dry_run, IdPolicy(home_shard), progress)
    await _quarantine(engine, matcher, report, dry_run)
    if not dry_run:
        counts = {table: dict(c) for table, c in report.rows.items()}
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE {_q('erasures')} SET completed_at = now(), "
                                    "rows = CAST(:rows AS jsonb) WHERE id = :id"),
                               {"rows": json.dumps(counts), "id": report.erasure_id})
        log.info("erasure done", erasure_id=report.erasure_id, tables=len(counts))
    return report

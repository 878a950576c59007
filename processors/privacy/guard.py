"""The workers' side of erasure: events arriving after a person was erased are redacted on arrival.

Kept cheap: the suppression list (``erased_users``: ids, opaque ids, salted hashes) is held as a
:class:`Matcher` in memory. With nobody erased, a batch costs one attribute check. Otherwise each
raw message is first asked whether it could name anyone erased at all: every form of a user id
contains the local id's digits and every opaque id is itself a substring, so up to
:data:`FIND_LIMIT` needles that is one ``bytes.find`` each (C speed); beyond, the message's digit
runs and hex words are cut out once (``bytes.translate`` and ``split``) and looked up in sets,
whatever the length of the list. Only a message that passes is searched
with the regular expression and screened (``screen``): dropped if it is about an erased person,
redacted otherwise.

Every write transaction starts with a check in SQL (:meth:`ErasureGuard.verify`): it takes a
shared advisory lock and reads the list's size; when the list grew since it was loaded, the worker
reloads it, screens the batch again and retries (:class:`SuppressionListChanged`). ``canvas-stream
erase`` adds the person, commits, then takes the lock exclusively once, which waits out every write
transaction that began before the person was on the list; every later one sees them. So no row
about an erased person is written after the erasure scanned the tables.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from canvas_stream.errors import CanvasStreamError
from processors.batch import PreparedBatch
from processors.privacy.match import Matcher, Person, suppressed
from processors.privacy.screen import redact_value, screen
from processors.warehouse.schema import SCHEMA

# Advisory lock between write transactions (shared) and an erasure taking effect (exclusive): 'cs-era'.
GUARD_LOCK = 0x63732D657261
# Up to this many needles (a local id and an opaque id or two per person), a message is searched with
# bytes.find per needle (about 1 us each on a 1.5 KB message); beyond, its digit runs and hex words
# are looked up in sets (about 18 us, whatever the list's length). Measured: docs/privacy.md.
FIND_LIMIT = 16
_DIGITS = bytes(c if 48 <= c <= 57 else 32 for c in range(256))
_HEX_WORDS = bytes(c if 48 <= c <= 57 or 97 <= c <= 102 or c == 45 else c + 32 if 65 <= c <= 70 else 32
                   for c in range(256))


class SuppressionListChanged(CanvasStreamError):
    """Someone was erased since the batch was screened: screen it again before writing."""


def _raw_pattern(matcher: Matcher) -> re.Pattern[bytes] | None:
    """Bytes that any mention of the people contains: their ids as digit runs, their identifiers."""
    if not matcher.id_texts:
        return None
    parts = [rb"(?<![0-9])(?:" + b"|".join(re.escape(t.encode()) for t in sorted(matcher.id_texts)) + rb")(?![0-9])"]
    parts += [re.escape(i.encode()) for i in sorted(matcher.identifiers)]
    return re.compile(b"|".join(parts), re.IGNORECASE)


class ErasureGuard:
    """The suppression list in memory, and the screening of batches against it."""

    def __init__(self) -> None:
        self.generation: int | None = None  # size of the suppression list when loaded; None: never loaded
        self.counts: Counter[str] = Counter()  # events dropped / redacted on arrival
        self.use([], None)

    def use(self, people: list[Person], generation: int | None) -> None:
        self.matcher = Matcher.of(people)
        self.generation = generation
        self._pattern = _raw_pattern(self.matcher)
        # Every form of an id contains the local id's digits (global = shard * 10^13 + local, zero-padded).
        self._digits = frozenset(t.encode() for t in self.matcher.id_texts if t.isdigit())
        self._words = frozenset(i.encode() for i in self.matcher.identifiers)
        needles = {str(p.local_id).encode() for p in people} | self._words
        self._needles = tuple(sorted(needles)) if len(needles) <= FIND_LIMIT else ()

    def _may_name_someone(self, raw: bytes) -> bool:
        """The cheap test (see the module docstring); the regular expression confirms."""
        if self._needles:
            lowered: bytes | None = None
            for needle in self._needles:
                if needle in raw:
                    return True
                if not needle.isdigit():
                    if lowered is None:
                        lowered = raw.lower()
                    if needle in lowered:
                        return True
            return False
        if not self._digits.isdisjoint(raw.translate(_DIGITS).split()):
            return True
        return bool(self._words) and not self._words.isdisjoint(raw.translate(_HEX_WORDS).split())

    def names_someone(self, raw: bytes) -> bool:
        return (self._pattern is not None and self._may_name_someone(raw)
                and self._pattern.search(raw) is not None)

    async def load(self, conn: AsyncConnection) -> None:
        rows = (await conn.execute(text(
            f'SELECT erasure_id, local_id, global_id, stored_ids, identifiers, identifier_hashes '
            f'FROM "{SCHEMA}".erased_users'))).all()
        self.use([suppressed(r) for r in rows], len(rows))

    async def verify(self, conn: AsyncConnection) -> None:
        """First statement of every write transaction; raises SuppressionListChanged after reloading."""
        row = (await conn.execute(text(
            f'SELECT pg_advisory_xact_lock_shared(:key), (SELECT count(*) FROM "{SCHEMA}".erased_users)'),
            {"key": GUARD_LOCK})).one()
        if row[1] != self.generation:
            await self.load(conn)
            raise SuppressionListChanged

    def screen_raw(self, raw: str) -> str:
        """A message about to be quarantined (its text), with erased people redacted."""
        if self._pattern is None or not self.names_someone(raw.encode("utf-8", "surrogatepass")):
            return raw
        matcher = self.matcher.recover([raw])
        redacted: Any = redact_value(matcher, raw, names=True)[0]
        return redacted if isinstance(redacted, str) else ""

    def screen_batch(self, batch: PreparedBatch) -> None:
        """Drop or redact, in place, what the batch says about erased people (pure)."""
        if self._pattern is None:  # nobody erased: nothing to do
            return
        for item in batch.items:
            if not self.names_someone(item.raw):
                continue
            # The message names someone erased: get back the login, email and names it holds of them.
            matcher = self.matcher.recover([item.raw.decode("utf-8", "replace")])
            if item.normalized is not None:
                result = screen(item.normalized, matcher, names=True)
                item.normalized = result.normalized
                self.counts["dropped"] += len(result.dropped)
                self.counts["redacted"] += len(result.redacted)
            if item.quarantine is not None:
                raw: Any
                raw, found = redact_value(matcher, item.quarantine.raw, names=True)
                if found:
                    item.quarantine.raw = raw if isinstance(raw, str) else ""
                    self.counts["quarantine_redacted"] += 1

"""Finding a person in stored values, and redacting them: the matching rule of erasure (pure).

A Canvas user id is a number that other objects share: course 123 and user 123 exist side by side,
and so do their global forms (shard * 10^13 + 123). So an id is matched **by position**, never as
a bare number anywhere (docs/privacy.md, "The matching rule"):

* in JSON, under a key that names a user (``user_id``, ``grader_id``, ``real_user_id``, any
  ``*_user_id``, ...), as ``id`` of a person object (``user: {id, name, email}``), as
  ``context_id`` when ``context_type`` is ``User``, as ``asset_id`` when ``asset_type`` is ``user``;
  as a number or a string, in global form, local form or ``shard~local``;
* in any string, inside a user URN (``urn:instructure:canvas:user:123``, a membership URN ending
  ``:Learner:123``), a URL path (``/users/123``) or a query parameter (``?user_id=123``);
* in a typed column that the schema declares as naming a person (``schema.PersonRef``): there
  only in the form(s) the warehouse stores the person's id in (``processors.normalize.ids``: the
  home shard's ids local, other shards' global), so that a home-shard user 4811 is not mistaken
  for another shard's user whose global id ends in 4811. Raw payloads are matched in every form
  (a payload may carry either): erring there redacts too much, never too little.

Identifiers (uuid, LTI user ids, and when erasing also login, email and SIS id) are matched as
whole strings or, when 5 characters or longer, as word-bounded substrings of any string,
case-insensitively. Names are matched only inside content already linked to the person (an event
that names them by id or identifier), as word-bounded substrings of 3 characters or more. A person
object that matches loses its details too (name, login, email, SIS id, IP, user agent, session).

Compact JWS strings (``lti_notices.jwt``, the raw token in a quarantined record) cannot be
redacted without breaking their signature: one whose decoded claims name the person is dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from processors.normalize.ids import SHARD_FACTOR

ERASED = "[erased]"
EXT = "com.instructure.canvas"

# Keys whose value is a user id (besides any key ending in _user_id / _user_ids).
USER_ID_KEYS = frozenset({
    "user_id", "real_user_id", "grader_id", "student_id", "author_id", "associated_user_id", "assessor_id",
    "sender_id", "observer_id", "participant_id", "creator_id", "user_ids", "participant_ids", "recipient_ids",
    "student_ids", "for_user_id",
})
# Keys whose matching makes the dict the person's own: its details go with the id.
OWNER_KEYS = frozenset({"user_id", "real_user_id", "student_id"})
# Keys whose value, when it is one of the person's opaque ids, makes the dict theirs too (LTI claims: sub).
OWNER_IDENTIFIER_KEYS = frozenset({"sub", "lti_user_id", "lti_id", "user_uuid", "uuid"})
# Keys of an object that is a person: its "id" is a user id.
PERSON_OBJECT_KEYS = frozenset({"user", "student", "grader", "author", "actor", "assignee", "member", "scoredBy",
                                "for_user", "observer", "sender", "users", "students", "participants", "members",
                                "recipients"})
# What a person's own object says about them, nulled when the object matches.
DETAIL_KEYS = frozenset({
    "name", "short_name", "sortable_name", "given_name", "family_name", "middle_name", "email", "user_email",
    "login_id", "user_login", "user_sis_id", "sis_user_id", "student_sis_id", "sis_id", "user_name", "lti_user_id",
    "lti_id", "uuid", "user_uuid", "client_ip", "user_agent", "session_id", "avatar_url", "picture", "pronouns",
    "entity_id", "integration_id", "asset_name", "real_user_name",
})
# LIS role kinds that end a Caliper membership URN with the member's user id.
_URN_USER_KINDS = ("user", "Learner", "Instructor", "TeachingAssistant", "ContentDeveloper", "Mentor", "Observer",
                   "Administrator", "Member", "Manager")
_JWS = re.compile(r"^[A-Za-z0-9_-]{10,}\.([A-Za-z0-9_-]{10,})\.[A-Za-z0-9_-]*$")
MIN_SUBSTRING_IDENTIFIER = 5
MIN_SUBSTRING_NAME = 3


def id_forms(user_id: int, shard: int | None) -> tuple[int, int | None]:
    """(local, global) forms of a user id given in either form; global None when the shard is unknown."""
    if user_id >= SHARD_FACTOR:
        return user_id % SHARD_FACTOR, user_id
    return user_id, (shard * SHARD_FACTOR + user_id) if shard is not None else None


def stored_forms(local: int, global_id: int | None, home_shard: int | None) -> frozenset[int]:
    """The form(s) the warehouse's id columns hold the person's id in (``ids.canonical_id``): local for
    the home shard's users, global for other shards'; with no home shard set (each event's own shard
    counts as home) or the person's shard unknown, either."""
    if global_id is None:
        return frozenset({local})
    if home_shard is None:
        return frozenset({local, global_id})
    return frozenset({local if global_id // SHARD_FACTOR == home_shard else global_id})


def normalized_words(text: str) -> str:
    """A name or identifier as compared by its hash: lower case, words only, single spaces."""
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def salted_hash(salt: str, value: str) -> str:
    return hashlib.sha256(f"{salt}:{normalized_words(value)}".encode()).hexdigest()


@dataclass(frozen=True)
class Person:
    """Who to find. ``identifiers``: exact strings (uuid, LTI ids; login, email, SIS id when erasing);
    ``names``: matched only in content that already names the person. ``hashes`` (with ``salt``):
    salted hashes of the login, email, SIS id and names the suppression list keeps instead of the
    values; a message that names the person by id gives them back (``Matcher.recover``)."""

    local_id: int
    global_id: int | None = None
    identifiers: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    hashes: frozenset[str] = frozenset()
    salt: str = ""
    opaque: frozenset[str] = frozenset()  # the identifiers that are opaque ids (uuid, LTI user ids)
    stored: frozenset[int] = frozenset()  # the forms id columns hold (``stored_forms``); empty: every form

    @property
    def shard(self) -> int | None:
        return None if self.global_id is None else self.global_id // SHARD_FACTOR

    def ids(self) -> set[int]:
        return {i for i in (self.local_id, self.global_id) if i is not None}

    def stored_ids(self) -> set[int]:
        return set(self.stored) if self.stored else self.ids()

    def id_texts(self) -> set[str]:
        texts = {str(i) for i in self.ids()}
        if self.shard is not None:
            texts.add(f"{self.shard}~{self.local_id}")
        return texts


def suppressed(row: Any) -> Person:
    """A person as a row of the suppression list (``erased_users``) describes them."""
    return Person(row.local_id, row.global_id, frozenset(str(i) for i in row.identifiers or []),
                  hashes=frozenset(row.identifier_hashes or []), salt=row.erasure_id,
                  stored=frozenset(int(i) for i in row.stored_ids or []))


@dataclass
class Redaction:
    """What a redaction pass found: how many values it replaced, and whether the value is linked."""

    count: int = 0
    linked: bool = False


@dataclass
class Matcher:
    """The matching rule for a set of people (one when erasing, every erased person on arrival)."""

    people: tuple[Person, ...]
    ids: frozenset[int] = field(init=False)
    stored_ids: frozenset[int] = field(init=False)
    id_texts: frozenset[str] = field(init=False)
    identifiers: frozenset[str] = field(init=False)
    names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = frozenset(i for p in self.people for i in p.ids())
        self.stored_ids = frozenset(i for p in self.people for i in p.stored_ids())
        self.id_texts = frozenset(t for p in self.people for t in p.id_texts())
        self.identifiers = frozenset(i.strip().lower() for p in self.people for i in p.identifiers if i.strip())
        self.names = frozenset(n.strip().lower() for p in self.people for n in p.names if n.strip())
        ids = "|".join(re.escape(t) for t in sorted(self.id_texts, key=len, reverse=True)) or r"(?!x)x"
        kinds = "|".join(_URN_USER_KINDS)
        self._positional = re.compile(
            rf"(?:(?<=:)(?:{kinds}):|/users/|[?&;](?:\w*user_id|user)=)({ids})(?![\d~])")
        self._urn = re.compile(rf"^urn:instructure:canvas:(?:.*:)?(?:{kinds}):({ids})$")
        long_identifiers = sorted((i for i in self.identifiers if len(i) >= MIN_SUBSTRING_IDENTIFIER), key=len,
                                  reverse=True)
        self._identifier = _word_pattern(long_identifiers)
        self._name = _name_pattern(sorted((n for n in self.names if len(n) >= MIN_SUBSTRING_NAME), key=len,
                                          reverse=True))

    @classmethod
    def of(cls, people: Iterable[Person]) -> Matcher:
        return cls(tuple(people))

    def __bool__(self) -> bool:
        return bool(self.people)

    def recover(self, texts: Iterable[str]) -> Matcher:
        """A matcher that also knows the logins, emails, SIS ids and names of the people named in
        ``texts`` whose salted hashes the suppression list holds (the values come from the texts)."""
        hashed = [p for p in self.people if p.hashes]
        if not hashed:
            return self
        candidates: set[str] = set()
        for text in texts:
            candidates.update(_EMAIL.findall(text))
            candidates.update(re.findall(r"[\w.@+-]{3,}", text))
            words = re.findall(r"[^\W_]+", text)
            for n in range(2, 5):
                candidates.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        people = []
        for person in self.people:
            found = {c for c in candidates if person.hashes and salted_hash(person.salt, c) in person.hashes}
            if found:
                names = {c for c in found if " " in c}
                person = replace(person, identifiers=person.identifiers | (found - names),
                                 names=person.names | names)
            people.append(person)
        return Matcher.of(people)

    # --- single values -------------------------------------------------------------------------

    def is_id(self, value: Any) -> bool:
        """A value that, at a user position, is one of the people: number, digits, shard~local or user URN."""
        if isinstance(value, bool) or value is None:
            return False
        if isinstance(value, int):
            return value in self.ids
        if isinstance(value, float):
            return value.is_integer() and int(value) in self.ids
        if isinstance(value, str):
            text = value.strip()
            return text in self.id_texts or bool(self._urn.match(text))
        return False

    def is_identifier(self, value: Any) -> bool:
        return isinstance(value, str) and value.strip().lower() in self.identifiers

    def is_stored_id(self, value: Any) -> bool:
        """An id column's value (``Kind.ID``: an int in the stored form) that is one of the people."""
        return type(value) is int and value in self.stored_ids

    def column_matches(self, value: Any) -> bool:
        """A typed column that names a person: an id column in the stored form, or a text column
        holding an opaque identifier or a user URN."""
        if isinstance(value, str):
            return self.is_identifier(value) or bool(self._urn.match(value.strip()))
        return self.is_stored_id(value)

    # --- text ----------------------------------------------------------------------------------

    def redact_text(self, value: str, *, names: bool = False) -> tuple[str, int]:
        """Ids at user positions, identifiers, and (``names``) names replaced by ``[erased]``."""
        count = 0
        if self.is_identifier(value) or (names and value.strip().lower() in self.names):
            return ERASED, 1
        if self._urn.match(value.strip()):
            return ERASED, 1
        value, n = self._positional.subn(lambda m: m.group(0)[: m.start(1) - m.start(0)] + ERASED, value)
        count += n
        if self._identifier is not None:
            value, n = self._identifier.subn(ERASED, value)
            count += n
        if names and self._name is not None:
            value, n = self._name.subn(ERASED, value)
            count += n
        return value, count

    def token_names_someone(self, token: str) -> bool:
        """A compact JWS whose decoded claims name one of the people."""
        claims = decode_jws_claims(token)
        return claims is not None and self.redact(claims)[1].count > 0

    # --- JSON ----------------------------------------------------------------------------------

    def redact(self, value: Any, *, names: bool = False, linked: bool = False) -> tuple[Any, Redaction]:
        """A redacted copy of a JSON value (the input is never changed) and what was found.

        With ``names``, the people's names are also replaced, but only when the value names them
        otherwise, or its row does (``linked``): a name alone is not proof that a text is about them.
        """
        found = Redaction()
        out = self._walk(value, None, found, names=False)
        if found.count or linked:
            found.linked = True
            if names and self._name is not None:
                extra = Redaction()
                out = self._walk(out, None, extra, names=True)
                found.count += extra.count
        return out, found

    def _user_position(self, key: str | None, parent_key: str | None, siblings: Mapping[str, Any]) -> bool:
        if key is None:
            return False
        if key in USER_ID_KEYS or key.endswith(("_user_id", "_user_ids")):
            return True
        if key == "id" and parent_key in PERSON_OBJECT_KEYS:
            return True
        if key == "context_id" and str(siblings.get("context_type", "")).lower() == "user":
            return True
        return key == "asset_id" and str(siblings.get("asset_type", "")).lower() == "user"

    def _owned(self, obj: Mapping[str, Any], parent_key: str | None) -> bool:
        """The object is the person's own: its owner key, its id (URN or as a person object) or its actor."""
        for key in OWNER_KEYS:
            if key in obj and self.is_id(obj[key]):
                return True
        for key in OWNER_IDENTIFIER_KEYS:
            if key in obj and self.is_identifier(obj[key]):
                return True
        ident = obj.get("id")
        if ident is not None and ((isinstance(ident, str) and self._urn.match(ident.strip()))
                                  or (parent_key in PERSON_OBJECT_KEYS and self.is_id(ident))):
            return True
        if str(obj.get("asset_type", "")).lower() == "user" and self.is_id(obj.get("asset_id")):
            return True
        actor = obj.get("actor")
        return isinstance(actor, Mapping) and self._owned(actor, "actor")

    def _walk(self, value: Any, key: str | None, found: Redaction, *, names: bool,
              siblings: Mapping[str, Any] | None = None, parent_key: str | None = None) -> Any:
        if isinstance(value, Mapping):
            owned = self._owned(value, key)
            out: dict[str, Any] = {}
            for k, v in value.items():
                if (owned and k in DETAIL_KEYS and v is not None) or (owned and k == "session" and v is not None):
                    out[k] = None
                    found.count += 1
                elif owned and k == "extensions" and isinstance(v, Mapping):
                    out[k] = {ek: (self._detail_free(ev, found) if isinstance(ev, Mapping) else
                                   self._walk(ev, ek, found, names=names, siblings=v, parent_key=k))
                              for ek, ev in v.items()}
                elif self._user_position(k, key, value) and self._matches_any(v):
                    out[k] = None if not isinstance(v, list) else [x for x in v if not self.is_id(x)]
                    found.count += 1
                else:
                    out[k] = self._walk(v, k, found, names=names, siblings=value, parent_key=key)
            return out
        if isinstance(value, list):
            return [self._walk(v, key, found, names=names, siblings=siblings, parent_key=parent_key) for v in value]
        if isinstance(value, str):
            if _JWS.match(value) and self.token_names_someone(value):
                found.count += 1
                return None
            text, n = self.redact_text(value, names=names)
            found.count += n
            return text
        return value

    def _matches_any(self, value: Any) -> bool:
        if isinstance(value, list):
            return any(self.is_id(x) for x in value)
        return self.is_id(value)

    def _detail_free(self, obj: Mapping[str, Any], found: Redaction) -> dict[str, Any]:
        """An owned object's extension block without the person's details (ids in it redacted too)."""
        out = {}
        for k, v in obj.items():
            if k in DETAIL_KEYS and v is not None:
                out[k] = None
                found.count += 1
            else:
                out[k] = self._walk(v, k, found, names=False, siblings=obj)
        return out


_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")


def _name_pattern(names: list[str]) -> re.Pattern[str] | None:
    """Names as word sequences: 'Samantha Lee' also finds 'samantha  lee'; sortable names come as their own."""
    if not names:
        return None
    alternatives = "|".join(r"\W+".join(re.escape(w) for w in re.findall(r"[^\W_]+", n)) for n in names)
    return re.compile(rf"(?<![\w])(?:{alternatives})(?![\w])", re.IGNORECASE)


def _word_pattern(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![\w.@+-])(?:{alternatives})(?![\w@-])", re.IGNORECASE)


def decode_jws_claims(token: str) -> Any | None:
    """The decoded payload of a compact JWS (no verification: only to look for a person); None if not one."""
    match = _JWS.match(token.strip())
    if match is None:
        return None
    segment = match.group(1)
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None

"""One id per Canvas object: which form an id is stored in, decided from the settings and the event alone.

Canvas writes an object's id in two forms: **global** (``shard * 10^13 + local id``, e.g.
``21070000000004811``) and **local** (``4811``, relative to the shard of the event's own root
account); Caliper wraps either in a URN (``urn:instructure:canvas:course:21070000000000565``).
Canvas Data 2 stores the objects of the institution's home shard in local form and objects of any
other shard (cross-shard users of a trust or consortium, other root accounts) in global form. The
warehouse does the same, so its tables join CD2's on the id column with no function.

For an id ``n`` carried by an event of shard ``E`` (the shard of its root account, see
:func:`canvas_event_shard` and :func:`caliper_event_shard`), with home shard ``H``:

- global form (``n >= 10^13``): ``n % 10^13`` when its shard is ``H``, else ``n`` unchanged;
- local form (``n < 10^13``): an id of the event's shard, so ``n`` when ``E`` is ``H`` or unknown,
  else the global form ``E * 10^13 + n``.

``H`` is the ``CANVAS_HOME_SHARD`` setting; when it is unset, each event's own shard counts as home
(a single-shard institution gets local ids with no setting; see docs/analysts.md for the
multi-shard caveat), and an event whose shard cannot be told keeps every id in the form it
carries. Nothing depends on earlier events, so any order of deliveries gives the same ids.

Migration 0007 mirrors :func:`canonical_id` and the event-shard derivation in SQL to convert an
existing warehouse (``canonical_id`` and ``event_shard`` in the warehouse schema); a test holds the
two to the same answers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canvas_stream.errors import CanvasStreamError
from canvas_stream.formats import CANVAS_EXTENSION, canvas_extension

SHARD_FACTOR = 10**13
BIGINT_LIMIT = 2**63
# The largest shard whose every global id fits a bigint (922337 * 10^13 + 10^13 - 1 would not).
MAX_SHARD = 922336
_GLOBAL_LIMIT = (MAX_SHARD + 1) * SHARD_FACTOR
EXT = CANVAS_EXTENSION


class InvalidId(CanvasStreamError, ValueError):
    """A value that is not a Canvas id (or out of bigint range)."""


def parse_id(value: Any) -> int | None:
    """A Canvas id as written (number, digit string, or a URN's trailing digits) as an int; None if absent."""
    if value is None or value == "":
        return None
    if type(value) is int:
        number = value
    elif isinstance(value, bool):
        raise InvalidId("id is a boolean")
    elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        number = int(value)
    elif isinstance(value, str):
        text = value.rsplit(":", 1)[-1].strip()
        if not (text.isascii() and text.isdigit()):
            raise InvalidId(f"not a Canvas id: {value[:60]!r}")
        if len(text.lstrip("0")) > 19:
            raise InvalidId("id out of bigint range")
        number = int(text)
    else:
        raise InvalidId(f"not a Canvas id: {type(value).__name__}")
    if not -BIGINT_LIMIT <= number < BIGINT_LIMIT:
        raise InvalidId("id out of bigint range")
    return number


def shard_of(value: Any) -> int | None:
    """The shard of a global-form id given as an int, a digit string or a Canvas URN; None otherwise.

    Deliberately strict (no whitespace, no floats), so that SQL can say the same (``id_shard``).
    """
    if type(value) is int:
        number = value
    elif type(value) is str:
        text = value.rsplit(":", 1)[-1]
        if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
            return None
        number = int(text)
    else:
        return None
    return number // SHARD_FACTOR if SHARD_FACTOR <= number < _GLOBAL_LIMIT else None


def _first_shard(*values: Any) -> int | None:
    for value in values:
        shard = shard_of(value)
        if shard is not None:
            return shard
    return None


def canvas_event_shard(meta: Mapping[str, Any]) -> int | None:
    """The shard of a Canvas-format event: of the first global-form id among the metadata's
    ``root_account_id``, ``context_account_id`` and ``context_id`` (all on the event's own shard)."""
    return _first_shard(meta.get("root_account_id"), meta.get("context_account_id"), meta.get("context_id"))


def caliper_event_shard(item: Mapping[str, Any]) -> int | None:
    """The shard of one Caliper event: of the first global-form id among the actor's ``root_account_id``
    extension, the object's ``context_account_id`` extension, the group (the event's context) and the
    object itself (for the few events, such as calendar feeds, whose actor is not a Canvas user)."""
    group = item.get("group")
    obj = item.get("object")
    return _first_shard(
        canvas_extension(item.get("actor")).get("root_account_id"),
        canvas_extension(obj).get("context_account_id"),
        group.get("id") if isinstance(group, Mapping) else None,
        obj.get("id") if isinstance(obj, Mapping) else None,
    )


def canonical_id(number: int, event_shard: int | None, home_shard: int | None) -> int:
    """The stored form of one id (see the module docstring); the scalar rule, for tests and documentation."""
    return IdPolicy(home_shard).for_event(event_shard).canonical(number)


class EventIds:
    """The id coercion for one event: parse, then put into the stored form. Built once per shard, not per id."""

    __slots__ = ("_home_base", "_offset", "event_shard", "home_shard")

    def __init__(self, home_shard: int | None, event_shard: int | None) -> None:
        home = home_shard if home_shard is not None else event_shard
        self.home_shard = home
        self.event_shard = event_shard
        self._home_base = None if home is None else home * SHARD_FACTOR
        self._offset = event_shard * SHARD_FACTOR if event_shard is not None and event_shard != home else 0

    def canonical(self, number: int) -> int:
        if number < SHARD_FACTOR:
            return number + self._offset if number > 0 and self._offset else number
        base = self._home_base
        if base is not None and base <= number < base + SHARD_FACTOR:
            return number - base
        return number

    def __call__(self, value: Any) -> int | None:
        """Parse and convert; raises InvalidId. The hot path: a digit string or an int."""
        if type(value) is str and len(value) <= 19 and value.isascii() and value.isdigit():
            number = int(value)
            if number >= BIGINT_LIMIT:
                raise InvalidId("id out of bigint range")
        elif type(value) is int and -BIGINT_LIMIT <= value < BIGINT_LIMIT:
            number = value
        else:
            parsed = parse_id(value)
            if parsed is None:
                return None
            number = parsed
        return self.canonical(number)

    def lenient(self, value: Any) -> int | None:
        """Like calling it, but None for a value that is not an id (event columns are best effort)."""
        try:
            return self(value)
        except InvalidId:
            return None


@dataclass(frozen=True, slots=True)
class IdPolicy:
    """The settings' part of the rule: the institution's home shard (None: each event's own shard)."""

    home_shard: int | None = None

    def __post_init__(self) -> None:
        if self.home_shard is not None and not 1 <= self.home_shard <= MAX_SHARD:
            raise ValueError(f"home shard must be between 1 and {MAX_SHARD}")

    def for_event(self, event_shard: int | None) -> EventIds:
        return _event_ids(self.home_shard, event_shard)


@functools.lru_cache(maxsize=1024)
def _event_ids(home_shard: int | None, event_shard: int | None) -> EventIds:
    return EventIds(home_shard, event_shard)

"""Test helpers for Canvas ids: events rewritten to carry one object's id in a chosen form and shard,
and the previous release's rule (ids stored as written) for building a warehouse as it left them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from processors.normalize.ids import EXT, SHARD_FACTOR, EventIds, IdPolicy

CANVAS_URN = "urn:instructure:canvas:"
AS_WRITTEN = EventIds(None, None)  # no home and no event shard: every id stays in the form it has


class AsWritten(IdPolicy):
    """The previous release's behaviour: every id stored in whatever form the event carried."""

    def for_event(self, event_shard: int | None) -> EventIds:
        return AS_WRITTEN


@dataclass(frozen=True)
class CanvasObject:
    """One Canvas object: its shard and its local id."""

    shard: int
    local: int

    @property
    def global_id(self) -> int:
        return self.shard * SHARD_FACTOR + self.local

    def stored(self, home_shard: int) -> int:
        """The id the warehouse must hold for it (CD2's convention)."""
        return self.local if self.shard == home_shard else self.global_id


def written(obj: CanvasObject, form: str) -> int:
    """The number an event carries for ``obj`` in ``form`` ("global" or "local")."""
    return obj.global_id if form == "global" else obj.local


def _render(old: Any, number: int, as_int: bool | None) -> Any:
    if isinstance(old, str) and old.startswith(CANVAS_URN):
        return f"{old.rsplit(':', 1)[0]}:{number}"
    if as_int is None:
        as_int = isinstance(old, int)
    return number if as_int else str(number)


def replace_id(value: Any, old: int, number: int, as_int: bool | None = None) -> Any:
    """``value`` (any JSON) with every occurrence of id ``old`` (number, digit string or the tail of a
    Canvas URN) replaced by ``number``, keeping each occurrence's kind (URN, string, number) unless
    ``as_int`` says which of number/string to use."""
    if isinstance(value, dict):
        return {k: replace_id(v, old, number, as_int) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_id(v, old, number, as_int) for v in value]
    if type(value) is int and value == old:
        return _render(value, number, as_int)
    if isinstance(value, str) and (value == str(old) or (value.startswith(CANVAS_URN)
                                                         and value.endswith(f":{old}"))):
        return _render(value, number, as_int)
    return value


def set_event_shard(payload: dict, fmt: str, shard: int) -> dict:
    """A copy of ``payload`` whose events name a root account on ``shard`` (the first thing ids.py reads)."""
    out = copy.deepcopy(payload)
    root = str(shard * SHARD_FACTOR + 1)
    if fmt == "canvas":
        out["metadata"]["root_account_id"] = root
    else:
        for item in out["data"]:
            actor = item.setdefault("actor", {})
            actor.setdefault("extensions", {}).setdefault(EXT, {})["root_account_id"] = root
    return out


def ids_in(value: Any) -> Iterator[int]:
    """Every number that could be a Canvas id in a JSON value (numbers, digit strings, URN tails)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from ids_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from ids_in(item)
    elif type(value) is int:
        yield value
    elif isinstance(value, str):
        tail = value.rsplit(":", 1)[-1] if value.startswith(CANVAS_URN) else value
        if tail.isascii() and tail.isdigit() and len(tail) <= 19:
            yield int(tail)

"""Applying the event map: one event's ``(meta, body)`` -> row changes with values coerced to column kinds.

Everything that does not depend on the event is worked out once, at import, per target
(:class:`Plan`): which body key lands in which column with which coercion, the key sources, the
constants (already coerced) and the body keys the map knows. Compiling also checks the event map
against ``processors.warehouse.schema`` (tables, key and data columns), so a mapping bug fails at
import, not in the writer. Per event, :func:`apply_mapping` only looks up and converts values.

Id columns (``Kind.ID``, keys included) are the one kind whose conversion depends on the event: the
stored form of a Canvas id needs the event's shard (``ids``). Their plans hold no coercion
(``None``); each event passes its ``EventIds``, built once per event, and every id goes through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canvas_stream.errors import CanvasStreamError
from processors.warehouse.schema import TABLE_SPECS, Kind, TableSpec

from .event_map import (
    EVENTS,
    BodyField,
    Constant,
    EventSpec,
    EventValue,
    MetaField,
    Source,
    Target,
)
from .happening import happening_id, metadata_columns, object_of
from .ids import EventIds, InvalidId, parse_id
from .model import (
    EventRow,
    NormalizationError,
    Normalized,
    RowChange,
    happening_time,
    history_time,
    make_version,
    parse_time,
)

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63  # [min, max)


class Invalid(CanvasStreamError):
    """A value that cannot be coerced to its column's kind (reported, the column is not set)."""


class MappingError(CanvasStreamError, ValueError):
    """The event map names a table or column the schema does not have, or maps onto the key."""


# --- coercion: a JSON value to the Python value of a column kind (None stays None) ------------


def _to_id(value: Any) -> int | None:
    """An id as written, with no shard context (constants only; mapped ids go through ``EventIds``)."""
    try:
        return parse_id(value)
    except InvalidId as exc:
        raise Invalid(str(exc)) from exc


def _to_time(value: Any) -> datetime | None:
    try:
        return parse_time(value)
    except NormalizationError as exc:
        raise Invalid(str(exc)) from exc


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise Invalid("not a boolean")


def _to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise Invalid("boolean for a number")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise Invalid("not a number") from exc
    if not isinstance(number, int | float):
        raise Invalid("not a number")
    return number


def _to_float(value: Any) -> float:
    return float(_to_number(value))


def _to_int(value: Any) -> int:
    number = _to_number(value)
    if float(number).is_integer() and BIGINT_MIN <= number < BIGINT_MAX:
        return int(number)
    raise Invalid("not an integer")


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _as_json(value: Any) -> Any:
    return value


Coerce = Callable[[Any], Any]
COERCE: dict[Kind, Coerce] = {
    Kind.ID: _to_id,
    Kind.INT: _to_int,
    Kind.FLOAT: _to_float,
    Kind.BOOL: _to_bool,
    Kind.TIME: _to_time,
    Kind.TEXT: _to_text,
    Kind.JSON: _as_json,
}


def coerce(kind: Kind, value: Any) -> Any:
    """A JSON value to the Python value of a column kind; raises Invalid."""
    return None if value is None else COERCE[kind](value)


# --- compiling the event map -------------------------------------------------------------------

_ABSENT = object()


@dataclass(frozen=True, slots=True)
class Sourced:
    """A column set from a source, with the coercion of the column's kind (None: the event's ids)."""

    column: str
    source: Source
    coerce: Coerce | None


@dataclass(frozen=True, slots=True)
class Plan:
    """One target, compiled: everything about it that does not depend on the event."""

    table: str
    keys: tuple[Sourced, ...]
    columns: Mapping[str, tuple[str, Coerce | None]]  # body key -> (column, coercion or None for ids)
    extras: tuple[Sourced, ...]
    constants: Mapping[str, Any]  # column -> value, already coerced


# What a generated function returns: the row changes, and the keys still missing the happening id
# with their column.
Run = Callable[..., tuple[list[RowChange], list[tuple[dict[str, Any], str]]]]


@dataclass(frozen=True, slots=True)
class CompiledEvent:
    plans: tuple[Plan, ...]
    flatten: Mapping[str, str]
    known: frozenset[str]  # body keys some target stores, keys on or ignores
    # The plans as one generated Python function (``generate``): per event, no source is dispatched on
    # and no slot is looped over; only the body's own keys are.
    run: Run


def _coercion(spec: TableSpec, column: str) -> Coerce | None:
    """The column's coercion; None for ids, whose stored form depends on the event (``EventIds``)."""
    kind = spec.kinds[column]
    return None if kind is Kind.ID else COERCE[kind]


def _sourced(spec: TableSpec, column: str, source: Source) -> Sourced:
    return Sourced(column, source, _coercion(spec, column))


def compile_target(target: Target) -> tuple[Plan, frozenset[str]]:
    """The plan of one target and the body keys it knows; raises MappingError for a mapping bug."""
    spec = TABLE_SPECS.get(target.table)
    if spec is None or not spec.versioned:
        raise MappingError(f"event map target {target.table!r} is not a versioned warehouse table")
    key_names = {c.name for c in spec.keys}
    if set(target.key) != key_names:
        raise MappingError(f"{target.table}: key {sorted(target.key)} is not the table key {sorted(key_names)}")
    for column in (*target.rename.values(), *target.extra):
        if column not in spec.data_columns:
            raise MappingError(f"{target.table}: no data column {column!r}")
    if any(isinstance(source, Constant) for source in target.key.values()):
        raise MappingError(f"{target.table}: a key cannot be a constant")
    if any(source is EventValue.HAPPENING_ID for source in target.extra.values()):
        # known only once the event's changes are made (``apply_mapping`` fills it into keys)
        raise MappingError(f"{target.table}: the happening id can only be a key")

    key_body = {s.key for s in target.key.values() if isinstance(s, BodyField)}
    columns: dict[str, tuple[str, Coerce | None]] = {}
    for body_key in (*spec.data_columns, *target.rename):
        column = target.rename.get(body_key, body_key)
        if column in spec.data_columns and body_key not in key_body and body_key not in target.ignore:
            columns[body_key] = (column, _coercion(spec, column))
    constants: dict[str, Any] = {}
    extras: list[Sourced] = []
    for column, source in target.extra.items():
        if isinstance(source, Constant):
            try:
                constants[column] = coerce(spec.kinds[column], source.value)
            except Invalid as exc:
                raise MappingError(f"{target.table}.{column}: constant {source.value!r}: {exc}") from exc
        else:
            extras.append(_sourced(spec, column, source))
    plan = Plan(
        table=target.table,
        keys=tuple(_sourced(spec, column, source) for column, source in target.key.items()),
        columns=columns,
        extras=tuple(extras),
        constants=constants,
    )
    extra_body = {s.key for s in target.extra.values() if isinstance(s, BodyField)}
    return plan, frozenset(columns) | key_body | extra_body | target.ignore


def compile_event(spec: EventSpec) -> CompiledEvent:
    plans, known = [], set()
    for target in spec.targets:
        plan, knows = compile_target(target)
        plans.append(plan)
        known |= knows
    return CompiledEvent(tuple(plans), dict(spec.flatten), frozenset(known), generate(tuple(plans)))


# --- generating the per-event function of a compiled event -------------------------------------
#
# Each event type's plans become the source of one function, compiled once at import (``exec``): its
# key slots, extras and constants are unrolled, each reading its source directly and calling its
# coercion by name. It does what interpreting the plans did, in the same order: the same changes, the
# same problems in the same order (tests/unit/test_generated_mapping.py keeps that interpreter).

_PARAMETERS = "flat, meta, event_id, event_time, event_name, ids, label, version, problems"


_EVENT_VALUES = {
    EventValue.EVENT_ID: "event_id",
    EventValue.EVENT_TIME: "event_time",
    EventValue.HAPPENING_TIME: "happening_time(event_time)",
    EventValue.EVENT_NAME: "event_name",
}


def _read_expression(table: str, source: Source) -> str:
    """Python text that reads ``source`` in a generated function. The happening id is filled in by
    ``apply_mapping`` and a constant is resolved when compiling: neither is read here."""
    if type(source) is BodyField:
        return f"flat.get({source.key!r}, _ABSENT)"
    if type(source) is MetaField:
        return f"meta.get({source.key!r}, _ABSENT)"
    read = _EVENT_VALUES.get(source) if isinstance(source, EventValue) else None
    if read is None:
        raise MappingError(f"{table}: no value for source {source!r}")
    return read


def _conversion(slot: Sourced, names: dict[str, Any]) -> str:
    """The name the generated function calls to coerce the slot's value (``ids`` for ids)."""
    if slot.coerce is None:
        return "ids"
    name = f"_coerce_{len(names)}"
    names[name] = slot.coerce
    return name


def _plan_source(i: int, plan: Plan, names: dict[str, Any]) -> list[str]:
    names[f"_table_{i}"] = plan.table
    names[f"_columns_{i}"] = plan.columns
    lines = ["    key = {}", "    complete = True", "    happening_column = None"]
    for slot in plan.keys:
        if slot.source is EventValue.HAPPENING_ID:
            lines.append(f"    if complete: happening_column = {slot.column!r}")
            continue
        lines += [
            "    if complete:",
            f"        raw = {_read_expression(plan.table, slot.source)}",
            "        value = None",
            "        if raw is not _ABSENT and raw is not None:",
            "            try:",
            f"                value = {_conversion(slot, names)}(raw)",
            "            except (Invalid, InvalidId):",
            "                pass",
            "        if value is None:",
            f"            problems.append(label + {'.' + str(slot.source) + ':missing_key'!r})",
            "            complete = False",
            "        else:",
            f"            key[{slot.column!r}] = value",
        ]
    lines += [
        "    fields = {}",
        f"    columns = _columns_{i}",
        "    for raw_key, raw in flat.items():",
        "        target = columns.get(raw_key)",
        "        if target is None:",
        "            continue",
        "        column, convert = target",
        "        if raw is None:",
        "            fields[column] = None",
        "            continue",
        "        try:",
        "            fields[column] = (convert or ids)(raw)",
        "        except (Invalid, InvalidId):",
        "            problems.append(f'{label}.{raw_key}:invalid')",
    ]
    for slot in plan.extras:
        lines += [
            f"    raw = {_read_expression(plan.table, slot.source)}",
            "    if raw is None:",
            f"        fields[{slot.column!r}] = None",
            "    elif raw is not _ABSENT:",
            "        try:",
            f"            fields[{slot.column!r}] = {_conversion(slot, names)}(raw)",
            "        except (Invalid, InvalidId):",
            f"            problems.append(label + {'.' + str(slot.source) + ':invalid'!r})",
        ]
    if plan.constants:
        names[f"_constants_{i}"] = plan.constants
        lines.append(f"    fields.update(_constants_{i})")
    lines += [
        "    if complete:",
        f"        changes.append(RowChange(_table_{i}, key, fields, version))",
        "        if happening_column is not None:",
        "            by_happening.append((key, happening_column))",
    ]
    return lines


def generate(plans: tuple[Plan, ...]) -> Run:
    """One function applying ``plans`` to an event: ``(changes, keys missing the happening id)``."""
    names: dict[str, Any] = {"_ABSENT": _ABSENT, "Invalid": Invalid, "InvalidId": InvalidId, "RowChange": RowChange,
                             "happening_time": happening_time}
    lines = [f"def run({_PARAMETERS}):", "    changes = []", "    by_happening = []"]
    for i, plan in enumerate(plans):
        lines += _plan_source(i, plan, names)
    lines.append("    return changes, by_happening")
    exec(compile("\n".join(lines), "<event map>", "exec"), names)
    return names["run"]  # type: ignore[no-any-return]


COMPILED: dict[str, CompiledEvent] = {name: compile_event(spec) for name, spec in EVENTS.items()}


# --- application -----------------------------------------------------------------------------


@dataclass(slots=True)
class Applied:
    changes: list[RowChange]
    unknown_fields: list[str]
    happening_id: str  # see ``happening``; the event id when the event is not correlated


def flatten_body(body: Mapping[str, Any], flatten: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in flatten and isinstance(value, Mapping):
            for sub, subvalue in value.items():
                out[f"{flatten[key]}{sub}"] = subvalue
        else:
            out[key] = value
    return out


def apply_mapping(
    event_name: str,
    meta: Mapping[str, Any],
    body: Mapping[str, Any],
    *,
    event_id: str,
    event_time: datetime | None,
    ids: EventIds,
    label: str | None = None,
) -> Applied | None:
    """Row changes for one event; None when the event name has no mapping.

    ``ids`` converts every id (keys included) to its stored form for this event's shard.
    ``label`` names the event in ``unknown_fields`` entries (defaults to the mapping's name).
    A key that is absent or invalid skips that target's change (reported as ``missing_key``);
    a field that cannot be coerced is left unset (reported as ``invalid``).
    """
    compiled = COMPILED.get(event_name)
    if compiled is None:
        return None
    label = label or event_name
    version = make_version(event_time, event_id)
    flat = flatten_body(body, compiled.flatten) if compiled.flatten else body
    problems: list[str] = []
    changes, by_happening = compiled.run(flat, meta, event_id, event_time, event_name, ids, label, version, problems)
    happening = happening_id(event_id, event_name, meta, event_time, object_of(event_name, changes))
    for key, column in by_happening:  # the change holds this dict: filled in place, once
        key[column] = happening
    unknown = [f"{label}.{k}" for k in flat if k not in compiled.known]
    return Applied(changes=changes, unknown_fields=unknown + problems, happening_id=happening)


def add_event(out: Normalized, applied: Applied | None, meta: Mapping[str, Any], ids: EventIds, *, event_id: str,
              name: str, fmt: str, event_time: datetime | None, received_at: datetime, payload: Mapping[str, Any],
              payload_json: bytes | None, context_type: str | None, root_account_uuid: str | None,
              subscription: str | None, arrival: Mapping[str, Any]) -> None:
    """One event into ``out``, whatever its format: its ``events`` row (user, context and acting-user
    columns read from ``meta``, the Canvas-shaped metadata) and what :func:`apply_mapping` made of it,
    or its name among the unknown events when there is no mapping."""
    out.events.append(EventRow(  # filed under the event's own time, the epoch without one (a partition key)
        event_id=event_id, event_name=name, format=fmt, event_time=history_time(event_time), received_at=received_at,
        user_id=ids.lenient(meta.get("user_id")), context_type=context_type,
        context_id=ids.lenient(meta.get("context_id")), payload=payload, payload_json=payload_json,
        subscription=subscription, root_account_uuid=root_account_uuid,
        happening_id=applied.happening_id if applied is not None else event_id, arrival=arrival,
        **metadata_columns(meta, ids.lenient),
    ))
    if applied is None:
        out.unknown_events.append(name)
    else:
        out.changes.extend(applied.changes)
        out.unknown_fields.extend(applied.unknown_fields)

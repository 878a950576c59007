"""Happenings delivered in both formats, made from the paired example templates (test helper).

``canvas_stream/examples/{canvas,caliper}/<type>.json`` describe the same happening in the two
formats (same object, time and request); fresh copies of a pair made by ``fresh_happening`` stay one
happening while naming new objects, a new request and a new time.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from canvas_stream.records import Record, Verification, detect_format
from canvas_stream.send import example_types, fresh_happening, load_example
from processors.normalize.model import RowChange
from processors.warehouse.schema import TABLE_SPECS

# In the past: history is partitioned by month up to a few months ahead, and a later event is refused
# (quarantined) by PostgreSQL (docs/retention.md).
START = datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
FACT_TABLES = sorted(name for name, spec in TABLE_SPECS.items() if spec.keys[0].name == "happening_id")


def paired_happenings(per_type: int, *, seed: int = 0, types: Iterable[str] | None = None,
                      start: datetime = START) -> list[tuple[dict, dict]]:
    """``per_type`` happenings of every example type, each as its (Canvas, Caliper) deliveries."""
    rng = random.Random(seed)
    pairs: list[tuple[dict, dict]] = []
    for name in types or example_types():
        templates = (load_example(name, "canvas"), load_example(name, "caliper"))
        for index in range(per_type):
            canvas, caliper = fresh_happening(templates, rng=rng, now=start + timedelta(seconds=7 * index))
            pairs.append((canvas, caliper))
    return pairs


def record(payload: dict, *, received_at: str = "2026-05-06T07:09:00+00:00") -> Record:
    return Record(source="live_event", format=detect_format(payload), received_at=received_at, payload=payload,
                  verification=Verification(signed=True, kid="test"))


def fact_counts(changes: Iterable[RowChange]) -> dict[str, int]:
    """Distinct rows per fact table the changes make (a fact row is one happening)."""
    keys: dict[str, set] = {name: set() for name in FACT_TABLES}
    for change in changes:
        if change.table in keys:
            keys[change.table].add(tuple(sorted(change.key.items())))
    return {name: len(found) for name, found in keys.items()}

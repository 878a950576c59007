"""Load the Canvas Live Events documentation corpus as records (test helper, no pytest fixtures).

Canvas's docs reuse some Caliper event ids across different example events (e.g. one
``urn:uuid`` serves assignment_created, assignment_override_created and quiz_created). Real ids
are used as-is by the normalizer; here every repeated id after its first use is replaced by a
deterministic unique one, so that no example is lost to deduplication when examples are stored
together. ``Example.original_ids`` keeps what the doc said.
"""

from __future__ import annotations

import copy
import csv
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canvas_stream.records import FORMAT_CALIPER, FORMAT_CANVAS, SOURCE_LIVE_EVENT, Record, Verification

# The documentation corpus lives in the repository as test data (see its README.md for sources and licence).
CORPUS = Path(__file__).resolve().parents[1] / "data" / "canvas-lms-events"
RECEIVED_AT = "2024-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class Example:
    format: str  # canvas | caliper
    doc: str  # the documented event name (INDEX json_name), e.g. "grade_change" or "metadata"
    kind: str  # "event" or "metadata" (pure-metadata pages)
    index: int
    payload: dict[str, Any]
    description: str | None = None
    original_ids: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.format}:{self.doc}#{self.index}"

    def record(self) -> Record:
        return Record(
            source=SOURCE_LIVE_EVENT,
            format=FORMAT_CANVAS if self.format == "canvas" else FORMAT_CALIPER,
            received_at=RECEIVED_AT,
            payload=copy.deepcopy(self.payload),
            verification=Verification(signed=False),
        )


def index_rows() -> list[dict[str, str]]:
    with (CORPUS / "INDEX.tsv").open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def load_examples() -> list[Example]:
    examples: list[Example] = []
    seen_ids: set[str] = set()
    for row in index_rows():
        doc = json.loads((CORPUS / row["file"]).read_text())
        for index, ex in enumerate(doc.get("examples") or []):
            payload = copy.deepcopy(ex["payload"])
            original: list[str] = []
            if row["format"] == "caliper":
                for pos, item in enumerate(payload.get("data") or []):
                    item_id = item.get("id")
                    original.append(item_id)
                    if item_id in seen_ids:
                        item["id"] = "urn:uuid:" + str(
                            uuid.uuid5(uuid.NAMESPACE_URL, f"{row['file']}#{index}#{pos}#{item_id}")
                        )
                    seen_ids.add(item["id"])
            examples.append(
                Example(
                    format=row["format"],
                    doc=row["json_name"],
                    kind=row["kind"],
                    index=index,
                    payload=payload,
                    description=ex.get("description"),
                    original_ids=original,
                )
            )
    return examples


def documented_event_names(fmt: str) -> set[str]:
    """Event names the corpus documents for a format (excluding pure-metadata pages)."""
    return {r["json_name"] for r in index_rows() if r["format"] == fmt and r["kind"] == "event"}

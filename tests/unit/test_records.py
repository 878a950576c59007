"""The wire record: hand-built encoding equals the dataclass, and decoding refuses anything else."""

from __future__ import annotations

import dataclasses
import json

import pytest

from canvas_stream.records import Record, RecordError, Verification, record_from_bytes


def test_to_bytes_carries_every_field_and_round_trips():
    record = Record(source="live_event", format="canvas", received_at="2024-01-01T00:00:00+00:00",
                    payload={"metadata": {"event_name": "x"}, "body": {"é": [1, None]}},
                    verification=Verification(signed=True, kid="k", issuer="i", verified_at="t"),
                    raw="a.b.c", extra={"deployment_id": "1"})
    assert json.loads(record.to_bytes()) == dataclasses.asdict(record)
    assert record_from_bytes(record.to_bytes()) == record


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"v": 2}', b'{"v": 1, "source": "x"}',
                                  b'{"v":1,"source":"s","format":"f","received_at":"nope","payload":{},'
                                  b'"verification":{"signed":false}}'])
def test_anything_else_is_a_record_error(data):
    with pytest.raises(RecordError):
        record_from_bytes(data)

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


def test_the_arrival_rebuilds_the_record_with_its_payload_and_receipt_time():
    """events keeps payload, received_at and arrival: together they are the record the worker normalized."""
    from canvas_stream.records import Delivery, arrival_of, record_from_arrival

    record = Record(source="lti_notice", format="lti_notice", received_at="2024-01-01T00:00:00+00:00",
                    payload={"iss": "p"}, verification=Verification(signed=True, kid="k", issuer="i", verified_at="t"),
                    raw="a.b.c", extra={"client_id": "10000000000068"},
                    delivery=Delivery(method="sqs", queue="https://q", message_id="m"))
    arrival = json.loads(json.dumps(arrival_of(record, with_raw=True)))  # as stored in jsonb
    rebuilt = record_from_arrival(arrival, fmt=record.format, payload=record.payload,
                                  received_at=record.received_at)
    assert rebuilt == record
    assert "raw" not in arrival_of(record)  # a live event's raw body is its payload again: not kept
    with pytest.raises(RecordError):
        record_from_arrival({"verification": {}}, fmt="canvas", payload={}, received_at=record.received_at)

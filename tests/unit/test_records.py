"""The wire record: hand-built encoding equals the dataclass, one copy of the payload, and decoding
refuses anything else."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime

import pytest

from canvas_stream.records import Record, RecordError, Verification, iso_of_ns, now_iso, record_from_bytes
from ingest.live_events import build_record


def test_to_bytes_carries_every_field_and_round_trips():
    record = Record(source="live_event", format="canvas", received_at="2024-01-01T00:00:00+00:00",
                    payload={"metadata": {"event_name": "x"}, "body": {"é": [1, None]}},
                    verification=Verification(signed=True, kid="k", issuer="i", verified_at="t"),
                    raw="a.b.c", extra={"deployment_id": "1"})
    expected = dataclasses.asdict(record)
    del expected["payload_json"]  # not a field on the wire: the payload member is that text
    del expected["_received"]  # a cache of received_at, parsed
    assert json.loads(record.to_bytes()) == expected
    assert record_from_bytes(record.to_bytes()) == record


def test_the_receipt_time_is_parsed_once_and_stays_what_the_field_says():
    record = record_from_bytes(Record(source="live_event", format="canvas", received_at="2024-01-01T00:00:00+00:00",
                                      payload={}, verification=Verification(signed=False)).to_bytes())
    first = record.received_datetime
    assert first.isoformat() == "2024-01-01T00:00:00+00:00"
    assert record.received_datetime is first  # parsed when the record was validated, not again


def test_the_payload_text_is_published_as_is_and_read_back_without_re_encoding():
    text = b'{"metadata": {"event_name": "x", "n": 1.50},\n "body": {"name": "caf\u00e9"}}'
    record = Record(source="live_event", format="canvas", received_at="2024-01-01T00:00:00+00:00",
                    payload=json.loads(text), verification=Verification(signed=True), payload_json=text)
    wire = record.to_bytes()
    assert text in wire  # spliced in, not encoded again (1.50 and the escape stay as they came)
    assert wire.count(b"event_name") == 1  # one copy of the event per record
    decoded = record_from_bytes(wire)
    assert decoded == record and decoded.payload_json == text


def test_a_payload_without_text_is_encoded_and_its_text_read_back():
    record = Record(source="lti_notice", format="lti_notice", received_at="2024-01-01T00:00:00+00:00",
                    payload={"b": [1, 2.5, None], "a": "x"}, verification=Verification(signed=True), raw="h.p.s")
    decoded = record_from_bytes(record.to_bytes())
    assert decoded == record
    assert json.loads(decoded.payload_json) == record.payload


@pytest.mark.parametrize("payload", [b'{"n": NaN}', b'{"n": 1e400}', b'{"n": -Infinity}'])
def test_a_payload_with_a_non_finite_number_is_a_record_error_not_a_silent_null(payload):
    record = Record(source="live_event", format="canvas", received_at="2024-01-01T00:00:00+00:00",
                    payload={}, verification=Verification(signed=True), payload_json=payload)
    with pytest.raises(RecordError):
        record_from_bytes(record.to_bytes())


def test_integers_beyond_64_bits_and_lone_surrogates_decode_as_the_stdlib_does():
    wire = (b'{"v":1,"source":"live_event","format":"canvas","received_at":"2024-01-01T00:00:00+00:00",'
            b'"verification":{"signed":true},"payload":{"big":123456789012345678901234567890,"s":"\ud800"}}')
    assert record_from_bytes(wire).payload == json.loads(wire)["payload"]


@pytest.mark.parametrize("payload_json", [
    b'{"metadata":{"context_type":"Course","context_id":"\\ud800"},"body":{}}',
    b'{"metadata":{"user_id":"\\udfff"},"body":{}}',
    b'{"sensor":"s","data":[{"group":{"id":"\\ud800"}}]}',
])
def test_an_id_with_a_lone_surrogate_gets_a_key_and_a_record_not_an_exception(payload_json):
    """A lone surrogate escape ("\\ud800") is valid JSON: a signed event naming such an id must be
    published (an exception here is a 500, and Canvas retries it forever)."""
    payload = json.loads(payload_json)
    key, record = build_record(payload, Verification(signed=True), payload_json)
    assert key == f"{record.format}:unkeyable".encode()
    assert record_from_bytes(record.to_bytes()).payload == payload


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"v": 2}', b'{"v": 1, "source": "x"}', b"\xff\xfe",
                                  b"[" * 5000 + b"]" * 5000,
                                  b'{"v":1,"source":"s","format":"f","received_at":"nope","payload":{},'
                                  b'"verification":{"signed":false}}'])
def test_anything_else_is_a_record_error(data):
    with pytest.raises(RecordError):
        record_from_bytes(data)


def test_a_message_with_no_value_is_a_record_error_and_quarantined():
    """A tombstone (a Kafka record whose value is null) is quarantined like any other non-record,
    instead of raising out of the batch (which failed the batch and left it uncommitted)."""
    from processors.batch import prepare
    from processors.normalize import IdPolicy

    with pytest.raises(RecordError, match="no value"):
        record_from_bytes(None)
    batch = prepare([None, b"not json"], IdPolicy(None))
    assert [(i.raw, i.quarantine.reason, i.quarantine.raw) for i in batch.items] == [
        (b"", "record: message has no value", ""), (b"not json", "record: message is not JSON", "not json")]


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


def test_iso_of_ns_writes_what_isoformat_writes() -> None:
    """The per-second cached text gives datetime's isoformat to the microsecond (no fraction at .000000)."""
    rng = random.Random(13)
    stamps = [rng.randrange(0, 4_102_444_800 * 10**9) for _ in range(20_000)]
    stamps += [s - s % 10**9 for s in stamps[:2_000]]  # whole seconds
    stamps += [1_700_000_000_999_999_999, 1_700_000_001_000_000_000, 1_700_000_000_000_000_999]  # neighbours
    for ns in stamps:
        seconds, micros = divmod(ns // 1000, 10**6)
        assert iso_of_ns(ns) == datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros).isoformat()
    before = datetime.now(UTC)
    stamp = datetime.fromisoformat(now_iso())
    assert before <= stamp <= datetime.now(UTC)

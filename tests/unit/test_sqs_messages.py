"""One SQS message -> what becomes of it (pure): the ingress's record with the delivery on it, a
record the worker quarantines with the reason, or a refusal by the tenant binding."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from canvas_stream.records import DELIVERY_SQS, Delivery, Record, Verification, record_from_bytes
from canvas_stream.tenancy import Refusal, TenantPolicy
from ingest.sqs import queue_name, region_from_queue_url
from ingest.sqs_messages import Action, SqsMessage, plan_message
from processors.batch import prepare_one
from processors.normalize import IdPolicy
from tests.support.corpus import CORPUS

IDS = IdPolicy()  # no home shard set: each event's own shard counts as home

QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/canvas-live-events-prod"
OURS, OTHER = "OurRootAccount", "OtherRootAccount"
POLICY = TenantPolicy.of([OURS])
SENT = 1_700_000_000_123


def corpus_event(fmt: str, name: str) -> dict:
    return json.loads((CORPUS / fmt / f"{name}.json").read_text())["examples"][0]["payload"]


def message(body: str, message_id: str = "m-1", sent: int | None = SENT) -> SqsMessage:
    api = {"MessageId": message_id, "ReceiptHandle": "rh", "Body": body}
    if sent is not None:
        api["Attributes"] = {"SentTimestamp": str(sent)}
    return SqsMessage.from_api(QUEUE, api)


def canvas_event(account: str | None) -> dict:
    event = corpus_event("canvas", "grade_change")
    if account is None:
        event["metadata"].pop("root_account_uuid")
    else:
        event["metadata"]["root_account_uuid"] = account
    return event


def test_an_event_becomes_the_ingress_record_with_queue_and_message_id():
    event = canvas_event(OURS)
    plan = plan_message(message(json.dumps(event)), POLICY, max_body_bytes=1 << 20)
    assert plan.action is Action.PUBLISH
    record = record_from_bytes(plan.value)
    assert record.source == "live_event" and record.format == "canvas" and record.payload == event
    assert record.delivery == Delivery(method=DELIVERY_SQS, queue=QUEUE, message_id="m-1")
    assert record.received_datetime == datetime.fromtimestamp(SENT / 1000, UTC)  # the same for every redelivery
    assert not record.verification.signed
    assert plan.key.startswith((b"course:", b"user:"))

    item = prepare_one(plan.value, IDS)  # ... which the worker stores as a live event of that queue
    assert item.quarantine is None and item.normalized is not None
    row = item.normalized.events[0]
    assert (row.event_name, row.subscription, row.root_account_uuid) == ("grade_change", QUEUE, OURS)


def test_caliper_rows_carry_the_actor_root_account():
    event = corpus_event("caliper", "logged_in")
    expected = event["data"][0]["actor"]["extensions"]["com.instructure.canvas"]["root_account_uuid"]
    plan = plan_message(message(json.dumps(event)), TenantPolicy.of([expected]), max_body_bytes=1 << 20)
    assert plan.action is Action.PUBLISH
    row = prepare_one(plan.value, IDS).normalized.events[0]
    assert (row.format, row.subscription, row.root_account_uuid) == ("caliper", QUEUE, expected)


@pytest.mark.parametrize(("body", "reason"), [
    ("this is not an event {", "body is not valid JSON"),
    ("[1, 2]", "JSON body is not an object"),
    ("", "body is not valid JSON"),
    ("[" * 100 + "]" * 100, "JSON nested too deeply"),
    ('{"a": "\ud800"}', "body is not UTF-8"),
    ('{"pad": "' + "x" * 2000 + '"}', "body larger than MAX_BODY_BYTES (1024)"),
])
def test_a_body_that_is_not_an_event_is_quarantined_with_the_reason(body, reason):
    plan = plan_message(message(body), POLICY, max_body_bytes=1024)
    assert plan.action is Action.QUARANTINE and plan.reason == reason
    record = record_from_bytes(plan.value)
    assert record.raw == body.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")  # as received
    assert record.delivery is not None and record.delivery.queue == QUEUE
    item = prepare_one(plan.value, IDS)  # the worker keeps it in canvas.quarantine, with the reason
    assert item.normalized is None and item.quarantine is not None
    assert item.quarantine.reason == f"normalize: SQS message is not an event: {reason}"
    assert item.quarantine.source == "live_event"


def test_json_of_no_known_format_goes_to_the_worker_like_over_https():
    plan = plan_message(message('{"hello": "world"}'), TenantPolicy.of([OURS]), max_body_bytes=1 << 20)
    assert plan.action is Action.PUBLISH  # names no account: the queue authenticated it
    item = prepare_one(plan.value, IDS)
    assert item.quarantine is not None and "unrecognised live event format" in item.quarantine.reason


def test_another_tenant_is_refused_and_nothing_is_published():
    plan = plan_message(message(json.dumps(canvas_event(OTHER))), POLICY, max_body_bytes=1 << 20)
    assert plan.action is Action.REFUSE and plan.refusal is Refusal.ROOT_ACCOUNT_NOT_LISTED
    assert plan.value == b"" and plan.key == b""


def test_an_event_naming_no_account_is_accepted_over_sqs():
    plan = plan_message(message(json.dumps(canvas_event(None))), POLICY, max_body_bytes=1 << 20)
    assert plan.action is Action.PUBLISH


def test_a_message_without_sent_timestamp_is_received_now():
    before = datetime.now(UTC) - timedelta(seconds=1)
    plan = plan_message(message(json.dumps(canvas_event(OURS)), sent=None), POLICY, max_body_bytes=1 << 20)
    assert record_from_bytes(plan.value).received_datetime >= before


def test_records_round_trip_with_and_without_a_delivery():
    record = Record(source="live_event", format="canvas", received_at="2024-01-01T00:00:00+00:00", payload={},
                    verification=Verification(signed=True), delivery=Delivery("https", subscription_id="s"))
    assert record_from_bytes(record.to_bytes()) == record
    assert record.delivery is not None and record.delivery.delivered_by == "s"
    old = json.loads(record.to_bytes())
    del old["delivery"]  # published before deliveries were recorded
    assert record_from_bytes(json.dumps(old).encode()).delivery is None


@pytest.mark.parametrize(("url", "region"), [
    (QUEUE, "eu-west-1"),
    ("https://sqs.us-gov-west-1.amazonaws.com/1/canvas-live-events", "us-gov-west-1"),
    ("https://ap-southeast-2.queue.amazonaws.com/1/canvas-live-events", "ap-southeast-2"),
    ("http://127.0.0.1:4566/000000000000/canvas-live-events", None),
])
def test_region_from_queue_url(url, region):
    assert region_from_queue_url(url) == region
    assert queue_name(url) == "canvas-live-events" or url == QUEUE

"""processors.normalize.notices without servers: a verified notice record, as the ingress publishes
it, into the events row and the row changes of the LTI tables."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from canvas_stream.records import Record, Verification, record_from_bytes
from ingest.notices import NoticePolicy, build_record, validate_notice
from ingest.verify import verify_token
from processors.normalize import IdPolicy, normalize
from processors.normalize.model import NormalizationError, Normalized, RowChange
from tests.support.jwt_helpers import rsa_key
from tests.support.lti import CLAIM, CLIENT_ID, DEPLOYMENT, ISSUER, KID, b64sha256, jwt_of, nid, notice

IDS = IdPolicy()  # no home shard set: each event's own shard counts as home

POLICY = NoticePolicy(issuer=ISSUER, client_id=CLIENT_ID, leeway=60)
RECEIVED = "2025-03-19T11:24:30+00:00"


def published(claims: dict[str, Any], *, client_id: str | None = CLIENT_ID) -> Record:
    """The record the ingress puts on the topic for these claims, read back as a worker reads it."""
    token = jwt_of(claims)
    verified = verify_token(token, {KID: rsa_key("lti-current").public_key()}.get, POLICY.token_policy)
    checked = validate_notice(verified.claims, POLICY)
    verification = Verification(signed=True, kid=KID, issuer=ISSUER, verified_at=RECEIVED)
    _, record = build_record(checked, verification, token, client_id=client_id or "", received_at=RECEIVED)
    if client_id is None:  # an older record without the configured client id
        record = Record(record.source, record.format, record.received_at, record.payload, record.verification,
                        record.raw, extra={})
    return record_from_bytes(record.to_bytes())


def changes(out: Normalized, table: str) -> list[RowChange]:
    return [c for c in out.changes if c.table == table]


def test_hello_world_feeds_events_notices_and_the_deployment() -> None:
    claims = notice("LtiHelloWorldNotice", timestamp="2025-03-19T11:11:17Z")
    record = published(claims)
    out = normalize(record, IDS)
    [event] = out.events
    assert event.event_id == f"lti-notice:{nid(claims)}" and event.event_name == "LtiHelloWorldNotice"
    assert (event.format, event.context_type, event.user_id, event.context_id) == ("lti_notice", "Account", None, None)
    assert event.event_time == datetime(2025, 3, 19, 11, 11, 17, tzinfo=UTC)
    assert event.received_at == datetime.fromisoformat(RECEIVED) and event.payload == claims

    [stored] = changes(out, "lti_notices")
    assert stored.key == {"notice_id": nid(claims)}
    fields = stored.fields
    assert (fields["notice_type"], fields["issuer"], fields["client_id"], fields["deployment_id"]) == (
        "LtiHelloWorldNotice", ISSUER, CLIENT_ID, DEPLOYMENT)
    assert (fields["kid"], fields["jwt"], fields["claims"], fields["user_sub"]) == (KID, record.raw, claims, None)
    assert fields["context_id"] == "8865aa05b4b79b64a91a86042e43af5ea8ae79eb"

    [deployment] = changes(out, "lti_deployments")
    assert deployment.key == {"deployment_id": DEPLOYMENT}
    assert deployment.fields["hello_world_notice_id"] == nid(claims)
    assert deployment.fields["hello_world_at"] == event.event_time == deployment.fields["last_notice_at"]
    assert out.unknown_events == [] and {c.table for c in out.changes} == {"lti_notices", "lti_deployments"}


def test_context_copy_feeds_context_copies() -> None:
    claims = notice("LtiContextCopyNotice")
    out = normalize(published(claims), IDS)
    assert out.events[0].context_type == "Course"
    [copied] = changes(out, "context_copies")
    assert copied.key == {"context_id": "4dde05e8ca1973bcca9bffc13e1548820eee93a3",
                          "origin_context_id": "5098686ffc86cae4e0784b533a18af229ff5074e"}
    assert (copied.fields["context_title"], copied.fields["context_label"], copied.fields["notice_id"]) == (
        "Biology 2", "BIO-2", nid(claims))
    assert "hello_world_at" not in changes(out, "lti_deployments")[0].fields


def test_asset_processor_submission_feeds_its_table() -> None:
    claims = notice("LtiAssetProcessorSubmissionNotice", timestamp="2025-08-01T12:45:56Z")
    out = normalize(published(claims), IDS)
    [submission] = changes(out, "asset_processor_submissions")
    assert submission.key == {"submission_id": "d6446aaf-3f71-4eea-b2fd-20bd8d151506:1",
                              "activity_id": "d79c2ded-b078-4e8e-b090-dd1d380fc596"}
    assert submission.fields["for_user_id"] == "972fd8aa-7f57-4d11-9400-916a0ed0d31d"
    assert submission.fields["assets"][0]["sha256_checksum"] == b64sha256(b"<p>essay v1</p>")
    assert submission.fields["report_url"].endswith("/asset_processors/83/reports")
    assert changes(out, "lti_notices")[0].fields["user_sub"] == claims["sub"]


def test_an_unknown_type_is_stored_and_reported() -> None:
    claims = notice("LtiSomethingNewNotice")
    out = normalize(published(claims), IDS)
    assert out.unknown_events == ["lti:LtiSomethingNewNotice"]
    assert {c.table for c in out.changes} == {"lti_notices", "lti_deployments"} and len(out.events) == 1


def test_a_later_issued_resubmission_wins_at_the_same_timestamp() -> None:
    first = notice("LtiAssetProcessorSubmissionNotice", timestamp="2025-08-02T10:00:00Z")
    second = copy.deepcopy(first)
    second[CLAIM + "notice"]["id"] = str(uuid.uuid4())
    second["iat"] += 30
    second["exp"] += 30
    versions = [changes(normalize(published(c), IDS), "asset_processor_submissions")[0].version
                for c in (first, second)]
    assert versions[0] < versions[1]


def test_client_id_falls_back_to_azp_then_a_single_audience() -> None:
    with_azp = notice("LtiHelloWorldNotice", azp="the-azp")  # one audience: azp is not checked
    azp = changes(normalize(published(with_azp, client_id=None), IDS), "lti_notices")[0]
    assert azp.fields["client_id"] == "the-azp"
    assert changes(normalize(published(with_azp), IDS), "lti_notices")[0].fields["client_id"] == CLIENT_ID  # configured
    no_azp = notice("LtiHelloWorldNotice", azp=None)
    assert changes(normalize(published(no_azp, client_id=None), IDS), "lti_notices")[0].fields["client_id"] == CLIENT_ID


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({CLAIM + "context": {"type": ["CourseOffering"]}}, "LtiContextCopyNotice without context.id"),
        ({CLAIM + "submission": {}}, "without submission.id or activity.id"),
    ],
)
def test_a_typed_notice_missing_its_key_is_a_normalization_error(override: dict[str, Any], expected: str) -> None:
    ntype = "LtiContextCopyNotice" if "context.id" in expected else "LtiAssetProcessorSubmissionNotice"
    with pytest.raises(NormalizationError, match=expected):
        normalize(published(notice(ntype, **override)), IDS)


def test_a_record_without_a_notice_claim_is_a_normalization_error() -> None:
    record = published(notice("LtiHelloWorldNotice"))
    payload = {k: v for k, v in record.payload.items() if k != CLAIM + "notice"}
    broken = Record(record.source, record.format, record.received_at, payload, record.verification, record.raw)
    with pytest.raises(NormalizationError, match="without a notice claim"):
        normalize(broken, IDS)

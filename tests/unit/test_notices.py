"""ingest.notices without servers: a PNS body split into slots, signed notices checked one by one,
the record each becomes, and the batch answer. Notices are built and signed as Canvas does
(:mod:`tests.support.lti`), keys looked up from a fixed set."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from canvas_stream.records import Verification, record_from_bytes
from canvas_stream.settings import Settings
from ingest import notices
from ingest.notices import MAX_NOTICES, BadBatch, Notice, NoticePolicy, NoticeResult
from ingest.verify import ClaimsRejected, TokenRejected, verify_token
from tests.support.jwt_helpers import rsa_key
from tests.support.lti import CLAIM, CLIENT_ID, DEPLOYMENT, ISSUER, KID, batch, jwt_of, nid, notice

POLICY = NoticePolicy(issuer=ISSUER, client_id=CLIENT_ID, leeway=60)
PLATFORM_KEYS = {KID: rsa_key("lti-current").public_key()}


def check(claims: dict[str, Any], policy: NoticePolicy = POLICY, *, path_deployment_id: str | None = None,
          key_name: str = "lti-current") -> Notice:
    """What the route does for one notice, minus fetching keys: verify the token, then the LTI claims."""
    verified = verify_token(jwt_of(claims, key_name), PLATFORM_KEYS.get, policy.token_policy)
    return notices.validate_notice(verified.claims, policy, path_deployment_id=path_deployment_id)


def reason(claims: dict[str, Any], *args: Any, **kw: Any) -> str:
    with pytest.raises(TokenRejected) as ei:
        check(claims, *args, **kw)
    return ei.value.reason


# ---- the body ------------------------------------------------------------------------------------
def test_batch_elements_become_slots_in_order() -> None:
    first, second = jwt_of(notice("LtiHelloWorldNotice")), jwt_of(notice("LtiContextCopyNotice"))
    raw = json.dumps({"notices": [{"jwt": first}, f"  {second}\n", 42, {"jwt": ""}, {"token": first}]})
    slots = notices.parse_batch(raw.encode())
    assert [s.index for s in slots] == [0, 1, 2, 3, 4]
    assert [s.token for s in slots] == [first, second, None, None, None]
    assert all("compact JWS" in (s.error or "") for s in slots[2:])


def test_an_oversized_notice_is_one_rejected_slot() -> None:
    slots = notices.parse_batch(json.dumps({"notices": ["x" * 65_537, "a.b.c"]}).encode())
    assert slots[0].token is None and "larger than 65536 bytes" in (slots[0].error or "")
    assert slots[1].token == "a.b.c"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", "body is not valid JSON"),
        (b"\xff\xfe{}", "body is not UTF-8"),
        (b"[]", "JSON body is not an object"),
        (b'{"jwt": "a.b.c"}', "body must be an object with a 'notices' list"),
        (b'{"notices": "a.b.c"}', "body must be an object with a 'notices' list"),
        (b'{"notices": []}', "'notices' is empty"),
        (json.dumps({"notices": ["a.b.c"] * (MAX_NOTICES + 1)}).encode(), "too many notices in one batch (101 > 100)"),
        (b'{"notices": ' + b"[" * 65 + b"]" * 65 + b"}", "JSON nested too deeply"),
    ],
)
def test_unusable_bodies(raw: bytes, expected: str) -> None:
    with pytest.raises(BadBatch) as ei:
        notices.parse_batch(raw)
    assert ei.value.reason == expected


def test_brackets_inside_a_token_string_do_not_count_as_nesting() -> None:
    assert notices.parse_batch(json.dumps({"notices": ["[" * 200 + "a.b.c"]}).encode())[0].token == "[" * 200 + "a.b.c"


# ---- one notice ----------------------------------------------------------------------------------
def test_each_documented_notice_type_passes() -> None:
    for ntype in ("LtiHelloWorldNotice", "LtiContextCopyNotice", "LtiAssetProcessorSubmissionNotice"):
        claims = notice(ntype, timestamp="2025-03-19T11:24:25Z")
        checked = check(claims, path_deployment_id=DEPLOYMENT)
        assert (checked.notice_id, checked.notice_type, checked.timestamp, checked.deployment_id) == (
            nid(claims), ntype, "2025-03-19T11:24:25Z", DEPLOYMENT)
        assert checked.claims == claims


def test_policy_from_settings() -> None:
    settings = Settings(lti_client_id=CLIENT_ID, lti_platform_issuer=ISSUER, lti_deployment_ids=f" {DEPLOYMENT},, 2:b ",
                        lti_leeway_seconds=5)
    policy = NoticePolicy.from_settings(settings)
    assert policy == NoticePolicy(ISSUER, CLIENT_ID, frozenset({DEPLOYMENT, "2:b"}), 5.0)
    token_policy = policy.token_policy
    assert (token_policy.issuer, token_policy.audience, token_policy.leeway) == (ISSUER, CLIENT_ID, 5.0)
    assert set(token_policy.require) == {"iss", "aud", "exp", "iat"} and token_policy.max_len == 64 * 1024
    with pytest.raises(ValueError, match="LTI_CLIENT_ID"):
        NoticePolicy.from_settings(Settings(lti_client_id=None))


def test_registered_claims_are_refused_with_the_authentic_notice_id() -> None:
    now = int(time.time())
    cases = {
        "token expired": notice("LtiHelloWorldNotice", iat=now - 7200),
        "issuer mismatch": notice("LtiHelloWorldNotice", iss="https://evil.example"),
        "audience mismatch": notice("LtiHelloWorldNotice", aud="someone-else", azp="someone-else"),
        "azp mismatch": notice("LtiHelloWorldNotice", aud=[CLIENT_ID, "other"], azp="other"),
        "missing claim 'exp'": notice("LtiHelloWorldNotice", exp=None),
    }
    for expected, claims in cases.items():
        with pytest.raises(ClaimsRejected) as ei:
            check(claims)
        assert ei.value.reason == expected
        assert notices.peek_notice_id(ei.value.claims) == nid(claims)  # signature good: the id may be quoted
    assert check(notice("LtiHelloWorldNotice", aud=[CLIENT_ID, "other"], azp=CLIENT_ID)).notice_type


def test_a_forged_notice_exposes_nothing() -> None:
    with pytest.raises(TokenRejected) as ei:
        check(notice("LtiHelloWorldNotice"), key_name="attacker")
    assert ei.value.reason == "bad signature" and not isinstance(ei.value, ClaimsRejected)


def test_lti_claims_are_checked_after_the_token() -> None:
    ts = "2025-01-01T00:00:00Z"
    assert reason(notice("LtiHelloWorldNotice", **{CLAIM + "version": "1.1"})) == "LTI version must be 1.3.0"
    assert reason(notice("LtiHelloWorldNotice", nonce=None)) == "missing claim 'nonce'"
    assert reason(notice("LtiHelloWorldNotice", **{CLAIM + "notice": "x"})) == "missing notice claim"
    assert reason(notice("LtiHelloWorldNotice", **{CLAIM + "notice": {"id": "x", "timestamp": ts}})) == (
        "missing or invalid notice.type")
    long_id = {"id": "x" * 256, "type": "LtiHelloWorldNotice", "timestamp": ts}
    assert reason(notice("LtiHelloWorldNotice", **{CLAIM + "notice": long_id})) == "notice.id too long"
    bad_time = {"id": "x", "type": "LtiHelloWorldNotice", "timestamp": "yesterday"}
    assert reason(notice("LtiHelloWorldNotice", **{CLAIM + "notice": bad_time})) == "notice.timestamp is not ISO-8601"
    assert reason(notice("LtiHelloWorldNotice", **{CLAIM + "deployment_id": None})) == (
        "missing or invalid deployment_id")


def test_deployment_must_match_the_handler_url_and_the_allow_list() -> None:
    other = notice("LtiContextCopyNotice", deployment="107:aaaa")
    assert reason(other, path_deployment_id=DEPLOYMENT) == "deployment_id does not match the handler URL"
    assert check(other, path_deployment_id="107:aaaa").deployment_id == "107:aaaa"
    allow = NoticePolicy(ISSUER, CLIENT_ID, frozenset({DEPLOYMENT}), 60)
    assert reason(other, allow) == "deployment_id is not allowed (LTI_DEPLOYMENT_IDS)"
    assert check(notice("LtiContextCopyNotice"), allow).deployment_id == DEPLOYMENT


def test_peek_notice_id_only_returns_a_sane_id() -> None:
    assert notices.peek_notice_id({CLAIM + "notice": {"id": "n-1"}}) == "n-1"
    for bad in ({}, {CLAIM + "notice": "n-1"}, {CLAIM + "notice": {"id": 7}}, {CLAIM + "notice": {"id": ""}},
                {CLAIM + "notice": {"id": "x" * 256}}):
        assert notices.peek_notice_id(bad) is None


# ---- record and answer ---------------------------------------------------------------------------
def test_build_record_keeps_the_token_and_routes_by_type_and_deployment() -> None:
    claims = notice("LtiContextCopyNotice")
    token = jwt_of(claims)
    checked = check(claims)
    verification = Verification(signed=True, kid=KID, issuer=ISSUER, verified_at="2025-03-19T11:24:26+00:00")
    key, record = notices.build_record(checked, verification, token, client_id=CLIENT_ID, path_deployment_id=DEPLOYMENT,
                               received_at="2025-03-19T11:24:26+00:00")
    assert key == f"lti:LtiContextCopyNotice:{DEPLOYMENT}".encode()
    decoded = record_from_bytes(record.to_bytes())
    assert (decoded.source, decoded.format, decoded.raw) == ("lti_notice", "lti_notice", token)
    assert decoded.payload == claims and decoded.verification == verification
    assert decoded.extra == {"client_id": CLIENT_ID, "path_deployment_id": DEPLOYMENT}


def test_batch_response_is_503_only_when_a_valid_notice_is_not_durable() -> None:
    ok = [NoticeResult(0, "accepted", "a"), NoticeResult(1, "duplicate", "b"),
          NoticeResult(2, "rejected", None, error="invalid notice: bad signature")]
    status, body = notices.batch_response(ok)
    assert status == 200
    assert json.loads(body) == {"results": [
        {"index": 0, "notice_id": "a", "status": "accepted"},
        {"index": 1, "notice_id": "b", "status": "duplicate"},
        {"index": 2, "notice_id": None, "status": "rejected", "error": "invalid notice: bad signature"},
    ]}
    status, body = notices.batch_response([*ok, NoticeResult(3, "failed", str(uuid.uuid4()), error="not stored")])
    assert status == 503 and json.loads(body)["results"][3]["status"] == "failed"


def test_a_whole_batch_round_trip() -> None:
    good, forged = notice("LtiHelloWorldNotice"), notice("LtiHelloWorldNotice")
    slots = notices.parse_batch(batch(jwt_of(good), jwt_of(forged, key_name="attacker")).encode())
    results = []
    for slot in slots:
        assert slot.token is not None
        try:
            verified = verify_token(slot.token, PLATFORM_KEYS.get, POLICY.token_policy)
            checked = notices.validate_notice(verified.claims, POLICY)
            results.append(NoticeResult(slot.index, "accepted", checked.notice_id))
        except TokenRejected as exc:
            results.append(NoticeResult(slot.index, "rejected", error=exc.reason))
    status, body = notices.batch_response(results)
    assert status == 200
    assert [(r["notice_id"], r["status"]) for r in json.loads(body)["results"]] == [
        (nid(good), "accepted"), (None, "rejected")]

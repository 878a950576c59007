"""Tenant binding: the decision table of docs/operations.md ("Tenant binding"), one row per case,
and where the root account and the subscription are read from, checked on Canvas's own examples."""

from __future__ import annotations

import json

import pytest

from canvas_stream.settings import Settings
from canvas_stream.tenancy import (
    DeliveryKind,
    Refusal,
    TenantPolicy,
    binding_problem,
    caliper_item_root_account_uuid,
    named_root_accounts,
    parse_list,
    token_subscription_id,
)
from tests.support.corpus import CORPUS

OURS, OTHER = "OurRootAccountUuid0000000000000000000001", "SomeoneElsesRootAccount00000000000000002"
SUB, OTHER_SUB = "8aed1771-7b5d-4c90-bf09-3d256b7eeaee", "00000000-0000-4000-8000-000000000000"


def canvas(account: str | None) -> dict:
    meta = {"event_name": "course_created", "event_time": "2024-01-01T00:00:00Z"}
    if account is not None:
        meta["root_account_uuid"] = account
    return {"metadata": meta, "body": {"course_id": "1"}}


def caliper(*accounts: str | None) -> dict:
    """One data[] item per account; None: an item with no Canvas actor extension."""
    items = []
    for account in accounts:
        actor: dict = {"id": "urn:instructure:canvas:user:1", "type": "Person"}
        if account is not None:
            actor["extensions"] = {"com.instructure.canvas": {"root_account_uuid": account}}
        items.append({"id": f"urn:uuid:{len(items)}", "type": "SessionEvent", "action": "LoggedIn", "actor": actor})
    return {"sensor": "http://x/", "sendTime": "2024-01-01T00:00:00Z", "dataVersion": "v1p1", "data": items}


A, S, AS, NONE = {"accounts": {OURS}}, {"subscriptions": {SUB}}, {"accounts": {OURS}, "subscriptions": {SUB}}, {}
SIGNED, SQS, UNSIGNED = DeliveryKind.SIGNED_HTTPS, DeliveryKind.SQS, DeliveryKind.UNSIGNED_HTTPS
ACCEPT = None

# (case, lists set, allow any, delivery, event, token subscription.id, expected); the same rows, in
# words, are the table in docs/operations.md.
TABLE = [
    ("unbound: refused", NONE, False, SIGNED, canvas(OURS), SUB, Refusal.UNBOUND),
    ("unbound: refused over SQS too", NONE, False, SQS, canvas(OURS), None, Refusal.UNBOUND),
    ("unbound, allow any: signed accepted", NONE, True, SIGNED, canvas(OTHER), None, ACCEPT),
    ("unbound, allow any: SQS accepted", NONE, True, SQS, canvas(OTHER), None, ACCEPT),
    ("unbound, allow any: unsigned accepted", NONE, True, UNSIGNED, canvas(None), None, ACCEPT),
    ("allow any does not loosen a list that is set", A, True, SIGNED, canvas(OTHER), SUB,
     Refusal.ROOT_ACCOUNT_NOT_LISTED),
    # signed HTTPS, subscription list set
    ("signed, subscriptions: listed subscription", S, False, SIGNED, canvas(OTHER), SUB, ACCEPT),
    ("signed, subscriptions: other subscription", S, False, SIGNED, canvas(OURS), OTHER_SUB,
     Refusal.SUBSCRIPTION_NOT_LISTED),
    ("signed, subscriptions: token without the claim", S, False, SIGNED, canvas(OURS), None,
     Refusal.NO_SUBSCRIPTION),
    # signed HTTPS, account list set
    ("signed, accounts: Canvas format, listed account", A, False, SIGNED, canvas(OURS), None, ACCEPT),
    ("signed, accounts: Canvas format, other account", A, False, SIGNED, canvas(OTHER), SUB,
     Refusal.ROOT_ACCOUNT_NOT_LISTED),
    ("signed, accounts: Caliper, listed account", A, False, SIGNED, caliper(OURS), None, ACCEPT),
    ("signed, accounts: Caliper, other account", A, False, SIGNED, caliper(OTHER), None,
     Refusal.ROOT_ACCOUNT_NOT_LISTED),
    ("signed, accounts: one of several items names another account", A, False, SIGNED, caliper(OURS, OTHER), None,
     Refusal.ROOT_ACCOUNT_NOT_LISTED),
    ("signed, accounts: names no account, only accounts set", A, False, SIGNED, caliper(None), SUB,
     Refusal.NO_ROOT_ACCOUNT),
    # signed HTTPS, both lists set
    ("signed, both: listed subscription and account", AS, False, SIGNED, canvas(OURS), SUB, ACCEPT),
    ("signed, both: names no account, judged by the subscription", AS, False, SIGNED, caliper(None), SUB, ACCEPT),
    ("signed, both: listed subscription, other account", AS, False, SIGNED, canvas(OTHER), SUB,
     Refusal.ROOT_ACCOUNT_NOT_LISTED),
    ("signed, both: listed account, other subscription", AS, False, SIGNED, canvas(OURS), OTHER_SUB,
     Refusal.SUBSCRIPTION_NOT_LISTED),
    ("signed, both: names no account, token without the claim", AS, False, SIGNED, caliper(None), None,
     Refusal.NO_SUBSCRIPTION),
    # SQS: the queue is the subscription
    ("SQS, subscriptions only: the list does not apply", S, False, SQS, canvas(OTHER), None, ACCEPT),
    ("SQS, accounts: listed account", A, False, SQS, canvas(OURS), None, ACCEPT),
    ("SQS, accounts: other account", A, False, SQS, caliper(OTHER), None, Refusal.ROOT_ACCOUNT_NOT_LISTED),
    ("SQS, accounts: names no account, the queue authenticated it", A, False, SQS, caliper(None), None, ACCEPT),
    ("SQS, both: other account", AS, False, SQS, canvas(OTHER), None, Refusal.ROOT_ACCOUNT_NOT_LISTED),
    # unsigned HTTPS (LIVE_EVENTS_ALLOW_UNSIGNED=true): the account rule
    ("unsigned, accounts: listed account", A, False, UNSIGNED, canvas(OURS), None, ACCEPT),
    ("unsigned, accounts: other account", A, False, UNSIGNED, canvas(OTHER), None, Refusal.ROOT_ACCOUNT_NOT_LISTED),
    ("unsigned, accounts: names no account", A, False, UNSIGNED, caliper(None), None, Refusal.NO_ROOT_ACCOUNT),
    ("unsigned, subscriptions: cannot name a subscription", S, False, UNSIGNED, canvas(OURS), None,
     Refusal.UNSIGNED_SUBSCRIPTION),
]


@pytest.mark.parametrize(("lists", "allow_any", "kind", "event", "subscription", "expected"),
                         [pytest.param(*row[1:], id=row[0]) for row in TABLE])
def test_decision_table(lists, allow_any, kind, event, subscription, expected):
    policy = TenantPolicy.of(lists.get("accounts", ()), lists.get("subscriptions", ()), allow_any_account=allow_any)
    assert policy.decide(kind, event, subscription) == expected


def test_the_docs_table_has_one_row_per_case():
    """docs/operations.md shows the same cases: one table row per TABLE entry, same count of refusals."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text.split("## Tenant binding", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| delivery")]
    assert len(rows) == len(TABLE)
    refused = sum(1 for row in TABLE if row[-1] is not None)
    assert sum(1 for line in rows if "refused" in line.split("|")[-2]) == refused
    for reason in Refusal:
        if any(row[-1] is reason for row in TABLE):
            assert f"`{reason.value}`" in section, reason


def test_every_canvas_format_example_names_its_root_account():
    for path in sorted((CORPUS / "canvas").glob("*.json")):
        for example in json.loads(path.read_text())["examples"]:
            uuid = example["payload"]["metadata"]["root_account_uuid"]
            assert named_root_accounts(example["payload"]) == {uuid}, path.name


def test_caliper_examples_carry_the_root_account_in_the_actor_extension():
    named, unnamed = 0, 0
    for path in sorted((CORPUS / "caliper").glob("*.json")):
        for example in json.loads(path.read_text())["examples"]:
            for item in example["payload"].get("data", []):
                actor_ext = (item.get("actor") or {}).get("extensions", {}).get("com.instructure.canvas", {})
                uuid = caliper_item_root_account_uuid(item)
                assert uuid == actor_ext.get("root_account_uuid"), path.name
                named, unnamed = named + (uuid is not None), unnamed + (uuid is None)
    assert named >= 60 and unnamed >= 1  # most name it; some documented events carry no Canvas actor extension


def test_caliper_event_extension_counts_too():
    item = {"extensions": {"com.instructure.canvas": {"root_account_uuid": OTHER}},
            "actor": {"extensions": {"com.instructure.canvas": {"root_account_uuid": OURS}}}}
    assert named_root_accounts({"data": [item]}) == {OURS, OTHER}
    assert caliper_item_root_account_uuid(item) == OTHER


@pytest.mark.parametrize(("claims", "expected"), [
    ({"subscription": {"id": SUB, "owner_id": "owner_id"}}, SUB),  # Canvas's HTTPS delivery guide
    ({"subscription": {"id": 42}}, "42"),
    ({"subscription": {"id": ""}}, None),
    ({"subscription": SUB}, None),
    ({"subscription": {"owner_id": "x"}}, None),
    ({}, None),
])
def test_token_subscription_id(claims, expected):
    assert token_subscription_id(claims) == expected


def test_lists_are_comma_separated_and_exact():
    assert parse_list(" a, b ,,A ") == {"a", "b", "A"}
    assert parse_list(None) == frozenset()


@pytest.mark.parametrize(("env", "serves", "refused"), [
    ({}, None, True),
    ({"live_events_root_account_uuids": OURS}, None, False),
    ({"live_events_subscription_ids": SUB}, None, False),
    ({"live_events_root_account_uuids": " , "}, None, True),  # blanks are not a binding
    ({"live_events_allow_any_account": True}, None, False),
    ({"live_events_enabled": False}, None, False),  # LTI notices only: nothing to bind
    ({"live_events_enabled": False}, True, True),  # the SQS role always serves live events
])
def test_roles_refuse_to_start_unbound(env, serves, refused):
    values = {"live_events_root_account_uuids": None, "live_events_subscription_ids": None,
              "live_events_allow_any_account": False, "live_events_enabled": True, **env}  # not the test's environment
    problem = binding_problem(Settings(**values), serves_live_events=serves)
    assert (problem is not None) == refused
    if refused:
        assert "LIVE_EVENTS_ROOT_ACCOUNT_UUIDS" in problem and "LIVE_EVENTS_SUBSCRIPTION_IDS" in problem

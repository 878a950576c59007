"""Tenant binding: only the Canvas this installation belongs to may deliver live events. Pure: no I/O.

Canvas signs every tenant's live events with one Instructure-wide key set, so a valid signature
only says "some Canvas sent this". What binds a delivery to this installation is the Data Services
subscription that delivered it (the signed token's ``subscription.id``; for SQS, the queue itself)
and the root account the event names (Canvas format: ``metadata.root_account_uuid``; Caliper: the
``com.instructure.canvas`` extensions of each ``data[]`` item and of its actor).

The rules (docs/operations.md, "Tenant binding", has them as a table; tests/unit/test_tenancy.py
checks one row per case): each list that is set must be satisfied.

- signed HTTPS: with subscription ids set, the token's ``subscription.id`` must be listed (no claim:
  refused); with root accounts set, every root account the event names must be listed; an event
  that names none is judged by the subscription list alone (refused when only accounts are set);
- SQS: the queue is the subscription (the subscription list does not apply); named root accounts
  must be listed; an event naming none is accepted (the queue's access policy authenticated it);
- unsigned HTTPS (testing only): named root accounts must be listed, an event naming none is
  refused when accounts are set, and a subscription list cannot be satisfied (no token): refused.

With neither list set, everything is refused unless ``LIVE_EVENTS_ALLOW_ANY_ACCOUNT=true``; the
roles refuse to start in that case (``binding_problem``), this is the second line of defence.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from canvas_stream.formats import canvas_extension

SETTING_ACCOUNTS = "LIVE_EVENTS_ROOT_ACCOUNT_UUIDS"
SETTING_SUBSCRIPTIONS = "LIVE_EVENTS_SUBSCRIPTION_IDS"
SETTING_ALLOW_ANY = "LIVE_EVENTS_ALLOW_ANY_ACCOUNT"


class DeliveryKind(enum.Enum):
    """The three ways a live event reaches canvas-stream; each has its own binding rule."""

    SIGNED_HTTPS = "https-signed"
    UNSIGNED_HTTPS = "https-unsigned"
    SQS = "sqs"


class Refusal(enum.Enum):
    """Why a delivery was refused; the value is the short reason answered and counted (bounded labels)."""

    UNBOUND = "no tenant binding configured"
    NO_SUBSCRIPTION = "token has no subscription claim"
    SUBSCRIPTION_NOT_LISTED = "subscription not listed"
    UNSIGNED_SUBSCRIPTION = "unsigned delivery names no subscription"
    NO_ROOT_ACCOUNT = "event names no root account"
    ROOT_ACCOUNT_NOT_LISTED = "root account not listed"


# -- what an event says about itself ---------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def canvas_root_account_uuid(metadata: Any) -> str | None:
    """The root account uuid a Canvas-format event's ``metadata`` names."""
    return _text(metadata.get("root_account_uuid")) if isinstance(metadata, Mapping) else None


def caliper_item_root_account_uuids(item: Any) -> list[str]:
    """The root account uuids one Caliper ``data[]`` item names: its own Canvas extension first,
    then its actor's (where Canvas's documented examples carry it). Usually one, or none."""
    if not isinstance(item, Mapping):
        return []
    found: list[str] = []
    for source in (item, item.get("actor")):
        uuid = _text(canvas_extension(source).get("root_account_uuid"))
        if uuid is not None and uuid not in found:
            found.append(uuid)
    return found


def caliper_item_root_account_uuid(item: Any) -> str | None:
    """The root account of one Caliper item (for ``canvas_stream.events.root_account_uuid``)."""
    found = caliper_item_root_account_uuids(item)
    return found[0] if found else None


def named_root_accounts(payload: Any) -> frozenset[str]:
    """Every root account uuid the event names, in either format (empty: it names none)."""
    if not isinstance(payload, Mapping):
        return frozenset()
    named: set[str] = set()
    uuid = canvas_root_account_uuid(payload.get("metadata"))
    if uuid is not None:
        named.add(uuid)
    data = payload.get("data")
    if isinstance(data, list):
        for item in data:
            named.update(caliper_item_root_account_uuids(item))
    return frozenset(named)


def token_subscription_id(claims: Any) -> str | None:
    """``subscription.id`` of a signed live event's claims (Canvas's HTTPS delivery guide), if any."""
    # ``type(..) is dict`` first: claims are dicts, and isinstance on the Mapping ABC is a Python call.
    subscription = claims.get("subscription") if type(claims) is dict or isinstance(claims, Mapping) else None
    if type(subscription) is not dict and not isinstance(subscription, Mapping):
        return None
    value = subscription.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value)


# -- the policy ------------------------------------------------------------------------------------


def parse_list(value: str | None) -> frozenset[str]:
    """A comma list setting; blanks ignored, entries compared exactly (root account uuids are case-sensitive)."""
    return frozenset(part.strip() for part in (value or "").split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """The configured binding: empty sets mean "not set"."""

    root_account_uuids: frozenset[str] = frozenset()
    subscription_ids: frozenset[str] = frozenset()
    allow_any_account: bool = False

    @classmethod
    def of(cls, accounts: Iterable[str] = (), subscriptions: Iterable[str] = (), *,
           allow_any_account: bool = False) -> TenantPolicy:
        return cls(frozenset(accounts), frozenset(subscriptions), allow_any_account)

    @classmethod
    def from_settings(cls, settings: Any) -> TenantPolicy:
        return cls(
            parse_list(settings.live_events_root_account_uuids),
            parse_list(settings.live_events_subscription_ids),
            bool(settings.live_events_allow_any_account),
        )

    @property
    def bound(self) -> bool:
        return bool(self.root_account_uuids or self.subscription_ids)

    def decide(self, kind: DeliveryKind, payload: Any, subscription_id: str | None = None) -> Refusal | None:
        """None to accept, else why not. ``subscription_id``: the verified token's (signed HTTPS only)."""
        if not self.bound:
            return None if self.allow_any_account else Refusal.UNBOUND
        if self.subscription_ids:
            if kind is DeliveryKind.SIGNED_HTTPS:
                if subscription_id is None:
                    return Refusal.NO_SUBSCRIPTION
                if subscription_id not in self.subscription_ids:
                    return Refusal.SUBSCRIPTION_NOT_LISTED
            elif kind is DeliveryKind.UNSIGNED_HTTPS:
                return Refusal.UNSIGNED_SUBSCRIPTION
        if self.root_account_uuids:
            named = named_root_accounts(payload)
            if not named:
                satisfied_otherwise = kind is DeliveryKind.SQS or (
                    kind is DeliveryKind.SIGNED_HTTPS and bool(self.subscription_ids)
                )
                return None if satisfied_otherwise else Refusal.NO_ROOT_ACCOUNT
            if not named <= self.root_account_uuids:
                return Refusal.ROOT_ACCOUNT_NOT_LISTED
        return None


def binding_problem(settings: Any, *, serves_live_events: bool | None = None) -> str | None:
    """Why a role that receives live events must not start (None: it may). Secure by default:
    neither list set is refused unless ``LIVE_EVENTS_ALLOW_ANY_ACCOUNT=true`` says so explicitly."""
    serves = settings.live_events_enabled if serves_live_events is None else serves_live_events
    if not serves or TenantPolicy.from_settings(settings).bound or settings.live_events_allow_any_account:
        return None
    return (
        f"refusing to start: no tenant binding. Set {SETTING_ACCOUNTS} and/or {SETTING_SUBSCRIPTIONS} "
        f"(comma lists) so that only your Canvas's live events are accepted, or set {SETTING_ALLOW_ANY}=true "
        "to accept every Canvas account's events (see docs/operations.md, 'Tenant binding')."
    )

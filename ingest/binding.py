"""Applies the tenant binding (canvas_stream.tenancy) at the edges that receive live events, and
counts and logs what it refuses: the HTTPS route and the SQS poller share this, so a refusal looks
the same whichever way Canvas delivered."""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import Counter

from canvas_stream.tenancy import DeliveryKind, Refusal, TenantPolicy, named_root_accounts

log = structlog.get_logger(__name__)

REFUSED = Counter("canvas_stream_live_events_refused_total", "Live events refused by the tenant binding",
                  ["delivery", "reason"])


def note_refusal(kind: DeliveryKind, refusal: Refusal, payload: Any, subscription_id: str | None = None,
                 **context: str | None) -> None:
    """Count and log a refusal, with the subscription and root accounts the event named (never the payload)."""
    REFUSED.labels(kind.value, refusal.value).inc()
    log.info("live event refused by tenant binding", delivery=kind.value, reason=refusal.value,
             subscription=(subscription_id or "")[:100] or None,
             root_accounts=sorted(a[:100] for a in named_root_accounts(payload))[:5], **context)


def admit(policy: TenantPolicy, kind: DeliveryKind, payload: Any, subscription_id: str | None = None) -> Refusal | None:
    """None when the delivery may be published; else the refusal, already counted and logged."""
    refusal = policy.decide(kind, payload, subscription_id)
    if refusal is not None:
        note_refusal(kind, refusal, payload, subscription_id)
    return refusal

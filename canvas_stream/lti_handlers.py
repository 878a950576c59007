"""Notice-handler subscriptions and the hello-world check, shared by the CLI and the ingress.

Canvas sends an ``LtiHelloWorldNotice`` at once when a handler is subscribed to that type. If none
arrives, the handler URL is wrong, unreachable from Canvas, or refuses the notice (a deployment not
in ``LTI_DEPLOYMENT_IDS``, a wrong ``LTI_CLIENT_ID``...), and every later notice is lost the same way:
Canvas never resends one. So ``canvas-stream notice-handlers set`` records when it subscribed
(``canvas_stream.lti_handler_subscriptions``, taken before the call), and a deployment whose hello-world
subscription is older than ``LTI_HELLO_WORLD_WAIT_SECONDS`` without an ``LtiHelloWorldNotice`` in
``canvas_stream.lti_notices`` received since is *overdue*: the ingress's ``/readyz`` warns, a gauge counts
it, and ``notice-handlers list`` says so.

Plain SQL on tables declared in ``processors/warehouse/schema.py`` (the ingress imports no table
definitions). The decision itself (:meth:`HelloWorldCheck.state`) is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from canvas_stream.settings import warehouse_sql

if TYPE_CHECKING:  # sqlalchemy costs ~0.4 s to import; the CLI imports this module for every command
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "HELLO_WORLD",
    "HelloWorldCheck",
    "read_hello_world_checks",
    "record_subscription",
]

HELLO_WORLD = "LtiHelloWorldNotice"
RECEIVED, WAITING, OVERDUE = "received", "waiting", "overdue"
#: The subscription time is the CLI's clock, a notice's receipt the ingress's: allow this much skew.
CLOCK_SKEW = timedelta(seconds=60)

RECORD_SQL = warehouse_sql("""
    INSERT INTO {schema}.lti_handler_subscriptions
        (deployment_id, notice_type, handler, max_batch_size, pns_url, set_at)
    VALUES (:deployment_id, :notice_type, :handler, :max_batch_size, :pns_url, :set_at)
    ON CONFLICT (deployment_id, notice_type) DO UPDATE
        SET handler = excluded.handler, max_batch_size = excluded.max_batch_size, pns_url = excluded.pns_url,
            set_at = excluded.set_at
""")
# One index probe per subscription: lti_notices_type_time_idx leads with notice_type.
CHECKS_SQL = warehouse_sql("""
    SELECT s.deployment_id, s.set_at,
           (SELECT max(n.received_at) FROM {schema}.lti_notices n
             WHERE n.notice_type = 'LtiHelloWorldNotice' AND n.deployment_id = s.deployment_id) AS received_at
    FROM {schema}.lti_handler_subscriptions s
    WHERE s.notice_type = 'LtiHelloWorldNotice' AND s.handler <> ''
    ORDER BY s.deployment_id
""")


@dataclass(frozen=True, slots=True)
class HelloWorldCheck:
    """One deployment's hello-world subscription and its latest LtiHelloWorldNotice received."""

    deployment_id: str
    handler_set_at: datetime
    hello_world_received_at: datetime | None

    def state(self, now: datetime, wait_seconds: float) -> str:
        """received (one arrived since the subscription), waiting (not yet, within the wait) or overdue."""
        received = self.hello_world_received_at
        if received is not None and received >= self.handler_set_at - CLOCK_SKEW:
            return RECEIVED
        if now - self.handler_set_at > timedelta(seconds=wait_seconds):
            return OVERDUE
        return WAITING

    def describe(self, now: datetime, wait_seconds: float) -> str:
        """One line for people (the CLI, /readyz warnings)."""
        state = self.state(now, wait_seconds)
        since = f"handler set at {self.handler_set_at.isoformat(timespec='seconds')}"
        if state == RECEIVED:
            assert self.hello_world_received_at is not None
            return f"received at {self.hello_world_received_at.isoformat(timespec='seconds')} ({since})"
        if state == WAITING:
            return f"waiting ({since}; overdue after LTI_HELLO_WORLD_WAIT_SECONDS={wait_seconds:g})"
        return (f"NOT RECEIVED: {since}, no LtiHelloWorldNotice stored within {wait_seconds:g} s; check that "
                "the handler URL reaches this ingress from Canvas, LTI_CLIENT_ID, LTI_DEPLOYMENT_IDS, the "
                "ingress log (lti notice ... rejected) and that a worker runs")

    def as_json(self, now: datetime, wait_seconds: float) -> dict[str, Any]:
        received = self.hello_world_received_at
        return {"deployment_id": self.deployment_id, "state": self.state(now, wait_seconds),
                "handler_set_at": self.handler_set_at.isoformat(),
                "hello_world_received_at": received.isoformat() if received is not None else None}


async def read_hello_world_checks(conn: AsyncConnection) -> list[HelloWorldCheck]:
    """Every deployment with a live hello-world subscription, and its latest hello world received."""
    from sqlalchemy import text

    rows = await conn.execute(text(CHECKS_SQL))
    return [HelloWorldCheck(r.deployment_id, r.set_at, r.received_at) for r in rows]


async def record_subscription(conn: AsyncConnection, *, deployment_id: str, notice_type: str, handler: str,
                              max_batch_size: int | None, pns_url: str, set_at: datetime) -> None:
    """Upsert one subscription (an empty handler records the unsubscription)."""
    from sqlalchemy import text

    await conn.execute(text(RECORD_SQL), {
        "deployment_id": deployment_id, "notice_type": notice_type, "handler": handler,
        "max_batch_size": max_batch_size, "pns_url": pns_url, "set_at": set_at})

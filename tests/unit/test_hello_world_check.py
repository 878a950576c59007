"""canvas_stream.lti_handlers.HelloWorldCheck: when a deployment's hello world is received, awaited or overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from canvas_stream.lti_handlers import CLOCK_SKEW, OVERDUE, RECEIVED, WAITING, HelloWorldCheck

SET_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
WAIT = 300.0


def at(seconds: float) -> datetime:
    return SET_AT + timedelta(seconds=seconds)


@pytest.mark.parametrize(("received", "now", "expected"), [
    pytest.param(None, at(10), WAITING, id="none-yet-within-the-wait"),
    pytest.param(None, at(WAIT + 1), OVERDUE, id="none-after-the-wait"),
    pytest.param(at(2), at(WAIT + 1000), RECEIVED, id="received-after-the-subscription"),
    pytest.param(at(-30), at(WAIT + 1), RECEIVED, id="received-within-the-clock-skew"),
    pytest.param(SET_AT - CLOCK_SKEW - timedelta(seconds=1), at(WAIT + 1), OVERDUE,
                 id="only-an-older-hello-world-from-a-previous-subscription"),
    pytest.param(at(-3600), at(5), WAITING, id="older-hello-world-but-still-within-the-wait"),
])
def test_states(received, now, expected):
    check = HelloWorldCheck("106:abc", SET_AT, received)
    assert check.state(now, WAIT) == expected
    line = check.describe(now, WAIT)
    assert {RECEIVED: "received at", WAITING: "waiting", OVERDUE: "NOT RECEIVED"}[expected] in line
    doc = check.as_json(now, WAIT)
    assert doc["state"] == expected and doc["deployment_id"] == "106:abc"
    assert doc["handler_set_at"] == SET_AT.isoformat()

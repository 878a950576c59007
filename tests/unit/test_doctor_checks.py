"""Pure parts of ``canvas-stream doctor``: the tenant binding,
the clock skew from a ``Date`` header, and the exit status."""

from __future__ import annotations

from email.utils import formatdate

from canvas_stream.doctor import FAIL, OK, SKIP, WARN, Result, budget_results, check_tenant, clock_skew, exit_status
from canvas_stream.settings import Settings
from ingest.budget import budget_from_rows


def test_tenant_binding_fails_when_unset_and_passes_when_set():
    [unset] = check_tenant(Settings())
    assert unset.status == FAIL and "LIVE_EVENTS_ROOT_ACCOUNT_UUIDS" in unset.detail
    [bound] = check_tenant(Settings(live_events_subscription_ids="sub-1"))
    assert (bound.status, bound.detail) == (OK, "bound by LIVE_EVENTS_SUBSCRIPTION_IDS")


def test_tenant_binding_warns_when_any_account_is_let_in_and_is_not_needed_without_live_events():
    [anyone] = check_tenant(Settings(live_events_allow_any_account=True))
    assert anyone.status == WARN and "any institution" in anyone.detail
    [lti_only] = check_tenant(Settings(live_events_enabled=False))
    assert lti_only.status == OK


def test_clock_skew_from_the_date_header():
    now = 1_900_000_000.0
    assert abs(clock_skew(formatdate(now - 120, usegmt=True), now, now + 0.2) - 120.1) < 0.01
    assert clock_skew(formatdate(now + 3, usegmt=True), now, now) == -3.0
    assert clock_skew(None, now, now) is None and clock_skew("yesterday-ish", now, now) is None


def test_exit_status_fails_on_a_failure_or_an_unchecked_line_not_on_a_warning():
    ok, warn = Result("a", OK, ""), Result("b", WARN, "")
    assert exit_status([ok, warn]) == 0
    assert exit_status([ok, Result("c", FAIL, "")]) == 1
    assert exit_status([ok, Result("c", SKIP, "")]) == 1
    assert Result("database", FAIL, "cannot connect").line() == "FAIL  database  cannot connect"


def test_canvas_budget_warns_at_ten_percent_of_either_threshold_and_names_the_route():
    quiet = budget_results(budget_from_rows([{"route": "/live-events", "timeouts": 12, "errors": 40,
                                              "foreign_tenant": 5}]))
    assert [(r.check, r.status) for r in quiet] == [("budget", OK)]
    assert "/live-events: 12 timeouts, 40 errors" in quiet[0].detail
    loud = budget_results(budget_from_rows([{"route": "/live-events", "timeouts": 950, "errors": 0,
                                             "foreign_tenant": 0},
                                            {"route": "/lti/notices", "timeouts": 0, "errors": 2_800,
                                             "foreign_tenant": 0}]))
    assert [r.status for r in loud] == [WARN, WARN]
    assert "/live-events" in loud[0].detail and "/lti/notices" in loud[1].detail

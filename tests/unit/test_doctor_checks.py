"""Pure parts of ``canvas-stream doctor``: the tenant binding, the clock skew from a ``Date`` header,
the exit status, and which shard recent events name against CANVAS_HOME_SHARD."""

from __future__ import annotations

from email.utils import formatdate

from canvas_stream.doctor import (
    FAIL,
    OK,
    SKIP,
    WARN,
    Result,
    budget_results,
    check_tenant,
    clock_skew,
    exit_status,
    shard_results,
)
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


def test_shards_recommend_the_home_shard_when_it_is_unset_or_disagrees():
    [unset] = shard_results({2107: 950, None: 50}, None, "2026-12-01 09:00 UTC")
    assert unset.status == WARN
    assert "latest 1,000 events (since 2026-12-01 09:00 UTC) name shard 2107" in unset.detail
    assert "set CANVAS_HOME_SHARD=2107" in unset.detail
    [several] = shard_results({3: 40, 2107: 900}, None)
    assert several.status == FAIL and "set CANVAS_HOME_SHARD to the institution's shard (most events: 2107)" \
        in several.detail and "2107 (900 events), 3 (40 events)" in several.detail
    [wrong] = shard_results({2107: 900}, 5)
    assert wrong.status == FAIL and "CANVAS_HOME_SHARD=5, but" in wrong.detail
    assert "set CANVAS_HOME_SHARD=2107" in wrong.detail and "canvas-stream replay" in wrong.detail


def test_shards_pass_when_events_name_the_home_shard_or_none_at_all():
    [home] = shard_results({2107: 900, 3: 12}, 2107)
    assert home.status == OK and "home shard 2107 (900 events)" in home.detail and "3 (12 events)" in home.detail
    [local] = shard_results({None: 30}, None)
    assert local.status == OK and "name no shard" in local.detail
    [empty] = shard_results({}, 2107)
    assert empty.status == OK and "no events yet" in empty.detail

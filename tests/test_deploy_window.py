"""Tests for the ``deploy_window`` rule: windows, freezes, holidays, daylight saving, load-time checks.

The clock is always injected as ``ctx.now``; times in comments are America/New_York unless said.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from policyengine.facts import Facts
from policyengine.models import Outcome, Status
from policyengine.rules import deploy_window
from policyengine.rules.base import Context, RuleSpec
from policyengine.rules.deploy_window import DeployWindowRule

NY = "America/New_York"

ACCEPTANCE: dict[str, Any] = {
    "timezone": NY,
    "allow": [{"days": ["mon", "tue", "wed", "thu"], "between": ["09:00", "16:00"]}],
    "deny": [
        {"name": "year-end freeze", "from": "2026-12-18T00:00", "until": "2027-01-04T00:00"},
        {"name": "wednesday maintenance", "cron": "0 12 * * wed", "duration": "1h"},
    ],
    "holidays": "US",
}


def judge(params: dict[str, Any], now: str, tmp_path: Path) -> Outcome:
    """Evaluate a deploy_window rule at ``now`` (ISO 8601 with offset)."""
    assert DeployWindowRule.check_params(params) == []
    rule = DeployWindowRule(RuleSpec(id="window", type="deploy_window", params=params))
    clock = datetime.fromisoformat(now.replace("Z", "+00:00"))
    return rule.evaluate(Context(change={}, facts=Facts(change={}), now=clock))


def problems(params: dict[str, Any]) -> dict[str, str]:
    return dict(DeployWindowRule.check_params(params))


# --------------------------------------------------------------------------- acceptance


def test_tuesday_business_hours_pass(tmp_path: Path) -> None:
    out = judge(ACCEPTANCE, "2026-11-24T15:00:00Z", tmp_path)
    assert out.status is Status.PASS
    assert out.message == (
        'Tuesday 2026-11-24 10:00 EST is inside the allowed window "mon-thu 09:00-16:00" and in no freeze'
    )
    assert out.details == {
        "timezone": NY,
        "local_time": "2026-11-24T10:00:00-05:00",
        "matched": [],
        "allowed_by": "mon-thu 09:00-16:00",
        "next_allowed": None,
        "holiday": None,
    }


def test_thanksgiving_fails_naming_the_holiday(tmp_path: Path) -> None:
    out = judge(ACCEPTANCE, "2026-11-26T15:00:00Z", tmp_path)
    assert out.status is Status.FAIL
    assert "Thanksgiving" in out.message
    assert out.message.startswith("Thursday 2026-11-26 is a public holiday in US: Thanksgiving")
    # Friday is outside the allow window and the weekend follows.
    assert out.message.endswith("next allowed: Monday 2026-11-30 09:00 EST")
    assert out.details["holiday"].startswith("Thanksgiving")
    assert out.details["matched"] == [out.details["holiday"]]
    assert out.details["next_allowed"] == "2026-11-30T09:00:00-05:00"


def test_friday_fails_until_monday_morning(tmp_path: Path) -> None:
    out = judge(ACCEPTANCE, "2026-11-27T15:00:00Z", tmp_path)
    assert out.status is Status.FAIL
    assert "2026-11-30 09:00" in out.message
    assert out.message == (
        'Friday 2026-11-27 10:00 EST is outside the allowed window "mon-thu 09:00-16:00"; '
        "next allowed: Monday 2026-11-30 09:00 EST"
    )
    assert out.details["allowed_by"] is None
    assert out.details["matched"] == []


def test_allow_window_end_is_exclusive(tmp_path: Path) -> None:
    assert judge(ACCEPTANCE, "2026-11-24T20:59:00Z", tmp_path).status is Status.PASS  # Tuesday 15:59
    out = judge(ACCEPTANCE, "2026-11-24T21:00:00Z", tmp_path)  # Tuesday 16:00
    assert out.status is Status.FAIL
    assert out.message.endswith("next allowed: Wednesday 2026-11-25 09:00 EST")


# --------------------------------------------------------------------------- cron + duration


def test_wednesday_maintenance_denies_1230(tmp_path: Path) -> None:
    out = judge(ACCEPTANCE, "2026-11-25T17:30:00Z", tmp_path)
    assert out.status is Status.FAIL
    assert 'inside "wednesday maintenance" (2026-11-25 12:00 to 13:00 EST)' in out.message
    assert out.message.endswith("next allowed: Wednesday 2026-11-25 13:00 EST")
    assert out.details["matched"] == ["wednesday maintenance"]
    # Inside the allow window, but the freeze wins.
    assert out.details["allowed_by"] == "mon-thu 09:00-16:00"


def test_wednesday_maintenance_ends_at_1300(tmp_path: Path) -> None:
    assert judge(ACCEPTANCE, "2026-11-25T18:00:00Z", tmp_path).status is Status.PASS
    assert judge(ACCEPTANCE, "2026-11-25T16:59:59Z", tmp_path).status is Status.PASS


# --------------------------------------------------------------------------- absolute freeze


def test_year_end_freeze_names_bounds_and_next_allowed(tmp_path: Path) -> None:
    out = judge(ACCEPTANCE, "2026-12-21T15:00:00Z", tmp_path)  # Monday 10:00, inside the freeze
    assert out.status is Status.FAIL
    assert 'inside "year-end freeze" (2026-12-18 00:00 to 2027-01-04 00:00 EST)' in out.message
    assert out.message.endswith("next allowed: Monday 2027-01-04 09:00 EST")
    assert out.details["next_allowed"] == "2027-01-04T09:00:00-05:00"


def test_freeze_on_a_holiday_lists_every_reason(tmp_path: Path) -> None:
    out = judge(ACCEPTANCE, "2027-01-01T15:00:00Z", tmp_path)  # Friday, New Year's Day, frozen
    assert out.status is Status.FAIL
    assert "year-end freeze" in out.message
    assert "is a public holiday in US: New Year's Day" in out.message
    assert "outside the allowed window" in out.message
    assert out.details["matched"] == ["year-end freeze", "New Year's Day"]
    assert out.message.endswith("next allowed: Monday 2027-01-04 09:00 EST")


def test_freeze_boundaries_are_half_open(tmp_path: Path) -> None:
    params = {"timezone": NY, "deny": [{"name": "f", "from": "2026-12-18T00:00", "until": "2027-01-04T00:00"}]}
    assert judge(params, "2026-12-18T04:59:59Z", tmp_path).status is Status.PASS
    assert judge(params, "2026-12-18T05:00:00Z", tmp_path).status is Status.FAIL
    assert judge(params, "2027-01-04T05:00:00Z", tmp_path).status is Status.PASS


def test_offset_in_from_is_that_instant(tmp_path: Path) -> None:
    params = {
        "timezone": NY,
        "deny": [{"name": "utc day", "from": "2026-12-18T00:00+00:00", "until": "2026-12-19T00:00Z"}],
    }
    out = judge(params, "2026-12-18T00:30:00Z", tmp_path)  # 19:30 on the 17th in New York
    assert out.status is Status.FAIL
    assert 'inside "utc day" (2026-12-17 19:00 to 2026-12-18 19:00 EST)' in out.message
    assert out.message.endswith("next allowed: Friday 2026-12-18 19:00 EST")
    # Read as local New York time it would start five hours later: 23:59Z is already frozen.
    assert judge(params, "2026-12-17T23:59:00Z", tmp_path).status is Status.PASS


def test_no_allowed_time_within_400_days(tmp_path: Path) -> None:
    params = {"timezone": NY, "deny": [{"name": "forever", "from": "2026-01-01", "until": "2029-01-01"}]}
    out = judge(params, "2026-11-24T15:00:00Z", tmp_path)
    assert out.status is Status.FAIL
    assert out.message.endswith("no allowed time in the next 400 days")
    assert out.details["next_allowed"] is None


def test_search_step_limit_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_window, "MAX_SEARCH_STEPS", 1)
    out = judge(ACCEPTANCE, "2026-12-21T15:00:00Z", tmp_path)
    assert out.status is Status.FAIL
    assert out.message.endswith("no allowed time found (search stopped after 1 steps)")


def test_no_allow_list_means_any_time_not_denied(tmp_path: Path) -> None:
    out = judge({"timezone": NY}, "2026-11-29T08:00:00Z", tmp_path)  # Sunday 03:00
    assert out.status is Status.PASS
    assert out.message == "Sunday 2026-11-29 03:00 EST is in no freeze"
    assert out.details["allowed_by"] is None


# --------------------------------------------------------------------------- daylight saving


FALL_BACK_CRON = {"timezone": NY, "deny": [{"name": "nightly", "cron": "30 1 * * *", "duration": "1h"}]}


def test_fall_back_cron_fires_once_and_lasts_an_elapsed_hour(tmp_path: Path) -> None:
    # 2026-11-01: 01:30 EDT (05:30Z) and 01:30 EST (06:30Z) both read 01:30.
    before = judge(FALL_BACK_CRON, "2026-11-01T05:29:00Z", tmp_path)
    assert before.status is Status.PASS
    first_pass = judge(FALL_BACK_CRON, "2026-11-01T05:45:00Z", tmp_path)  # 01:45 EDT
    assert first_pass.status is Status.FAIL
    assert 'inside "nightly" (2026-11-01 01:30 EDT to 01:30 EST)' in first_pass.message
    assert first_pass.message.endswith("next allowed: Sunday 2026-11-01 01:30 EST")
    assert first_pass.details["next_allowed"] == "2026-11-01T01:30:00-05:00"


def test_fall_back_second_pass_is_still_inside_the_first_firing(tmp_path: Path) -> None:
    # 01:15 EST reads earlier than the 01:30 EDT firing, but happens 45 minutes after it.
    out = judge(FALL_BACK_CRON, "2026-11-01T06:15:00Z", tmp_path)
    assert out.status is Status.FAIL
    assert out.message.startswith("Sunday 2026-11-01 01:15 EST is inside")


def test_fall_back_second_0130_does_not_fire_again(tmp_path: Path) -> None:
    assert judge(FALL_BACK_CRON, "2026-11-01T06:30:00Z", tmp_path).status is Status.PASS
    assert judge(FALL_BACK_CRON, "2026-11-01T06:45:00Z", tmp_path).status is Status.PASS
    # The next night it fires again at 01:30 EST.
    assert judge(FALL_BACK_CRON, "2026-11-02T06:45:00Z", tmp_path).status is Status.FAIL


def test_spring_forward_cron_in_the_gap_fires_at_gap_end(tmp_path: Path) -> None:
    params = {"timezone": NY, "deny": [{"name": "job", "cron": "30 2 * * *", "duration": "1h"}]}
    out = judge(params, "2026-03-08T07:30:00Z", tmp_path)  # 03:30 EDT
    assert out.status is Status.FAIL
    assert 'inside "job" (2026-03-08 03:00 to 04:00 EDT)' in out.message


SPRING_GAP_ALLOW = {"timezone": NY, "allow": [{"name": "small hours", "between": ["02:00", "03:00"]}]}


def test_spring_forward_allow_window_in_the_gap_does_not_open(tmp_path: Path) -> None:
    # 2026-03-08: clocks jump from 01:59:59 EST to 03:00 EDT, so 02:00-03:00 never reads.
    before = judge(SPRING_GAP_ALLOW, "2026-03-08T06:59:00Z", tmp_path)  # 01:59 EST
    assert before.status is Status.FAIL
    assert before.message.endswith("next allowed: Monday 2026-03-09 02:00 EDT")
    after = judge(SPRING_GAP_ALLOW, "2026-03-08T07:00:00Z", tmp_path)  # 03:00 EDT
    assert after.status is Status.FAIL
    assert 'outside the allowed window "small hours" (every day 02:00-03:00)' in after.message
    assert judge(SPRING_GAP_ALLOW, "2026-03-09T06:30:00Z", tmp_path).status is Status.PASS


def test_spring_forward_window_straddling_the_gap_is_shorter(tmp_path: Path) -> None:
    params = {"timezone": NY, "allow": [{"between": ["01:30", "02:30"]}]}
    assert judge(params, "2026-03-08T06:45:00Z", tmp_path).status is Status.PASS  # 01:45 EST
    assert judge(params, "2026-03-08T07:00:00Z", tmp_path).status is Status.FAIL  # 03:00 EDT


def test_fall_back_allow_window_is_open_on_both_passes(tmp_path: Path) -> None:
    params = {"timezone": NY, "allow": [{"between": ["01:00", "02:00"]}]}
    assert judge(params, "2026-11-01T05:30:00Z", tmp_path).status is Status.PASS  # 01:30 EDT
    assert judge(params, "2026-11-01T06:30:00Z", tmp_path).status is Status.PASS  # 01:30 EST
    assert judge(params, "2026-11-01T07:00:00Z", tmp_path).status is Status.FAIL  # 02:00 EST


def test_fall_back_next_allowed_when_the_clock_turns_back_into_a_window(tmp_path: Path) -> None:
    params = {"timezone": NY, "allow": [{"between": ["00:30", "01:30"]}]}
    out = judge(params, "2026-11-01T05:45:00Z", tmp_path)  # 01:45 EDT; at 06:00Z the clock reads 01:00 again
    assert out.status is Status.FAIL
    assert out.message.endswith("next allowed: Sunday 2026-11-01 01:00 EST")


def test_spring_forward_freeze_bounds_in_the_gap_mean_gap_end(tmp_path: Path) -> None:
    params = {"timezone": NY, "deny": [{"name": "f", "from": "2026-03-08T02:30", "until": "2026-03-08T05:00"}]}
    assert judge(params, "2026-03-08T06:59:00Z", tmp_path).status is Status.PASS  # 01:59 EST
    out = judge(params, "2026-03-08T07:00:00Z", tmp_path)  # 03:00 EDT
    assert out.status is Status.FAIL
    assert "(2026-03-08 03:00 to 05:00 EDT)" in out.message


def test_fall_back_freeze_bounds_are_read_to_freeze_longest(tmp_path: Path) -> None:
    # `from` 01:15 at its first occurrence (EDT), `until` 01:45 at its second (EST).
    params = {"timezone": NY, "deny": [{"name": "f", "from": "2026-11-01T01:15", "until": "2026-11-01T01:45"}]}
    assert judge(params, "2026-11-01T05:14:00Z", tmp_path).status is Status.PASS
    assert judge(params, "2026-11-01T05:15:00Z", tmp_path).status is Status.FAIL
    out = judge(params, "2026-11-01T06:40:00Z", tmp_path)  # 01:40 EST
    assert out.status is Status.FAIL
    assert "(2026-11-01 01:15 EDT to 01:45 EST)" in out.message
    assert judge(params, "2026-11-01T06:45:00Z", tmp_path).status is Status.PASS


# --------------------------------------------------------------------------- across midnight


FRIDAY_NIGHT = {"timezone": NY, "allow": [{"name": "friday night", "days": ["fri"], "between": ["22:00", "02:00"]}]}


@pytest.mark.parametrize(
    "now",
    [
        "2026-11-28T04:30:00Z",  # Friday 23:30
        "2026-11-28T06:30:00Z",  # Saturday 01:30
        "2026-11-28T03:00:00Z",  # Friday 22:00, opening minute
    ],
)
def test_window_across_midnight_allows(now: str, tmp_path: Path) -> None:
    out = judge(FRIDAY_NIGHT, now, tmp_path)
    assert out.status is Status.PASS
    assert out.details["allowed_by"] == "friday night"


def test_window_across_midnight_closes_at_0200_saturday(tmp_path: Path) -> None:
    out = judge(FRIDAY_NIGHT, "2026-11-28T07:30:00Z", tmp_path)  # Saturday 02:30
    assert out.status is Status.FAIL
    assert 'outside the allowed window "friday night" (fri 22:00-02:00)' in out.message
    assert out.message.endswith("next allowed: Friday 2026-12-04 22:00 EST")
    assert judge(FRIDAY_NIGHT, "2026-11-28T07:00:00Z", tmp_path).status is Status.FAIL  # 02:00 exactly


@pytest.mark.parametrize(
    "now",
    [
        "2026-11-27T04:30:00Z",  # Thursday 23:30: Thursday is not listed
        "2026-11-29T06:30:00Z",  # Sunday 01:30: Saturday night is not listed
    ],
)
def test_window_across_midnight_only_from_listed_days(now: str, tmp_path: Path) -> None:
    assert judge(FRIDAY_NIGHT, now, tmp_path).status is Status.FAIL


def test_day_ranges_and_words(tmp_path: Path) -> None:
    params = {"timezone": NY, "allow": [{"days": ["Weekends", "MON-tuesday"], "between": ["00:00", "24:00"]}]}
    for now, status in [
        ("2026-11-28T15:00:00Z", Status.PASS),  # Saturday
        ("2026-11-30T15:00:00Z", Status.PASS),  # Monday
        ("2026-12-01T15:00:00Z", Status.PASS),  # Tuesday
        ("2026-12-02T15:00:00Z", Status.FAIL),  # Wednesday
    ]:
        assert judge(params, now, tmp_path).status is status, now
    wrapped = {"timezone": NY, "allow": [{"days": ["fri-mon"]}]}
    assert judge(wrapped, "2026-11-29T15:00:00Z", tmp_path).status is Status.PASS  # Sunday
    out = judge(wrapped, "2026-12-01T15:00:00Z", tmp_path)  # Tuesday
    assert out.status is Status.FAIL
    assert '"mon,fri-sun 00:00-24:00"' in out.message
    assert out.message.endswith("next allowed: Friday 2026-12-04 00:00 EST")


# --------------------------------------------------------------------------- cron + cron_end


WEEKEND_FREEZE = {
    "timezone": NY,
    "deny": [{"name": "weekend freeze", "cron": "0 23 * * fri", "cron_end": "0 7 * * mon"}],
}


def test_gitlab_style_freeze_across_the_weekend(tmp_path: Path) -> None:
    out = judge(WEEKEND_FREEZE, "2026-11-28T17:00:00Z", tmp_path)  # Saturday 12:00
    assert out.status is Status.FAIL
    assert 'inside "weekend freeze" (2026-11-27 23:00 to 2026-11-30 07:00 EST)' in out.message
    assert out.message.endswith("next allowed: Monday 2026-11-30 07:00 EST")
    assert out.details["matched"] == ["weekend freeze"]


@pytest.mark.parametrize(
    ("now", "status"),
    [
        ("2026-11-28T03:59:00Z", Status.PASS),  # Friday 22:59
        ("2026-11-28T04:00:00Z", Status.FAIL),  # Friday 23:00
        ("2026-11-30T11:59:00Z", Status.FAIL),  # Monday 06:59
        ("2026-11-30T12:00:00Z", Status.PASS),  # Monday 07:00
        ("2026-12-02T17:00:00Z", Status.PASS),  # Wednesday
    ],
)
def test_gitlab_style_freeze_edges(now: str, status: Status, tmp_path: Path) -> None:
    assert judge(WEEKEND_FREEZE, now, tmp_path).status is status


def test_end_firing_at_the_same_minute_as_start_closes_the_freeze(tmp_path: Path) -> None:
    params = {"timezone": NY, "deny": [{"cron": "0 7 * * mon", "cron_end": "0 7 * * mon"}]}
    assert judge(params, "2026-11-30T12:30:00Z", tmp_path).status is Status.PASS


# --------------------------------------------------------------------------- holidays


def test_holidays_with_subdivision(tmp_path: Path) -> None:
    params = {"timezone": "America/Los_Angeles", "holidays": {"country": "US", "subdivision": "CA"}}
    out = judge(params, "2026-11-27T18:00:00Z", tmp_path)  # Friday 10:00 PST: the day after Thanksgiving
    assert out.status is Status.FAIL
    assert out.message.startswith("Friday 2026-11-27 is a public holiday in US-CA: ")
    assert out.details["holiday"] is not None
    assert out.message.endswith("next allowed: Saturday 2026-11-28 00:00 PST")
    # Federal holidays alone leave that Friday open.
    assert judge({"timezone": "America/Los_Angeles", "holidays": "US"}, "2026-11-27T18:00:00Z", tmp_path).status is (
        Status.PASS
    )


def test_holiday_is_the_whole_local_day(tmp_path: Path) -> None:
    params = {"timezone": NY, "holidays": "US"}
    assert judge(params, "2026-11-26T05:00:00Z", tmp_path).status is Status.FAIL  # 00:00 Thanksgiving
    assert judge(params, "2026-11-27T04:59:00Z", tmp_path).status is Status.FAIL  # 23:59 Thanksgiving
    assert judge(params, "2026-11-26T04:59:00Z", tmp_path).status is Status.PASS  # 23:59 the day before


# --------------------------------------------------------------------------- errors at evaluation


def test_evaluate_with_invalid_params_is_an_error(tmp_path: Path) -> None:
    rule = DeployWindowRule(RuleSpec(id="w", type="deploy_window", params={"timezone": "Mars/Base"}))
    now = datetime(2026, 11, 24, 15, tzinfo=timezone.utc)
    out = rule.evaluate(Context(change={}, facts=Facts(change={}), now=now))
    assert out.status is Status.ERROR
    assert "timezone: unknown time zone 'Mars/Base'" in out.message


def test_evaluate_with_a_naive_clock_is_an_error(tmp_path: Path) -> None:
    rule = DeployWindowRule(RuleSpec(id="w", type="deploy_window", params={"timezone": NY}))
    naive = datetime(2026, 11, 24, 15)  # noqa: DTZ001 - deliberately naive
    out = rule.evaluate(Context(change={}, facts=Facts(change={}), now=naive))
    assert out.status is Status.ERROR


# --------------------------------------------------------------------------- check_params


def test_valid_params_have_no_problems() -> None:
    assert DeployWindowRule.check_params(ACCEPTANCE) == []
    full = {
        **ACCEPTANCE,
        "allow": [
            {"days": ["mon-fri"], "between": ["09:00", "24:00"], "name": "day"},
            {"days": ["weekdays", "weekends", "Monday", "friday-sunday"]},
            {"between": ["22:00", "02:00"]},
        ],
        "deny": [
            *ACCEPTANCE["deny"],
            {"cron": "0 23 * * fri", "cron_end": "0 7 * * mon"},
            {"cron": "0 0 L * *", "duration": "1h30m"},
            {"cron": "*/15 9-17 * * 1-5", "duration": "2d"},
            {"cron": "0 9 * * *", "duration": "1d2h3m4s"},
            {"from": "2026-12-18", "until": "2026-12-19T00:00:00Z"},
        ],
        "holidays": {"country": "US", "subdivision": "CA"},
    }
    assert DeployWindowRule.check_params(full) == []


def test_check_unknown_timezone_suggests_close_names() -> None:
    got = problems({"timezone": "America/New_Yrok"})
    assert got["timezone"].startswith("unknown time zone 'America/New_Yrok'; did you mean 'America/New_York'")
    assert "America/New_York" in problems({"timezone": "america/new_york"})["timezone"]
    assert "unknown time zone" in problems({"timezone": "../etc/passwd"})["timezone"]


def test_check_missing_timezone() -> None:
    assert "required" in problems({})["timezone"]


@pytest.mark.parametrize(
    ("cron", "needle"),
    [
        ("0 25 * * *", "does not parse"),
        ("0 12 * * wedn", "does not parse"),
        ("0 0 31 2 *", "does not parse"),
        ("0 12 * *", "has 4 fields; expected 5"),
        ("0 0 12 * * wed", "has 6 fields; expected 5"),
        ("@daily", "cron macros"),
    ],
)
def test_check_bad_cron(cron: str, needle: str) -> None:
    got = problems({"timezone": NY, "deny": [{"cron": cron, "duration": "1h"}]})
    assert needle in got["deny[0].cron"]
    got_end = problems({"timezone": NY, "deny": [{"cron": "0 23 * * fri", "cron_end": cron}]})
    assert needle in got_end["deny[0].cron_end"]


@pytest.mark.parametrize(
    ("between", "path", "needle"),
    [
        (["9:00", "16:00"], "allow[0].between[0]", 'expected a time "HH:MM"'),
        (["09:00", "16h"], "allow[0].between[1]", 'expected a time "HH:MM"'),
        (["24:00", "23:00"], "allow[0].between[0]", "out of range; expected 00:00 to 23:59"),
        (["09:00", "24:01"], "allow[0].between[1]", 'or "24:00" for the end of the day'),
        (["09:60", "16:00"], "allow[0].between[0]", "out of range"),
        (["09:00", 960], "allow[0].between[1]", 'write "16:00" in quotes'),
        (["09:00", "09:00"], "allow[0].between", "empty window"),
        (["09:00"], "allow[0].between", "expected two times"),
    ],
)
def test_check_bad_between(between: list[Any], path: str, needle: str) -> None:
    got = problems({"timezone": NY, "allow": [{"between": between}]})
    assert needle in got[path], got


def test_check_from_not_before_until() -> None:
    params = {"timezone": NY, "deny": [{"from": "2027-01-04T00:00", "until": "2026-12-18T00:00"}]}
    assert "must be earlier than `until`" in problems(params)["deny[0].from"]
    same = {"timezone": NY, "deny": [{"from": "2026-12-18T05:00Z", "until": "2026-12-18T00:00"}]}
    assert "must be earlier" in problems(same)["deny[0].from"]  # the same instant, written two ways


def test_check_bad_moments_and_missing_bounds() -> None:
    got = problems({"timezone": NY, "deny": [{"from": "yesterday", "until": "2026-12-18"}, {"from": "2026-01-01"}]})
    assert "expected an ISO 8601 date-time" in got["deny[0].from"]
    assert "`until` is required" in got["deny[1].until"]


@pytest.mark.parametrize("duration", ["1x", "0m", "90", "", "1m30h", "1h1h", "-1h", "1.5h"])
def test_check_bad_duration(duration: str) -> None:
    got = problems({"timezone": NY, "deny": [{"cron": "0 12 * * wed", "duration": duration}]})
    assert "expected a positive duration" in got["deny[0].duration"]


def test_check_cron_needs_exactly_one_end() -> None:
    got = problems(
        {
            "timezone": NY,
            "deny": [
                {"cron": "0 12 * * wed"},
                {"cron": "0 12 * * wed", "duration": "1h", "cron_end": "0 13 * * wed"},
                {"from": "2026-01-01", "until": "2026-01-02", "cron": "0 1 * * *", "duration": "1h"},
                {"name": "nothing"},
            ],
        }
    )
    assert "exactly one of `duration` or `cron_end`" in got["deny[0]"]
    assert "exactly one of `duration` or `cron_end`" in got["deny[1]"]
    assert "not both" in got["deny[2]"]
    assert "expected `from` and `until`" in got["deny[3]"]


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("us", "close valid codes: US"),
        ("Germany", "DE (Germany)"),
        ("XX", "close valid codes: "),
    ],
)
def test_check_unknown_holiday_country(code: str, needle: str) -> None:
    got = problems({"timezone": NY, "holidays": code})
    assert got["holidays"].startswith(f"unknown holiday country code {code!r}")
    assert needle in got["holidays"]
    mapped = problems({"timezone": NY, "holidays": {"country": code}})
    assert needle in mapped["holidays.country"]


def test_check_unknown_subdivision() -> None:
    got = problems({"timezone": NY, "holidays": {"country": "US", "subdivision": "ca"}})
    assert got["holidays.subdivision"] == "unknown subdivision 'ca' of US; did you mean 'CA'?"
    listed = problems({"timezone": NY, "holidays": {"country": "US", "subdivision": "ZZ"}})
    assert "valid ones include AK" in listed["holidays.subdivision"]


def test_check_unknown_days() -> None:
    got = problems({"timezone": NY, "allow": [{"days": ["tues", "mon-fry", "weekday", 3, "mon"]}]})
    assert got["allow[0].days[0]"].startswith("unknown day 'tues'")
    assert "did you mean 'tue'" in got["allow[0].days[0]"]
    assert got["allow[0].days[1]"] == "unknown day 'fry' in range 'mon-fry'; did you mean 'fri'?"
    assert "weekdays" in got["allow[0].days[2]"]
    assert "expected a day name" in got["allow[0].days[3]"]
    assert "allow[0].days[4]" not in got
    assert "never opens" in problems({"timezone": NY, "allow": [{"days": []}]})["allow[0].days"]


def test_every_problem_is_reported_at_once() -> None:
    got = DeployWindowRule.check_params(
        {
            "timezone": "Nowhere/City",
            "allow": [{"days": ["funday"], "between": ["25:00", "16:00"]}],
            "deny": [{"cron": "0 12 * * wed", "duration": "forever"}],
            "holidays": "ZZ",
        }
    )
    assert [path for path, _ in got] == [
        "timezone",
        "allow[0].days[0]",
        "allow[0].between[0]",
        "deny[0].duration",
        "holidays",
    ]


def test_import_does_not_load_cronsim_or_holidays() -> None:
    code = "import sys, policyengine.rules.deploy_window; print(any(m in sys.modules for m in ('cronsim', 'holidays')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.strip() == "False"

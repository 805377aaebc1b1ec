"""Who approved a ticket (issue 17, "Who chose the exceptions"): Jira's changelog.

With ``jira: {approval_status: Approved}`` the issue is read with ``expand=changelog``; the
author and time of the last transition to that status are kept with the key (decision details,
and the raw record in the bundle that replay reads). An issue whose changelog shows no such
transition does not verify: who approved it cannot be shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_ticket_rule import DONE_ISSUE, JIRA_RULE, api, jira_env, jira_issue, result_of, run  # noqa: F401

from fake_servers import FakeAPI

RULE: dict[str, Any] = {**JIRA_RULE, "jira": {**JIRA_RULE["jira"], "approval_status": "Approved"}}


def _history(status: str, who: dict[str, str], when: str) -> dict[str, Any]:
    return {"id": "1", "author": who, "created": when,
            "items": [{"field": "status", "fieldtype": "jira", "fromString": "Review", "toString": status}]}


def issue_with_changelog(*histories: dict[str, Any]) -> dict[str, Any]:
    return {**jira_issue("PAY-101", "Done"), "changelog": {"startAt": 0, "maxResults": 100,
                                                           "total": len(histories), "histories": list(histories)}}


def test_the_approver_and_time_come_from_the_changelog(api: FakeAPI, tmp_path: Path) -> None:  # noqa: F811
    erin = {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Erin Example"}
    api.json(DONE_ISSUE, issue_with_changelog(
        _history("Approved", {"accountId": "old", "displayName": "Old"}, "2026-11-20T09:00:00.000+0000"),
        _history("Approved", erin, "2026-11-23T10:15:00.000+0000"),
        _history("Done", {"accountId": "x", "displayName": "Dev"}, "2026-11-24T08:00:00.000+0000")))
    res = run(tmp_path, RULE, jira_env(api))
    status, message = result_of(res)
    assert status == "pass", message
    assert "approved by Erin Example (5b10ac8d82e05b22cc7d4ef5) at 2026-11-23T10:15:00.000+0000" in message
    assert api.requests[0].query == {"fields": ["status,issuetype"], "expand": ["changelog"]}
    rule = next(r for r in res.decision.rules if r.id == "ticket")
    [entry] = rule.details["keys"]
    assert entry["approved_by"] == "Erin Example (5b10ac8d82e05b22cc7d4ef5)"
    assert entry["approved_at"] == "2026-11-23T10:15:00.000+0000"


def test_an_issue_never_moved_to_the_approval_status_does_not_verify(api: FakeAPI, tmp_path: Path) -> None:  # noqa: F811
    api.json(DONE_ISSUE, issue_with_changelog(
        _history("Done", {"name": "dev"}, "2026-11-24T08:00:00.000+0000")))
    status, message = result_of(run(tmp_path, RULE, jira_env(api)))
    assert status == "fail" and "no transition to 'Approved'" in message, message


def test_without_approval_status_no_changelog_is_asked(api: FakeAPI, tmp_path: Path) -> None:  # noqa: F811
    api.json(DONE_ISSUE, jira_issue("PAY-101", "Done"))
    assert result_of(run(tmp_path, JIRA_RULE, jira_env(api)))[0] == "pass"
    assert "expand" not in api.requests[0].query


def test_replay_reads_the_approval_from_the_recorded_changelog(api: FakeAPI, tmp_path: Path) -> None:  # noqa: F811
    from policyengine.evidence.stores.factory import open_store
    from policyengine.gate import replay

    api.json(DONE_ISSUE, issue_with_changelog(
        _history("Approved", {"name": "erin"}, "2026-11-23T10:15:00.000+0000")))
    res = run(tmp_path, RULE, jira_env(api))
    assert result_of(res)[0] == "pass"
    replayed = replay(open_store(res.store_url), res.evidence["bundle_id"])
    assert replayed.ok, replayed.differences
    assert json.dumps(replayed.rules)


# -- ServiceNow: the change request's approval records ----------------------------------------

APPROVALS_PATH = "/api/now/table/sysapproval_approver"
SYS_ID = "a9e9c33dc61122760072455df62663d2"


def test_servicenow_keeps_the_approval_records_of_the_change(api: FakeAPI, tmp_path: Path) -> None:  # noqa: F811
    from test_ticket_rule import SN_PATH, SN_RULE, change_doc, sn_change, sn_env

    change = sn_change("CHG0030001")
    change["result"][0]["sys_id"] = SYS_ID
    api.json(SN_PATH, change)
    api.json(APPROVALS_PATH, {"result": [
        {"approver": {"display_value": "Erin Example", "value": "6816f79cc0a8016401c5a33be04be441"},
         "state": {"display_value": "Approved", "value": "approved"},
         "sys_updated_on": {"display_value": "2026-11-23 02:15:00", "value": "2026-11-23 10:15:00"}}]})
    res = run(tmp_path, SN_RULE, sn_env(api), change_doc("Deploy refunds (CHG0030001)"))
    status, message = result_of(res)
    assert status == "pass", message
    asked = api.requests[1]
    assert asked.path == APPROVALS_PATH and asked.query["sysparm_query"] == [f"sysapproval={SYS_ID}"]
    [entry] = next(r for r in res.decision.rules if r.id == "ticket").details["keys"]
    assert entry["approvals"] == "Erin Example (6816f79cc0a8016401c5a33be04be441) approved at 2026-11-23 10:15:00 UTC"
    from policyengine.evidence.stores.factory import open_store
    from policyengine.gate import replay

    replayed = replay(open_store(res.store_url), res.evidence["bundle_id"])
    assert replayed.ok, replayed.differences

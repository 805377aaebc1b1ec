"""The ``ticket`` rule end to end: keys found in the change, verified against Jira and
ServiceNow (local fake servers answering the documented shapes), recorded in the bundle,
replayed without asking again, and supplied by policy test cases offline."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_servers import FakeAPI
from helpers import HEAD, OLD

from policyengine.gate import CheckRequest, CheckResult, check, replay

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
JIRA_TOKEN = "jira-secret-token-0123456789"
SN_PASSWORD = "sn-secret-password-987654321"
DONE_ISSUE = "/rest/api/2/issue/PAY-101"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("policyengine.providers.http.SLEEP", lambda seconds: None)


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as server:
        yield server


def jira_issue(key: str, status: str, issue_type: str = "Story") -> dict[str, Any]:
    """An issue as Jira's REST API v2 answers it (trimmed to the fields asked)."""
    return {"expand": "renderedFields,names,schema", "id": "10002", "self": f"https://x/rest/api/2/issue/{key}",
            "key": key, "fields": {
                "status": {"self": "https://x/rest/api/2/status/10001", "description": "", "name": status,
                           "id": "10001", "statusCategory": {"id": 3, "key": "done", "name": "Done"}},
                "issuetype": {"self": "https://x/rest/api/2/issuetype/10001", "id": "10001", "name": issue_type,
                              "subtask": False}}}


JIRA_404 = {"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}


def sn_change(number: str, *, approval: str = "approved", state: str = "-2",
              start: str = "2026-11-24 14:00:00", end: str = "2026-11-24 18:00:00") -> dict[str, Any]:
    return {"result": [{"number": number, "state": state, "approval": approval, "start_date": start,
                        "end_date": end}]}


def change_doc(title: str = "PAY-101: add refund endpoint", **pr: Any) -> dict[str, Any]:
    return {"repository": "acme/payments", "environment": "production", "commit": HEAD, "deployer": "dana",
            "pull_request": {"number": 42, "title": title, "author": "alice", "head_commit": HEAD, **pr},
            "commits": [{"sha": OLD, "author": "alice", "committer": "alice", "message": "wip"},
                        {"sha": HEAD, "author": "alice", "committer": "alice", "message": "fix"}]}


JIRA_RULE: dict[str, Any] = {"id": "ticket", "type": "ticket",
                             "jira": {"projects": ["PAY", "OPS"], "statuses": ["Done", "Ready for Release"]}}
SN_RULE: dict[str, Any] = {"id": "ticket", "type": "ticket", "servicenow": {}}


def run(tmp_path: Path, rule: dict[str, Any], env: dict[str, str], change: dict[str, Any] | None = None,
        now: datetime = NOW) -> CheckResult:
    policy = tmp_path / "policy.yml"
    policy.write_text(yaml.safe_dump({"version": 1, "name": "tickets", "rules": [rule]}), encoding="utf-8")
    change_file = tmp_path / "change.yml"
    change_file.write_text(yaml.safe_dump(change or change_doc()), encoding="utf-8")
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    return check(CheckRequest(policy_path=str(policy), now=now, env=env, change_path=str(change_file),
                              workspace=str(ws), evidence_dir=str(tmp_path / "ev")))


def jira_env(api: FakeAPI, **more: str) -> dict[str, str]:
    return {"JIRA_BASE_URL": api.url, "JIRA_EMAIL": "bot@acme.example", "JIRA_API_TOKEN": JIRA_TOKEN, **more}


def sn_env(api: FakeAPI) -> dict[str, str]:
    return {"SERVICENOW_INSTANCE_URL": api.url, "SERVICENOW_USER": "deploy-bot", "SERVICENOW_PASSWORD": SN_PASSWORD}


def result_of(res: CheckResult) -> tuple[str, str]:
    rule = next(r for r in res.decision.rules if r.id == "ticket")
    return rule.status.value, rule.message


def bundle_bytes(res: CheckResult) -> dict[str, bytes]:
    with zipfile.ZipFile(Path(res.store_url) / res.evidence["path"]) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


# -- Jira ---------------------------------------------------------------------------------------


def test_jira_issue_in_an_allowed_status_passes(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, jira_issue("PAY-101", "Done"))
    res = run(tmp_path, JIRA_RULE, jira_env(api))
    assert result_of(res) == ("pass", "PAY-101 is Done (Story)")
    assert res.decision.decision == "allow"
    req = api.requests[0]
    assert req.path == DONE_ISSUE and req.query == {"fields": ["status,issuetype"]}
    assert req.headers["Authorization"].startswith("Basic ")


def test_jira_issue_in_another_status_fails(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, jira_issue("PAY-101", "In Progress"))
    status, message = result_of(run(tmp_path, JIRA_RULE, jira_env(api)))
    assert status == "fail"
    assert message == "no ticket verified: PAY-101 is 'In Progress', not 'Done' or 'Ready for Release'"


def test_jira_issue_type_is_checked_when_configured(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, jira_issue("PAY-101", "Done", "Sub-task"))
    rule = {**JIRA_RULE, "jira": {**JIRA_RULE["jira"], "issue_types": ["Story", "Bug"]}}
    status, message = result_of(run(tmp_path, rule, jira_env(api)))
    assert status == "fail" and "PAY-101 is a Sub-task, not 'Story' or 'Bug'" in message


def test_jira_not_found_fails_and_says_not_visible(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, JIRA_404, status=404)
    status, message = result_of(run(tmp_path, JIRA_RULE, jira_env(api)))
    assert status == "fail"
    assert "PAY-101 not found or not visible" in message


@pytest.mark.parametrize("code", [401, 403])
def test_jira_rejected_credentials_are_an_error(api: FakeAPI, tmp_path: Path, code: int) -> None:
    api.json(DONE_ISSUE, {"errorMessages": [f"token {JIRA_TOKEN} is not valid"]}, status=code)
    res = run(tmp_path, JIRA_RULE, jira_env(api))
    status, message = result_of(res)
    assert status == "error" and res.decision.decision == "deny"
    assert f"HTTP {code}" in message
    if code == 401:
        assert "Jira rejected the credentials" in message and "JIRA_API_TOKEN" in message


def test_jira_outage_is_an_error_naming_the_cause(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, {"errorMessages": ["boom"]}, status=500)
    status, message = result_of(run(tmp_path, JIRA_RULE, jira_env(api)))
    assert status == "error"
    assert "PAY-101: Jira is unavailable" in message and "HTTP 500" in message


def test_jira_unreachable_is_an_error(tmp_path: Path) -> None:
    with FakeAPI() as gone:
        url = gone.url
    status, message = result_of(run(tmp_path, JIRA_RULE, {"JIRA_BASE_URL": url, "JIRA_TOKEN": JIRA_TOKEN}))
    assert status == "error" and "Jira is unavailable" in message and "connection failed" in message


def test_jira_answer_not_in_the_documented_shape_is_an_error(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, {"key": "PAY-101", "fields": {"status": "Done"}})
    status, message = result_of(run(tmp_path, JIRA_RULE, jira_env(api)))
    assert status == "error" and "no fields.status.name" in message


def test_a_moved_issue_counts_only_in_a_configured_project(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, jira_issue("SANDBOX-3", "Done"))
    status, message = result_of(run(tmp_path, JIRA_RULE, jira_env(api)))
    assert status == "fail" and "PAY-101 is now SANDBOX-3" in message


def test_data_center_uses_a_bearer_token_and_api_v3_is_chosen_by_the_policy(api: FakeAPI, tmp_path: Path) -> None:
    api.json("/rest/api/3/issue/PAY-101", jira_issue("PAY-101", "Done"))
    rule = {**JIRA_RULE, "jira": {**JIRA_RULE["jira"], "api_version": 3}}
    res = run(tmp_path, rule, {"JIRA_BASE_URL": api.url, "JIRA_TOKEN": JIRA_TOKEN})
    assert result_of(res)[0] == "pass"
    assert api.requests[0].headers["Authorization"] == f"Bearer {JIRA_TOKEN}"


def test_one_verified_key_passes_and_the_others_are_reported(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, jira_issue("PAY-101", "Done"))
    api.json("/rest/api/2/issue/OPS-7", JIRA_404, status=404)
    res = run(tmp_path, JIRA_RULE, jira_env(api), change_doc("OPS-7 and PAY-101"))
    status, message = result_of(res)
    assert status == "pass"
    assert message.startswith("PAY-101 is Done (Story) (not verified: OPS-7 not found or not visible")


# -- ServiceNow ---------------------------------------------------------------------------------

SN_PATH = "/api/now/table/change_request"


def test_servicenow_change_approved_inside_its_window_passes(api: FakeAPI, tmp_path: Path) -> None:
    api.json(SN_PATH, sn_change("CHG0030001"))
    res = run(tmp_path, SN_RULE, sn_env(api), change_doc("Deploy refunds (CHG0030001)"))
    status, message = result_of(res)
    assert status == "pass", message
    assert message == "CHG0030001 is approved, state -2, planned 2026-11-24 14:00:00 - 2026-11-24 18:00:00 UTC"
    q = api.requests[0].query
    assert q == {"sysparm_query": ["number=CHG0030001"], "sysparm_fields": ["number,state,approval,start_date,end_date,sys_id"],
                 "sysparm_display_value": ["false"]}


@pytest.mark.parametrize("now", [datetime(2026, 11, 24, 13, 59, 59, tzinfo=timezone.utc),
                                 datetime(2026, 11, 24, 18, 0, 1, tzinfo=timezone.utc)])
def test_servicenow_change_outside_its_window_fails(api: FakeAPI, tmp_path: Path, now: datetime) -> None:
    api.json(SN_PATH, sn_change("CHG0030001"))
    status, message = result_of(run(tmp_path, SN_RULE, sn_env(api), change_doc("CHG0030001"), now=now))
    assert status == "fail" and "now is outside that window" in message


@pytest.mark.parametrize("approval", ["requested", "rejected", "not requested", ""])
def test_servicenow_change_not_approved_fails(api: FakeAPI, tmp_path: Path, approval: str) -> None:
    api.json(SN_PATH, sn_change("CHG0030001", approval=approval))
    status, message = result_of(run(tmp_path, SN_RULE, sn_env(api), change_doc("CHG0030001")))
    assert status == "fail" and "CHG0030001 is not approved" in message


def test_servicenow_state_codes_are_the_policys(api: FakeAPI, tmp_path: Path) -> None:
    api.json(SN_PATH, sn_change("CHG0030001", state="3"))  # 3 is Closed on a default instance
    status, message = result_of(run(tmp_path, SN_RULE, sn_env(api), change_doc("CHG0030001")))
    assert status == "fail" and "state '3', not scheduled (-2) or implement (-1)" in message
    custom = {**SN_RULE, "servicenow": {"states": {"implement": 3}}}
    assert result_of(run(tmp_path, custom, sn_env(api), change_doc("CHG0030001")))[0] == "pass"


def test_servicenow_empty_result_is_not_found(api: FakeAPI, tmp_path: Path) -> None:
    api.json(SN_PATH, {"result": []})
    status, message = result_of(run(tmp_path, SN_RULE, sn_env(api), change_doc("CHG0030001")))
    assert status == "fail" and "CHG0030001: no such change request" in message


def test_servicenow_401_is_an_error(api: FakeAPI, tmp_path: Path) -> None:
    api.json(SN_PATH, {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth "
                                                                                 "information"}, "status": "failure"},
             status=401)
    status, message = result_of(run(tmp_path, SN_RULE, sn_env(api), change_doc("CHG0030001")))
    assert status == "error" and "ServiceNow rejected the credentials (HTTP 401)" in message


def test_servicenow_window_without_dates_fails_and_bad_dates_error(api: FakeAPI, tmp_path: Path) -> None:
    api.json(SN_PATH, sn_change("CHG0030001", start="", end=""))
    assert result_of(run(tmp_path, SN_RULE, sn_env(api), change_doc("CHG0030001")))[0] == "fail"
    api.json(SN_PATH, sn_change("CHG0030001", start="24/11/2026 14:00", end="2026-11-24 18:00:00"))
    assert result_of(run(tmp_path, SN_RULE, sn_env(api), change_doc("CHG0030001")))[0] == "error"


def test_servicenow_row_of_another_number_is_not_this_change(api: FakeAPI, tmp_path: Path) -> None:
    api.json(SN_PATH, sn_change("CHG0030002"))
    assert result_of(run(tmp_path, SN_RULE, sn_env(api), change_doc("CHG0030001")))[0] == "fail"


# -- configuration, trust and secrets -----------------------------------------------------------


def test_no_key_in_the_change_fails(api: FakeAPI, tmp_path: Path) -> None:
    status, message = result_of(run(tmp_path, JIRA_RULE, jira_env(api), change_doc("Fix CVE-2024-3094 in UTF-8")))
    assert status == "fail" and message.startswith("no ticket key found")
    assert api.count() == 0


def test_a_self_declared_ticket_never_passes_by_itself(api: FakeAPI, tmp_path: Path) -> None:
    doc = change_doc("no key here")
    doc["ticket"] = {"id": "PAY-101", "status": "Done", "url": "https://jira/PAY-101"}
    api.json(DONE_ISSUE, jira_issue("PAY-101", "In Progress"))
    assert result_of(run(tmp_path, JIRA_RULE, jira_env(api), doc))[0] == "fail"
    # Without a ticket system to ask, the declared status is still not believed.
    status, message = result_of(run(tmp_path, JIRA_RULE, {}, doc))
    assert status == "error" and "no Jira instance" in message


@pytest.mark.parametrize("env, cause", [
    ({"JIRA_BASE_URL": "https://jira.example.com"}, "no Jira credentials: set JIRA_EMAIL and JIRA_API_TOKEN, or "
                                                    "JIRA_TOKEN"),
    ({"JIRA_TOKEN": JIRA_TOKEN}, "no Jira instance"),
    ({"JIRA_BASE_URL": "http://jira.example.com", "JIRA_TOKEN": JIRA_TOKEN}, "plain http"),
    ({"JIRA_EMAIL": "bot@acme.example", "JIRA_TOKEN": "", "JIRA_BASE_URL": "https://j.example"}, "no Jira credentials"),
])
def test_missing_configuration_is_an_error_never_a_pass(tmp_path: Path, env: dict[str, str], cause: str) -> None:
    status, message = result_of(run(tmp_path, JIRA_RULE, env))
    assert status == "error" and cause in message


def test_a_pinned_instance_refuses_another_server(api: FakeAPI, tmp_path: Path) -> None:
    api.json(DONE_ISSUE, jira_issue("PAY-101", "Done"))  # a fake Jira that says Done
    rule = {**JIRA_RULE, "jira": {**JIRA_RULE["jira"], "url": "https://acme.atlassian.net"}}
    status, message = result_of(run(tmp_path, rule, jira_env(api)))
    assert status == "error" and "is not the Jira instance the policy names" in message
    assert api.count() == 0


def test_tokens_never_reach_any_output_or_the_evidence(api: FakeAPI, tmp_path: Path) -> None:
    import base64

    basic = base64.b64encode(f"bot@acme.example:{JIRA_TOKEN}".encode()).decode()
    echo = {**jira_issue("PAY-101", "Done"), "echo": f"{JIRA_TOKEN} Basic {basic} {basic}"}
    api.json(DONE_ISSUE, echo)
    api.json("/rest/api/2/issue/OPS-7", {"errorMessages": [f"bad token {JIRA_TOKEN} / {basic}"]}, status=401)
    res = run(tmp_path, JIRA_RULE, jira_env(api), change_doc("OPS-7 then PAY-101"))
    outputs = [json.dumps(res.document), res.redact(json.dumps(res.document))]
    outputs += [b.decode("utf-8", "replace") for b in bundle_bytes(res).values()]
    for text in outputs:
        assert JIRA_TOKEN not in text and basic not in text
    members = bundle_bytes(res)
    assert "raw/tickets/jira/PAY-101.json" in members and "raw/tickets/jira/OPS-7.json" in members


# -- evidence and replay ------------------------------------------------------------------------


def test_replay_reads_the_recorded_answers_and_asks_nobody(tmp_path: Path) -> None:
    from policyengine.evidence.stores.folder import LocalArchive

    with FakeAPI() as api:
        api.json(DONE_ISSUE, jira_issue("PAY-101", "Done"))
        api.json("/rest/api/2/issue/OPS-7", JIRA_404, status=404)
        res = run(tmp_path, JIRA_RULE, jira_env(api), change_doc("OPS-7, PAY-101"))
        asked = api.count()
    assert result_of(res)[0] == "pass" and asked == 2
    record = json.loads(bundle_bytes(res)["raw/tickets/jira/PAY-101.json"])
    assert record["http_status"] == 200 and record["body"]["fields"]["status"]["name"] == "Done"
    assert record["request"] == "GET /rest/api/2/issue/PAY-101?fields=status%2Cissuetype"
    # The server is gone: a replay that asked again would error, not match.
    archive = LocalArchive(tmp_path / "ev")
    result = replay(archive, res.evidence["bundle_id"])
    assert result.ok, result.differences
    row = next(r for r in result.rules if r["id"] == "ticket")
    assert row["replayed"] == "pass" and row["replayed_message"] == row["recorded_message"]


def test_replay_without_a_recorded_answer_is_an_error(tmp_path: Path) -> None:
    from policyengine.gather import RecordedTickets
    from policyengine.rules.ticket import request_of

    src = RecordedTickets({})
    answer = src.lookup("jira", "PAY-101", request_of(JIRA_RULE))
    assert answer.outcome == "unavailable" and "replay never asks the ticket system" in str(answer.message)


def test_replay_of_an_error_is_the_same_error(tmp_path: Path) -> None:
    from policyengine.evidence.stores.folder import LocalArchive

    with FakeAPI() as api:
        api.json(DONE_ISSUE, {}, status=500)
        res = run(tmp_path, JIRA_RULE, jira_env(api))
    assert result_of(res)[0] == "error"
    result = replay(LocalArchive(tmp_path / "ev"), res.evidence["bundle_id"])
    assert result.ok and next(r for r in result.rules if r["id"] == "ticket")["replayed"] == "error"


# -- policy test cases --------------------------------------------------------------------------


def _suite(tmp_path: Path, tickets: dict[str, Any] | None, expect: dict[str, Any],
           rule: dict[str, Any] | None = None, title: str = "PAY-101 refunds") -> Path:
    policy = tmp_path / "policy.yml"
    policy.write_text(yaml.safe_dump({"version": 1, "name": "t", "rules": [rule or JIRA_RULE]}), encoding="utf-8")
    case = tmp_path / "suite" / "case"
    case.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"policy": str(policy), "now": "2026-11-24T15:00:00Z", "change": change_doc(title),
                           "expect": expect}
    if tickets is not None:
        doc["tickets"] = tickets
    (case / "case.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return tmp_path / "suite"


@pytest.mark.parametrize("tickets, status", [
    ({"PAY-101": {"status": "Done", "type": "Story"}}, "pass"),
    ({"PAY-101": {"status": "In Progress"}}, "fail"),
    ({"PAY-101": "not_found"}, "fail"),
    ({"PAY-101": {"http_status": 401}}, "error"),
    ({"PAY-101": {"http_status": 200, "body": jira_issue("PAY-101", "Ready for Release")}}, "pass"),
    (None, "error"),  # no answer supplied: never asked, never passing
])
def test_a_policy_test_case_supplies_ticket_answers_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            tickets: Any, status: str) -> None:
    from policyengine.language.policytest import run_suite

    with FakeAPI() as api:
        api.json(DONE_ISSUE, jira_issue("PAY-101", "Done"))
        for name, value in jira_env(api).items():
            monkeypatch.setenv(name, value)
        decision = "allow" if status == "pass" else "deny"
        result = run_suite(_suite(tmp_path, tickets, {"decision": decision, "rules": {"ticket": status}}))
        assert api.count() == 0
    assert result.cases[0].ok, result.cases[0].differences


def test_a_policy_test_case_supplies_servicenow_answers(tmp_path: Path) -> None:
    from policyengine.language.policytest import run_suite

    answer = {"approval": "approved", "state": -1, "start_date": "2026-11-24 14:00:00",
              "end_date": "2026-11-24 16:00:00"}
    suite = _suite(tmp_path, {"CHG0030001": answer}, {"decision": "allow"}, SN_RULE, "CHG0030001")
    assert run_suite(suite).cases[0].ok


def test_a_bad_tickets_entry_is_a_located_error(tmp_path: Path) -> None:
    from policyengine.errors import InvalidInputError
    from policyengine.language.policytest import run_suite

    suite = _suite(tmp_path, {"PAY-101": {"stauts": "Done"}}, {"decision": "allow"})
    with pytest.raises(InvalidInputError) as info:
        run_suite(suite)
    text = str(info.value.problems[0])
    assert text.endswith('case.yml:26:5: tickets.PAY-101: unknown key "stauts"; did you mean "status"?'), text

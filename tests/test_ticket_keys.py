"""Ticket keys: where they are found, what is not one, how the providers fill the places,
how ``policy diff`` ranks edits of a ticket rule, and that the ticket secrets are redacted."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from fake_servers import template
from helpers import HEAD, NOW, change, run_rule

from policyengine.facts import MAX_TICKET_KEYS, TicketAnswer, TicketRequest, TicketsFact
from policyengine.models import Status
from policyengine.language.policydiff import STRONGER, UNDECIDED, WEAKER, diff
from policyengine.rules.ticket import TicketRule, find_keys, request_of

PARAMS: dict[str, Any] = {"jira": {"projects": ["PAY", "OPS"], "statuses": ["Done"]}, "servicenow": {}}
REQ = request_of(PARAMS)


def keys(**over: Any) -> list[str]:
    return [k for _s, k, _w in find_keys(change(**over), REQ)]


def pr(**fields: Any) -> dict[str, Any]:
    return {"number": 42, "author": "alice", "head_commit": HEAD, **fields}


@pytest.mark.parametrize("place, over", [
    ("title", {"pull_request": pr(title="PAY-101: refunds")}),
    ("description", {"pull_request": pr(description="Implements PAY-101.\n\nSee design doc.")}),
    ("branch", {"pull_request": pr(head_ref="feature/pay-101-refunds")}),
    ("commits", {"commits": [{"sha": HEAD, "message": "refunds", "body": "Refs: PAY-101"}]}),
    ("commits", {"commits": [{"sha": HEAD, "message": "[PAY-101] refunds"}]}),
    ("ticket", {"ticket": {"id": "PAY-101", "status": "Done"}}),
])
def test_a_key_is_found_in_each_place(place: str, over: dict[str, Any]) -> None:
    found = find_keys(change(**over), REQ)
    assert found == [("jira", "PAY-101", (place,))]


@pytest.mark.parametrize("text", [
    "Fix CVE-2024-3094", "decode as UTF-8", "SHA-256 digests", "ISO-8601 times", "XPAY-101", "PAY-101a", "PAY-0",
    "PAY-0101", "PAY101", "PAY_101", "PAY-١٠١", "ＰＡＹ-101", "PAY‐101", "PA Y-101", "OPSX-1", "chg003000",
    "CHG00300011", "xCHG0030001",
])
def test_things_that_are_not_tickets(text: str) -> None:
    assert keys(pull_request=pr(title=text, description=text, head_ref=text),
                commits=[{"sha": HEAD, "message": text}]) == []


def test_keys_are_bounded_upper_cased_deduplicated_and_in_order() -> None:
    found = find_keys(change(pull_request=pr(title="OPS-7 (PAY-2024-01)", head_ref="pay-101_fix",
                                             description="CHG0030001; ops-7"),
                             commits=[{"sha": HEAD, "message": "x", "body": "Refs: PAY-101, chg0030001"}]), REQ)
    assert found == [("jira", "OPS-7", ("title", "description")), ("jira", "PAY-2024", ("title",)),
                     ("jira", "PAY-101", ("branch", "commits")),
                     ("servicenow", "CHG0030001", ("description", "commits"))]


def test_sources_narrow_where_keys_are_looked_for() -> None:
    req = request_of({**PARAMS, "sources": ["title"]})
    c = change(pull_request=pr(title="refunds", head_ref="PAY-101"), ticket={"id": "OPS-1"})
    assert find_keys(c, req) == []


def test_a_servicenow_pattern_cannot_inject_a_query() -> None:
    req = request_of({"servicenow": {"pattern": r"CHG[0-9]+\^ORnumber=CHG[0-9]+|CHG[0-9]{7}"}})
    found = find_keys(change(pull_request=pr(title="CHG1^ORnumber=CHG2 and CHG0030001")), req)
    assert [k for _s, k, _w in found] == ["CHG0030001"]


def test_at_most_max_keys_are_asked_and_the_rest_never_pass() -> None:
    title = " ".join(f"PAY-{n}" for n in range(1, MAX_TICKET_KEYS + 3))
    c = change(pull_request=pr(title=title))
    req = request_of({"jira": PARAMS["jira"]})
    last = f"PAY-{MAX_TICKET_KEYS + 2}"
    answers = [TicketAnswer("jira", f"PAY-{n}", "not_found", f"PAY-{n} not found or not visible")
               for n in range(1, MAX_TICKET_KEYS + 1)]
    fact = TicketsFact(answers=tuple(answers + [TicketAnswer("jira", last, "found", status="Done")]))
    out = run_rule(TicketRule, {"jira": PARAMS["jira"]}, c, answers={req: fact})
    assert out.status is Status.FAIL and f"2 more key(s) not asked (at most {MAX_TICKET_KEYS})" in out.message


# -- judged in memory ---------------------------------------------------------------------------


def judge(answer: TicketAnswer | None, params: dict[str, Any] | None = None, title: str = "PAY-101") -> Any:
    p = params or {"jira": PARAMS["jira"]}
    fact = TicketsFact(answers=(answer,) if answer else ())
    return run_rule(TicketRule, p, change(pull_request=pr(title=title)), answers={request_of(p): fact})


def test_not_gathered_is_an_error() -> None:
    p = {"jira": PARAMS["jira"]}
    assert run_rule(TicketRule, p, change(pull_request=pr(title="PAY-101"))).status is Status.ERROR
    assert judge(None).status is Status.ERROR


@pytest.mark.parametrize("outcome, status", [("not_found", Status.FAIL), ("denied", Status.ERROR),
                                             ("unavailable", Status.ERROR), ("invalid", Status.ERROR)])
def test_only_a_found_answer_can_pass(outcome: str, status: Status) -> None:
    # Even with fields that would pass, an answer that is not "found" never verifies.
    a = TicketAnswer("jira", "PAY-101", outcome, "why", status="Done", issue_type="Story")
    assert judge(a).status is status


def test_statuses_and_types_compare_case_insensitively() -> None:
    params = {"jira": {**PARAMS["jira"], "issue_types": ["Story"]}}
    assert judge(TicketAnswer("jira", "PAY-101", "found", status="DONE", issue_type="story"), params).status \
        is Status.PASS
    assert judge(TicketAnswer("jira", "PAY-101", "found", status="Done", issue_type=None), params).status \
        is Status.FAIL


def test_servicenow_window_bounds_are_utc_and_inclusive() -> None:
    params: dict[str, Any] = {"servicenow": {}}
    a = TicketAnswer("servicenow", "CHG0030001", "found", approval="approved", state="-1",
                     start="2026-11-24 15:00:00", end="2026-11-24 15:00:00")
    assert NOW.isoformat() == "2026-11-24T15:00:00+00:00"
    assert judge(a, params, "CHG0030001").status is Status.PASS


# -- providers fill the places -----------------------------------------------------------------


def test_github_maps_body_head_ref_and_commit_bodies() -> None:
    from policyengine.providers.github import map_commit, map_pull

    pull = template("github", "pull")
    mapped = map_pull(pull)
    assert mapped["description"] == pull["body"] and mapped["head_ref"] == pull["head"]["ref"] == "new-topic"
    item = template("github", "commit")
    item["commit"]["message"] = "Add refunds\n\nRefs: PAY-101"
    assert map_commit(item, None)["body"] == "Refs: PAY-101"
    item["commit"]["message"] = "Add refunds"
    assert "body" not in map_commit(item, None)


def test_gitlab_maps_description_source_branch_and_commit_bodies() -> None:
    from policyengine.providers.gitlab import map_commit, map_merge_request

    mr = template("gitlab", "merge_request")
    mapped = map_merge_request(mr)
    assert mapped["description"] == mr["description"] and mapped["head_ref"] == mr["source_branch"]
    c = template("gitlab", "commit")
    c["message"] = "Add refunds\n\nCloses OPS-7"
    assert map_commit(c, None)["body"] == "Closes OPS-7"


def test_the_change_schema_accepts_the_new_fields() -> None:
    from policyengine.language.loader import Positions, load_schema, validate

    doc = change(pull_request=pr(title="t", description="d", head_ref="feature/x"),
                 commits=[{"sha": HEAD, "message": "m", "body": "Refs: PAY-1"}])
    assert validate(doc, Positions({}), load_schema("change.schema.json"), file="change.yml") == []


# -- policy diff --------------------------------------------------------------------------------

BASE: dict[str, Any] = {"version": 1, "name": "p", "rules": [{
    "id": "t", "type": "ticket",
    "jira": {"projects": ["PAY", "OPS"], "statuses": ["Done"], "issue_types": ["Story"],
             "url": "https://acme.atlassian.net"},
    "servicenow": {"pattern": "CHG[0-9]{7}", "url": "https://acme.service-now.com"}}]}


def edited(fn: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    fn(doc["rules"][0])
    return doc


@pytest.mark.parametrize("edit, path, direction", [
    (lambda r: r["jira"]["statuses"].append("In Review"), "jira.statuses", WEAKER),
    (lambda r: r["jira"]["projects"].append("SANDBOX"), "jira.projects", WEAKER),
    (lambda r: r["jira"]["projects"].remove("OPS"), "jira.projects", STRONGER),
    (lambda r: r["jira"].pop("issue_types"), "jira.issue_types", WEAKER),
    (lambda r: r["jira"]["issue_types"].append("Task"), "jira.issue_types", WEAKER),
    (lambda r: r["jira"].pop("url"), "jira.url", WEAKER),
    (lambda r: r["jira"].update(url="https://other.atlassian.net"), "jira.url", UNDECIDED),
    (lambda r: r.pop("servicenow"), "servicenow", STRONGER),
    (lambda r: r["servicenow"].update(pattern="[A-Z]+[0-9]+"), "servicenow.pattern", UNDECIDED),
    (lambda r: r["servicenow"].update(states={"implement": 3}), "servicenow.states", UNDECIDED),
    (lambda r: r.update(sources=["title", "branch"]), "sources", STRONGER),
])
def test_policy_diff_knows_each_ticket_key(edit: Any, path: str, direction: str) -> None:
    findings = diff(BASE, edited(edit))
    assert [(f.path, f.direction) for f in findings] == [(f"rules[t].{path}", direction)]


def test_adding_a_ticket_system_is_weaker_and_every_nested_key_has_a_direction() -> None:
    from policyengine.language.loader import load_schema
    from policyengine.language.policydiff import _TICKET_KEYS

    without = edited(lambda r: r.pop("jira"))
    assert [(f.path, f.direction) for f in diff(without, BASE)] == [("rules[t].jira", WEAKER)]
    schema = load_schema("policy.schema.json")["$defs"]["ticket"]["properties"]
    for system, compares in _TICKET_KEYS.items():
        assert set(schema[system]["properties"]) == set(compares), system


# -- secrets ------------------------------------------------------------------------------------


def test_ticket_secrets_are_redacted_everywhere() -> None:
    from policyengine.redact import EvidenceRedactor, Redactor

    env = {"JIRA_EMAIL": "bot@acme.example", "JIRA_API_TOKEN": "atl-token-123456789",
           "JIRA_TOKEN": "dc-pat-123456789", "SERVICENOW_USER": "bot", "SERVICENOW_PASSWORD": "sn-pass-123456789",
           "SERVICENOW_TOKEN": "sn-oauth-123456789"}
    basic = base64.b64encode(b"bot@acme.example:atl-token-123456789").decode()
    sn_basic = base64.b64encode(b"bot:sn-pass-123456789").decode()
    text = " ".join([*env.values(), basic, sn_basic])
    for out in (Redactor.from_env(env).text(text), EvidenceRedactor.from_env(env).text(text)):
        for secret in [v for k, v in env.items() if not k.endswith(("EMAIL", "USER"))] + [basic, sn_basic]:
            assert secret not in out


def test_request_is_hashable_and_stable() -> None:
    assert request_of(PARAMS) == request_of(copy.deepcopy(PARAMS))
    assert isinstance(hash(REQ), int) and isinstance(REQ, TicketRequest)

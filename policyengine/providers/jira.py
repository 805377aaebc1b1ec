"""Jira (Cloud or Data Center): does an issue exist, and what are its status and type?

One request per key, the documented REST call
``GET /rest/api/{2|3}/issue/{key}?fields=status,issuetype`` (v2 on both Cloud and Data Center;
Cloud also answers v3, chosen with the policy's ``jira.api_version``). The answer's
``fields.status.name`` and ``fields.issuetype.name`` are what the rule judges; ``key`` is the
key Jira answered with (an issue moved to another project answers with its new key).

Jira answers 404 both for an issue that does not exist and for one the credentials may not
see, so a 404 is reported as "not found or not visible". 401 (credentials rejected) and 403
are ``denied``; an outage (5xx after the retries, a timeout, no connection) is
``unavailable``: both make the rule error, never pass. Instance and credentials:
``providers.ticketing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policyengine.facts import TicketAnswer
from policyengine.providers.http import HttpSession
from policyengine.providers.ticketing import JIRA, error_kind, get_record, text

FIELDS = "status,issuetype"


def issue_path(key: str, api_version: int = 2) -> str:
    """The REST path of one issue."""
    return f"/rest/api/{api_version}/issue/{key}"


def fetch(session: HttpSession, key: str, api_version: int = 2, *, changelog: bool = False) -> dict[str, Any]:
    """Ask Jira for ``key`` (with its changelog when ``changelog``); return the record (``providers.ticketing``)."""
    params = {"fields": FIELDS, **({"expand": "changelog"} if changelog else {})}
    return get_record(session, JIRA.name, key, issue_path(key, api_version), params)


def approval(body: Mapping[str, Any], status: str) -> tuple[str, str] | None:
    """``(who, when)`` of the last changelog transition to ``status`` (case-insensitive), or None.

    Who: the author's ``accountId`` (Cloud) or ``name`` (Data Center), with the display name;
    when: the history's ``created``, as Jira wrote it."""
    changelog = body.get("changelog")
    histories = changelog.get("histories") if isinstance(changelog, Mapping) else None
    found: tuple[str, str] | None = None
    for history in histories if isinstance(histories, list) else ():
        if not isinstance(history, Mapping) or not isinstance(history.get("items"), list):
            continue
        if not any(isinstance(i, Mapping) and i.get("field") == "status"
                   and str(i.get("toString") or "").casefold() == status.casefold() for i in history["items"]):
            continue
        author = history.get("author") if isinstance(history.get("author"), Mapping) else {}
        login = text(author.get("accountId")) or text(author.get("name")) or text(author.get("key"))
        shown = text(author.get("displayName"))
        when = text(history.get("created"))
        if login and when:
            who = f"{shown} ({login})" if shown and shown != login else login
            if found is None or when >= found[1]:
                found = (who, when)
    return found


def answer(key: str, record: Mapping[str, Any], origin: str = "live",
           approval_status: str | None = None) -> TicketAnswer:
    """What the judge reads, from a record (live, recorded in a bundle, or supplied by a test case)."""
    status = record.get("http_status")
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    cause = str(record.get("error") or "")
    if status != 200 or record.get("error"):
        kind = error_kind(status) if status is not None else "unavailable"
        if kind == "not_found":
            message = (f"{key} not found or not visible: Jira answers 404 for an issue that does not exist and for "
                       "one the credentials may not see")
        elif kind == "denied" and status == 401:
            message = (f"{key}: Jira rejected the credentials (HTTP 401): check {JIRA.user_variable} and "
                       f"{JIRA.secret_variable}, or {JIRA.token_variable}")
        elif kind == "denied":
            message = f"{key}: the Jira credentials may not read this issue (HTTP {status})"
        else:
            message = f"{key}: Jira is unavailable: {cause or 'no answer'}"
        return TicketAnswer(JIRA.name, key, kind, message, http_status=status, origin=origin)
    body = record.get("body")
    fields = body.get("fields") if isinstance(body, dict) else None
    status_obj = fields.get("status") if isinstance(fields, dict) else None
    name = text(status_obj.get("name")) if isinstance(status_obj, dict) else None
    if not name:
        return TicketAnswer(JIRA.name, key, "invalid", f"{key}: Jira's answer has no fields.status.name",
                            http_status=status, origin=origin)
    type_obj = fields.get("issuetype") if isinstance(fields, dict) else None
    issue_type = text(type_obj.get("name")) if isinstance(type_obj, dict) else None
    answered = text(body.get("key")) if isinstance(body, dict) else None
    approved = approval(body, approval_status) if approval_status and isinstance(body, dict) else None
    return TicketAnswer(JIRA.name, key, "found", None, http_status=status, status=name, issue_type=issue_type,
                        resolved_key=answered.upper() if answered else None, origin=origin,
                        approved_by=approved[0] if approved else None, approved_at=approved[1] if approved else None)


def supplied_record(key: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The record a policy test case's short form (``{status: Done, type: Story}``) stands for."""
    body: dict[str, Any] = {"key": key, "fields": {}}
    if fields.get("status") is not None:
        body["fields"]["status"] = {"name": fields["status"]}
    issue_type = fields.get("type", fields.get("issue_type"))
    if issue_type is not None:
        body["fields"]["issuetype"] = {"name": issue_type}
    if fields.get("approved_by") is not None:  # a test case's approver: one changelog transition
        body["changelog"] = {"histories": [{
            "author": {"name": fields["approved_by"]}, "created": fields.get("approved_at") or "",
            "items": [{"field": "status", "toString": fields.get("approval_status") or fields.get("status")}]}]}
    return {"system": JIRA.name, "key": key, "request": None, "http_status": 200, "body": body, "error": None}

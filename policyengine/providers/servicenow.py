"""ServiceNow: is a change request approved, in a state that may be implemented, and in its window?

One request per number, through the Table API::

    GET /api/now/table/change_request?sysparm_query=number={key}
        &sysparm_fields=number,state,approval,start_date,end_date&sysparm_display_value=false

which answers ``{"result": [...]}``. With ``sysparm_display_value=false`` every field is its raw
value: ``state`` is the state's code (instance-specific: the rule maps codes to names, defaults
``-2`` scheduled and ``-1`` implement, as the policy's ``servicenow.states`` says), ``approval``
is ``approved``/``requested``/``rejected``/``not requested``, and ``start_date``/``end_date`` are
``YYYY-MM-DD HH:MM:SS`` in UTC (ServiceNow stores and returns raw date-times in UTC).

An empty ``result`` means the number does not exist (or is not visible to the credentials);
a 404 is read the same way. 401/403 are ``denied`` and an outage ``unavailable``: the rule errors.
Only a row whose ``number`` is exactly the key counts; two such rows are an invalid answer.
Instance and credentials: ``providers.ticketing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policyengine.facts import TicketAnswer
from policyengine.providers.http import HttpSession
from policyengine.providers.ticketing import SERVICENOW, error_kind, get_record, text

TABLE_PATH = "/api/now/table/change_request"
FIELDS = "number,state,approval,start_date,end_date,sys_id"
APPROVALS_PATH = "/api/now/table/sysapproval_approver"
APPROVAL_FIELDS = "approver,state,sys_updated_on"


def params(key: str) -> dict[str, str]:
    """The Table API query for one change number (the key is letters, digits, '_' and '-' only)."""
    return {"sysparm_query": f"number={key}", "sysparm_fields": FIELDS, "sysparm_display_value": "false"}


def fetch(session: HttpSession, key: str) -> dict[str, Any]:
    """Ask ServiceNow for change ``key``; return the record (``providers.ticketing``).

    When the change request is found (one row with its ``sys_id``), its approval records are
    asked too (``sysapproval_approver`` where ``sysapproval`` is the change) and kept in the
    record as ``approvals``: who approved or rejected it, and when."""
    record = get_record(session, SERVICENOW.name, key, TABLE_PATH, params(key))
    body = record.get("body")
    rows = body.get("result") if isinstance(body, dict) else None
    mine = [r for r in rows if isinstance(r, dict) and (text(r.get("number")) or "").upper() == key.upper()] \
        if isinstance(rows, list) else []
    sys_id = text(mine[0].get("sys_id")) if len(mine) == 1 else None
    if sys_id and all(c.isalnum() for c in sys_id):
        record["approvals"] = get_record(session, SERVICENOW.name, key, APPROVALS_PATH, {
            "sysparm_query": f"sysapproval={sys_id}", "sysparm_fields": APPROVAL_FIELDS,
            "sysparm_display_value": "all"})
    return record


def _field(row: Mapping[str, Any], name: str, part: str) -> str | None:
    """A field of a ``sysparm_display_value=all`` row: ``{"display_value", "value"}`` (or a plain value)."""
    value = row.get(name)
    if isinstance(value, Mapping):
        return text(value.get(part)) or text(value.get("value"))
    return text(value)


def approvals_text(record: Mapping[str, Any]) -> str | None:
    """The change's approval records as one line (``who state at time; ...``), why they are
    missing, or None when they were not asked for (a record made before they were kept)."""
    sub = record.get("approvals")
    if not isinstance(sub, Mapping):
        return None
    if sub.get("http_status") != 200 or sub.get("error"):
        return f"approval records unavailable: {sub.get('error') or 'no answer'}"
    body = sub.get("body")
    rows = body.get("result") if isinstance(body, Mapping) else None
    if not isinstance(rows, list):
        return "approval records unavailable: the answer has no result list"
    out = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        who = _field(row, "approver", "display_value") or "(unknown)"
        login = _field(row, "approver", "value")
        state = _field(row, "state", "value") or "(no state)"
        when = _field(row, "sys_updated_on", "value") or "(no time)"
        out.append(f"{who}{f' ({login})' if login and login != who else ''} {state} at {when} UTC")
    return "; ".join(sorted(out)) if out else "no approval records"


def answer(key: str, record: Mapping[str, Any], origin: str = "live") -> TicketAnswer:
    """What the judge reads, from a record (live, recorded in a bundle, or supplied by a test case)."""
    status = record.get("http_status")
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    cause = str(record.get("error") or "")
    not_found = TicketAnswer(SERVICENOW.name, key, "not_found", f"{key}: no such change request in ServiceNow "
                             "(or not visible to the credentials)", http_status=status, origin=origin)
    if status != 200 or record.get("error"):
        kind = error_kind(status) if status is not None else "unavailable"
        if kind == "not_found":
            return not_found
        if kind == "denied" and status == 401:
            message = (f"{key}: ServiceNow rejected the credentials (HTTP 401): check {SERVICENOW.user_variable} "
                       f"and {SERVICENOW.secret_variable}, or {SERVICENOW.token_variable}")
        elif kind == "denied":
            message = f"{key}: the ServiceNow credentials may not read change_request (HTTP {status})"
        else:
            message = f"{key}: ServiceNow is unavailable: {cause or 'no answer'}"
        return TicketAnswer(SERVICENOW.name, key, kind, message, http_status=status, origin=origin)
    body = record.get("body")
    rows = body.get("result") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        return TicketAnswer(SERVICENOW.name, key, "invalid", f"{key}: ServiceNow's answer has no result list",
                            http_status=status, origin=origin)
    mine = [r for r in rows if isinstance(r, dict) and (text(r.get("number")) or "").upper() == key.upper()]
    if not mine:
        return not_found
    if len(mine) > 1:
        return TicketAnswer(SERVICENOW.name, key, "invalid", f"{key}: ServiceNow answered {len(mine)} change "
                            "requests with this number", http_status=status, origin=origin)
    row = mine[0]
    return TicketAnswer(SERVICENOW.name, key, "found", None, http_status=status, state=text(row.get("state")),
                        approval=text(row.get("approval")), start=text(row.get("start_date")),
                        end=text(row.get("end_date")), origin=origin, approvals=approvals_text(record))


def supplied_record(key: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The record a policy test case's short form (``{approval: approved, state: -2, ...}``) stands for."""
    row: dict[str, Any] = {"number": key}
    for name in ("state", "approval", "start_date", "end_date"):
        if fields.get(name) is not None:
            row[name] = str(fields[name])
    return {"system": SERVICENOW.name, "key": key, "request": None, "http_status": 200, "body": {"result": [row]},
            "error": None}

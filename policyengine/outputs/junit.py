"""JUnit XML for CI test widgets: one testsuite per policy, one testcase per rule.

Built with junit-xml's elements; serialized here because its report writer adds a
``disabled`` attribute that the Jenkins JUnit XSD (the schema CI tools follow) rejects.
A ``warn`` rule becomes a skipped testcase of type ``warning`` (it did not pass, and does
not block); its message starts with ``warning (not enforced):``. A ``waived`` rule becomes a
skipped testcase of type ``waived`` whose message starts with ``waived until`` and names the
waiver's reason, approver and expiry.

The suite carries properties ``decision``, ``simulated`` and ``clock_source`` (and, for an
allowed emergency, ``emergency``, ``emergency_declarer``, ``emergency_incident``,
``emergency_waived`` and ``emergency_due_at``; ``[EMERGENCY]`` then ends the suite name, and
the message of every rule it waived starts with ``EMERGENCY: waived``). A
``not_applicable`` decision has every testcase skipped with the reason (the policy does not
cover the environment). A simulated evaluation has ``[SIMULATED]`` in the suite name and at
the start of every testcase message.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from policyengine.models import Decision, Status

# Characters XML 1.0 forbids (control characters other than tab, newline, return; surrogates; U+FFFE/F).
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str | None) -> str:
    """Drop characters XML cannot carry, so the report always parses."""
    return _ILLEGAL.sub("\ufffd", text or "")


def render(decision: Decision) -> str:
    """Return the JUnit XML document for a decision."""
    from junit_xml import TestCase, TestSuite

    suite_name = xml_safe(decision.policy["name"]) + (" [SIMULATED]" if decision.simulated else "") + (
        " [EMERGENCY]" if decision.is_emergency else "")
    mark = "[SIMULATED] " if decision.simulated else ""
    cases = []
    for r in decision.rules:
        out = [f"status: {r.status.value}", f"enforcement: {r.enforcement.value}"]
        if r.controls:
            out.append("controls: " + ", ".join(r.controls))
        if r.description:
            out.append(f"description: {r.description}")
        out.append(f"message: {r.message}")
        waiver = r.details.get("waiver") if r.status is Status.WAIVED else None
        if isinstance(waiver, dict):
            out.append(f"waiver: {waiver.get('reason')}; approved by {waiver.get('approved_by')} on "
                       f"{waiver.get('approved_at')}; expires {waiver.get('expires')}; was {waiver.get('original_status')}")
        case = TestCase(name=xml_safe(r.id), classname=suite_name, stdout=xml_safe("\n".join(out)))
        msg = xml_safe(mark + r.message)
        if r.status is Status.FAIL:
            case.add_failure_info(message=msg, failure_type="policy-violation")
        elif r.status is Status.ERROR:
            case.add_error_info(message=msg, error_type="facts-unavailable")
        elif r.status is Status.SKIPPED:
            case.add_skipped_info(message=msg)
        elif r.status is Status.WARN:
            case.add_skipped_info(message=xml_safe(f"{mark}warning (not enforced): {r.message}"))
        elif r.status is Status.WAIVED:
            case.add_skipped_info(message=xml_safe(f"{mark}{r.message}"))
        cases.append(case)
    properties = {"decision": decision.decision, "simulated": str(decision.simulated).lower(),
                  "clock_source": (decision.clock or {}).get("source", "system")}
    if decision.is_emergency and decision.emergency is not None:
        e = decision.emergency
        properties.update({"emergency": "true", "emergency_declarer": xml_safe(str(e.get("declarer"))),
                           "emergency_incident": xml_safe(str(e.get("incident") or "")),
                           "emergency_waived": xml_safe(", ".join(e.get("waived") or [])),
                           "emergency_due_at": str(e.get("due_at"))})
    suite = TestSuite(suite_name, cases, timestamp=decision.evaluated_at, properties=properties)
    element = suite.build_xml_doc()
    element.attrib.pop("disabled", None)
    warned = {xml_safe(r.id) for r in decision.rules if r.status is Status.WARN}
    waived = {xml_safe(r.id) for r in decision.rules if r.status is Status.WAIVED}
    for tc in element.iter("testcase"):
        if tc.get("name") in warned or tc.get("name") in waived:
            for sk in tc.iter("skipped"):
                sk.set("type", "warning" if tc.get("name") in warned else "waived")
    root = ET.Element("testsuites", {
        "name": suite_name,
        "tests": element.get("tests", "0"),
        "failures": element.get("failures", "0"),
        "errors": element.get("errors", "0"),
    })
    root.append(element)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

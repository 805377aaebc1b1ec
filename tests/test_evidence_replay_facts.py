"""Replay agrees with the verdict: redaction never changes a judged fact (issue 15).

The bundle stores the workspace files redacted (no token reaches the evidence), and it keeps
the facts as judged (``facts.json``: report totals and failing names, the plan's sections and
length) beside them. Replay judges from those recorded facts, so a redaction that rewrites a
report (``Authorization:x`` -> ``Authorization:[REDACTED]``), merges two test names that differ
only by a token, or shortens a plan, can never make replay disagree with the recorded decision.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import s3_server

from policyengine.evidence.stores.folder import LocalArchive
from policyengine.gate import CheckRequest, check, replay

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
ACCEPTANCE = FIXTURES / "acceptance"
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
TOKEN_A = "ghp_" + "A1" * 18
TOKEN_B = "ghp_" + "B2" * 18
assert TOKEN_A != TOKEN_B


def _workspace(tmp: Path, report: bytes | None = None, plan: str | None = None,
               source: Path = ACCEPTANCE / "workspace") -> Path:
    ws = tmp / "ws"
    shutil.copytree(source, ws)
    if report is not None:
        (ws / "reports" / "unit.xml").write_bytes(report)
    if plan is not None:
        (ws / "ROLLBACK.md").write_text(plan, encoding="utf-8")
    return ws


def _policy(tmp: Path, **rollback: Any) -> Path:
    import yaml

    doc = yaml.safe_load((ACCEPTANCE / "policy.yml").read_text())
    for rule in doc["rules"]:
        if rule["type"] == "rollback_plan":
            rule.update(rollback)
    path = tmp / "policy.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _check_and_replay(tmp: Path, ws: Path, policy: Path | None = None, change: Path | None = None,
                      env: Mapping[str, str] | None = None) -> tuple[Any, Any, LocalArchive]:
    archive = LocalArchive(tmp / "evidence")
    result = check(CheckRequest(policy_path=str(policy or ACCEPTANCE / "policy.yml"), now=NOW, env=dict(env or {}),
                                change_path=str(change or ACCEPTANCE / "change.yml"), workspace=str(ws),
                                evidence_dir=str(archive.root), wall_time=NOW, clock_override=True))
    bundle_id = result.evidence["bundle_id"]
    return result, replay(archive, bundle_id), archive


def _statuses(result: Any) -> dict[str, str]:
    return {r.id: r.status.value for r in result.decision.rules}


def _assert_same(result: Any, replayed: Any) -> None:
    assert replayed.differences == [], replayed.differences
    assert replayed.recorded == result.decision.decision == replayed.replayed
    assert {r["id"]: r["replayed"] for r in replayed.rules} == _statuses(result)


def _report(*cases: str, system_out: str = "") -> bytes:
    out = f"<system-out>{system_out}</system-out>" if system_out else ""
    body = "\n".join(cases)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n<testsuite name="pytest">\n{body}\n'
            f"</testsuite>\n{out}\n</testsuites>\n").encode()


PASSING = ('<testcase classname="t" name="test_one"/>', '<testcase classname="t" name="test_two"/>')


def test_a_report_with_header_text_in_system_out_replays_as_recorded(tmp_path: Path) -> None:
    """The issue's case: ``Authorization:x`` right before ``</system-out>``. The stored copy is
    redacted, and replay still says ``tests: pass``, from the recorded facts."""
    ws = _workspace(tmp_path, _report(*PASSING, system_out="Authorization:x"))
    result, replayed, archive = _check_and_replay(tmp_path, ws)
    assert _statuses(result)["tests"] == "pass"
    _assert_same(result, replayed)
    with zipfile.ZipFile(archive.root / archive.list()[-1].path) as zf:
        stored = zf.read("files/reports/unit.xml")
    assert b"Authorization:x" not in stored and b"Authorization:[REDACTED]</system-out>" in stored


@pytest.mark.parametrize("text", [
    "Authorization:x",
    "Authorization: Bearer abcdefghijklmnop",
    "authorization=token x",
    "X-Api-Key: abc123",
    "x-api-key:abc",
    "PRIVATE-TOKEN:abcdefgh",
    "JOB-TOKEN=xyz",
    f"token {TOKEN_A}",
    '{"Authorization":"x"}',
    "<![CDATA[Authorization:x]]>",
    "Authorization:x&amp;more",
    "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
])
@pytest.mark.parametrize("where", ["system-out", "attribute", "failure"])
def test_token_and_header_shaped_text_anywhere_in_a_report_replays_as_recorded(
        tmp_path: Path, text: str, where: str) -> None:
    """Token-looking and header-shaped text in a report's output, attributes or failure body:
    the verdict at check time and on replay are the same, and the text is not in the bundle."""
    from xml.sax.saxutils import escape, quoteattr

    if where == "system-out":
        report = _report(*PASSING, system_out=text if "CDATA" in text else escape(text))
    elif where == "attribute":
        report = _report(PASSING[0], f'<testcase classname="t" name="test_two" file={quoteattr(text)}/>')
    else:
        body = text if "CDATA" in text else escape(text)
        report = _report(PASSING[0], f'<testcase classname="t" name="test_two"><failure>{body}</failure></testcase>')
    ws = _workspace(tmp_path, report)
    result, replayed, archive = _check_and_replay(tmp_path, ws)
    assert _statuses(result)["tests"] == ("fail" if where == "failure" else "pass")
    _assert_same(result, replayed)


def test_two_test_names_that_differ_only_by_a_token_are_not_merged_on_replay(tmp_path: Path) -> None:
    """Redacted, ``test_login[ghp_A...]`` (failed) and ``test_login[ghp_B...]`` (passed) read
    as a retry that passed. The pairing was judged on the real names at check time (two
    tests, one failed: deny) and replay keeps it; no token reaches the facts member."""
    report = _report(f'<testcase classname="t" name="test_login[{TOKEN_A}]"><failure>boom</failure></testcase>',
                     f'<testcase classname="t" name="test_login[{TOKEN_B}]"/>')
    ws = _workspace(tmp_path, report)
    result, replayed, archive = _check_and_replay(tmp_path, ws)
    assert _statuses(result)["tests"] == "fail" and result.decision.decision == "deny"
    _assert_same(result, replayed)
    with zipfile.ZipFile(archive.root / archive.list()[-1].path) as zf:
        facts = zf.read("facts.json")
        everything = b"".join(zf.read(n) for n in zf.namelist())
    assert TOKEN_A.encode() not in everything and TOKEN_B.encode() not in everything
    doc = json.loads(facts)
    [reports] = [f for f in doc["facts"] if f["kind"] == "reports" and f["globs"] == ["reports/*.xml"]]
    [unit] = [r for r in reports["reports"] if r["path"] == "reports/unit.xml"]
    assert unit["summary"]["totals"]["failures"] == 1 and unit["summary"]["totals"]["tests"] == 2
    assert unit["summary"]["failed_tests"] == ["t.test_login[[REDACTED]]"]


def test_a_retry_whose_names_differ_only_by_a_token_stays_a_retry(tmp_path: Path) -> None:
    """The other way round: one test retried (same name) passes at check time and on replay."""
    report = _report(f'<testcase classname="t" name="test_login[{TOKEN_A}]"><failure>flake</failure></testcase>',
                     f'<testcase classname="t" name="test_login[{TOKEN_A}]"/>')
    result, replayed, _ = _check_and_replay(tmp_path, _workspace(tmp_path, report))
    assert _statuses(result)["tests"] == "pass"
    _assert_same(result, replayed)


def test_a_plan_long_enough_only_with_its_token_replays_as_recorded(tmp_path: Path) -> None:
    """``min_length`` counts the plan as read; the stored copy is shorter once redacted."""
    plan = ("# Plan\n\n## Rollback steps\n\nRun the rollback job with " + TOKEN_A + "\n\n"
            "## Verification\n\nHealth is green.\n")
    policy = _policy(tmp_path, min_length=len(plan.strip()))
    result, replayed, _ = _check_and_replay(tmp_path, _workspace(tmp_path, plan=plan), policy)
    assert _statuses(result)["rollback-plan"] == "pass"
    _assert_same(result, replayed)


def test_a_key_spanning_headings_in_a_plan_replays_as_recorded(tmp_path: Path) -> None:
    """A PEM block is redacted whole: in the stored copy it swallows the headings in between."""
    plan = ("# Plan\n\n-----BEGIN PRIVATE KEY-----\n\n## Rollback steps\n\nRedeploy.\n\n"
            "## Verification\n\nHealth is green.\n\n-----END PRIVATE KEY-----\n")
    result, replayed, _ = _check_and_replay(tmp_path, _workspace(tmp_path, plan=plan))
    assert _statuses(result)["rollback-plan"] == "pass"
    _assert_same(result, replayed)


def test_a_comment_closed_right_after_a_header_value_replays_as_recorded(tmp_path: Path) -> None:
    """``<!--Authorization:x-->`` is a closed comment; a redactor that ate its ``-->`` would
    leave it open in the stored copy, hiding every heading after it on replay."""
    plan = ("# Plan\n\n## Rollback steps\n\n<!--Authorization:x-->\n\nRedeploy.\n\n"
            "## Verification\n\nHealth is green.\n")
    result, replayed, _ = _check_and_replay(tmp_path, _workspace(tmp_path, plan=plan))
    assert _statuses(result)["rollback-plan"] == "pass"
    _assert_same(result, replayed)


def _junit_fixtures() -> list[Path]:
    return sorted(p for p in (FIXTURES / "junit").iterdir() if p.suffix in (".xml", ".trx"))


TOKEN_TEXTS = (TOKEN_A, "Authorization: Bearer abcdefghijkl", "X-Api-Key: k3y", "Authorization:x")
"""Header-shaped text last: right before the ``<`` that closes its element."""


def _with_tokens(data: bytes) -> bytes:
    """The report with token-looking and header-shaped text in a comment and before its root's end."""
    text = " ".join(TOKEN_TEXTS)
    for end in (b"</testsuites>", b"</testsuite>"):
        at = data.rfind(end)
        if at >= 0:
            return data[:at] + f"<system-out>{text}</system-out><!--{text}--><properties/>".encode() + data[at:]
    return data + f"\n<!-- {text} -->\n".encode()


@pytest.mark.parametrize("fixture", _junit_fixtures(), ids=lambda p: p.name)
@pytest.mark.parametrize("tokens", [False, True], ids=["as-is", "with-tokens"])
def test_every_fixture_bundle_replays_to_its_recorded_decision(tmp_path: Path, fixture: Path, tokens: bool) -> None:
    """Every JUnit fixture of the suite, as it is and with token and header text added, judged
    as the acceptance policy's unit report: replay gives the recorded decision and statuses."""
    data = fixture.read_bytes()
    ws = _workspace(tmp_path, _with_tokens(data) if tokens else data)
    result, replayed, _ = _check_and_replay(tmp_path, ws)
    _assert_same(result, replayed)


@pytest.mark.parametrize("change", ["allowed", "denied"])
@pytest.mark.parametrize("policy", ["soc2-production", "soc2-small-team"])
def test_the_example_bundles_replay_to_their_recorded_decision(tmp_path: Path, policy: str, change: str) -> None:
    ws = _workspace(tmp_path, source=ROOT / "examples" / "workspace")
    for report in ws.rglob("*.xml"):
        report.write_bytes(_with_tokens(report.read_bytes()))
    result, replayed, _ = _check_and_replay(tmp_path, ws, ROOT / "policies" / f"{policy}.yml",
                                            ROOT / "examples" / f"change-{change}.yml")
    _assert_same(result, replayed)


def test_a_literal_secret_from_the_environment_in_a_report_replays_as_recorded(tmp_path: Path) -> None:
    """The value of GITHUB_TOKEN is redacted whatever its shape; the verdict stands."""
    secret = "s3cr3t-value-of-any-shape"
    report = _report(f'<testcase classname="t" name="test_{secret}_a"><failure>x</failure></testcase>',
                     f'<testcase classname="t" name="test_{secret}_b"/>',
                     '<testcase classname="t" name="test_a"/>', system_out=secret)
    result, replayed, archive = _check_and_replay(tmp_path, _workspace(tmp_path, report),
                                                  env={"GITHUB_TOKEN": secret})
    _assert_same(result, replayed)
    with zipfile.ZipFile(archive.root / archive.list()[-1].path) as zf:
        assert all(secret.encode() not in zf.read(n) for n in zf.namelist())


def _bundle_with_facts(tmp: Path, facts: bytes | None) -> tuple[LocalArchive, str]:
    """A bundle of the acceptance check (recorded allow), its files as they are, with ``facts``
    as its ``facts.json`` (None: none, as bundles written before it existed)."""
    from policyengine.language.policy import load_change
    from policyengine.workspace.files import Workspace

    archive = LocalArchive(tmp / "forged")
    ws = Workspace(ACCEPTANCE / "workspace")
    files = [ws.describe(p) for p in ("ROLLBACK.md", "reports/unit.xml", "reports/integration/api.xml")]
    result, _, _ = _check_and_replay(tmp, ACCEPTANCE / "workspace")
    ref = archive.write_bundle(
        decision=result.document, change=load_change(ACCEPTANCE / "change.yml"), policy_filename="policy.yml",
        policy_bytes=(ACCEPTANCE / "policy.yml").read_bytes(), files=files,
        extra_members={} if facts is None else {"facts.json": facts})
    return archive, ref.id


def _recorded_facts(tmp: Path) -> dict[str, Any]:
    _, _, archive = _check_and_replay(tmp / "real", ACCEPTANCE / "workspace")
    with zipfile.ZipFile(archive.root / archive.list()[-1].path) as zf:
        return json.loads(zf.read("facts.json"))  # type: ignore[no-any-return]


def test_recorded_facts_contradicted_by_their_own_unredacted_file_are_a_difference(tmp_path: Path) -> None:
    """A ``facts.json`` that says a report failed when the report, stored unredacted, passed:
    replay judges the recorded facts (deny, unlike the recorded allow) and names the mismatch."""
    doc = _recorded_facts(tmp_path)
    for entry in doc["facts"]:
        for rep in entry.get("reports", []):
            if rep["path"] == "reports/unit.xml":
                rep["summary"]["totals"].update(passed=rep["summary"]["totals"]["passed"] - 1, failures=1)
    archive, bundle_id = _bundle_with_facts(tmp_path, json.dumps(doc).encode())
    replayed = replay(archive, bundle_id)
    assert not replayed.ok
    assert "rule tests: recorded pass, replayed fail" in " ".join(replayed.differences)
    assert any(d.startswith("facts of reports/*.xml: the stored files, read again, do not give the facts recorded")
               for d in replayed.differences), replayed.differences


def test_recorded_facts_that_match_their_files_replay_clean(tmp_path: Path) -> None:
    archive, bundle_id = _bundle_with_facts(tmp_path, json.dumps(_recorded_facts(tmp_path)).encode())
    replayed = replay(archive, bundle_id)
    assert replayed.ok, replayed.differences
    assert any("judged from the facts recorded in facts.json" in n for n in replayed.notes)


def test_a_bundle_without_recorded_facts_replays_from_its_files_as_before(tmp_path: Path) -> None:
    archive, bundle_id = _bundle_with_facts(tmp_path, None)
    replayed = replay(archive, bundle_id)
    assert replayed.ok, replayed.differences
    assert any("has no facts.json" in n for n in replayed.notes)


@pytest.mark.parametrize("facts", [
    b"{", b"[]", b'{"format": 2, "facts": []}', b'{"format": 1, "facts": [{"kind": "weather"}]}',
    b'{"format": 1, "facts": [{"kind": "reports", "globs": ["reports/*.xml"], "outside": [], "list_error": null,'
    b' "reports": [{"path": "reports/unit.xml", "file": null, "error": null, "summary": null}]}]}',
    b'{"format": 1, "facts": [{"kind": "reports", "globs": ["reports/*.xml"], "outside": [], "list_error": null,'
    b' "reports": [{"path": "a.xml", "file": {"relpath": "a.xml", "sha256": "00", "size": 1}, "error": null,'
    b' "summary": {"totals": {"tests": true, "passed": 1, "failures": 0, "errors": 0, "skipped": 0, "flaky": 0},'
    b' "suites": 1, "failed_tests": [], "flaky_tests": [], "notes": []}}]}]}',
    b'{"format": 1, "facts": [{"kind": "document", "path": "ROLLBACK.md", "max_bytes": 4194304, "file": null,'
    b' "problem": null, "message": null, "length": null, "sections": []}]}',
    "\ufeff{}".encode("utf-16"),
], ids=["truncated", "a-list", "other-format", "unknown-kind", "report-says-nothing", "bool-as-count",
        "plan-read-without-file", "not-utf8"])
def test_an_unreadable_facts_member_refuses_the_replay(tmp_path: Path, facts: bytes) -> None:
    """Fail closed: replay never guesses what a damaged ``facts.json`` meant."""
    from policyengine.errors import EvidenceError

    archive, bundle_id = _bundle_with_facts(tmp_path, facts)
    with pytest.raises(EvidenceError, match="its facts.json cannot be read"):
        replay(archive, bundle_id)


def test_replay_from_the_command_line_says_it_judged_the_recorded_facts(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    ws = _workspace(tmp_path, _report(*PASSING, system_out="Authorization:x"))
    _, _, archive = _check_and_replay(tmp_path, ws)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYENGINE_")}
    out = subprocess.run([sys.executable, "-m", "policyengine", "evidence", "replay", "--archive", str(archive.root),
                          archive.list()[-1].id], capture_output=True, text=True, timeout=120, check=False, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "same    tests: recorded pass, replayed pass" in out.stdout
    assert "judged from the facts recorded in facts.json" in out.stdout


@pytest.mark.parametrize(("text", "want"), [
    ("<system-out>Authorization:x</system-out>", "<system-out>Authorization:[REDACTED]</system-out>"),
    ("<a v='X-Api-Key: k'/>", "<a v='X-Api-Key: [REDACTED]'/>"),
    ("Authorization:x&amp;y", "Authorization:[REDACTED]&amp;y"),
    ("<!--Authorization:x-->", "<!--Authorization:[REDACTED]-->"),
    ('{"h": "Authorization: abc\\"def"}', '{"h": "Authorization: [REDACTED]\\"def"}'),
    ('{"h": "Authorization: abc\\nnext"}', '{"h": "Authorization: [REDACTED]\\nnext"}'),
    ("`PRIVATE-TOKEN: abc`", "`PRIVATE-TOKEN: [REDACTED]`"),
    ("[JOB-TOKEN=abc](x)", "[JOB-TOKEN=[REDACTED]](x)"),
    ("Authorization: Bearer abcdefghijklmnop</x>", "Authorization: [REDACTED]</x>"),
    ("Authorization: token glpat-abc--def-ghijklmnop", "Authorization: [REDACTED]"),
])
def test_a_header_value_never_eats_the_structure_after_it(text: str, want: str) -> None:
    """The redacted value stops before ``<``, ``-->``, ``&``, quotes, a JSON escape, a backtick
    or a bracket; redacting the result again changes nothing."""
    from policyengine.redact import EvidenceRedactor, Redactor

    assert Redactor().text(text) == want
    assert Redactor().text(want) == want
    assert EvidenceRedactor().redact(text.encode())[0] == want.encode()


def test_a_header_value_starting_with_a_literal_secret_is_redacted_whole() -> None:
    """The literal pass runs first: the rest of the header value after it must not be left."""
    from policyengine.redact import Redactor

    r = Redactor(["abcdefgh"])
    assert r.text("<x>Authorization: abcdefghSECRETMORE</x>") == "<x>Authorization: [REDACTED]</x>"


s3_session = s3_server.s3_session  # the fixtures of the local S3 server (skipped without moto)
s3 = s3_server.s3


@pytest.mark.parametrize("kind", ["git", "s3"])
def test_bundles_with_tokens_replay_as_recorded_from_the_git_and_s3_stores(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same redaction and the same recorded facts whatever the store: the issue's report and
    two test names merged by redaction, recorded in a git store or in S3, replay as recorded."""
    import subprocess
    import uuid

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from policyengine.evidence.format.signing import load_signing_key
    from policyengine.evidence.stores.factory import open_store

    monkeypatch.setenv("POLICYENGINE_CACHE_DIR", str(tmp_path / "cache"))
    key_path = tmp_path / "signing.pem"
    key_path.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    if kind == "git":
        remote = tmp_path / "evidence.git"
        subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True, timeout=60)
        url = f"git+file://{remote}#refs/heads/evidence"
    else:
        request.getfixturevalue("s3")
        url = f"s3://{s3_server.PLAIN_BUCKET}/replay-{uuid.uuid4().hex[:8]}"
    report = _report(f'<testcase classname="t" name="test_login[{TOKEN_A}]"><failure>boom</failure></testcase>',
                     f'<testcase classname="t" name="test_login[{TOKEN_B}]"/>', system_out="Authorization:x")
    ws = _workspace(tmp_path, report)
    result = check(CheckRequest(policy_path=str(ACCEPTANCE / "policy.yml"), now=NOW,
                                env={"POLICYENGINE_CACHE_DIR": str(tmp_path / "cache")},
                                change_path=str(ACCEPTANCE / "change.yml"), workspace=str(ws), evidence_store=url,
                                signing_key=load_signing_key(str(key_path)), wall_time=NOW, clock_override=True))
    assert result.evidence.get("bundle_id"), result.evidence
    assert _statuses(result)["tests"] == "fail"
    _assert_same(result, replay(open_store(url), result.evidence["bundle_id"]))

"""Bugs the auditor hit (issue 16): `evidence list --kind` on git stores, a refused emergency in
`audit summary`, and waiver-file changes in the export's ``policy-changes.json``."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from policyengine.language.policyfacts import POLICY_FACTS
from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.index import Query
from policyengine.evidence.audit.summary import render, summarize

REPO = Path(__file__).resolve().parents[1]
STRICT = (REPO / "policies" / "soc2-production.yml").read_text("utf-8")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True, timeout=300,
                          check=False, cwd=REPO, env=env)


def test_list_kind_filters_a_git_store(tmp_path: Path) -> None:
    from test_evidence_git import check_cmd, cli, env_for, git, records, url_of

    from policyengine.evidence.stores.git import GitArchive

    remote = tmp_path / "evidence.git"
    git("init", "--quiet", "--bare", str(remote))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    k = ed25519.Ed25519PrivateKey.generate()
    priv = tmp_path / "signing.pem"
    priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    url, env = url_of(remote), env_for(tmp_path)
    first = subprocess.run(check_cmd(url, priv), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert first.returncode in (0, 1), first.stderr
    [evaluation] = records(url, env)
    run = cli(env, "evidence", "record-outcome", "--archive", url, "--status", "deployed", "--by", "dana",
              "--signing-key", str(priv), evaluation["id"])
    assert run.returncode == 0, run.stdout + run.stderr
    rows, _ = GitArchive(url, env=env).query(Query(kind="outcome"))
    assert [r.get("kind") for r in rows] == ["outcome"]
    rows, _ = GitArchive(url, env=env).query(Query(kind="evaluation"))
    assert [r["id"] for r in rows] == [evaluation["id"]]
    listed = cli(env, "evidence", "list", "--archive", url, "--kind", "evaluation", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [evaluation["id"]]


def test_a_refused_emergency_is_no_open_emergency_deployment(tmp_path: Path) -> None:
    from test_audit_summary import change, decision, key

    archive = LocalArchive(tmp_path / "ev")
    when = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    refused = {"accepted": False, "problems": ["the emergency has no incident"], "declarer": "erin",
               "reason": "outage", "incident": None, "waived": [], "approval_required": False, "due_at": None}
    ref = archive.write_bundle(
        decision=decision("deny", when, emergency=refused), change=change("acme/api", "production", "a" * 40, when,
                                                                          pipeline="p1"),
        policy_filename="p.yml", policy_bytes=STRICT.encode(), files=[], signing_key=key(),
        created_at=when + timedelta(seconds=1))
    s = summarize(archive, since="2026-01-01T00:00:00Z", until="2027-01-01T00:00:00Z", policy_facts=POLICY_FACTS)
    assert s["overrides"]["emergency"] == []
    [e] = s["emergencies"]
    assert e["id"] == ref.id and e["status"] != "open" and "refused" in e["status"]
    assert "| open |" not in render(s, "md")


def test_a_waivers_file_change_is_a_policy_change_with_its_verdict(tmp_path: Path) -> None:
    archive = tmp_path / "ev"
    policy = tmp_path / "p.yml"
    policy.write_text(STRICT.replace("teams: [security]                   # ADAPT", "users: [carol]  #"),
                      encoding="utf-8")
    narrow = ("waivers:\n  - rule: deploy-window\n    scope: {repository: acme/other}\n    reason: r\n"
              "    approved_by: carol\n    approved_at: 2026-11-20\n    expires: 2026-12-01\n")
    wide = narrow.replace("acme/other", "acme/payments")
    for i, text in enumerate([narrow, narrow, wide]):
        waivers = tmp_path / f"w{i}.yml"
        waivers.write_text(text, encoding="utf-8")
        run = _cli("check", "--policy", str(policy), "--waivers", str(waivers), "--change",
                   "examples/change-allowed.yml", "--workspace", "examples/workspace", "--now",
                   "2026-11-24T15:00:00Z", "--evidence-dir", str(archive))
        assert run.returncode in (0, 1), run.stdout + run.stderr
    out = tmp_path / "export.zip"
    run = _cli("audit", "export", "--archive", str(archive), "--since", "2000-01-01", "--until", "2100-01-01",
               "-o", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    with zipfile.ZipFile(out) as zf:
        changes = json.loads(zf.read("policy-changes.json"))
    ids = [json.loads(line)["id"] for line in (archive / "index.jsonl").read_text("utf-8").splitlines()]
    assert [c["bundle_id"] for c in changes] == [ids[0], ids[2]]
    waived = changes[1]
    assert waived["verdict"] == "weaker" and waived["previous_bundle_id"] == ids[1]
    assert "waivers" in waived["changed"] and waived["waivers_sha256"] != waived["previous_waivers_sha256"]
    assert any("waiver" in f["path"] for f in waived["findings"])

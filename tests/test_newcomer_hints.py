"""Day one (issue 18): every command the tool prints as a hint runs as printed.

Each test makes the tool print a hint, takes the command out of its output, replaces only the
documented upper-case placeholders a person must choose (LOGIN: the approver; KEY: the signing
key; PUBLIC_KEY: the public key), runs it, and checks it does what the hint promises.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NOW = "2026-11-28T22:00:00Z"  # a Saturday night: the emergency waives the deploy window

POLICY = """version: 1
name: em
rules:
  - id: peer-review
    type: approvals
    min_approvals: 1
    exclude: [author, deployer]
  - id: deploy-window
    type: deploy_window
    timezone: UTC
    allow:
      - {name: weekdays, days: [mon-fri], between: ["09:00", "17:00"]}
emergency:
  declared_by: {users: [dana]}
  requires: [reason, incident]
  may_waive: [peer-review, deploy-window]
  approve_within: 72h
  approvers: {min_approvals: 1, exclude: [author, deployer, committers]}
"""
CHANGE = {
    "repository": "acme/payments", "environment": "production",
    "commit": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "deployer": "dana",
    "pull_request": {"number": 42, "title": "hotfix", "author": "alice",
                     "head_commit": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6"},
    "commits": [{"sha": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "author": "alice", "committer": "carl"}],
    "reviews": [],
}


def _env(tmp: Path) -> dict[str, str]:
    """No CI, no user name to fall back on (a container), a cache of our own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI_", "GIT_"))
           and k not in ("CI", "USER", "LOGNAME", "JENKINS_URL", "TF_BUILD", "BUILDKITE", "CIRCLECI")}
    env["POLICYENGINE_CACHE_DIR"] = str(tmp / "cache")
    return env


def _run(words: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    assert words[0] == "policyengine", words
    return subprocess.run([sys.executable, "-m", "policyengine", *words[1:]], cwd=tmp, env=_env(tmp),
                          capture_output=True, text=True, timeout=300, check=False)


def _hints(text: str) -> list[str]:
    """Every command printed as a hint: in backticks, after 'approve:' / 'verify it:', or after a due time."""
    found = re.findall(r"`(policyengine [^`]+)`", text)
    found += re.findall(r"(?:approve|verify it|due by \S+): (policyengine .+?)(?:  \(|$)", text, flags=re.M)
    return found


def _as_printed(hint: str, **placeholders: str) -> list[str]:
    words = shlex.split(hint)
    assert not [w for w in words if re.fullmatch(r"[A-Z][A-Z_]+", w) and w not in placeholders], hint
    return [placeholders.get(w, w) for w in words]


def _setup(tmp: Path) -> None:
    (tmp / "policy.yml").write_text(POLICY, encoding="utf-8")
    (tmp / "change.yml").write_text(yaml.safe_dump(CHANGE), encoding="utf-8")


def _declare(tmp: Path, *store: str) -> subprocess.CompletedProcess[str]:
    return _run(["policyengine", "check", "--policy", "policy.yml", "--change", "change.yml", "--workspace", ".",
                 "--now", NOW, "--emergency", "--reason", "refunds down", "--incident", "INC-1", *store], tmp)


def _bundle(out: str) -> str:
    match = re.search(r"\(bundle (\S+)\)", out)
    assert match, out
    return match[1]


@pytest.mark.parametrize("folder", ["evidence", "deep/ev idence"])  # a relative folder, one that needs quoting
def test_the_emergency_approve_hint_of_check_and_of_pending_run_as_printed(tmp_path: Path, folder: str) -> None:
    _setup(tmp_path)
    declared = _declare(tmp_path, "--evidence-dir", folder)
    assert declared.returncode == 0, declared.stdout + declared.stderr
    bundle = _bundle(declared.stdout)
    [hint] = _hints(declared.stdout)
    assert bundle in hint and "BUNDLE_ID" not in hint and shlex.split(hint)[3:5] == ["--archive", folder]
    approved = _run(_as_printed(hint, LOGIN="frank"), tmp_path)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert f"recorded emergency approval of bundle {bundle}" in approved.stdout

    pending = _run(["policyengine", "emergency", "pending", "--archive", folder, "--now", "2026-11-30T00:00:00Z"],
                   tmp_path)
    [hint] = _hints(pending.stdout)
    assert bundle in hint
    again = _run(_as_printed(hint, LOGIN="gina"), tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "by gina" in again.stdout


def test_the_approve_hint_of_a_git_store_runs_as_printed_and_git_url_needs_no_ref(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = tmp_path / "signing.pem"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    remote = tmp_path / "evidence.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True, timeout=60)
    store = f"git+file://{remote}"  # no #REF: the documented default ref
    _setup(tmp_path)
    declared = _declare(tmp_path, "--evidence-store", store, "--signing-key", str(key))
    assert declared.returncode == 0, declared.stdout + declared.stderr
    refs = subprocess.run(["git", "-C", str(remote), "for-each-ref", "--format=%(refname)"], capture_output=True,
                          text=True, check=True, timeout=60).stdout.split()
    assert refs == ["refs/heads/policyengine-evidence"]
    [hint] = _hints(declared.stdout)
    assert str(key) not in declared.stdout  # the key is never echoed: KEY stands for it
    approved = _run(_as_printed(hint, LOGIN="frank", KEY=str(key)), tmp_path)
    assert approved.returncode == 0, approved.stdout + approved.stderr


def test_error_hints_name_the_store_and_run_as_printed(tmp_path: Path) -> None:
    _setup(tmp_path)
    folder = "my evidence"
    declared = _declare(tmp_path, "--evidence-dir", folder)
    bundle = _bundle(declared.stdout)
    approved = _run(_as_printed(_hints(declared.stdout)[0], LOGIN="frank"), tmp_path)
    record = approved.stdout.split(" as record ", 1)[1].split()[0]

    # An unknown bundle: the hint lists the archive's bundles.
    shown = _run(["policyengine", "evidence", "show", "--archive", folder, "20261128T220000Z-000000000000"], tmp_path)
    assert shown.returncode == 2
    [hint] = _hints(shown.stderr)
    listed = _run(shlex.split(hint), tmp_path)
    assert listed.returncode == 0 and bundle in listed.stdout

    # An outcome about a record rather than an evaluation: the hint lists the evaluations.
    outcome = _run(["policyengine", "evidence", "record-outcome", "--archive", folder, record, "--status",
                    "deployed", "--by", "dana"], tmp_path)
    assert outcome.returncode == 2
    [hint] = _hints(outcome.stderr)
    listed = _run(shlex.split(hint), tmp_path)
    assert listed.returncode == 0 and bundle in listed.stdout and record not in listed.stdout

    # Approving a bundle that is no emergency: the hint lists the emergencies.
    (tmp_path / "change2.yml").write_text(yaml.safe_dump({**CHANGE, "reviews": [
        {"user": "erin", "state": "approved", "commit": CHANGE["commit"], "submitted_at": "2026-11-27T10:00:00Z"}]}),
        encoding="utf-8")
    plain = _run(["policyengine", "check", "--policy", "policy.yml", "--change", "change2.yml", "--workspace", ".",
                  "--now", "2026-11-27T10:00:00Z", "--evidence-dir", folder], tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    refused = _run(["policyengine", "emergency", "approve", "--archive", folder, _bundle(plain.stdout), "--by",
                    "frank"], tmp_path)
    assert refused.returncode == 2
    [hint] = _hints(refused.stderr)
    pending = _run(shlex.split(hint), tmp_path)
    assert pending.returncode in (0, 1) and bundle in pending.stdout  # 1: it is overdue by the wall clock

    # A bundle that cannot be read: the hint verifies that very bundle, in that very store.
    path = next((tmp_path / folder / "bundles").rglob(f"{bundle}.zip"))
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    path.write_bytes(b"not a zip any more")
    replay = _run(["policyengine", "evidence", "replay", "--archive", folder, bundle], tmp_path)
    assert replay.returncode != 0
    [hint] = _hints(replay.stderr)
    assert bundle in hint and folder in shlex.split(hint)
    verified = _run(shlex.split(hint), tmp_path)
    assert verified.returncode == 1 and bundle in verified.stdout  # the documented exit: a bundle that fails
    assert members  # (kept to show what was there)


def test_the_export_verify_hint_runs_as_printed(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "k.pub").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    _setup(tmp_path)
    assert _declare(tmp_path, "--evidence-dir", "ev", "--signing-key", "k.pem").returncode == 0
    for public in ([], ["--public-key", "k.pub"]):
        out = f"audit {len(public)}.zip"
        exported = _run(["policyengine", "audit", "export", "--archive", "ev", "--since", "2000-01-01", "--until",
                         "2100-01-01", "--signing-key", "k.pem", *public, "-o", out], tmp_path)
        assert exported.returncode == 0, exported.stdout + exported.stderr
        [hint] = _hints(exported.stdout)
        verified = _run(_as_printed(hint, PUBLIC_KEY="k.pub"), tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_readme_record_outcome_command_runs_without_a_user_name(tmp_path: Path) -> None:
    """The record-outcome line of the evidence overview (once the README's), as written, with its
    placeholders filled in: no `--by is required`."""
    readme = (REPO / "docs" / "evidence.md").read_text("utf-8")
    line = re.search(r"`(policyengine evidence record-outcome [^`]+)`", readme.split("### Outcomes and reviews")[1])
    assert line, "docs/evidence.md shows record-outcome under Outcomes and reviews"
    _setup(tmp_path)
    bundle = _bundle(_declare(tmp_path, "--evidence-dir", "ev").stdout)
    words = [w.split("|")[0] for w in shlex.split(line[1].replace("|", "\\|"))]
    words = [{"DIR": "ev", "BUNDLE_ID": bundle, "LOGIN": "dana"}.get(w, w) for w in words]
    recorded = _run(words, tmp_path)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert f"recorded outcome deployed of bundle {bundle}" in recorded.stdout


def test_the_actions_job_summary_names_a_runnable_approve_command(tmp_path: Path) -> None:
    """The GitHub action's job summary of an emergency allow: the approve command, real id and store."""
    _setup(tmp_path)
    declared = _declare(tmp_path, "--evidence-dir", "ev", "--json", "d.json")
    assert declared.returncode == 0, declared.stdout + declared.stderr
    step = next(s for s in yaml.safe_load((REPO / "action.yml").read_text("utf-8"))["runs"]["steps"]
                if s.get("id") == "gate")
    body = step["run"][step["run"].index("<<'PY'") + 7: step["run"].index("\nPY\n")]
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    env = {**_env(tmp_path), "PE_EXIT_CODE": "0", "PE_DECISION_JSON": "d.json", "POLICYENGINE_EVIDENCE_DIR": "ev",
           "POLICYENGINE_POLICY": "policy.yml", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs)}
    ran = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    [hint] = re.findall(r"`(policyengine emergency approve [^`]+)`", summary.read_text("utf-8"))
    assert _bundle(declared.stdout) in hint
    approved = _run(_as_printed(hint, LOGIN="frank"), tmp_path)
    assert approved.returncode == 0, approved.stdout + approved.stderr

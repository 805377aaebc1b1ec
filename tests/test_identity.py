"""The CI platform's signed identity (issue 17): OIDC ID tokens checked against a local issuer.

Each test runs the CLI as a pipeline runs it, inside GitHub Actions or GitLab CI as far as the
environment says, against an issuer on loopback that serves its discovery document and JWKS
(tests/oidc_issuer.py). Forged, expired, wrong-audience tokens and tokens for another repository
or commit must never pass; the token must never appear anywhere but identity.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.oidc_issuer import REQUEST_TOKEN, Issuer, new_rsa, running_issuer

REPO = Path(__file__).resolve().parents[1]
CHANGE = REPO / "examples" / "change-allowed.yml"
WORKSPACE = REPO / "examples" / "workspace"
SHA = "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6"


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "POLICYENGINE_", "RUNNER_", "AWS_", "ACTIONS_"))
            and k not in {"CI", "NO_COLOR"}}
    base.update(extra)
    return base


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def _policy(tmp: Path, issuer: Issuer, *, required: bool = True) -> Path:
    path = tmp / "policy.yml"
    path.write_text(
        "name: identity\nversion: 1\n"
        f"identity:\n  issuers: [{issuer.url}]\n  required: {'true' if required else 'false'}\n"
        "rules:\n  - id: peer-review\n    type: approvals\n    min_approvals: 1\n    exclude: [author]\n",
        encoding="utf-8")
    return path


def _check(tmp: Path, issuer: Issuer, env: dict[str, str], *, required: bool = True,
           change: Path = CHANGE, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    args = ["check", "--policy", str(_policy(tmp, issuer, required=required)), "--change", str(change),
            "--workspace", str(WORKSPACE), "--evidence-dir", str(tmp / "evidence"), "--json",
            str(tmp / "decision.json"), "--junit", str(tmp / "junit.xml"), "--color", "never", *extra]
    return _cli(*args, cwd=tmp, env=_env(**env))


def _bundle(tmp: Path) -> dict[str, bytes]:
    [path] = [p for p in (tmp / "evidence").rglob("*.zip")]
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _identity_rule(tmp: Path) -> dict[str, Any]:
    doc = json.loads((tmp / "decision.json").read_text(encoding="utf-8"))
    [rule] = [r for r in doc["rules"] if r["id"] == "identity"]
    return rule


@pytest.fixture
def issuer() -> Any:
    with running_issuer() as running:
        yield running


# -- verified --------------------------------------------------------------------------------


def test_a_verified_github_token_is_kept_as_rfc7515_json_with_the_key_set(tmp_path: Path, issuer: Issuer) -> None:
    token = issuer.github()
    res = _check(tmp_path, issuer, issuer.github_env(token))
    assert res.returncode == 0, res.stdout + res.stderr
    assert issuer.token_requests and issuer.token_requests[0]["audience"] == ["policyengine"]
    members = _bundle(tmp_path)
    doc = json.loads(members["identity.json"])
    assert ".".join(doc["token"][k] for k in ("protected", "payload", "signature")) == token
    assert doc["jwks"] == issuer.jwks
    assert doc["claims"]["actor"] == "dana" and doc["claims"]["run_id"] == "1658821493"
    assert doc["claims"]["repository"] == "acme/payments" and doc["claims"]["sha"] == SHA
    decision = json.loads((tmp_path / "decision.json").read_text(encoding="utf-8"))
    assert decision["identity"]["status"] == "verified"
    assert decision["identity"]["claims"]["actor"] == "dana"
    manifest = json.loads(members["manifest.json"])
    assert manifest["schema_version"] == 3
    assert "identity.json" in {m["path"] for m in manifest["members"]}, "the signed manifest covers identity.json"


def test_a_verified_gitlab_token_from_the_id_tokens_variable(tmp_path: Path, issuer: Issuer) -> None:
    token = issuer.gitlab()
    env = {"CI": "true", "GITLAB_CI": "true", "CI_PROJECT_PATH": "acme/payments", "CI_COMMIT_SHA": SHA,
           "CI_PIPELINE_ID": "61", "CI_JOB_ID": "7", "GITLAB_USER_LOGIN": "dana",
           "CI_ENVIRONMENT_NAME": "production", "POLICYENGINE_ID_TOKEN": token}
    res = _check(tmp_path, issuer, env)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(_bundle(tmp_path)["identity.json"])
    assert doc["claims"]["platform"] == "gitlab" and doc["claims"]["actor"] == "dana"
    assert doc["claims"]["run_id"] == "61" and doc["claims"]["job_id"] == "7"


# -- refused ---------------------------------------------------------------------------------


def test_an_expired_token_is_refused_when_identity_is_required(tmp_path: Path, issuer: Issuer) -> None:
    now = int(time.time())
    token = issuer.github(iat=now - 3600, nbf=now - 3600, exp=now - 1800)
    res = _check(tmp_path, issuer, issuer.github_env(token))
    assert res.returncode == 3, res.stdout + res.stderr
    rule = _identity_rule(tmp_path)
    assert rule["status"] == "error" and "expired" in rule["message"]


def test_a_forged_token_is_refused_when_identity_is_required(tmp_path: Path, issuer: Issuer) -> None:
    """Signed by another key under the issuer's own key id: the signature does not verify."""
    from tests.oidc_issuer import github_claims

    token = issuer.mint(github_claims(issuer.url), key=new_rsa())
    res = _check(tmp_path, issuer, issuer.github_env(token))
    assert res.returncode == 3, res.stdout + res.stderr
    rule = _identity_rule(tmp_path)
    assert rule["status"] == "error" and "forged" in rule["message"]


def test_a_token_for_another_audience_is_refused(tmp_path: Path, issuer: Issuer) -> None:
    token = issuer.github(aud="sigstore")
    res = _check(tmp_path, issuer, issuer.github_env(token))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "audience" in _identity_rule(tmp_path)["message"]


def test_a_token_from_an_issuer_the_policy_does_not_name_is_refused(tmp_path: Path, issuer: Issuer) -> None:
    """The issuer is pinned by the policy: a step before the gate running its own issuer gains nothing."""
    with running_issuer() as rogue:
        token = rogue.github()
        res = _check(tmp_path, issuer, {**rogue.github_env(token)})
    assert res.returncode == 3, res.stdout + res.stderr
    assert "not one the policy trusts" in _identity_rule(tmp_path)["message"]


@pytest.mark.parametrize(("claim", "value", "shown"), [
    ("repository", "mallory/payments", "mallory/payments"),
    ("sha", "0" * 40, "0" * 40),
    ("environment", "staging", "staging"),
    ("run_id", "999", "999"),
])
@pytest.mark.parametrize("required", [True, False])
def test_claims_that_disagree_with_the_change_are_an_error(tmp_path: Path, issuer: Issuer, claim: str,
                                                           value: str, shown: str, required: bool) -> None:
    token = issuer.github(**{claim: value})
    res = _check(tmp_path, issuer, issuer.github_env(token), required=required)
    assert res.returncode == 3, res.stdout + res.stderr
    rule = _identity_rule(tmp_path)
    assert rule["status"] == "error"
    assert f"claim {claim} is {shown!r}" in rule["message"], rule["message"]


def test_a_gitlab_token_of_another_project_is_an_error(tmp_path: Path, issuer: Issuer) -> None:
    token = issuer.gitlab(project_path="mallory/payments")
    env = {"CI": "true", "GITLAB_CI": "true", "CI_PIPELINE_ID": "61", "CI_JOB_ID": "7",
           "CI_ENVIRONMENT_NAME": "production", "POLICYENGINE_ID_TOKEN": token}
    res = _check(tmp_path, issuer, env)
    assert res.returncode == 3, res.stdout + res.stderr
    message = _identity_rule(tmp_path)["message"]
    assert "project_path" in message and "mallory/payments" in message and "acme/payments" in message


def test_no_token_inside_ci_is_an_error_only_when_required(tmp_path: Path, issuer: Issuer) -> None:
    env = issuer.github_env("unused")
    del env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    res = _check(tmp_path / "a", issuer, env) if (tmp_path / "a").mkdir() is None else None
    assert res is not None and res.returncode == 3, res.stdout + res.stderr
    assert "id-token: write" in _identity_rule(tmp_path / "a")["message"]
    (tmp_path / "b").mkdir()
    res = _check(tmp_path / "b", issuer, env, required=False)
    assert res.returncode == 0, res.stdout + res.stderr
    decision = json.loads((tmp_path / "b" / "decision.json").read_text(encoding="utf-8"))
    assert decision["identity"]["status"] == "absent"


# -- the token never leaks -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["verified", "forged", "mismatch"])
def test_the_token_never_appears_outside_identity_json(tmp_path: Path, issuer: Issuer, kind: str) -> None:
    from tests.oidc_issuer import github_claims

    if kind == "forged":
        token = issuer.mint(github_claims(issuer.url), key=new_rsa())
    elif kind == "mismatch":
        token = issuer.github(sha="1" * 40)
    else:
        token = issuer.github()
    signature = token.rsplit(".", 1)[1]
    # The gate logs what it does when asked to: the log must hold no token either.
    res = _check(tmp_path, issuer, issuer.github_env(token, POLICYENGINE_DEBUG="1"))
    outputs = {"stdout": res.stdout, "stderr": res.stderr,
               "json": (tmp_path / "decision.json").read_text(encoding="utf-8"),
               "junit": (tmp_path / "junit.xml").read_text(encoding="utf-8")}
    members = _bundle(tmp_path)
    for name, data in members.items():
        if name != "identity.json":
            outputs[f"bundle:{name}"] = data.decode("utf-8", errors="replace")
    for name, text in outputs.items():
        for secret in (token, signature, REQUEST_TOKEN):
            assert secret not in text, f"{name} holds a secret"
    assert token.split(".")[2] in members["identity.json"].decode()


# -- --by is the token's actor ---------------------------------------------------------------


def _recorded(tmp: Path, issuer: Issuer) -> str:
    res = _check(tmp, issuer, issuer.github_env(issuer.github()))
    assert res.returncode == 0, res.stdout + res.stderr
    return str(json.loads((tmp / "decision.json").read_text(encoding="utf-8"))["evidence"]["bundle_id"])


def test_by_that_is_not_the_tokens_actor_is_refused(tmp_path: Path, issuer: Issuer) -> None:
    bundle_id = _recorded(tmp_path, issuer)
    # GITHUB_ACTOR says frank; the token (the platform's word) says dana: the token wins.
    env = issuer.github_env(issuer.github(), GITHUB_ACTOR="frank", GITHUB_TRIGGERING_ACTOR="frank")
    res = _cli("evidence", "record-outcome", "--archive", str(tmp_path / "evidence"), "--status", "deployed",
               "--by", "frank", "--oidc-issuer", issuer.url, bundle_id, cwd=tmp_path, env=_env(**env))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "frank" in res.stderr and "dana" in res.stderr
    res = _cli("evidence", "record-outcome", "--archive", str(tmp_path / "evidence"), "--status", "deployed",
               "--by", "dana", "--oidc-issuer", issuer.url, bundle_id, cwd=tmp_path, env=_env(**env))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified (CI actor)" in res.stdout


def test_a_record_without_a_verified_token_inside_ci_is_self_asserted(tmp_path: Path, issuer: Issuer) -> None:
    bundle_id = _recorded(tmp_path, issuer)
    env = issuer.github_env("x")
    del env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    res = _cli("evidence", "record-outcome", "--archive", str(tmp_path / "evidence"), "--status", "deployed",
               "--by", "dana", bundle_id, cwd=tmp_path, env=_env(**env))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "self-asserted" in res.stdout


# -- evidence verify --oidc-jwks -------------------------------------------------------------


def test_verify_checks_the_token_offline_against_the_auditors_keys(tmp_path: Path, issuer: Issuer) -> None:
    _recorded(tmp_path, issuer)
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(issuer.jwks), encoding="utf-8")
    other = tmp_path / "other.json"
    from tests.oidc_issuer import jwk_of

    other.write_text(json.dumps({"keys": [jwk_of(new_rsa(), issuer.kid)]}), encoding="utf-8")
    plain = _cli("evidence", "verify", "--archive", str(tmp_path / "evidence"), cwd=tmp_path, env=_env())
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "identity unchecked" in plain.stdout
    good = _cli("evidence", "verify", "--archive", str(tmp_path / "evidence"), "--oidc-jwks", str(keys),
                cwd=tmp_path, env=_env())
    assert good.returncode == 0, good.stdout + good.stderr
    assert "identity verified" in good.stdout and "dana" in good.stdout
    bad = _cli("evidence", "verify", "--archive", str(tmp_path / "evidence"), "--oidc-jwks", str(other),
               cwd=tmp_path, env=_env())
    assert bad.returncode != 0, bad.stdout + bad.stderr
    assert "identity" in bad.stdout + bad.stderr


# -- replays ---------------------------------------------------------------------------------


def test_the_same_token_is_never_accepted_twice_in_one_store(tmp_path: Path, issuer: Issuer) -> None:
    token = issuer.github()
    first = _check(tmp_path, issuer, issuer.github_env(token))
    assert first.returncode == 0, first.stdout + first.stderr
    again = _check(tmp_path, issuer, issuer.github_env(token))
    assert again.returncode == 3, again.stdout + again.stderr
    assert "already accepted by bundle" in _identity_rule(tmp_path)["message"]
    fresh = _check(tmp_path, issuer, issuer.github_env(issuer.github(jti="another")))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr


def test_verify_refuses_a_token_kept_from_another_run(tmp_path: Path, issuer: Issuer) -> None:
    """A key holder who writes a bundle later with a token kept from an earlier run: the bundle
    was created outside the token's lifetime, so the token proves nothing about it."""
    from policyengine.evidence.audit.identity import check_identity
    from policyengine.providers import oidc

    now = int(time.time())
    token = issuer.github(iat=now - 7200, nbf=now - 7200, exp=now - 6900)
    claims = oidc.normalized(oidc.unverified_claims(token))
    doc = {"status": "verified", "token": oidc.to_json_serialization(token), "claims": claims}
    manifest = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
    members = {"identity.json": json.dumps(doc).encode(), "manifest.json": json.dumps(manifest).encode()}
    finding = check_identity("b1", members, issuer.jwks)
    assert finding is not None and finding.state == "failed" and "lifetime" in finding.message
    manifest["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 7000))
    members["manifest.json"] = json.dumps(manifest).encode()
    finding = check_identity("b1", members, issuer.jwks)
    assert finding is not None and finding.state == "verified", finding


def test_records_made_before_tokens_keep_the_ci_actor_unverified_label() -> None:
    from policyengine.providers.oidc import LEGACY, SELF_ASSERTED, VERIFIED, recorder_label

    assert recorder_label({"by_verified": True, "by_source": "GITHUB_ACTOR"}) == LEGACY
    assert recorder_label({"by_verified": True, "by_source": "oidc https://token.actions.githubusercontent.com"}) \
        == VERIFIED
    assert recorder_label({"by_verified": False, "by_source": "GITHUB_ACTOR (no verified ID token)"}) == SELF_ASSERTED


# -- the emergency declarer ------------------------------------------------------------------

EMERGENCY = """
emergency:
  declared_by: {users: [dana]}
  may_waive: [peer-review]
  approve_within: 72h
  approvers: {min_approvals: 1, exclude: [author, deployer, committers]}
"""


def _declare(tmp: Path, issuer: Issuer, env: dict[str, str]) -> dict[str, Any]:
    tmp.mkdir()
    policy = _policy(tmp, issuer, required=False)
    policy.write_text(policy.read_text(encoding="utf-8").replace("min_approvals: 1\n", "min_approvals: 5\n")
                      + EMERGENCY, encoding="utf-8")
    res = _cli("check", "--policy", str(policy), "--change", str(CHANGE), "--workspace", str(WORKSPACE),
               "--evidence-dir", str(tmp / "evidence"), "--json", str(tmp / "decision.json"), "--emergency",
               "--reason", "outage", "--incident", "INC-1", cwd=tmp, env=_env(**env))
    doc = json.loads((tmp / "decision.json").read_text(encoding="utf-8"))
    return {"code": res.returncode, **doc["emergency"]}


def test_the_emergency_declarer_is_verified_by_the_token_only(tmp_path: Path, issuer: Issuer) -> None:
    # The token (dana) wins over the variables (a re-run by mallory).
    verified = _declare(tmp_path / "a", issuer, issuer.github_env(issuer.github(), GITHUB_TRIGGERING_ACTOR="mallory"))
    assert verified["declarer"] == "dana" and verified["declarer_verified"] is True, verified
    assert verified["declarer_source"] == "oidc" and verified["accepted"] is True and verified["code"] == 0
    env = issuer.github_env("x")
    del env["ACTIONS_ID_TOKEN_REQUEST_URL"], env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    unverified = _declare(tmp_path / "b", issuer, env)
    assert unverified["declarer_verified"] is False and unverified["accepted"] is False, unverified
    assert unverified["code"] != 0


# -- who chose the exceptions ----------------------------------------------------------------


def test_the_decision_records_who_set_advisory_mode_and_where(tmp_path: Path, issuer: Issuer) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    res = _check(tmp_path / "a", issuer, issuer.github_env(issuer.github(), POLICYENGINE_ADVISORY="true",
                                                           GITHUB_ACTOR="mallory"))
    assert res.returncode == 0, res.stdout + res.stderr
    by = json.loads((tmp_path / "a" / "decision.json").read_text(encoding="utf-8"))["advisory_by"]
    assert by == {"actor": "dana", "actor_verified": True, "actor_source": "verified (CI actor): oidc",
                  "source": "POLICYENGINE_ADVISORY"}
    members = _bundle(tmp_path / "a")
    assert json.loads(members["decision.json"])["advisory_by"] == by
    # The bundle's page (which the audit export includes for each bundle) says who set it.
    assert "Set by dana (verified (CI actor): oidc) through POLICYENGINE_ADVISORY" in members["report.html"].decode()
    res = _check(tmp_path / "b", issuer, {"USER": "erin"}, required=False, extra=("--advisory",))
    assert res.returncode == 0, res.stdout + res.stderr
    by = json.loads((tmp_path / "b" / "decision.json").read_text(encoding="utf-8"))["advisory_by"]
    assert by == {"actor": "erin", "actor_verified": False, "actor_source": "self-asserted: $USER",
                  "source": "--advisory"}


def test_the_git_store_keeps_the_identity_refuses_a_replay_and_verifies(tmp_path: Path, issuer: Issuer) -> None:
    """The index record's token digest and the schema 3 bundle pass the git store's own checks."""
    import subprocess as sp

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    remote = tmp_path / "evidence.git"
    sp.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    key, pub = tmp_path / "signing.pem", tmp_path / "signing.pub"
    private = ed25519.Ed25519PrivateKey.generate()
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    store = f"git+file://{remote}#refs/heads/evidence"
    token = issuer.github()
    extra = ("--evidence-store", store, "--signing-key", str(key))
    env = issuer.github_env(token, POLICYENGINE_CACHE_DIR=str(tmp_path / "cache"))
    first = _check(tmp_path, issuer, env, extra=extra)
    assert first.returncode == 0, first.stdout + first.stderr
    again = _check(tmp_path, issuer, env, extra=extra)
    assert again.returncode == 3, again.stdout + again.stderr
    assert "already accepted by bundle" in _identity_rule(tmp_path)["message"]
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(issuer.jwks), encoding="utf-8")
    res = _cli("evidence", "verify", "--archive", store, "--public-key", str(pub), "--oidc-jwks", str(keys),
               cwd=tmp_path,
               env=_env(POLICYENGINE_CACHE_DIR=str(tmp_path / "cache")))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("IDENTITY  bundle") == 2, res.stdout


def test_a_gitlab_token_issued_before_the_job_started_is_an_error(tmp_path: Path, issuer: Issuer) -> None:
    now = int(time.time())
    token = issuer.gitlab(iat=now - 200, nbf=now - 200)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 30))
    env = {"CI": "true", "GITLAB_CI": "true", "CI_PIPELINE_ID": "61", "CI_JOB_ID": "7", "CI_JOB_STARTED_AT": started,
           "CI_ENVIRONMENT_NAME": "production", "POLICYENGINE_ID_TOKEN": token}
    res = _check(tmp_path, issuer, env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "claim iat" in _identity_rule(tmp_path)["message"] and "CI_JOB_STARTED_AT" in _identity_rule(tmp_path)["message"]


def test_an_auditor_holding_only_the_export_checks_the_identities(tmp_path: Path, issuer: Issuer) -> None:
    _recorded(tmp_path, issuer)
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    until = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 2 * 86400))
    out = tmp_path / "export.zip"
    res = _cli("audit", "export", "--archive", str(tmp_path / "evidence"), "--since", since, "--until", until,
               "--sample", "1", "--seed", "1", "-o", str(out), cwd=tmp_path, env=_env())
    assert res.returncode == 0, res.stdout + res.stderr
    keys, other = tmp_path / "jwks.json", tmp_path / "other.json"
    keys.write_text(json.dumps(issuer.jwks), encoding="utf-8")
    from tests.oidc_issuer import jwk_of

    other.write_text(json.dumps({"keys": [jwk_of(new_rsa(), issuer.kid)]}), encoding="utf-8")
    plain = _cli("evidence", "verify", "--archive", str(out), cwd=tmp_path, env=_env())
    assert plain.returncode == 0 and "identity unchecked" in plain.stdout, plain.stdout + plain.stderr
    good = _cli("evidence", "verify", "--archive", str(out), "--oidc-jwks", str(keys), cwd=tmp_path, env=_env())
    assert good.returncode == 0 and "IDENTITY  bundle" in good.stdout, good.stdout + good.stderr
    bad = _cli("evidence", "verify", "--archive", str(out), "--oidc-jwks", str(other), cwd=tmp_path, env=_env())
    assert bad.returncode == 1 and "FAIL  identity" in bad.stdout, bad.stdout + bad.stderr

"""Nothing walks around the gate: secrets in outputs, environment names, applicability, the clock.

Each test reproduces a way around the gate that once worked (a token printed by the console,
JSON and JUnit outputs; a token after an escaped newline stored verbatim; a key echoed in an
error; ``--environment "production "`` skipping every rule and allowing; a policy that did
not apply looking like an allow; ``POLICYENGINE_NOW`` moving a deploy out of its window in a
pipeline) and checks the defence end to end through the CLI, as a pipeline runs it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "policies" / "soc2-production.yml"
CHANGE = REPO / "examples" / "change-allowed.yml"
WORKSPACE = REPO / "examples" / "workspace"
NOW = "2026-11-24T15:00:00Z"  # a Tuesday, 10:00 in New York: inside the allowed window

GHP_TOKEN = "ghp_" + "Q7wE3rT9yU1iO5pA2sD8fG4hJ6kL0zX2cV4b"  # token-shaped: ghp_ + 36
RANDOM_TOKEN = "Zq8Xw3Nv6Bt1Ry5Mu9Lk2Jh4"  # 24 characters, no known shape


def _env(**extra: str) -> dict[str, str]:
    """A clean environment (no CI marker, no POLICYENGINE_*), plus ``extra``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "POLICYENGINE_", "RUNNER_", "AWS_"))
            and k not in {"CI", "NO_COLOR"}}
    base.update(extra)
    return base


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def _workspace(tmp: Path) -> Path:
    ws = tmp / "ws"
    shutil.copytree(WORKSPACE, ws)
    return ws


def _change(tmp: Path, **over: Any) -> Path:
    import yaml

    data = yaml.safe_load(CHANGE.read_text(encoding="utf-8"))
    for key, value in over.items():
        if key == "title":
            data["pull_request"]["title"] = value
        else:
            data[key] = value
    path = tmp / "change.json"
    path.write_text(json.dumps(data), encoding="utf-8")  # escaped: a NEL stays a NEL
    return path


def _check(tmp: Path, *extra: str, env: dict[str, str] | None = None, change: Path | None = None,
           policy: Path = POLICY, now: str | None = NOW) -> subprocess.CompletedProcess[str]:
    ws = tmp / "ws" if (tmp / "ws").is_dir() else _workspace(tmp)
    args = ["check", "--policy", str(policy), "--change", str(change or CHANGE), "--workspace", str(ws),
            "--evidence-dir", str(tmp / "evidence"), "--json", str(tmp / "decision.json"),
            "--junit", str(tmp / "junit.xml"), "--color", "never"]
    if now is not None:
        args += ["--now", now]
    return _cli(*args, *extra, cwd=tmp, env=env if env is not None else _env())


def _bundles(tmp: Path) -> list[Path]:
    return sorted((tmp / "evidence").rglob("*.zip"))


def _members(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _statement(members: dict[str, bytes]) -> dict[str, Any]:
    envelope = json.loads(members["attestation.intoto.json"])
    statement: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return statement


def _index(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "evidence" / "index.jsonl").read_text().splitlines() if line]


# -- secrets never reach an output -------------------------------------------------------------


@pytest.mark.parametrize("token", [GHP_TOKEN, RANDOM_TOKEN], ids=["ghp-shaped", "arbitrary-24"])
def test_the_job_token_reaches_no_output_and_no_bundle_member(tmp_path: Path, token: str) -> None:
    ws = _workspace(tmp_path)
    # A failed test named after the token, with the token in its message, in a report a rule reads.
    (ws / "reports" / "unit.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites><testsuite name="pytest" tests="2" failures="1">'
        f'<testcase classname="tests" name="test_ok"/><testcase classname="tests" name="{token}">'
        f'<failure message="{token} leaked">{token}</failure></testcase></testsuite></testsuites>\n',
        encoding="utf-8")
    change = _change(tmp_path, title=f"PAY-9: rotate {token}")
    res = _check(tmp_path, env=_env(GITHUB_TOKEN=token), change=change)
    assert res.returncode == 1, res.stdout + res.stderr  # the failed test denies
    assert "tests" in res.stdout and "FAIL" in res.stdout  # the outputs were written...
    outputs = {"stdout": res.stdout, "stderr": res.stderr,
               "decision.json": (tmp_path / "decision.json").read_text(encoding="utf-8"),
               "junit.xml": (tmp_path / "junit.xml").read_text(encoding="utf-8")}
    assert "[REDACTED]" in outputs["junit.xml"] and "[REDACTED]" in outputs["decision.json"]
    for name, text in outputs.items():
        assert token not in text, f"the token is in {name}"
    (bundle,) = _bundles(tmp_path)
    members = _members(bundle)
    members["statement (decoded)"] = json.dumps(_statement(members)).encode()
    for name, data in members.items():
        assert token.encode() not in data, f"the token is in bundle member {name}"


def test_a_token_in_an_error_message_is_redacted(tmp_path: Path) -> None:
    """An error that quotes the input (an unreadable change file's path) shows no token."""
    res = _cli("check", "--policy", str(POLICY), "--change", str(tmp_path / f"{RANDOM_TOKEN}.yml"),
               cwd=tmp_path, env=_env(GITLAB_TOKEN=RANDOM_TOKEN))
    assert res.returncode == 2, res.stdout + res.stderr
    assert RANDOM_TOKEN not in res.stdout + res.stderr and "[REDACTED]" in res.stderr


ESCAPED = {
    "ghp-after-escaped-crlf": "\\r\\n" + GHP_TOKEN,
    "ghp-after-escaped-lf": "\\n" + GHP_TOKEN,
    "glpat-after-escaped-lf": "\\nglpat-" + "a1B2c3D4e5F6g7H8i9J0",
    "akia-after-escaped-crlf": "\\r\\nAKIA" + "IOSFODNN7EXAMPLE",
    "ghp-unicode-escaped": "\\u0067hp_" + GHP_TOKEN[4:],
    "glpat-unicode-escaped": "\\u0067lpat-" + "a1B2c3D4e5F6g7H8i9J0",
    "akia-unicode-escaped": "\\u0041KIA" + "IOSFODNN7EXAMPLE",
    "github-pat-after-tab": "\\tgithub_pat_" + "11ABCDEFG0123456789_abcdefghij",
    "ghp-after-url-encoded-lf": "%0A" + GHP_TOKEN,
}
SECRET_TAILS = (GHP_TOKEN[4:], "a1B2c3D4e5F6g7H8i9J0", "IOSFODNN7EXAMPLE", "0123456789_abcdefghij")


@pytest.mark.parametrize("name", sorted(ESCAPED))
def test_the_text_redactor_finds_tokens_behind_escapes(name: str) -> None:
    from policyengine.redact import Redactor

    raw = '{"body": "see ' + ESCAPED[name] + '", "n": 1}'
    out = Redactor().text(raw)
    assert not any(tail in out for tail in SECRET_TAILS), out
    assert "[REDACTED]" in out
    json.loads(out)  # still valid JSON


@pytest.mark.parametrize("name", sorted(ESCAPED))
def test_the_evidence_redactor_finds_tokens_behind_escapes(name: str) -> None:
    from policyengine.redact import EvidenceRedactor

    raw = ('{"body": "see ' + ESCAPED[name] + '", "n": 1}\n').encode()
    redactor = EvidenceRedactor()
    assert redactor.might_hold_secret(raw)
    out, count = redactor.redact(raw)
    assert count >= 1 and not any(tail.encode() in out for tail in SECRET_TAILS), out
    # Streamed in small chunks, as a large member is.
    filler = b'{"pad": "' + b"x" * 5000 + b'"}\n'
    stream = redactor.stream([filler, raw[:7], raw[7:], filler])
    streamed = b"".join(stream)
    assert stream.count >= 1 and not any(tail.encode() in streamed for tail in SECRET_TAILS)


@pytest.mark.parametrize("name", sorted(ESCAPED))
def test_raw_members_are_stored_without_tokens_behind_escapes(tmp_path: Path, name: str) -> None:
    from policyengine.evidence.stores.folder import LocalArchive

    store = LocalArchive(tmp_path / "evidence")
    raw = ('{"title": "x' + ESCAPED[name] + '"}').encode()
    change = {"repository": "acme/payments", "environment": "production", "commit": "a" * 40}
    ref = store.write_bundle(decision={"decision": "deny", "rules": []}, change=change, policy_filename="p.yml",
                             policy_bytes=b"version: 1\n", files=[], extra_members={"raw/github/pull.json": raw})
    members = _members(tmp_path / "evidence" / ref.path)
    assert not any(tail.encode() in members["raw/github/pull.json"] for tail in SECRET_TAILS)
    manifest = json.loads(members["manifest.json"])
    entry = next(e for e in manifest["members"] if e["path"] == "raw/github/pull.json")
    assert entry["redacted"]["count"] >= 1


def _pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_body(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if "-----" not in line)


@pytest.mark.parametrize("how", ["option", "variable", "env-prefix", "env-var-not-pem", "variable-env-prefix"])
def test_signing_key_errors_never_show_the_key(tmp_path: Path, how: str) -> None:
    pem = _pem()
    env = _env()
    args: list[str] = []
    if how == "option":  # the PEM text given where a file name belongs
        args = ["--signing-key", pem]
    elif how == "variable":
        env["POLICYENGINE_SIGNING_KEY"] = pem
    elif how == "env-prefix":  # env: followed by the key itself
        args = ["--signing-key", "env:" + pem]
    elif how == "env-var-not-pem":  # the variable holds the key's base64 body only
        env["PE_KEY"] = _pem_body(pem)
        args = ["--signing-key", "env:PE_KEY"]
    else:  # the variable holds env: followed by the key itself
        env["POLICYENGINE_SIGNING_KEY"] = "env:" + pem
    res = _check(tmp_path, *args, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout + res.stderr
    body = _pem_body(pem)
    assert body not in out and body[:20] not in out and "PRIVATE KEY-----" not in out, out
    assert "Traceback" not in out and "internal error" not in out
    assert len(res.stderr.strip().splitlines()) <= 2  # error + hint
    if how in ("option", "variable"):
        assert "the value of --signing-key is not a readable file name (not shown)" in res.stderr
    assert not _bundles(tmp_path)


# -- environment names --------------------------------------------------------------------------

BAD_NAMES = {
    "trailing-space": ("production ", "U+0020 SPACE at position 10"),
    "leading-space": (" production", "U+0020 SPACE at position 0"),
    "trailing-zwsp": ("production\u200b", "U+200B ZERO WIDTH SPACE at position 10"),
    "trailing-nbsp": ("production\u00a0", "U+00A0 NO-BREAK SPACE at position 10"),
    "leading-bom": ("\ufeffproduction", "U+FEFF ZERO WIDTH NO-BREAK SPACE at position 0"),
    "inner-zwsp": ("prod\u200buction", "U+200B ZERO WIDTH SPACE at position 4"),
    "inner-rtl-mark": ("produc\u200ftion", "U+200F RIGHT-TO-LEFT MARK at position 6"),
    "trailing-newline": ("production\n", "U+000A LINE FEED at position 10"),
    "inner-tab": ("prod\tuction", "U+0009 CHARACTER TABULATION at position 4"),
    "c1-control": ("production\u0085", "U+0085 NEXT LINE at position 10"),
    "line-separator": ("production\u2028", "U+2028 LINE SEPARATOR at position 10"),
    "ideographic-space": ("production\u3000", "U+3000 IDEOGRAPHIC SPACE at position 10"),
    "word-joiner": ("pro\u2060duction", "U+2060 WORD JOINER at position 3"),
}


@pytest.mark.parametrize("source", ["--environment", "POLICYENGINE_ENVIRONMENT", "change file"])
@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_an_invisible_or_padded_environment_name_is_invalid_input(tmp_path: Path, case: str, source: str) -> None:
    name, described = BAD_NAMES[case]
    if source == "--environment":
        res = _check(tmp_path, "--environment", name)
    elif source == "POLICYENGINE_ENVIRONMENT":
        res = _check(tmp_path, env=_env(POLICYENGINE_ENVIRONMENT=name))
    else:
        res = _check(tmp_path, change=_change(tmp_path, environment=name))
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert described in errors[0], errors[0]
    expected_source = {"--environment": "--environment", "POLICYENGINE_ENVIRONMENT": "POLICYENGINE_ENVIRONMENT",
                       "change file": "the change file's environment"}[source]
    assert expected_source in errors[0], errors[0]
    assert not _bundles(tmp_path) and not (tmp_path / "decision.json").exists()


@pytest.mark.parametrize("case", ["trailing-space", "trailing-zwsp", "leading-bom", "trailing-nbsp"])
def test_ci_environment_name_is_checked_as_the_gitlab_provider_reads_it(case: str) -> None:
    """The GitLab provider strips CI_ENVIRONMENT_NAME; the gate checks the variable as given."""
    from datetime import datetime, timezone

    from policyengine.errors import UsageError
    from policyengine.gate import CheckRequest, _check_environments

    name, described = BAD_NAMES[case]
    request = CheckRequest(policy_path="p.yml", now=datetime.now(timezone.utc), provider="gitlab",
                           env={"GITLAB_CI": "true", "CI_ENVIRONMENT_NAME": name})
    with pytest.raises(UsageError) as info:
        _check_environments(request, {"environment": name.strip()})
    assert "CI_ENVIRONMENT_NAME" in info.value.message and described in info.value.message


def test_inner_spaces_are_a_legal_environment_name(tmp_path: Path) -> None:
    policy = tmp_path / "p.yml"
    policy.write_text(POLICY.read_text().replace("environments: [production]", 'environments: ["prod eu"]'))
    res = _check(tmp_path, "--environment", "prod eu", policy=policy)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((tmp_path / "decision.json").read_text())["decision"] == "allow"


def test_policy_validate_refuses_an_invisible_environment_name(tmp_path: Path) -> None:
    policy = tmp_path / "p.yml"
    policy.write_text(POLICY.read_text().replace("environments: [production]",
                                                 'environments: ["production\\u200b"]'))
    res = _cli("policy", "validate", str(policy), cwd=tmp_path, env=_env())
    assert res.returncode == 2, res.stdout + res.stderr
    assert "applies_to.environments[0]" in res.stdout + res.stderr
    assert "U+200B ZERO WIDTH SPACE at position 10" in res.stdout + res.stderr


# -- a policy that does not apply is not an allow -----------------------------------------------


def test_a_policy_that_does_not_apply_exits_2_and_records_nothing(tmp_path: Path) -> None:
    res = _check(tmp_path, "--environment", "staging")
    assert res.returncode == 2, res.stdout + res.stderr
    assert ("policy soc2-production applies to production; this change deploys to staging: nothing to judge"
            in res.stderr)
    assert "ALLOW" not in res.stdout + res.stderr
    assert not _bundles(tmp_path) and not (tmp_path / "decision.json").exists()


def _opted_in(tmp: Path) -> Path:
    policy = tmp / "soc2-production.yml"
    policy.write_text(POLICY.read_text().replace("evidence:\n", "not_applicable: pass\nevidence:\n", 1))
    return policy


def test_opted_in_not_applicable_passes_but_is_never_an_allow(tmp_path: Path) -> None:
    res = _check(tmp_path, "--environment", "staging", policy=_opted_in(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "NOT APPLICABLE" in res.stdout and "ALLOW" not in res.stdout.replace("NOT APPLICABLE", "")
    doc = json.loads((tmp_path / "decision.json").read_text())
    assert doc["decision"] == "not_applicable" and doc["applies"] is False
    assert {r["status"] for r in doc["rules"]} == {"skipped"}
    junit = (tmp_path / "junit.xml").read_text()
    import xml.etree.ElementTree as ET

    root = ET.fromstring(junit)
    cases = list(root.iter("testcase"))
    assert cases and all(c.find("skipped") is not None for c in cases)
    assert all("applies to production" in (c.find("skipped").get("message") or "") for c in cases)  # type: ignore[union-attr]
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["decision"] == "not_applicable"
    # Recorded, so the population shows it.
    (bundle,) = _bundles(tmp_path)
    members = _members(bundle)
    assert json.loads(members["decision.json"])["decision"] == "not_applicable"
    assert _statement(members)["predicate"]["decision"] == "not_applicable"
    assert [r["decision"] for r in _index(tmp_path)] == ["not_applicable"]
    verify = _cli("evidence", "verify", "--archive", str(tmp_path / "evidence"), cwd=tmp_path, env=_env())
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_not_applicable_decision_validates_against_the_schemas(tmp_path: Path) -> None:
    from jsonschema import Draft202012Validator

    from policyengine.language.loader import load_schema

    res = _check(tmp_path, "--environment", "staging", "--simulate", policy=_opted_in(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads((tmp_path / "decision.json").read_text())
    assert list(Draft202012Validator(load_schema("decision.schema.json")).iter_errors(doc)) == []
    (bundle,) = _bundles(tmp_path)
    predicate = _statement(_members(bundle))["predicate"]
    schema = json.loads((REPO / "schemas" / "attestation-predicate.schema.json").read_text())
    assert [e.message for e in Draft202012Validator(schema).iter_errors(predicate)] == []


def test_the_previous_deploy_lookup_never_counts_a_not_applicable_record(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from fake_servers import new_signing_key, public_pem

    from policyengine.evidence.stores.history import VerifiedHistory
    from policyengine.evidence.format.signing import load_public_key

    key = new_signing_key()
    (tmp_path / "signing.pem").write_bytes(key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "signing.pub").write_bytes(public_pem(key))
    res = _check(tmp_path, "--environment", "staging", "--signing-key", str(tmp_path / "signing.pem"),
                 policy=_opted_in(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert '"not_applicable"' in (tmp_path / "evidence" / "index.jsonl").read_text("utf-8")
    history = VerifiedHistory(str(tmp_path / "evidence"), load_public_key(str(tmp_path / "signing.pub")))
    assert history.latest("acme/payments", "staging") is None


# -- the clock ----------------------------------------------------------------------------------

CI_MARKERS = [{"CI": "true"}, {"GITHUB_ACTIONS": "true"}, {"GITLAB_CI": "true"}, {"CI": "1"}]


@pytest.mark.parametrize("marker", CI_MARKERS, ids=lambda m: "=".join(next(iter(m.items()))))
@pytest.mark.parametrize("how", ["option", "variable"])
def test_a_clock_override_under_ci_is_refused(tmp_path: Path, marker: dict[str, str], how: str) -> None:
    # Friday 22:00 in New York, moved to a Thursday afternoon.
    env = _env(**marker)
    if how == "variable":
        env["POLICYENGINE_NOW"] = "2026-11-26T20:00:00Z"
        res = _check(tmp_path, env=env, now=None)
    else:
        res = _check(tmp_path, env=env, now="2026-11-26T20:00:00Z")
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "under CI" in errors[0], res.stderr
    assert not _bundles(tmp_path) and not (tmp_path / "decision.json").exists()


def test_simulate_has_no_environment_variable(tmp_path: Path) -> None:
    env = _env(CI="true", POLICYENGINE_SIMULATE="true", POLICYENGINE_NOW=NOW)
    res = _check(tmp_path, env=env, now=None)
    assert res.returncode == 2, res.stdout + res.stderr
    help_text = _cli("check", "--help", cwd=tmp_path, env=_env(CI="true", POLICYENGINE_NOW=NOW))
    assert help_text.returncode == 0 and "--simulate" in help_text.stdout
    assert "POLICYENGINE_SIMULATE" not in help_text.stdout


def test_a_simulation_under_ci_exits_1_and_is_marked_everywhere(tmp_path: Path) -> None:
    res = _check(tmp_path, "--simulate", env=_env(GITHUB_ACTIONS="true"))
    assert res.returncode == 1, res.stdout + res.stderr  # an allow, yet it cannot release a deploy
    assert "SIMULATED" in res.stdout
    doc = json.loads((tmp_path / "decision.json").read_text())
    assert doc["decision"] == "allow" and doc["simulated"] is True and doc["clock"]["source"] == "simulated"
    import xml.etree.ElementTree as ET

    root = ET.fromstring((tmp_path / "junit.xml").read_text())
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["simulated"] == "true" and "SIMULATED" in (root.find("testsuite").get("name") or "")  # type: ignore[union-attr]
    (bundle,) = _bundles(tmp_path)
    members = _members(bundle)
    assert json.loads(members["manifest.json"])["simulated"] is True
    predicate = _statement(members)["predicate"]
    assert predicate["simulated"] is True and predicate["clock"]["source"] == "simulated"
    assert _index(tmp_path)[0]["simulated"] is True


def test_a_simulation_outside_ci_exits_as_usual(tmp_path: Path) -> None:
    res = _check(tmp_path, "--simulate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((tmp_path / "decision.json").read_text())["simulated"] is True


def test_every_bundle_records_the_wall_clock_and_its_source(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    before = datetime.now(timezone.utc).replace(microsecond=0)
    res = _check(tmp_path, now=None)  # the system clock: whatever the window says
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    doc = json.loads((tmp_path / "decision.json").read_text())
    assert doc["clock"]["source"] == "system" and doc["simulated"] is False
    wall = datetime.fromisoformat(doc["clock"]["wall_time"].replace("Z", "+00:00"))
    assert before <= wall <= after
    (bundle,) = _bundles(tmp_path)
    members = _members(bundle)
    assert _statement(members)["predicate"]["clock"] == doc["clock"]
    assert json.loads(members["manifest.json"])["created_at"] == doc["clock"]["wall_time"]
    # An override outside CI is allowed, and recorded as one.
    other = tmp_path / "other"
    other.mkdir()
    res = _check(other)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads((other / "decision.json").read_text())
    assert doc["clock"]["source"] == "override" and doc["evaluated_at"] == NOW


@pytest.mark.parametrize(("created", "evaluated", "warned"), [
    ("2026-11-28T03:00:00Z", "2026-11-26T20:00:00Z", "after"),  # created long after: moved back in time
    ("2026-11-26T19:00:00Z", "2026-11-26T20:00:00Z", "before"),  # created before it was evaluated
    ("2026-11-26T20:14:00Z", "2026-11-26T20:00:00.5Z", None),
    ("2026-11-26T20:00:00Z", "2026-11-26T20:00:00.900000Z", None),
])
def test_clock_warning_flags_a_creation_time_far_from_the_evaluation(created: str, evaluated: str,
                                                                    warned: str | None) -> None:
    from policyengine.evidence.format.bundle import clock_warning

    message = clock_warning(created, evaluated)
    if warned is None:
        assert message is None
    else:
        assert message is not None and warned in message and created in message


def test_verify_inspection_warns_of_an_overridden_clock(tmp_path: Path) -> None:
    from policyengine.evidence.format.bundle import inspect_bundle

    res = _check(tmp_path)  # evaluated at NOW (2026), created now: far apart
    assert res.returncode == 0, res.stdout + res.stderr
    (bundle,) = _bundles(tmp_path)
    with zipfile.ZipFile(bundle) as zf:
        found = inspect_bundle(zf, bundle.stem)
    assert found.problems == []
    assert len(found.warnings) == 1 and NOW in found.warnings[0].message


def test_validate_and_replay_are_unaffected_by_ci(tmp_path: Path) -> None:
    res = _check(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    bundle_id = _index(tmp_path)[0]["id"]
    ci = _env(CI="true", POLICYENGINE_NOW=NOW)
    replayed = _cli("evidence", "replay", "--archive", str(tmp_path / "evidence"), bundle_id, cwd=tmp_path, env=ci)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    validated = _cli("policy", "validate", str(POLICY), cwd=tmp_path, env=ci)
    assert validated.returncode == 0, validated.stdout + validated.stderr


@pytest.mark.parametrize("marker", [{"JENKINS_URL": "https://jenkins.example.com/"}, {"TF_BUILD": "True"},
                                    {"BUILDKITE": "true"}, {"CIRCLECI": "true"}])
def test_a_clock_override_is_refused_in_other_cis_that_do_not_set_ci(tmp_path: Path, marker: dict[str, str]) -> None:
    """Jenkins and Azure Pipelines set no CI variable: their own markers count as CI too."""
    res = _check(tmp_path, env={**_env(), **marker})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "refusing to evaluate a deploy at a given time under CI" in res.stderr

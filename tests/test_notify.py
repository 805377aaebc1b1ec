"""Notifications: every recorded production decision is posted to a webhook, after the evidence.

A loopback server started by each test receives the POST (``webhook_server.Webhook``). The
webhook URL is a secret: it never reaches an output or the evidence. A failed notification is
appended to the evaluation's chain as a ``notification-failure`` record that ``evidence verify``
accepts; with ``notify: {required: true}`` it also appends a ``not_deployed`` outcome and
``check`` exits 3.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from conftest import FIXTURES
from webhook_server import Webhook, closed_port

from policyengine.cli import main
from policyengine.evidence.format.records import is_deployment, latest_deploy

ACC = FIXTURES / "acceptance"
ALLOW_AT = "2026-11-24T15:00:00Z"
DENY_AT = "2026-11-26T15:00:00Z"  # Thanksgiving: the deploy window denies
TOKEN = "ghp_" + "N0tifyT0kenInPrTitle0123456789abcd"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(ACC / "workspace", target)
    return target


def write_policy(tmp_path: Path, notify: Any = None, **top: Any) -> Path:
    doc = yaml.safe_load((ACC / "policy.yml").read_text())
    if notify is not None:
        doc["notify"] = notify
    doc.update(top)
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_change(tmp_path: Path, title: str = f"PAY-101: add refund endpoint {TOKEN}", **over: Any) -> Path:
    doc = yaml.safe_load((ACC / "change.yml").read_text())
    doc["pull_request"]["title"] = title
    doc.update(over)
    path = tmp_path / "change.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_check(tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], *extra: str, policy: Path,
              change: Path | None = None, now: str = ALLOW_AT) -> tuple[int, str, str]:
    args = ["check", "--policy", str(policy), "--change", str(change or write_change(tmp_path)),
            "--workspace", str(ws), "--now", now, "--evidence-dir", str(tmp_path / "evidence"),
            "--json", str(tmp_path / "decision.json"), "--junit", str(tmp_path / "junit.xml"), *extra]
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("POLICYENGINE_HTTP_RETRIES", "1")  # bounded and quick: two attempts at most
    return monkeypatch


def index(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "evidence" / "index.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def record_doc(tmp_path: Path, line: dict[str, Any]) -> dict[str, Any]:
    with zipfile.ZipFile(tmp_path / "evidence" / line["path"]) as zf:
        doc: dict[str, Any] = json.loads(zf.read("record.json"))
    return doc


def every_output(tmp_path: Path, out: str, err: str) -> dict[str, str]:
    """Console, JSON, JUnit, the index and every member of every bundle written."""
    texts = {"stdout": out, "stderr": err, "json": (tmp_path / "decision.json").read_text(),
             "junit": (tmp_path / "junit.xml").read_text(),
             "index": (tmp_path / "evidence" / "index.jsonl").read_text()}
    for bundle in (tmp_path / "evidence" / "bundles").rglob("*.zip"):
        with zipfile.ZipFile(bundle) as zf:
            for name in zf.namelist():
                texts[f"{bundle.name}:{name}"] = zf.read(name).decode("utf-8", errors="replace")
    return texts


# -- the payloads -----------------------------------------------------------------------------------


def test_slack_payload_carries_verdict_change_deployer_and_bundle_with_secrets_redacted(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    with Webhook() as hook:
        env.setenv("DEPLOY_HOOK", hook.url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK"})
        code, out, err = run_check(tmp_path, ws, capsys, policy=policy)
    assert code == 0, out + err
    assert len(hook.posts) == 1
    post = hook.posts[0]
    assert post.path == f"/services/{hook.secret}"
    assert post.headers["Content-Type"].startswith("application/json")
    assert not {"Authorization", "PRIVATE-TOKEN"} & set(post.headers)  # the URL is the credential; nothing else
    body = post.json()
    assert set(body) == {"text", "blocks"}
    assert isinstance(body["blocks"], list) and body["blocks"]
    bundle_id = json.loads((tmp_path / "decision.json").read_text())["evidence"]["bundle_id"]
    raw = post.body.decode("utf-8")
    for expected in ("ALLOW", "acme/payments", "production", "9f1c2d3", "dana", bundle_id, "#42",
                     "acceptance-production"):
        assert expected in body["text"] or expected in json.dumps(body["blocks"]), expected
    assert TOKEN not in raw and "[REDACTED]" in raw
    assert "notify: sent" in out


def test_json_payload_is_a_generic_document(tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str],
                                            env: pytest.MonkeyPatch) -> None:
    with Webhook() as hook:
        env.setenv("DEPLOY_HOOK", hook.url)
        policy = write_policy(tmp_path, [{"url_env": "DEPLOY_HOOK", "format": "json"}])
        code, out, err = run_check(tmp_path, ws, capsys, policy=policy, now=DENY_AT)
    assert code == 1, out + err  # a denial is notified too
    body = hook.posts[0].json()
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert body["verdict"] == "deny"
    assert body["repository"] == "acme/payments" and body["environment"] == "production"
    assert body["commit"] == "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6"
    assert body["deployer"] == "dana"
    assert body["pull_request"]["number"] == 42
    assert body["pull_request"]["title"] == "PAY-101: add refund endpoint [REDACTED]"
    assert body["bundle_id"] == decision["evidence"]["bundle_id"]
    assert body["bundle_sha256"] == decision["evidence"]["sha256"]
    assert body["policy"] == {"name": "acceptance-production", "sha256": decision["policy"]["sha256"]}
    assert (body["advisory"], body["simulated"], body["emergency"]) == (False, False, False)
    assert {"id": "deploy-window", "status": "fail"} in body["rules"]
    assert body["exit_code"] == 1


def test_slack_text_from_the_change_cannot_ping_or_link(tmp_path: Path, ws: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       env: pytest.MonkeyPatch) -> None:
    with Webhook() as hook:
        env.setenv("DEPLOY_HOOK", hook.url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK"})
        change = write_change(tmp_path, title="<!channel> see <https://evil.example/login|the runbook> & more",
                              deployer="<@U0123>")
        code, out, err = run_check(tmp_path, ws, capsys, policy=policy, change=change)
    assert code in (0, 1), out + err
    raw = hook.posts[0].body.decode("utf-8")
    for bad in ("<!channel>", "<https://evil.example", "<@U0123>"):
        assert bad not in raw
    assert "&lt;!channel&gt;" in raw and "&amp; more" in raw


def test_flags_are_marked_in_both_formats(tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str],
                                         env: pytest.MonkeyPatch) -> None:
    with Webhook() as slack, Webhook() as generic:
        env.setenv("SLACK_HOOK", slack.url)
        env.setenv("GENERIC_HOOK", generic.url)
        policy = write_policy(tmp_path, [{"url_env": "SLACK_HOOK"}, {"url_env": "GENERIC_HOOK", "format": "json"}])
        code, out, err = run_check(tmp_path, ws, capsys, "--advisory", "--simulate", policy=policy, now=DENY_AT)
    assert code == 0, out + err
    assert "ADVISORY" in slack.posts[0].json()["text"] and "SIMULATED" in slack.posts[0].json()["text"]
    body = generic.posts[0].json()
    assert (body["advisory"], body["simulated"], body["verdict"]) == (True, True, "deny")


# -- the webhook URL is a secret -----------------------------------------------------------------


def test_the_webhook_url_appears_in_no_output_json_junit_or_bundle(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    with Webhook() as policy_hook, Webhook() as cli_hook, Webhook() as env_hook:
        env.setenv("DEPLOY_HOOK", policy_hook.url)
        env.setenv("OTHER_HOOK", env_hook.url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK"})
        # A hostile change quotes every URL in use (plain and URL-encoded) where outputs show it.
        urls = [policy_hook.url, cli_hook.url, env_hook.url]
        change = write_change(tmp_path, title=" ".join(urls),
                              pipeline={"provider": "local", "id": "1", "url": quote(cli_hook.url, safe="")})
        code, out, err = run_check(tmp_path, ws, capsys, "--notify", cli_hook.url, "--notify", "env:OTHER_HOOK",
                                   policy=policy, change=change)
    assert code == 0, out + err
    assert [len(h.posts) for h in (policy_hook, cli_hook, env_hook)] == [1, 1, 1]
    for where, text in every_output(tmp_path, out, err).items():
        for url in urls:
            for form in (url, quote(url, safe=""), url.split("://", 1)[1]):
                assert form not in text, f"{where} holds a webhook URL"
    for hook in (policy_hook, cli_hook, env_hook):
        raw = hook.posts[0].body.decode("utf-8")
        assert all(u not in raw for u in urls)


def test_notify_specs_that_are_no_target_are_refused_without_echoing_them(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    policy = write_policy(tmp_path)
    for spec in ("htps://hooks.example.com/services/T0/B0/s3cr3tvalue", "env:", "env:not a name",
                 "http://hooks.example.com/services/T0/B0/s3cr3tvalue"):
        code, out, err = run_check(tmp_path, ws, capsys, "--notify", spec, policy=policy)
        assert code == 2, (spec, out, err)
        assert "--notify #1" in err and "env:NAME" in err
        assert "s3cr3tvalue" not in out + err
    assert not (tmp_path / "evidence" / "index.jsonl").exists()  # refused before anything was judged


def test_slack_webhook_urls_and_webhook_variables_are_redacted_anywhere() -> None:
    from policyengine.redact import EvidenceRedactor, Redactor

    slack = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    assert "XXXXXXXXXXXXXXXX" not in Redactor().text(f"posted to {slack} ok")
    data, count = EvidenceRedactor().redact(f"log: {slack}\n".encode())
    assert count == 1 and b"XXXXXXXXXXXXXXXX" not in data
    env = {"DEPLOY_WEBHOOK": "https://chat.example.com/hooks/abcdef123456",
           "TEAM_WEBHOOK_URL": "https://chat.example.com/hooks/zyxwvu987654"}
    shown = Redactor.from_env(env).text(" ".join(env.values()))
    assert "abcdef123456" not in shown and "zyxwvu987654" not in shown


# -- failures -------------------------------------------------------------------------------------


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "signing.pem", tmp_path / "signing.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _verify(tmp_path: Path, pub: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(["evidence", "verify", "--archive", str(tmp_path / "evidence"), "--all", "--public-key", str(pub)])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out + err


@pytest.mark.parametrize("failure", ["http-500", "connection-refused", "unset-variable"])
@pytest.mark.parametrize(("now", "expected"), [(ALLOW_AT, 0), (DENY_AT, 1)])
def test_a_failed_notification_is_a_linked_record_verify_accepts_and_the_exit_is_the_decisions(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch,
        failure: str, now: str, expected: int) -> None:
    priv, pub = _keys(tmp_path)
    with Webhook(default_status=500) as hook:
        url = hook.url if failure == "http-500" else f"http://127.0.0.1:{closed_port()}/services/{hook.secret}"
        if failure != "unset-variable":
            env.setenv("DEPLOY_HOOK", url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK"})
        code, out, err = run_check(tmp_path, ws, capsys, "--signing-key", str(priv), policy=policy, now=now)
    assert code == expected, out + err
    if failure == "http-500":
        assert len(hook.posts) == 2  # one retry (POLICYENGINE_HTTP_RETRIES=1), then it gives up
    lines = index(tmp_path)
    assert [line.get("kind") for line in lines] == [None, "notification-failure"]
    evaluation, failed = lines
    assert failed["about_id"] == evaluation["id"] and failed["about_sha256"] == evaluation["sha256"]
    assert failed["decision"] == "failed"
    doc = record_doc(tmp_path, failed)
    assert doc["kind"] == "notification-failure" and doc["target"] == "DEPLOY_HOOK"
    assert doc["required"] is False and doc["format"] == "slack"
    cause = {"http-500": "HTTP 500", "connection-refused": "connection failed",
             "unset-variable": "DEPLOY_HOOK is not set"}[failure]
    assert cause in doc["cause"]
    assert (doc["by"], doc["by_verified"], doc["by_source"]) == ("policyengine", True, "gate")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json.loads((Path(__file__).resolve().parents[1] / "schemas" / "record.schema.json")
                                        .read_text()))
    assert "notify: FAILED" in out and failed["id"] in out
    for where, text in every_output(tmp_path, out, err).items():
        assert hook.secret not in text, where
    verified, report = _verify(tmp_path, pub, capsys)
    assert verified == 0, report
    # Not required: the evaluation still counts as what it decided.
    assert is_deployment(evaluation, lines) is (expected == 0)


def test_a_required_notification_that_fails_appends_not_deployed_and_exits_3(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    priv, pub = _keys(tmp_path)
    with Webhook(default_status=500) as hook:
        env.setenv("DEPLOY_HOOK", hook.url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK", "required": True})
        code, out, err = run_check(tmp_path, ws, capsys, "--signing-key", str(priv), policy=policy)
    assert code == 3, out + err
    lines = index(tmp_path)
    assert [(line.get("kind"), line["decision"]) for line in lines] == [
        (None, "allow"), ("notification-failure", "failed"), ("outcome", "not_deployed")]
    evaluation, failed, outcome = lines
    assert outcome["about_id"] == evaluation["id"] and outcome["about_sha256"] == evaluation["sha256"]
    doc = record_doc(tmp_path, outcome)
    assert doc["by"] == "policyengine (notification failed)"
    assert (doc["by_verified"], doc["by_source"]) == (True, "gate")
    assert failed["id"] in doc["note"]
    assert record_doc(tmp_path, failed)["required"] is True
    # The population and the next change range stay true: this allow is no deployment.
    assert not is_deployment(evaluation, lines)
    assert latest_deploy(lines, "acme/payments", "production") is None
    assert "exit 3" in out
    verified, report = _verify(tmp_path, pub, capsys)
    assert verified == 0, report
    with pytest.raises(SystemExit) as info:
        main(["evidence", "show", "--archive", str(tmp_path / "evidence"), "--public-key", str(pub), evaluation["id"]])
    shown, _ = capsys.readouterr()
    assert info.value.code == 0, shown
    assert "notification-failure FAILED (DEPLOY_HOOK: HTTP 500" in shown
    assert "NOT_DEPLOYED" in shown and "written by the gate" in shown


def test_a_required_notification_that_succeeds_releases_the_deploy(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    with Webhook(statuses=[503]) as hook:  # a transient error, retried within the bound
        env.setenv("DEPLOY_HOOK", hook.url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK", "required": True})
        code, out, err = run_check(tmp_path, ws, capsys, policy=policy)
    assert code == 0, out + err
    assert len(hook.posts) == 2
    assert [line.get("kind") for line in index(tmp_path)] == [None]


def test_a_redirecting_webhook_is_a_failure_and_not_followed(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    with Webhook(default_status=307) as hook:
        env.setenv("DEPLOY_HOOK", hook.url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK", "required": True})
        code, out, err = run_check(tmp_path, ws, capsys, policy=policy)
    assert code == 3, out + err
    assert len(hook.posts) == 1
    assert "HTTP 307" in record_doc(tmp_path, index(tmp_path)[1])["cause"]


def test_a_hanging_webhook_is_cut_off_by_the_deadline_and_recorded(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    import time

    env.setenv("POLICYENGINE_HTTP_RETRIES", "0")
    env.setenv("POLICYENGINE_HTTP_DEADLINE", "1")
    with Webhook(delay=6) as hook:
        env.setenv("DEPLOY_HOOK", hook.url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK"})
        started = time.monotonic()
        code, out, err = run_check(tmp_path, ws, capsys, policy=policy)
        took = time.monotonic() - started
    assert code == 0, out + err
    assert took < 5, f"the gate waited {took:.1f} s for the webhook"
    cause = record_doc(tmp_path, index(tmp_path)[1])["cause"]
    assert "1 s" in cause and hook.secret not in cause


def test_a_decision_whose_evidence_failed_is_still_notified_with_no_bundle(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "evidence"
    blocked.write_text("a file where the archive should be\n")
    with Webhook() as hook:
        env.setenv("DEPLOY_HOOK", hook.url)
        policy = write_policy(tmp_path, {"url_env": "DEPLOY_HOOK", "format": "json", "required": True})
        code, out, err = run_check(tmp_path, ws, capsys, policy=policy)
    assert code == 3, out + err  # the evidence could not be recorded: the gate denies
    body = hook.posts[0].json()
    assert body["verdict"] == "deny" and body["bundle_id"] is None and body["evidence_error"]


# -- which decisions ------------------------------------------------------------------------------


def test_not_applicable_decisions_are_not_notified_unless_the_policy_asks(
        tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], env: pytest.MonkeyPatch) -> None:
    change = write_change(tmp_path, environment="staging")
    with Webhook() as quiet, Webhook() as loud:
        env.setenv("QUIET_HOOK", quiet.url)
        env.setenv("LOUD_HOOK", loud.url)
        policy = write_policy(tmp_path, [{"url_env": "QUIET_HOOK", "required": True},
                                         {"url_env": "LOUD_HOOK", "format": "json", "include_not_applicable": True}],
                              not_applicable="pass")
        code, out, err = run_check(tmp_path, ws, capsys, policy=policy, change=change)
    assert code == 0, out + err
    assert quiet.posts == []
    assert loud.posts[0].json()["verdict"] == "not_applicable"


# -- the policy key -------------------------------------------------------------------------------


def _validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(["policy", "validate", str(path)])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out + err


@pytest.mark.parametrize("notify", [
    {"url_env": "DEPLOY_HOOK"},
    {"url_env": "DEPLOY_HOOK", "format": "json", "required": True, "include_not_applicable": False},
    [{"url_env": "A_HOOK"}, {"url_env": "B_HOOK", "format": "slack"}],
])
def test_valid_notify_keys_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], notify: Any) -> None:
    code, text = _validate(write_policy(tmp_path, notify), capsys)
    assert code == 0, text


@pytest.mark.parametrize(("notify", "where", "words"), [
    ({"url": "https://hooks.slack.com/services/T/B/x"}, "notify", "url_env"),
    ({"url_env": "DEPLOY_HOOK", "format": "teams"}, "notify.format", "slack"),
    ({"url_env": "not a name"}, "notify.url_env", "environment variable name"),
    ({"url_env": "DEPLOY_HOOK", "required": "yes"}, "notify.required", "true or false"),
    ([], "notify", ""),
    ([{"url_env": "A_HOOK"}, {"url_env": "A_HOOK"}], "notify[1].url_env", "already"),
])
def test_invalid_notify_keys_are_named_with_file_line_col(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          notify: Any, where: str, words: str) -> None:
    path = write_policy(tmp_path, notify)
    code, text = _validate(path, capsys)
    assert code == 2, text
    line = next(ln for ln in text.splitlines() if f" {where}:" in ln or f":{where}:" in ln or f" {where} " in ln)
    assert line.startswith(f"{path}:"), line
    file_line_col = line[len(str(path)) + 1:].split(":")
    assert file_line_col[0].isdigit() and file_line_col[1].isdigit(), line
    assert words.lower() in line.lower(), line


# -- policy diff ------------------------------------------------------------------------------------


def test_policy_diff_directions_of_notify() -> None:
    from policyengine.language.policydiff import (
        NEUTRAL,
        STRONGER,
        UNDECIDED,
        WEAKER,
        diff,
        weakened,
    )

    base = yaml.safe_load((ACC / "policy.yml").read_text())

    def with_notify(notify: Any) -> dict[str, Any]:
        return {**base, "notify": notify} if notify is not None else dict(base)

    required = {"url_env": "A_HOOK", "required": True}
    two = [required, {"url_env": "B_HOOK"}]

    def directions(old: Any, new: Any) -> list[str]:
        return [f.direction for f in diff(with_notify(old), with_notify(new)) if f.path.startswith("notify")]

    assert directions(required, {"url_env": "A_HOOK", "required": False}) == [WEAKER]
    assert directions(required, {"url_env": "A_HOOK"}) == [WEAKER]  # required defaults to false
    assert directions({"url_env": "A_HOOK"}, required) == [STRONGER]
    assert directions(two, [required]) == [WEAKER]  # a target removed
    assert directions(two, None) == [WEAKER, WEAKER]  # every target removed
    assert directions([required], two) == [STRONGER]  # a target added
    assert directions(required, [required]) == []  # one target written as a list: the same
    assert directions({"url_env": "A_HOOK", "include_not_applicable": True}, {"url_env": "A_HOOK"}) == [WEAKER]
    assert directions({"url_env": "A_HOOK"}, {"url_env": "A_HOOK", "format": "json"}) == [UNDECIDED]
    renamed = diff(with_notify(required), with_notify({"url_env": "C_HOOK", "required": True}))
    assert weakened(renamed)  # the old target is removed
    assert NEUTRAL not in directions(required, {"url_env": "A_HOOK", "required": False})
    text = " ".join(f.message for f in diff(with_notify(two), with_notify([required])))
    assert "B_HOOK" in text


def test_policy_explain_mentions_the_notifications() -> None:
    from policyengine.language.explain import matrix, render
    from policyengine.language.policy import parse_policy

    doc = yaml.safe_load((ACC / "policy.yml").read_text())
    doc["notify"] = [{"url_env": "DEPLOY_HOOK", "required": True}, {"url_env": "AUDIT_HOOK", "format": "json"}]
    policy = parse_policy(yaml.safe_dump(doc).encode(), file="p.yml")
    data = matrix(policy)
    assert "DEPLOY_HOOK" in data["notifications"] and "required" in data["notifications"]
    for fmt in ("md", "html"):
        text = render(policy, fmt)
        assert "DEPLOY_HOOK" in text and "AUDIT_HOOK" in text
    plain = parse_policy((ACC / "policy.yml").read_bytes(), file="p.yml")
    assert "not notified" in matrix(plain)["notifications"]

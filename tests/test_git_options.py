"""Git runs only what the gate says, never what the input or the workspace says (issue 15, class 2).

* Argument injection: a URL, ref or path that starts with ``-`` is refused wherever a git source
  is parsed (``--policy``, ``--waivers``, ``extends``; ``check``, ``policy validate``,
  ``policy diff``, ``policy explain``, ``policy test``); only https, ssh and file transports (and
  http to this host) are allowed, never ``ext::`` or ``fd::``.
* The workspace repository's own settings: replace objects, ``remote.origin.url``,
  ``remote.origin.uploadpack``, a tampered object store: none of them changes what is read or
  runs a program; the bytes read are hashed and compared with the recorded blob id.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from ci_git import STRICT, WEAK, ci_env, clean_env, deploy_world, git, run_check

from policyengine.errors import PolicySourceError, UsageError
from policyengine.language.policysource import parse_spec


def cli(tmp: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd or tmp, capture_output=True,
                          text=True, timeout=120, check=False, env=clean_env(**(env or {})))


def hostile_specs(marker: Path) -> list[str]:
    """Git sources that would run ``touch marker`` if a value reached git as an option or a helper."""
    cmd = f"touch${{IFS}}{marker};false"
    return [
        f"git+--upload-pack={cmd}#.:base.yml",
        f"git+-u{cmd}#main:base.yml",
        f"git+--config=core.sshCommand=touch {marker}#main:base.yml",
        f"git+ext::sh -c touch% {marker}#main:base.yml",
        f"git+fd::17#main:base.yml",
        f"git+file:///srv/p.git#--upload-pack={cmd}:base.yml",
        f"git+file:///srv/p.git#main:--output={marker}",
        f"git:--upload-pack={cmd}:base.yml",
        f"git:main:-{marker.name}",
        f"git+git://example.com/p.git#main:base.yml",
        f"git+http://example.com/p.git#main:base.yml",
        f"git+ftp://example.com/p.git#main:base.yml",
    ]


@pytest.mark.parametrize("index", range(12))
def test_an_option_shaped_extends_never_runs_on_policy_validate(tmp_path: Path, index: int) -> None:
    marker = tmp_path / "PWNED"
    spec = hostile_specs(marker)[index]
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "policy.yml").write_text(f"version: 1\nname: p\nextends: {json.dumps(spec)}\nrules: []\n",
                                         encoding="utf-8")
    res = cli(tmp_path, "policy", "validate", "policy.yml")
    assert not marker.exists(), "git ran a command the policy named"
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "policy.yml:3" in out and "extends" in out and "Traceback" not in out


@pytest.mark.parametrize("index", range(12))
@pytest.mark.parametrize("where", ["check --policy", "check --waivers", "policy diff", "policy explain"])
def test_option_shaped_git_sources_are_refused_everywhere(tmp_path: Path, index: int, where: str) -> None:
    marker = tmp_path / "PWNED"
    spec = hostile_specs(marker)[index]
    world = deploy_world(tmp_path, "push")
    policy = world["work"] / "policies" / "prod.yml"
    if where == "check --policy":
        code, _, out = run_check(world, spec)
    elif where == "check --waivers":
        code, _, out = run_check(world, str(policy), "--waivers", spec)
    elif where == "policy diff":
        res = cli(tmp_path, "policy", "diff", str(policy), spec, cwd=world["work"])
        code, out = res.returncode, res.stdout + res.stderr
    else:
        res = cli(tmp_path, "policy", "explain", spec, cwd=world["work"])
        code, out = res.returncode, res.stdout + res.stderr
    assert not marker.exists(), "git ran a command the input named"
    assert code == 2, out
    assert "Traceback" not in out
    assert any(s in out for s in ("starts with '-'", "is not allowed", "remote helper", "not a git ref"))


@pytest.mark.parametrize("spec", ["git+-oProxyCommand=x#main:p.yml", "git+file:///x#-b:p.yml",
                                  "git+file:///x#main:-p.yml", "git:-HEAD:p.yml", "git:main:-p.yml",
                                  "git+ext::ls#main:p.yml", "git+fd::0#main:p.yml", "git+FD::0#main:p.yml",
                                  "git+transport::x#main:p.yml", "git+git://h/x#main:p.yml",
                                  "git+http://example.com/x#main:p.yml", "git+http://10.0.0.1/x#main:p.yml"])
def test_parse_spec_refuses_option_shaped_values_and_other_transports(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_spec(spec)


@pytest.mark.parametrize("spec", ["git+https://h/x.git#main:p.yml", "git+ssh://git@h/x.git#main:p.yml",
                                  "git+git@h:x.git#main:p.yml", "git+file:///srv/x.git#main:p.yml",
                                  "git+/srv/x.git#main:p.yml", "git+http://127.0.0.1:8080/x#main:p.yml",
                                  "git+http://localhost/x#main:p.yml", "git+http://[::1]:80/x#main:p.yml"])
def test_parse_spec_accepts_the_allowed_transports(spec: str) -> None:
    assert parse_spec(spec)[2] == "p.yml"


def test_http_to_this_host_only_adds_http_to_the_allowed_protocols() -> None:
    from policyengine.workspace import gitsafe

    assert gitsafe.allowed_protocols("http://127.0.0.1:9/x", "t") == "https:ssh:file:http"
    assert gitsafe.allowed_protocols("https://h/x", "t") == "https:ssh:file"


# -- the workspace repository's own settings ---------------------------------------------------


def _replace_strict_blob(world: dict) -> tuple[str, str]:
    """`git replace` main's policy blob in the checkout with a weak one; (strict id, weak id)."""
    work = world["work"]
    strict = git(work, "rev-parse", f"{world['strict']}:policies/prod.yml")
    weak_file = world["tmp"] / "weak.yml"
    weak_file.write_text(WEAK, encoding="utf-8")
    weak = git(work, "hash-object", "-w", str(weak_file))
    git(work, "replace", "-f", strict, weak)
    assert git(work, "cat-file", "blob", strict) == WEAK.strip()  # git itself now lies
    return strict, weak


@pytest.mark.parametrize("ci", [None, "github", "gitlab"])
def test_replace_objects_in_the_workspace_do_not_change_the_policy_read(tmp_path: Path, ci: str | None) -> None:
    import hashlib

    world = deploy_world(tmp_path, "request")
    strict_blob, _ = _replace_strict_blob(world)
    code, doc, out = run_check(world, "git:origin/main:policies/prod.yml", env=ci_env(world, ci) if ci else None)
    assert (code, doc.get("decision")) == (1, "deny"), out
    assert doc["policy"]["source"]["blob"] == strict_blob
    assert doc["policy"]["sha256"] == hashlib.sha256(STRICT.encode()).hexdigest()


@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_under_ci_the_remote_is_the_platforms_not_the_workspace_config(tmp_path: Path, platform: str) -> None:
    world = deploy_world(tmp_path, "request")
    evil = tmp_path / "evil"
    git(tmp_path, "clone", "-q", "--bare", str(world["origin"]), str(evil))
    git(evil, "update-ref", "refs/heads/main", world["weak"])  # the other repository's main is weak
    marker = tmp_path / "PWNED"
    git(world["work"], "config", "remote.origin.url", str(evil))
    git(world["work"], "config", "remote.origin.uploadpack", f"touch {marker}; git-upload-pack")
    git(world["work"], "config", "core.sshCommand", f"touch {marker}; ssh")
    git(world["work"], "config", "core.fsmonitor", f"touch {marker}")
    git(world["work"], "config", f"url.file://{evil}.insteadOf", f"file://{world['origin']}")
    git(world["work"], "config", "credential.helper", f"!touch {marker}")
    code, doc, out = run_check(world, "git:origin/main:policies/prod.yml", env=ci_env(world, platform))
    assert not marker.exists(), "a program the workspace's config named ran"
    assert (code, doc.get("decision")) == (1, "deny"), out
    assert doc["policy"]["source"]["commit"] == world["strict"]


def test_outside_ci_an_uploadpack_in_the_workspace_config_never_runs(tmp_path: Path) -> None:
    world = deploy_world(tmp_path, "request")
    marker = tmp_path / "PWNED"
    git(world["work"], "config", "remote.origin.uploadpack", f"touch {marker}; git-upload-pack")
    # A remote named by the URL itself: git would take its uploadpack for a fetch of that URL.
    git(world["work"], "config", f"remote.file://{world['origin']}.uploadpack", f"touch {marker}; git-upload-pack")
    git(world["work"], "config", "core.hooksPath", str(tmp_path / "hooks"))
    git(world["work"], "config", "core.fsmonitor", f"touch {marker}")
    code, doc, out = run_check(world, "git:origin/main:policies/prod.yml")
    assert not marker.exists(), "a program the workspace's config named ran"
    assert doc.get("decision") == "deny", out


def test_an_object_whose_bytes_do_not_hash_to_its_id_is_refused(tmp_path: Path) -> None:
    """A tampered object store hands back other bytes under the strict blob's id: refused."""
    from policyengine.workspace import gitsafe

    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "p.yml").write_text(STRICT, encoding="utf-8")
    blob = git(tmp_path, "hash-object", "-w", "p.yml")
    loose = tmp_path / ".git" / "objects" / blob[:2] / blob[2:]
    loose.chmod(0o644)
    loose.write_bytes(zlib.compress(f"blob {len(WEAK)}\0{WEAK}".encode()))
    assert git(tmp_path, "cat-file", "blob", blob) == WEAK.strip()  # git returns the forged bytes
    env = gitsafe.environment({"PATH": "/usr/bin:/bin"})
    with pytest.raises(PolicySourceError, match="do not hash to it"):
        gitsafe.read_object(tmp_path, "blob", blob, env)


def test_git_runs_without_the_callers_git_variables() -> None:
    from policyengine.workspace import gitsafe

    env = gitsafe.environment({"GIT_DIR": "/x", "GIT_CONFIG_PARAMETERS": "'core.pager'='x'", "GIT_SSH": "x",
                               "GIT_SSH_COMMAND": "touch x", "GIT_EXEC_PATH": "/x", "SSH_ASKPASS": "x", "PATH": "/bin"})
    assert env["GIT_SSH_COMMAND"] == "ssh" and env["GIT_NO_REPLACE_OBJECTS"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and env["GIT_CONFIG_NOSYSTEM"] == "1"
    for name in ("GIT_DIR", "GIT_CONFIG_PARAMETERS", "GIT_SSH", "GIT_EXEC_PATH", "SSH_ASKPASS"):
        assert name not in env
    assert "ext" not in env["GIT_ALLOW_PROTOCOL"] and "fd" not in env["GIT_ALLOW_PROTOCOL"]


def test_the_ci_token_reaches_git_as_a_header_in_its_environment() -> None:
    from policyengine.workspace import gitsafe

    env = gitsafe.auth_header("https://github.com/acme/payments", "x-access-token", "ghs_secret")
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")
    assert "ghs_secret" not in env["GIT_CONFIG_KEY_0"]
    from policyengine.language.policysource import platform_remote

    url, header, secrets = platform_remote({"CI_REPOSITORY_URL": "https://gitlab-ci-token:glcbt-abc@gl.example/a/b.git",
                                            "CI_JOB_TOKEN": "glcbt-abc"})
    assert url == "https://gl.example/a/b.git" and "glcbt-abc" not in url
    assert header["GIT_CONFIG_KEY_0"] == "http.https://gl.example/.extraHeader" and "glcbt-abc" in secrets


def test_outside_ci_the_configured_repository_url_wins_over_the_workspace_remote(tmp_path: Path) -> None:
    world = deploy_world(tmp_path, "request")
    evil = tmp_path / "evil"
    git(tmp_path, "clone", "-q", "--bare", str(world["origin"]), str(evil))
    git(evil, "update-ref", "refs/heads/main", world["weak"])
    git(world["work"], "config", "remote.origin.url", str(evil))
    code, doc, out = run_check(world, "git:origin/main:policies/prod.yml",
                               env={"POLICYENGINE_REPOSITORY_URL": f"file://{world['origin']}"})
    assert (code, doc.get("decision")) == (1, "deny"), out
    assert doc["policy"]["source"]["commit"] == world["strict"]

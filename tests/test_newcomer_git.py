"""Day one (issue 18): git's errors show the line that explains them; git+URL has a default ref."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from policyengine.errors import UsageError, explain_git_error
from policyengine.evidence.stores.git import DEFAULT_REF, parse_git_url


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=env, timeout=60, check=False)


def test_a_real_fetch_failure_is_explained_by_its_fatal_line_not_its_last(tmp_path: Path) -> None:
    _git("init", "-q", str(tmp_path / "repo"), cwd=tmp_path)
    repo = tmp_path / "repo"
    _git("remote", "add", "origin", str(tmp_path / "missing.git"), cwd=repo)
    fetched = _git("fetch", "origin", "main", cwd=repo)
    assert fetched.returncode != 0
    last = fetched.stderr.decode().strip().splitlines()[-1]
    assert "repository exists" in last  # what the old message showed, and explains nothing
    line = explain_git_error(fetched.stderr)
    assert line.startswith("fatal:") and "missing.git" in line and "does not appear to be a git repository" in line


@pytest.mark.parametrize(("stderr", "expected"), [
    (b"fatal: 'origin' does not appear to be a git repository\nfatal: Could not read from remote repository.\n\n"
     b"Please make sure you have the correct access rights\nand the repository exists.\n",
     "fatal: 'origin' does not appear to be a git repository"),
    (b"git@github.com: Permission denied (publickey).\r\nfatal: Could not read from remote repository.\n\n"
     b"Please make sure you have the correct access rights\nand the repository exists.\n",
     "git@github.com: Permission denied (publickey).; fatal: Could not read from remote repository."),
    (b"remote: error: GH006: Protected branch update failed for refs/heads/main.\nTo github.com:a/b.git\n"
     b" ! [remote rejected] main -> main (protected branch hook declined)\nerror: failed to push some refs\n",
     "remote: error: GH006: Protected branch update failed for refs/heads/main."),
    (b"To /srv/e.git\n ! [rejected]        main -> main (fetch first)\nerror: failed to push some refs to '/srv/e.git'\n"
     b"hint: Updates were rejected because the remote contains work that you do\nhint: not have locally.\n",
     "! [rejected]        main -> main (fetch first)"),
    (b"remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'https://gitlab.example.com/a/b.git/'\n",
     "fatal: Authentication failed for 'https://gitlab.example.com/a/b.git/'"),
    (b"", "no message"),
    (b"hint: only a hint\n", "hint: only a hint"),
])
def test_the_explaining_line_is_chosen(stderr: bytes, expected: str) -> None:
    assert explain_git_error(stderr) == expected


def test_a_git_url_without_a_ref_uses_the_documented_default() -> None:
    assert DEFAULT_REF == "refs/heads/policyengine-evidence"
    assert parse_git_url("git+file:///srv/evidence.git") == ("file:///srv/evidence.git", DEFAULT_REF)
    assert parse_git_url("git+https://git.example.com/acme/ev.git") == ("https://git.example.com/acme/ev.git",
                                                                        DEFAULT_REF)
    assert parse_git_url("git+ssh://git@host/acme/ev.git#refs/heads/main") == ("ssh://git@host/acme/ev.git",
                                                                               "refs/heads/main")
    assert parse_git_url("git:policyengine-evidence") == (None, DEFAULT_REF)
    for bad in ("git+file:///srv/evidence.git#", "git+-x", "git+ext::sh -c evil"):
        with pytest.raises(UsageError):
            parse_git_url(bad)
    # Credentials are refused with or without a ref.
    with pytest.raises(UsageError, match="holds credentials"):
        parse_git_url("git+https://user:secret@host/acme/ev.git")

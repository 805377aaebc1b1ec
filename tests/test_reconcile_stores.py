"""`audit reconcile --record` into a git store: the record is a record commit like any other, so
the store's history walk (`evidence verify`) accepts it; and reconcile reads the git store's
evaluations as it reads a folder's."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

pytest.importorskip("cryptography")

from tests.test_evidence_git import FIXTURES, check_cmd, cli, env_for, keys, records, remote, url_of  # noqa: F401

CHANGE = yaml.safe_load((FIXTURES / "change.yml").read_text())


def test_reconcile_and_record_in_a_git_store(tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:  # noqa: F811
    url, env = url_of(remote), env_for(tmp_path, USER="ops")
    made = subprocess.run(check_cmd(url, keys[0]), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert made.returncode in (0, 1), made.stdout + made.stderr
    # The bundle is recorded at the wall-clock time: the platform's deployment comes an hour later.
    created = records(url, env)[0]["created_at"]
    later = (datetime.fromisoformat(created.replace("Z", "+00:00")) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    log = tmp_path / "deploys.jsonl"
    log.write_text(json.dumps({"time": later, "commit": "e" * 40, "environment":
                               CHANGE["environment"], "id": "x-1", "repository": CHANGE["repository"]}) + "\n")
    res = cli(env, "audit", "reconcile", "--archive", url, "--since", "2000-01-01", "--until", "2999-12-31", "--source", f"log:{log}", "--format", "json", "--record",
              "--signing-key", str(keys[0]))
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert [(f["kind"], f["platform_id"]) for f in report["exceptions"]] == [("unauthorized", "x-1")]
    listed = cli(env, "evidence", "list", "--archive", url, "--kind", "reconciliation", "--json")
    assert listed.returncode == 0 and "exceptions" in listed.stdout, listed.stdout + listed.stderr
    verified = cli(env, "evidence", "verify", "--archive", url, "--all", "--public-key", str(keys[1]))
    assert verified.returncode == 0, verified.stdout + verified.stderr


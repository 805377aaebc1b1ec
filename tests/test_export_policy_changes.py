"""The audit export flags each change of policy along a chain, with policy diff's verdict, and
carries the control matrix of every policy used in the period."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRICT = (REPO / "policies" / "soc2-production.yml").read_text("utf-8")
WEAKER = STRICT.replace("min_approvals: 2 ", "min_approvals: 1 ")
STRONGER = STRICT.replace("min_tests: 1\n", "min_tests: 2\n", 1)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=REPO)


def test_policy_changes_are_flagged_with_their_verdict(tmp_path: Path) -> None:
    assert WEAKER != STRICT and STRONGER != STRICT
    archive = tmp_path / "ev"
    for i, text in enumerate([STRICT, STRICT, WEAKER, STRONGER]):
        policy = tmp_path / f"p{i}.yml"
        policy.write_text(text, encoding="utf-8")
        run = _cli("check", "--policy", str(policy), "--change", "examples/change-allowed.yml", "--workspace",
                   "examples/workspace", "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(archive))
        assert run.returncode in (0, 1), run.stderr
    out = tmp_path / "export.zip"
    run = _cli("audit", "export", "--archive", str(archive), "--since", "2000-01-01", "--until", "2100-01-01",
               "-o", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    with zipfile.ZipFile(out) as zf:
        changes = json.loads(zf.read("policy-changes.json"))
        controls = sorted(n for n in zf.namelist() if n.startswith("controls/"))
        listed = json.loads(zf.read("export.json"))
    assert [c["verdict"] for c in changes] == ["first seen", "weaker", "not weaker"]
    weaker = changes[1]
    assert any(f["path"] == "rules[peer-review].min_approvals" and f["direction"] == "weaker"
               for f in weaker["findings"])
    ids = [json.loads(line)["id"] for line in (archive / "index.jsonl").read_text("utf-8").splitlines()]
    assert [c["bundle_id"] for c in changes] == [ids[0], ids[2], ids[3]]
    assert weaker["previous_bundle_id"] == ids[1]  # the last bundle judged by the old policy
    assert len(controls) == 3 and all(n.startswith("controls/soc2-production-") for n in controls)
    assert listed["policy_changes"] == {"count": 3, "weaker": 1}
    assert set(controls) <= set(listed["files"])
    verified = _cli("evidence", "verify", "--archive", str(out))
    assert verified.returncode == 0, verified.stdout + verified.stderr

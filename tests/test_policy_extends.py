"""`extends`: an organisation-wide base that repository policies may only tighten."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from policyengine.errors import InvalidInputError
from policyengine.language.policysource import load

REPO = Path(__file__).resolve().parents[1]
BASE = (REPO / "policies" / "soc2-production.yml").read_text("utf-8")


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _ext(rules: str, *, extends: str = "base.yml", extra: str = "") -> str:
    return f"version: 1\nname: payments\nextends: {extends}\n{extra}rules:\n{rules}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _write(tmp_path, "base.yml", BASE)
    return tmp_path


def test_a_tightening_is_accepted_and_merged_by_id(folder: Path) -> None:
    path = _write(folder, "p.yml", _ext("  - id: peer-review\n    min_approvals: 3\n"
                                        "  - id: sast\n    type: checks_passed\n    checks: [sast]\n"))
    policy = load(str(path))
    rules = {r.id: r for r in policy.rules}
    # The base names policy_owners: the gate's policy-owners rule comes after the policy's own.
    assert list(rules)[-2:] == ["sast", "policy-owners"] and len(rules) == 9
    assert rules["peer-review"].params["min_approvals"] == 3
    assert rules["peer-review"].params["exclude"] == ["author", "committers", "deployer"]  # kept from the base
    assert policy.name == "payments" and policy.environments == ("production",)
    assert policy.base is not None and policy.base.name == "soc2-production"


@pytest.mark.parametrize(("rules", "extra", "where", "key"), [
    ("  - id: peer-review\n    min_approvals: 1\n", "", ":6:5:", "rules[peer-review].min_approvals"),
    ("  - id: peer-review\n    exclude: [author]\n", "", ":6:5:", "rules[peer-review].exclude"),
    ("  - id: deploy-window\n    enforcement: warn\n", "", ":6:5:", "rules[deploy-window].enforcement"),
    ("  - id: tests\n    reports: ['build/*.xml']\n", "", ":6:5:", "rules[tests].reports"),
    ("  - id: tests\n    min_tests: 1\n", "applies_to: {environments: [prod-eu]}\n", ":4:1:",
     "applies_to.environments"),
    ("  - id: tests\n    min_tests: 1\n", "evidence: {retention: 30d}\n", ":4:1:", "evidence.retention"),
])
def test_a_loosening_is_rejected_naming_the_key(folder: Path, rules: str, extra: str, where: str, key: str) -> None:
    path = _write(folder, "p.yml", _ext(rules, extra=extra))
    with pytest.raises(InvalidInputError) as info:
        load(str(path))
    lines = [str(p) for p in info.value.problems]
    assert any(line.startswith(str(path) + where) and f" {key}: " in line and "may only tighten" in line
               for line in lines), lines


def test_validate_exits_2_with_the_line_of_the_weakening(folder: Path) -> None:
    path = _write(folder, "p.yml", _ext("  - id: peer-review\n    min_approvals: 1\n"))
    run = subprocess.run([sys.executable, "-m", "policyengine", "policy", "validate", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert f"{path}:6:5: rules[peer-review].min_approvals: required approvals lowered (2 -> 1)" in run.stdout


def test_mistakes_in_the_extension_are_located_in_it(folder: Path) -> None:
    path = _write(folder, "p.yml", _ext("  - id: peer-review\n    min_aprovals: 3\n  - id: new\n    checks: [x]\n"))
    with pytest.raises(InvalidInputError) as info:
        load(str(path))
    lines = [str(p) for p in info.value.problems]
    assert any(line.startswith(f"{path}:6:5:") and "min_aprovals" in line for line in lines), lines
    assert any(line.startswith(f"{path}:7:") and "type" in line for line in lines), lines


def test_loops_and_missing_bases_are_errors(folder: Path) -> None:
    _write(folder, "a.yml", _ext("  - id: x\n    type: checks_passed\n    checks: [a]\n", extends="b.yml"))
    _write(folder, "b.yml", _ext("  - id: y\n    type: checks_passed\n    checks: [b]\n", extends="a.yml"))
    with pytest.raises(InvalidInputError) as info:
        load(str(folder / "a.yml"))
    assert "a loop" in str(info.value.problems[0])
    from policyengine.errors import UsageError

    with pytest.raises(UsageError, match="not found"):
        load(str(_write(folder, "c.yml", _ext("  - id: tests\n    min_tests: 2\n", extends="nowhere.yml"))))


def test_the_bundle_keeps_the_base_and_a_base_edit_changes_the_resolved_digest(folder: Path) -> None:
    path = _write(folder, "p.yml", _ext("  - id: peer-review\n    min_approvals: 3\n"))

    def run() -> dict:
        out = folder / "d.json"
        proc = subprocess.run([sys.executable, "-m", "policyengine", "check", "--policy", str(path), "--change",
                               str(REPO / "examples" / "change-allowed.yml"), "--workspace",
                               str(REPO / "examples" / "workspace"), "--now", "2026-11-24T15:00:00Z",
                               "--evidence-dir", str(folder / "ev"), "--json", str(out)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(out.read_text("utf-8"))

    first = run()
    assert first["policy"]["extends"][0]["sha256"] == __import__("hashlib").sha256(BASE.encode()).hexdigest()
    bundle = next((folder / "ev").glob(f"bundles/*/*/{first['evidence']['bundle_id']}.zip"))
    with zipfile.ZipFile(bundle) as zf:
        assert zf.read("policy-base/1-base.yml").decode() == BASE
    replay = subprocess.run([sys.executable, "-m", "policyengine", "evidence", "replay", "--archive",
                             str(folder / "ev"), first["evidence"]["bundle_id"]],
                            capture_output=True, text=True, timeout=60, check=False)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    _write(folder, "base.yml", BASE.replace("min_tests: 1", "min_tests: 2"))
    second = run()
    assert second["policy"]["sha256"] == first["policy"]["sha256"]
    assert second["policy"]["resolved_sha256"] != first["policy"]["resolved_sha256"]


def test_an_extends_key_spelled_with_escapes_is_refused_never_ignored(folder: Path) -> None:
    """The loader looks for a base only where the bytes say `extends`; a key spelled with YAML
    escapes must then fail (exit 2), not load the extension without its base's rules."""
    path = _write(folder, "p.yml", 'version: 1\nname: p\n"ext\\x65nds": base.yml\nrules:\n'
                                   "  - id: c\n    type: checks_passed\n    checks: [a]\n")
    with pytest.raises(InvalidInputError) as info:
        load(str(path))
    assert "the base policy was not resolved" in str(info.value.problems[0])

"""The store catalogue and the store head (issue 16), and the evidence schema version plan.

Every store (folder, S3 through a moto server, git through a bare repository) keeps a catalogue of
its chains and their heads; each catalogue names the digest of the one before it; the store head
is the digest of the newest one. One anchored store head covers every chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")

from policyengine.evidence import bundle as bundle_module
from policyengine.evidence.archive import LocalArchive
from test_evidence import CHANGE, POLICY

REPO = Path(__file__).resolve().parents[1]


def _write(archive: Any, **change: Any) -> Any:
    return archive.write_bundle(decision={"decision": "allow", "rules": []}, change={**CHANGE, **change},
                                policy_filename="p.yml", policy_bytes=POLICY, files=[])


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


def _verify(archive: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli("evidence", "verify", "--archive", archive, *extra, env=env)


# -- versions ------------------------------------------------------------------------------------


def test_this_release_writes_schema_version_3() -> None:
    assert bundle_module.SCHEMA_VERSION == 3 and 3 in bundle_module.READABLE_SCHEMA_VERSIONS


def test_an_older_verify_meeting_a_newer_bundle_says_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = LocalArchive(tmp_path / "ev")
    _write(archive)
    with monkeypatch.context() as m:
        m.setattr(bundle_module, "SCHEMA_VERSION", max(bundle_module.READABLE_SCHEMA_VERSIONS) + 1)
        newer = _write(archive)
    result = _verify(str(tmp_path / "ev"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL  version       bundle {newer.id} member manifest.json" in result.stdout
    assert "made by a newer version of policyengine: upgrade" in result.stdout
    assert "cannot be read" not in result.stdout

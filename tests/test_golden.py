"""Golden outputs of `check` on the bundled examples: console, decision JSON, JUnit and bundle.

They pin behaviour across refactors: a change of shape must leave every byte the same, apart
from what differs from run to run (bundle ids, creation times, digests of members that hold
them, signatures). Regenerate on purpose with ``UPDATE_GOLDEN=1 pytest
tests/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
NOW = "2026-11-24T15:00:00Z"
SCENARIOS = [
    (policy, change)
    for policy in ("soc2-production", "soc2-small-team")
    for change in ("allowed", "denied")
]
BUNDLE_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{12}")
MONTH_FOLDER = re.compile(r"bundles/\d{4}/\d{2}/<bundle-id>")
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
PAYLOAD = re.compile(r'("payload": )"([A-Za-z0-9+/=]+)"')
SIG = re.compile(r'("sig": )"[A-Za-z0-9+/=_-]+"')


def _stable_digests() -> set[str]:
    """Digests of the inputs: these must come out the same, so they are never masked."""
    out = set()
    for folder in (REPO / "policies", REPO / "examples"):
        for path in folder.rglob("*"):
            if path.is_file():
                out.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _normalize(text: str, tmp: Path, stable: set[str], created: set[str]) -> str:
    text = text.replace(str(tmp), "<tmp>")
    text = BUNDLE_ID.sub("<bundle-id>", text)
    # The archive files a bundle by the month of its creation (the wall clock, not --now).
    text = MONTH_FOLDER.sub("bundles/<yyyy>/<mm>/<bundle-id>", text)
    for moment in created:
        text = text.replace(moment, "<created-at>")
    text = HEX64.sub(lambda m: m.group(0) if m.group(0) in stable else "<sha256>", text)
    text = PAYLOAD.sub(lambda m: m.group(1) + json.dumps(_normalize(
        base64.b64decode(m.group(2)).decode("utf-8"), tmp, stable, created)), text)
    return SIG.sub(r'\1"<signature>"', text)


def _run(tmp: Path, policy: str, change: str, archive: Path, extra: list[str],
         wrapper: list[str]) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "POLICYENGINE_", "RUNNER_")) and k not in {"CI", "NO_COLOR"}}
    if wrapper:  # libfaketime sets the date itself: a suite-wide test shift (tests/clockshift) must not add to it
        env["PE_TEST_DATE"] = ""
    proc = subprocess.run(
        [*wrapper, sys.executable, "-m", "policyengine", "--debug", "check", "--policy", f"policies/{policy}.yml",
         "--change", f"examples/change-{change}.yml", "--workspace", "examples/workspace", "--now", NOW,
         "--evidence-dir", str(archive), "--json", str(tmp / "decision.json"),
         "--junit", str(tmp / "junit.xml"), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _capture(tmp: Path, policy: str, change: str, extra: list[str],
             wrapper: list[str] | None = None) -> dict[str, str]:
    archive = tmp / "evidence"
    code, console = _run(tmp, policy, change, archive, extra, wrapper or [])
    bundles = sorted(archive.glob("bundles/*/*/*.zip"))
    assert len(bundles) == 1, f"check wrote {len(bundles)} bundles (exit {code}):\n{console}"
    [bundle] = bundles
    out: dict[str, str] = {}
    with zipfile.ZipFile(bundle) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        created = {manifest["created_at"], BUNDLE_ID.search(bundle.name).group(0)[:16]}  # type: ignore[union-attr]
        stable = _stable_digests()
        for name in zf.namelist():
            out[f"bundle/{name}"] = _normalize(zf.read(name).decode("utf-8"), tmp, stable, created)
    out["exit-code.txt"] = f"{code}\n"
    out["console.txt"] = _normalize(console, tmp, stable, created)
    out["decision.json"] = _normalize((tmp / "decision.json").read_text("utf-8"), tmp, stable, created)
    out["index.jsonl"] = _normalize((archive / "index.jsonl").read_text("utf-8"), tmp, stable, created)
    out["junit.xml"] = _normalize((tmp / "junit.xml").read_text("utf-8"), tmp, stable, created)
    out["bundle-members.txt"] = "\n".join(out_name[len("bundle/"):] for out_name in out if out_name.startswith("bundle/")) + "\n"
    return out


def _signing_key(tmp: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a fixed key: signatures are deterministic
    path = tmp / "signing.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


CASES = [(p, c, False) for p, c in SCENARIOS] + [("soc2-production", "allowed", True)]


def _compare(got: dict[str, str], folder: Path) -> None:
    want_names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(got) == want_names
    for name in want_names:
        assert got[name] == (folder / name).read_text("utf-8"), f"{folder.name}/{name} differs from the golden file"


@pytest.mark.parametrize(("policy", "change", "signed"), CASES,
                         ids=[f"{p}-{c}{'-signed' if s else ''}" for p, c, s in CASES])
def test_check_outputs_match_the_golden_files(tmp_path: Path, policy: str, change: str, signed: bool) -> None:
    extra = ["--signing-key", str(_signing_key(tmp_path))] if signed else []
    got = _capture(tmp_path, policy, change, extra)
    folder = GOLDEN / f"{policy}-{change}{'-signed' if signed else ''}"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        for name, text in got.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
    _compare(got, folder)


SHIFTED_DATES = ["2027-02-28", "2028-02-29"]
"""Wall clocks the golden outputs must not notice: another year and month, and a leap day."""


def _faketime() -> str:
    """The libfaketime wrapper (Debian's ``faketime``; scripts/test.sh installs it under CI)."""
    found = shutil.which("faketime")
    if found is None:
        pytest.skip("libfaketime is not installed (apt-get install faketime), so the golden outputs cannot be "
                    "checked under a shifted wall clock here; scripts/test.sh installs it under CI")
    return found


@pytest.mark.parametrize("day", SHIFTED_DATES)
@pytest.mark.parametrize(("policy", "change", "signed"), CASES,
                         ids=[f"{p}-{c}{'-signed' if s else ''}" for p, c, s in CASES])
def test_golden_outputs_are_the_same_on_any_date(tmp_path: Path, policy: str, change: str, signed: bool,
                                                 day: str) -> None:
    """The product reads the wall clock (bundle ids, archive month folders, created_at); run it as if
    it were another date with libfaketime, never through a clock variable of the product's own
    (that would be a clock override under CI that gets around the ``--now`` refusal)."""
    # Every clock moves together (libfaketime's default): faking the wall clock alone makes
    # subprocess waits fail with EINVAL under load (seen here), an artefact, not a product bug.
    wrapper = [_faketime(), "-f", f"@{day} 12:00:00"]
    extra = ["--signing-key", str(_signing_key(tmp_path))] if signed else []
    got = _capture(tmp_path, policy, change, extra, wrapper)
    [bundle] = sorted((tmp_path / "evidence").glob("bundles/*/*/*.zip"))
    assert bundle.parent.relative_to(tmp_path / "evidence").as_posix() == f"bundles/{day[:4]}/{day[5:7]}", \
        "the wall clock was not shifted: the check proves nothing"
    _compare(got, GOLDEN / f"{policy}-{change}{'-signed' if signed else ''}")

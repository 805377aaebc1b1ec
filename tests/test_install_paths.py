"""Every way to install policyengine names the distribution `policyengine-gate`.

`policyengine` on PyPI is an unrelated project: `pip install policyengine` (any version, any
extra) installs a stranger's code. The import package and the command stay `policyengine`.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DIST = "policyengine-gate"
SCANNED = {".py", ".md", ".yml", ".yaml", ".toml", ".sh", ".txt", ".in", ".lock", ".cfg"}
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", "build", "dist"}

# The bare distribution name in an install: policyengine==1, policyengine[sign], policyengine>=1,
# `pip install policyengine`, `pip install -U 'policyengine'` (not policyengine-gate, not a path).
BARE_INSTALL = [
    # (an extra, not usage text like `policyengine [OPTIONS]` nor a regex's character class)
    re.compile(r"(?<![\w./-])policyengine\s*(?:==|===|~=|>=|<=|!=|\[(?![A-Z]+\]|\^))"),
    re.compile(r"pip3?\s+install\b[^\n`]*?(?<![\w./-])['\"]?policyengine(?![\w./-])"),
    re.compile(r"(?m)^\s*policyengine\s*(?:==|\s--hash)"),  # a requirements line
]


def scanned_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        if any(part in SKIPPED_DIRS for part in path.relative_to(REPO).parts):
            continue
        if path.is_file() and path.suffix in SCANNED and path != Path(__file__).resolve():
            files.append(path)
    return files


def bare_installs(text: str) -> list[str]:
    return [m.group(0) for pattern in BARE_INSTALL for m in pattern.finditer(text)]


def test_the_pattern_catches_every_bare_form_and_spares_the_new_name() -> None:
    for bad in ("pip install policyengine", "pip install 'policyengine[sign]'", "POLICYENGINE_INSTALL: policyengine==0.1.0",
                'spec="policyengine==${PE_VERSION}"', "needs policyengine[s3]", "pip install -U policyengine>=0.1",
                "policyengine==0.1.0 --hash=sha256:00", "pip install 'policyengine [s3]'"):
        assert bare_installs(bad), bad
    for good in ("pip install 'policyengine-gate[sign]'", "pip install policyengine-gate==0.1.0",
                 "pip install -e .", "the policyengine command", "Usage: policyengine [OPTIONS] COMMAND", "import policyengine", "policyengine check --policy p",
                 "pip install ./policyengine", "git+https://gitlab.example.com/acme/policyengine.git@" + "0" * 40):
        assert not bare_installs(good), good


def test_no_install_path_names_the_bare_distribution() -> None:
    files = scanned_files()
    assert REPO / ".gitlab-ci-template.yml" in files and REPO / "action.yml" in files
    found = [f"{path.relative_to(REPO)}: {hit}" for path in files
             for hit in bare_installs(path.read_text(encoding="utf-8", errors="replace"))]
    assert not found, "install paths naming the unrelated PyPI project `policyengine`:\n" + "\n".join(found)


def test_the_distribution_is_policyengine_gate_and_the_command_and_package_stay() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == DIST
    assert project["project"]["scripts"] == {"policyengine": "policyengine.cli:main"}
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["policyengine"]


def test_the_extras_hints_name_the_new_distribution() -> None:
    hints = [line for path in (REPO / "policyengine").rglob("*.py")
             for line in path.read_text(encoding="utf-8").splitlines() if "pip install '" in line]
    for extra in ("sign", "s3"):
        assert any(f"pip install '{DIST}[{extra}]'" in line for line in hints), (extra, hints)


# -- the hash lock ------------------------------------------------------------------------------

LOCK = REPO / "requirements" / "gate.lock"


def lock_pins(lock: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement in the lock (pip's format, `\\` continuations)."""
    text = re.sub(r"\\\n", " ", lock.read_text(encoding="utf-8"))
    pins = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert match, f"not an exact pin with sha256 hashes: {line!r}"
        pins[canonicalize_name(match[1])] = (match[2], re.findall(r"sha256:([0-9a-f]{64})", match[3]))
    return pins


def test_the_lock_pins_every_runtime_dependency_exactly_with_hashes() -> None:
    pins = lock_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    py312 = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
             "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
             "platform_python_implementation": "CPython", "extra": ""}
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not in {LOCK.name}"
        assert req.specifier.contains(pins[name][0], prereleases=True), (spec, pins[name][0])
    # Closed under dependencies: what each locked package needs (as installed here) is locked too.
    for name in pins:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(py312):
                assert canonicalize_name(req.name) in pins, f"{name} needs {req.name}, which the lock lacks"
    assert canonicalize_name(DIST) not in pins  # unpublished: users add its own line (see the template)


def test_the_lock_parser_refuses_a_loose_pin(tmp_path: Path) -> None:
    loose = tmp_path / "gate.lock"
    loose.write_text("click>=8.1 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(AssertionError, match="not an exact pin"):
        lock_pins(loose)
    loose.write_text("click==8.1.7\n")
    with pytest.raises(AssertionError, match="not an exact pin"):
        lock_pins(loose)


# -- artifact expiry against the policies' retention --------------------------------------------

UNIT_DAYS = {"d": 1, "day": 1, "days": 1, "w": 7, "week": 7, "weeks": 7, "y": 365, "yr": 365, "yrs": 365,
             "year": 365, "years": 365, "mo": 30, "mos": 30, "month": 30, "months": 30}


def days(text: str) -> float:
    """`400d`, `10w`, `1y` (a policy's retention) or `400 days`, `1 year` (GitLab's expire_in), in days."""
    parts = re.findall(r"(\d+)\s*([a-z]+)", text.lower())
    assert parts and re.fullmatch(r"(\s*\d+\s*[a-z]+\s*(and)?)+", text.lower()), f"cannot read a duration: {text!r}"
    return sum(int(n) * UNIT_DAYS[unit] for n, unit in parts)


def test_gitlab_artifacts_outlive_every_bundled_policys_evidence_retention() -> None:
    job = yaml.safe_load((REPO / ".gitlab-ci-template.yml").read_text(encoding="utf-8"))[".policyengine-gate"]
    expire = days(job["artifacts"]["expire_in"])
    retentions = {}
    for path in sorted((REPO / "policies").glob("*.yml")):
        retention = ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("evidence") or {}).get("retention")
        if retention:
            retentions[path.name] = days(str(retention))
    assert retentions, "no bundled policy sets evidence.retention"
    assert all(expire >= r for r in retentions.values()), (job["artifacts"]["expire_in"], retentions)
    assert days("1 year") < max(retentions.values())  # what it was: shorter than 400d


def test_the_action_asks_for_the_longest_artifact_retention_and_warns_that_it_is_capped() -> None:
    action = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
    upload = next(s for s in action["runs"]["steps"] if "uses" in s)
    assert upload["with"]["retention-days"] == 400
    gate = next(s for s in action["runs"]["steps"] if s.get("id") == "gate")
    assert "::warning title=policyengine evidence::" in gate["run"]

"""The GitLab template's hash lock chooses the gate's code: only hashed requirement lines pass.

A `policyengine-gate.lock` with `--find-links DIR`, `--no-index` and the hash of a fake wheel
passes `pip --require-hashes`, and the job then runs a fake `policyengine` that prints ALLOW.
The template reads the lock as pip does (logical lines, `\\` continuations, comments) and refuses
any pip option, URL or path before pip runs; with the protected CI/CD variable
POLICYENGINE_GATE_SHA256 set, the hash of policyengine-gate must be that one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_provider_integration_files import FAKE_POLICYENGINE, REPO, run_template

GOOD = "a" * 64
OTHER = "b" * 64
DEPS = (REPO / "requirements" / "gate.lock").read_text(encoding="utf-8")
GATE = f"policyengine-gate==0.1.0 \\\n    --hash=sha256:{GOOD}\n"
VALID = GATE + DEPS

HOSTILE = {
    "find-links": f"--find-links /tmp/wheels\n--no-index\npolicyengine-gate==0.1.0 --hash=sha256:{GOOD}\n",
    "no-index": f"--no-index\n{GATE}",
    "short index option": f"-i https://evil.example/simple\n{GATE}",
    "index-url with =": f"--index-url=https://evil.example/simple\n{GATE}",
    "extra-index-url": f"{GATE}--extra-index-url https://evil.example/simple\n",
    "editable": f"{GATE}-e .\n",
    "another requirements file": f"{GATE}-r other.txt\n",
    "a constraints file": f"-c x\n{GATE}",
    "trusted-host": f"--trusted-host evil.example\n{GATE}",
    "a URL requirement": f"policyengine-gate @ https://evil.example/pe.whl --hash=sha256:{GOOD}\n",
    "a URL requirement with a version": f"{GATE}click @ https://evil.example/click.whl --hash=sha256:{GOOD}\n",
    "a path": f"{GATE}./wheel.whl --hash=sha256:{GOOD}\n",
    "a file URL": f"{GATE}file:///tmp/wheels/click-8.1.7-py3-none-any.whl\n",
    "an option after a continuation": f"policyengine-gate==0.1.0 \\\n    --hash=sha256:{GOOD} \\\n"
                                      "    --find-links /tmp/wheels\n",
    "an option on a continued line": f"policyengine-gate==0.1.0 --hash=sha256:{GOOD} \\\n--no-index\n",
    "an option after a comment that ends a continuation": f"policyengine-gate==0.1.0 --hash=sha256:{GOOD} \\\n"
                                                          "# via nothing \\\n--find-links /tmp/wheels\n",
    "an option before a trailing comment": f"{GATE}--find-links /tmp/wheels  # the mirror\n",
    "a comment glued to an option": f"{GATE}--no-index#comment\n",
    "CRLF line endings hiding an option": (f"{GATE}--find-links /tmp/wheels\n").replace("\n", "\r\n"),
    "a lone carriage return": f"policyengine-gate==0.1.0 --hash=sha256:{GOOD}\r--no-index\n",
    "a form feed": f"policyengine-gate==0.1.0 --hash=sha256:{GOOD}\f--no-index\n",
    "an encoding declaration": f"# -*- coding: utf-7 -*-\n{GATE}# +AAo---no-index\n",
    "a non-ASCII byte": f"{GATE}# caf\u00e9\n",
    "a requirement without a hash": f"{GATE}click==8.1.7\n",
    "a loose pin": f"{GATE}click>=8.1 --hash=sha256:{GOOD}\n",
    "a per-requirement option": f"{GATE}click==8.1.7 --config-settings=x=y --hash=sha256:{GOOD}\n",
    "an environment variable": f"{GATE}click==${{VERSION}} --hash=sha256:{GOOD}\n",
    "a hash option split off its value": f"policyengine-gate==0.1.0 --hash sha256:{GOOD}\n",
    "no policyengine-gate line": DEPS,
    "policyengine-gate twice": GATE + f"policyengine_gate==0.2.0 --hash=sha256:{OTHER}\n",
}


def _refused(tmp_path: Path, lock: str, env: dict[str, str] | None = None) -> str:
    res = run_template(tmp_path, env or {}, installed=FAKE_POLICYENGINE, lock=None,
                       files={"policyengine-gate.lock": lock.encode("utf-8")})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "fake policyengine ran" not in res.stdout
    assert not (tmp_path / "toolchain" / "pip.log").exists(), "pip ran on a lock the template should refuse"
    refusal = [line for line in res.stderr.splitlines() if line.startswith("policyengine: POLICYENGINE_REQUIREMENTS:")]
    assert len(refusal) == 1, res.stderr
    return refusal[0]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_lock_with_anything_but_hashed_requirement_lines_is_refused_before_pip_runs(tmp_path: Path,
                                                                                     case: str) -> None:
    line = _refused(tmp_path, HOSTILE[case])
    assert "policyengine-gate.lock" in line


def test_the_refusal_names_the_line_and_what_to_fix(tmp_path: Path) -> None:
    line = _refused(tmp_path, f"{GATE}--find-links /tmp/wheels\n")
    assert line.startswith("policyengine: POLICYENGINE_REQUIREMENTS: policyengine-gate.lock:3: a pip option: "
                           "'--find-links /tmp/wheels'")
    assert "no option, URL or path" in line


@pytest.mark.parametrize("lock", [VALID, VALID.replace("\n", "\r\n"),
                                  f"# a header comment\npolicyengine-gate[sign,s3]==0.1.0 ; python_version >= \"3.10\" "
                                  f"\\\n    --hash=sha256:{GOOD} \\\n    --hash=sha256:{OTHER}\n    # via -r gate.in\n"])
def test_a_hashed_lock_is_installed_with_every_hash_required(tmp_path: Path, lock: str) -> None:
    res = run_template(tmp_path, {}, installed=FAKE_POLICYENGINE, lock=None,
                       files={"policyengine-gate.lock": lock.encode("utf-8")})
    assert res.returncode == 0, res.stdout + res.stderr
    pip = (tmp_path / "toolchain" / "pip.log").read_text()
    assert "install --quiet --require-hashes --only-binary=:all: -r policyengine-gate.lock" in pip
    # Without the protected variable the job says that the checkout alone chose the gate's code.
    assert "POLICYENGINE_GATE_SHA256 is not set" in res.stderr


def test_the_protected_variable_names_the_only_gate_wheel_accepted(tmp_path: Path) -> None:
    res = run_template(tmp_path / "ok", {"POLICYENGINE_GATE_SHA256": GOOD}, installed=FAKE_POLICYENGINE,
                       lock=VALID)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "POLICYENGINE_GATE_SHA256 is not set" not in res.stderr
    upper = run_template(tmp_path / "upper", {"POLICYENGINE_GATE_SHA256": GOOD.upper()},
                         installed=FAKE_POLICYENGINE, lock=VALID)
    assert upper.returncode == 0, upper.stdout + upper.stderr
    line = _refused(tmp_path / "other", VALID, {"POLICYENGINE_GATE_SHA256": OTHER})
    assert "policyengine-gate.lock:1: the hash of policyengine-gate is not POLICYENGINE_GATE_SHA256" in line
    # A second hash beside the vetted one is a second file pip would accept: refused.
    both = f"policyengine-gate==0.1.0 --hash=sha256:{GOOD} --hash=sha256:{OTHER}\n" + DEPS
    _refused(tmp_path / "both", both, {"POLICYENGINE_GATE_SHA256": GOOD})
    # The variable must name a sha256: a typo never turns the check off.
    line = _refused(tmp_path / "typo", VALID, {"POLICYENGINE_GATE_SHA256": "sha256:" + GOOD})
    assert "POLICYENGINE_GATE_SHA256 is not a sha256" in line


def test_the_dependencies_lock_of_this_repository_reads_as_requirement_lines_only(tmp_path: Path) -> None:
    """requirements/gate.lock plus the gate's own line is what the docs tell users to commit."""
    res = run_template(tmp_path, {"POLICYENGINE_GATE_SHA256": GOOD}, installed=FAKE_POLICYENGINE, lock=VALID)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_git_url_install_is_unchanged(tmp_path: Path) -> None:
    url = "git+https://gitlab.example.com/acme/policyengine.git@" + "0123456789abcdef" * 2 + "01234567"
    res = run_template(tmp_path, {"POLICYENGINE_INSTALL": url, "POLICYENGINE_GATE_SHA256": GOOD},
                       installed=FAKE_POLICYENGINE, lock="--find-links /tmp/never-read")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "toolchain" / "pip.log").read_text() == f"pip install --quiet -- {url} PIP_NO_CACHE_DIR=1\n"


# -- our reading against pip's own -------------------------------------------------------------------


def _lock_script() -> str:
    import yaml

    install = yaml.safe_load((REPO / ".gitlab-ci-template.yml").read_text(encoding="utf-8"))[
        ".policyengine-gate"]["script"][0]
    body = install[install.index("<<'PY'\n") + len("<<'PY'\n"):]
    return body[:body.index("\nPY\n")]


def _we_accept(script: Any, lock: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    import sys

    monkeypatch.setattr(sys, "argv", ["-", str(lock)])
    try:
        exec(script, {"__name__": "__main__"})  # noqa: S102 - the template's own script
    except SystemExit as exc:
        assert exc.code == 2
        return False
    return True


def _pip_installs_only_hashed_pins(text: str) -> bool:
    """What pip 'install -r' would do with the text: only pinned, hashed requirements, no option?"""
    from packaging.requirements import InvalidRequirement, Requirement
    from pip._internal.req import req_file

    parse = req_file.get_line_parser(None)
    try:
        for _number, line in req_file.preprocess(text):
            args, opts = parse(line)
            # Defaults that are objects: an option on the line fills them in.
            empty = {"FormatControl(set(), set())", "ReleaseControl(all_releases=set(), only_final=set())"}
            extra = {k: v for k, v in vars(opts).items() if v not in (None, [], False) and k != "hashes"
                     and repr(v) not in empty}
            if not args or extra or not opts.hashes:
                return False
            req = Requirement(args)
            if req.url or [s.operator for s in req.specifier] != ["=="] or "*" in str(req.specifier):
                return False
    except (req_file.RequirementsFileParseError, InvalidRequirement, SystemExit, ValueError):
        return True  # pip refuses it too: nothing is installed
    return True


def test_what_the_template_accepts_pip_reads_as_hashed_pins_only(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A seeded random search over the pieces that make pip and a naive reader disagree."""
    import random

    # The oracle sees what the hostile locks above do to pip (it is not blind to options).
    for case in ("find-links", "index-url with =", "editable", "an option after a comment that ends a continuation",
                 "CRLF line endings hiding an option", "a URL requirement", "a form feed"):
        assert not _pip_installs_only_hashed_pins(HOSTILE[case]), case
    script = compile(_lock_script(), "lock-check", "exec")
    monkeypatch.delenv("POLICYENGINE_GATE_SHA256", raising=False)
    pieces = [GATE.strip(), f"click==8.1.7 --hash=sha256:{OTHER}", " \\", "\\", "\n", "\r\n", "\r", "\f", " ",
              "# c", " #x", "#", "--no-index", " --find-links /w", "-e .", "-r x.txt", "--hash=sha256:" + GOOD,
              "name @ file:///w.whl", "./w.whl", "; python_version < \"4\"", "==1.0", "policyengine-gate",
              "\t", "${X}", "--index-url=https://e.example/s"]
    rng = random.Random(20261124)  # noqa: S311 - a reproducible search, not a secret
    lock = tmp_path / "policyengine-gate.lock"
    accepted = 0
    for _ in range(1500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 9)))
        lock.write_text(GATE + text + "\n", encoding="utf-8", newline="")
        if _we_accept(script, lock, monkeypatch):
            accepted += 1
            assert _pip_installs_only_hashed_pins(lock.read_bytes().decode("utf-8")), repr(text)
    assert accepted > 50  # the search reached accepted locks, not only refusals

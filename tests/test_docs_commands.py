"""Every command shown in README.md and docs/*.md runs as written (issue 18).

Which lines are commands:
- in a ```sh, ```bash or ```shell block, every line that is not blank and not a comment (`#`);
  a line ending in `\\` continues on the next one, and a here-document (`<<'EOF'`) runs to its
  terminator;
- in a ```console block (a transcript), only the lines starting with `$ ` (and their `\\`
  continuations); the other lines are output;
- any other block (```yaml, ```text, a bare ```) holds no command: a usage synopsis such as
  `evidence review BUNDLE_ID --result ok|issues` goes in a ```text block.

The exit code a command must give is 0, unless its last line ends with a comment `# exit N`.

Each document runs in a folder of its own, prepared with the bundled policies/, examples/ and
requirements/ and a key pair (signing.pem, signing.pub). The S3 archive of the examples is a local
folder (archive/) written when a command first needs it, with one evaluation of
examples/change-allowed.yml signed by the folder's signing.pem. Its commands run in order, each in `bash -c` from that
folder, with .venv/bin first on PATH and no CI variable set: as a reader would type them.

A command that cannot run here as written (an outside service, a measurement, the suite itself)
must match an entry of DECLARED, the one table of substitutions and skips, each with its reason.
The test fails when a doc command is neither runnable nor declared, and when an entry of the
table matches no command any more.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
PREPARED_BUNDLE = "{bundle}"  # the id of the archive's bundle, filled in per run


@dataclass(frozen=True)
class Declared:
    """One row of the table: `pattern` (a regex searched in the command) is replaced by `value` (a
    re.sub template; `{repo}` is this checkout, `{head}` its commit, `{bundle}` the stand-in
    archive's bundle), or, with `value` None, the command is not run. `reason` says why."""

    pattern: str
    value: str | None
    reason: str


DECLARED: list[Declared] = [
    # -- substitutions: the command runs, against a local stand-in ------------------------------
    Declared(r"s3://acme-evidence/prod", "archive",
             "S3 is an outside service: the same commands run on the prepared local archive "
             "(the S3 store itself is tested against a moto server in tests/test_evidence_s3.py)"),
    Declared(r"\b20260314T101502Z-5e0c9a1b2d3f\b", PREPARED_BUNDLE,
             "an example bundle id: the id of the prepared archive's bundle"),
    Declared(r"--since 2026-01-01 --until 2026-12-31", "--since 2000-01-01 --until 2100-12-31",
             "the archive's bundle is recorded at the test's wall clock: the period must hold it on any date"),
    Declared(r"^python -m build --wheel --outdir wheels/$", f"python -m build --no-isolation --wheel --outdir wheels/ {REPO}",
             "no package index here: build without isolation (the test extra has hatchling), from this checkout"),
    Declared(r"^pip install (\"policyengine-gate\[sign\] @ git\+)https://github\.com/your-org/policyengine@<40-hex commit>\"$",
             "pip install --no-index --no-deps --no-build-isolation --target installed \\1file://{repo}@{head}\"",
             "GitHub and PyPI are outside services: the same git-URL install, pinned by this checkout's commit, "
             "from a local clone; no dependency fetched (pip refuses a URL whose project is not policyengine-gate)"),
    # -- skips: the command does not run here ----------------------------------------------------
    Declared(r"^bash scripts/test\.sh", None,
             "the test suite itself: running it from the suite would recurse (.ci/run runs it)"),
    Declared(r"^bash scripts/demo\.sh\b", None,
             "sets up .venv in the checkout; tests/test_demo_script.py runs the demo and checks its exit codes"),
    Declared(r"^pip-compile ", None, "needs the package index (PyPI) to resolve and hash the lock"),
    Declared(r"^policyengine check --policy policies/soc2-production\.yml --emergency", None,
             "a transcript from inside GitHub Actions: the change and the declarer's identity come from "
             "the CI and its API (tests/test_emergency.py runs emergencies against the API stand-in)"),
    Declared(r"^policyengine emergency approve --archive \S+ 20261205T030000Z-0a1b2c3d4e5f", None,
             "approves the emergency bundle the transcript's CI run wrote, as the CI actor"),
    Declared(r"^policyengine audit reconcile ", None,
             "added by issue 16, and reads the platform's deployment log (an outside service): "
             "docs/population.md walks through it"),
    Declared(r"^policyengine evidence baseline \\\n  --archive git\+https://github\.com/acme/", None,
             "needs the team's evidence repository and a checkout of the deployed repository: "
             "tests/test_evidence_baseline.py records baselines on the folder, S3 and git stores"),
    Declared(r"--tsa-cert tsa-root\.pem --require-timestamps", None,
             "needs an archive stamped by a timestamp authority and that authority's root: "
             "tests/test_timestamp.py runs this verify against a real TSA (openssl ts) on loopback"),
    Declared(r"^\.venv/bin/pip install -e '\.\[bench\]'", None, "needs the package index (junitparser)"),
    Declared(r"^\.venv/bin/(python|pytest) .*(benchmarks/|-k 250)", None,
             "a measurement taking minutes (docs/performance.md); benchmarks/ is not part of the suite"),
    Declared(r"^\.venv/bin/python - <<'EOF'\nimport sys, time", None,
             "a measurement of parallel requests (docs/performance.md), not a check"),
    Declared(r"^cd /work/main$", None, "the measurements' machine-specific checkout"),
    Declared(r"^for dir in /tmp/base \"\$PWD\"; do", None,
             "a measurement of 20 concurrent writers before and after, in two machine-specific checkouts"),
]


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str
    exit_code: int


def commands(doc: str) -> list[Command]:
    text = (REPO / doc).read_text(encoding="utf-8")
    out: list[Command] = []
    for block in re.finditer(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", text, flags=re.S | re.M):
        indent, lang, body = block[1], block[2], block[3]  # a fence may be indented (in a list item)
        if lang not in ("sh", "bash", "shell", "console"):
            continue
        first = text.count("\n", 0, block.start(3)) + 1
        lines = [line.removeprefix(indent) for line in body.splitlines()]
        i = 0
        while i < len(lines):
            line, start = lines[i], i
            i += 1
            if lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            elif not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = [line]
            while parts[-1].endswith("\\") and i < len(lines):
                parts.append(lines[i])
                i += 1
            heredoc = re.search(r"<<-?\s*'?(\w+)'?", parts[-1])
            if heredoc:
                while i < len(lines):
                    parts.append(lines[i])
                    i += 1
                    if parts[-1].strip() == heredoc[1]:
                        break
            command = "\n".join(parts)
            code = re.search(r"#\s*exit (\d+)\b[^\n]*$", parts[-1] if not heredoc else parts[0])
            out.append(Command(doc, first + start, command, int(code[1]) if code else 0))
    return out


@functools.cache
def _head() -> str:
    """This checkout's commit: what the git-URL install of the docs is pinned to here."""
    res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    return res.stdout.strip() or "HEAD"


def declared(command: str) -> tuple[str | None, list[Declared]]:
    """The command as it runs (None: skipped) and the table rows it matched."""
    used = []
    for row in DECLARED:
        if re.search(row.pattern, command, flags=re.M):
            used.append(row)
            if row.value is None:
                return None, used
            value = row.value.replace("{repo}", str(REPO)).replace("{head}", _head())  # a re.sub template
            command = re.sub(row.pattern, value, command, flags=re.M)
    return command, used


def test_the_rules_find_commands_output_and_exit_codes() -> None:
    # the README's first-change section: here-documents, an expected exit 1, continuation lines
    readme = commands("README.md")
    texts = [c.text for c in readme]
    assert any(t.startswith("cat > policy.yml <<'EOF'\n") and t.endswith("\nEOF") for t in texts)
    assert [c.exit_code for c in readme if "self-approved.yml --evidence-dir" in c.text] == [1]
    assert any(t.startswith("policyengine audit export") and "-o audit-2026.zip" in t for t in texts)
    # a transcript's output is not a command
    transcript = [c.text for c in commands("docs/emergencies.md")]
    assert "echo $?" in transcript and not any(t.startswith(("EMERGENCY", "OPEN", "0")) for t in transcript)
    assert len(readme) >= 12


def test_every_row_of_the_table_is_used() -> None:
    """A row that matches no command is stale: the table lists only what the docs need."""
    used = {id(row) for doc in DOCS for c in commands(doc) for row in declared(c.text)[1]}
    stale = [row.pattern for row in DECLARED if id(row) not in used]
    assert stale == []


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """policies/, examples/, requirements/ and a key pair (signing.pem, signing.pub)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = tmp_path_factory.mktemp("docs-prepared")
    for name in ("policies", "examples", "requirements"):
        shutil.copytree(REPO / name, folder / name)
    key = Ed25519PrivateKey.generate()
    (folder / "signing.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (folder / "signing.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return folder


def stand_in_archive(folder: Path) -> str:
    """The archive the S3 examples run on: written on first use, signed with the folder's signing.pem
    (the one a doc made itself earlier, like the README's first change, or the prepared one)."""
    res = subprocess.run(
        [str(BIN / "policyengine"), "check", "--policy", "policies/soc2-production.yml", "--change",
         "examples/change-allowed.yml", "--workspace", "examples/workspace", "--now", "2026-11-24T15:00:00Z",
         "--evidence-dir", "archive", "--signing-key", "signing.pem"],
        cwd=folder, env=_env(folder), capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    bundle = re.search(r"\(bundle (\S+?)\)", res.stdout)
    assert bundle, res.stdout
    return bundle[1]


def _env(folder: Path) -> dict[str, str]:
    ci = re.compile(r"^(CI|GITHUB_.*|GITLAB_.*|CI_.*|RUNNER_.*|JENKINS_URL|TF_BUILD|BUILDKITE|CIRCLECI|POLICYENGINE_.*)$")
    env = {k: v for k, v in os.environ.items() if not ci.match(k)}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HOME=str(folder), NO_COLOR="1",
               POLICYENGINE_CACHE_DIR=str(folder / ".cache"))
    return env


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_of_the_doc_runs_as_written(doc: str, prepared: Path, tmp_path: Path) -> None:
    folder = tmp_path / "work"
    shutil.copytree(prepared, folder)
    ran, failures, bundle = 0, [], None
    for command in commands(doc):
        text, _ = declared(command.text)
        if text is None:
            continue
        if re.search(r"--archive archive\b", text) and bundle is None:
            bundle = stand_in_archive(folder)
        text = text.replace(PREPARED_BUNDLE, bundle or PREPARED_BUNDLE)
        res = subprocess.run(["bash", "-c", text], cwd=folder, env=_env(folder), capture_output=True, text=True,
                             timeout=180, check=False)
        ran += 1
        if res.returncode != command.exit_code:
            failures.append(f"{doc}:{command.line}: exit {res.returncode}, the doc says {command.exit_code}:\n"
                            f"$ {text}\n{res.stdout[-1500:]}{res.stderr[-1500:]}")
    assert failures == [], "\n\n".join(failures)
    if doc == "README.md":
        assert ran >= 12  # the first change, the five auditor's commands: not all skipped

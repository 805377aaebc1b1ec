"""The action and the template ask for the CI's signed identity (issue 17).

``actions/attest`` and ``gh attestation verify`` cannot run here, so the attestation step is
marked untested in docs/auditor-checks.md; what can be checked is checked: action.yml passes
zizmor and check-jsonschema, a workflow using it with ``id-token: write`` and ``attest: true``
passes actionlint, every action it uses is pinned by commit, and the GitLab template declares the
``id_tokens:`` entry the gate reads (check-jsonschema).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from test_platform_controls import actionlint
from test_provider_integration_files import ACTION, GITLAB, run, tool

WORKFLOW = """name: deploy
on:
  push:
    branches: [main]
permissions: {}
jobs:
  deploy:
    runs-on: ubuntu-latest
    environment: production
    permissions:
      contents: read
      pull-requests: read
      checks: read
      statuses: read
      deployments: read
      id-token: write
      attestations: write
    steps:
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
        with:
          persist-credentials: false
          fetch-depth: 0
      - id: gate
        uses: acme/policyengine@0123456789abcdef0123456789abcdef01234567
        with:
          policy: policies/soc2-production.yml
          environment: production
          attest: "true"
"""


def test_the_action_documents_id_token_write_and_pins_actions_attest_by_commit() -> None:
    text = ACTION.read_text(encoding="utf-8")
    assert "id-token: write" in text and "attestations: write" in text
    action = yaml.safe_load(text)
    assert action["inputs"]["attest"]["default"] == "false"
    uses = [s["uses"] for s in action["runs"]["steps"] if "uses" in s]
    assert any(u.startswith("actions/attest@") for u in uses)
    for u in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u), f"{u} is not pinned by commit"
    [attest] = [s for s in action["runs"]["steps"] if str(s.get("uses", "")).startswith("actions/attest@")]
    assert "inputs.attest == 'true'" in attest["if"]


def test_the_action_passes_zizmor_and_check_jsonschema() -> None:
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(ACTION))
    assert res.returncode == 0, res.stdout + res.stderr
    res = run(tool("zizmor"), "--offline", str(ACTION))
    assert res.returncode == 0 and "No findings to report" in res.stdout + res.stderr, res.stdout + res.stderr


def test_a_workflow_using_the_action_with_id_token_write_passes_actionlint(tmp_path: Path) -> None:
    path = tmp_path / ".github" / "workflows" / "deploy.yml"
    path.parent.mkdir(parents=True)
    path.write_text(WORKFLOW, encoding="utf-8")
    res = run(actionlint(), str(path), cwd=tmp_path)
    assert res.returncode == 0 and "passed lint checks" in res.stdout, res.stdout + res.stderr
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_gitlab_template_declares_the_id_token_the_gate_reads() -> None:
    job = yaml.safe_load(GITLAB.read_text(encoding="utf-8"))[".policyengine-gate"]
    assert job["id_tokens"] == {"POLICYENGINE_ID_TOKEN": {"aud": "policyengine"}}
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(GITLAB))
    assert res.returncode == 0, res.stdout + res.stderr

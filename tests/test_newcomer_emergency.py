"""Day one (issue 18): what `evidence show` and `audit summary` say of an emergency's approvals."""

from __future__ import annotations

from typing import Any

import json
from pathlib import Path

import pytest

from tests.oidc_issuer import verified_ci
from test_emergency import approve, bundle_id, declared, run  # noqa: F401 - `declared` is a fixture

PERIOD = ("--since", "2000-01-01", "--until", "2100-01-01")


def _summary(tmp: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> str:
    code, out, err = run(capsys, "audit", "summary", "--archive", str(tmp / "evidence"), *PERIOD, "--format", fmt)
    assert code in (0, 1), out + err
    return out


def test_show_says_a_self_asserted_approval_is_not_counted(declared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = approve(declared, capsys, "frank")
    assert code == 0, out + err
    code, out, _ = run(capsys, "evidence", "show", "--archive", str(declared / "evidence"), bundle_id(declared))
    block = out.split("emergency-approval", 1)[1]
    assert "NOT COUNTED: self-asserted (recorded outside CI): never closes an emergency" in block


def test_show_says_a_verified_approval_counts(declared: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, oidc_issuer: Any) -> None:
    verified_ci(monkeypatch, oidc_issuer, "frank")
    assert approve(declared, capsys, "frank")[0] == 0
    monkeypatch.delenv("GITHUB_ACTIONS")
    _, out, _ = run(capsys, "evidence", "show", "--archive", str(declared / "evidence"), bundle_id(declared))
    assert "counts toward the emergency's approval" in out and "NOT COUNTED" not in out.split("emergency-approval")[1]


def test_summary_names_no_approval_that_does_not_count(declared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert approve(declared, capsys, "frank")[0] == 0  # self-asserted: recorded, never closes it
    [e] = json.loads(_summary(declared, capsys, "json"))["emergencies"]
    assert e["status"] in ("open", "overdue")
    assert e["approval_id"] is None and e["approved_at"] is None


def test_summary_names_the_approval_that_closed_it(declared: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, oidc_issuer: Any) -> None:
    assert approve(declared, capsys, "frank")[0] == 0  # self-asserted first: it must not be the one named
    verified_ci(monkeypatch, oidc_issuer, "gina")
    code, out, _ = approve(declared, capsys, "gina")
    assert code == 0
    verified_id = out.split(" as record ", 1)[1].split()[0]
    monkeypatch.delenv("GITHUB_ACTIONS")
    [e] = json.loads(_summary(declared, capsys, "json"))["emergencies"]
    assert e["status"] in ("approved on time", "approved late")
    assert e["approval_id"] == verified_id and e["approved_at"]


def test_summary_has_one_emergency_section(declared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = _summary(declared, capsys, "md")
    headings = [line for line in md.splitlines() if line.startswith("#") and "mergenc" in line]
    assert headings == ["## Emergencies (1)"], headings
    assert bundle_id(declared) in md.split("## Emergencies (1)", 1)[1]
    page = _summary(declared, capsys, "html")
    assert page.count("mergenc") >= 1
    assert [h for h in page.split("<h2>")[1:] if "mergenc" in h.split("</h2>")[0]] == [
        h for h in page.split("<h2>")[1:] if h.startswith("Emergencies (1)")]

"""Day one (issue 18): `policy diff` names one edited deploy window once, with its old and new times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from policyengine.language.policydiff import NEUTRAL, STRONGER, WEAKER, diff

WINDOW = """version: 1
name: p
rules:
  - id: deploy-window
    type: deploy_window
    timezone: America/New_York
    allow:
{windows}
"""


def _policy(*windows: str) -> dict:
    import yaml

    return yaml.safe_load(WINDOW.format(windows="\n".join(windows)))


BUSINESS = '      - {name: business hours, days: [mon, tue, wed, thu], between: ["09:00", "16:00"]}'


@pytest.mark.parametrize(("edited", "direction", "words"), [
    ('      - {name: business hours, days: [mon, tue, wed, thu], between: ["08:00", "18:00"]}', WEAKER,
     "allow window 'business hours' widened: mon-thu 09:00-16:00 -> mon-thu 08:00-18:00"),
    ('      - {name: business hours, days: [mon-fri], between: ["09:00", "16:00"]}', WEAKER,
     "allow window 'business hours' widened: mon-thu 09:00-16:00 -> mon-fri 09:00-16:00"),
    ('      - {name: business hours, days: [tue, wed], between: ["10:00", "15:00"]}', STRONGER,
     "allow window 'business hours' narrowed: mon-thu 09:00-16:00 -> tue-wed 10:00-15:00"),
    ('      - {name: business hours, days: [mon, tue, wed, thu], between: ["12:00", "20:00"]}', WEAKER,
     "allow window 'business hours' moved: mon-thu 09:00-16:00 -> mon-thu 12:00-20:00"),
    ('      - {name: business hours, days: [Monday-Thursday], between: ["09:00", "16:00"]}', NEUTRAL,
     "allow window 'business hours' rewritten, same times (mon-thu 09:00-16:00 -> mon-thu 09:00-16:00)"),
])
def test_an_edited_named_window_is_one_finding_with_old_and_new_times(edited: str, direction: str,
                                                                      words: str) -> None:
    findings = [f for f in diff(_policy(BUSINESS), _policy(edited)) if ".allow" in f.path]
    assert [(f.path, f.direction) for f in findings] == [("rules[deploy-window].allow[business hours]", direction)]
    assert findings[0].message.startswith(words), findings[0].message


def test_an_edited_unnamed_window_is_one_finding_too() -> None:
    old = _policy('      - {days: [mon-fri], between: ["09:00", "16:00"]}')
    new = _policy('      - {days: [mon-fri], between: ["09:00", "18:00"]}')
    findings = diff(old, new)
    assert [(f.direction, f.message) for f in findings] == [
        (WEAKER, "allow window \"['mon-fri']\" widened: mon-fri 09:00-16:00 -> mon-fri 09:00-18:00")]


def test_added_and_removed_windows_still_count() -> None:
    friday = '      - {name: friday, days: [fri], between: ["09:00", "12:00"]}'
    added = diff(_policy(BUSINESS), _policy(BUSINESS, friday))
    assert [(f.direction, f.message) for f in added] == [(WEAKER, "allow window 'friday' added: fri 09:00-12:00")]
    removed = diff(_policy(BUSINESS, friday), _policy(BUSINESS))
    assert [(f.direction, f.message) for f in removed] == [(STRONGER, "allow window 'friday' removed: fri 09:00-12:00")]


def test_the_cli_prints_no_weaker_and_stronger_pair_for_one_edit(tmp_path: Path) -> None:
    (tmp_path / "old.yml").write_text(WINDOW.format(windows=BUSINESS), encoding="utf-8")
    (tmp_path / "new.yml").write_text(WINDOW.format(windows=BUSINESS.replace('"16:00"', '"17:00"')), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "policyengine", "policy", "diff", str(tmp_path / "old.yml"),
                          str(tmp_path / "new.yml")], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    lines = [ln for ln in run.stdout.splitlines() if "business hours" in ln]
    assert len(lines) == 1 and "WEAKER" in lines[0] and "09:00-16:00 -> mon-thu 09:00-17:00" in lines[0], run.stdout
    assert "STRONGER" not in run.stdout

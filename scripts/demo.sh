#!/usr/bin/env bash
# Quickstart: install policyengine, gate one allowed and one denied change from examples/,
# then list and verify the evidence they left.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
pe=.venv/bin/policyengine
archive=demo-evidence
rm -rf "$archive"
run() { printf '\n$ %s\n' "$*"; "$@"; rc=$?; printf '(exit code %s)\n' "$rc"; return 0; }

run $pe policy validate policies/soc2-production.yml policies/soc2-small-team.yml
# --now pins the clock so the demo is the same every day: Tuesday 2026-11-24 10:00 in New York.
run $pe check --policy policies/soc2-production.yml --change examples/change-allowed.yml \
  --workspace examples/workspace --now 2026-11-24T15:00:00Z --evidence-dir "$archive" \
  --junit "$archive/allowed-junit.xml"
run $pe check --policy policies/soc2-production.yml --change examples/change-denied.yml \
  --workspace examples/workspace --now 2026-11-24T15:00:00Z --evidence-dir "$archive" \
  --junit "$archive/denied-junit.xml"
run $pe evidence list --archive "$archive"
run $pe evidence verify --archive "$archive"

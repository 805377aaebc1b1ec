#!/usr/bin/env bash
# Quickstart: install policyengine, gate one allowed and one denied change from examples/,
# then list and verify the evidence they left.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
pe=.venv/bin/policyengine
archive=demo-evidence
rm -rf "$archive"
failed=0
# run EXPECTED_EXIT_CODE COMMAND...: show the command and its exit code; a different exit code
# than the one the demo expects marks the demo failed (it goes on, so every step is shown).
run() {
  local want=$1; shift
  printf '\n$ %s\n' "$*"; "$@"; local rc=$?
  printf '(exit code %s)\n' "$rc"
  if [ "$rc" != "$want" ]; then
    printf 'demo: expected exit code %s here, got %s\n' "$want" "$rc" >&2
    failed=1
  fi
}

run 0 $pe policy validate policies/soc2-production.yml policies/soc2-small-team.yml
# --now pins the clock so the demo is the same every day: Tuesday 2026-11-24 10:00 in New York.
run 0 $pe check --policy policies/soc2-production.yml --change examples/change-allowed.yml \
  --workspace examples/workspace --now 2026-11-24T15:00:00Z --evidence-dir "$archive" \
  --junit "$archive/allowed-junit.xml"
run 1 $pe check --policy policies/soc2-production.yml --change examples/change-denied.yml \
  --workspace examples/workspace --now 2026-11-24T15:00:00Z --evidence-dir "$archive" \
  --junit "$archive/denied-junit.xml"
run 0 $pe evidence list --archive "$archive"
run 0 $pe evidence verify --archive "$archive"
if [ "$failed" != 0 ]; then
  echo "demo failed: a step above did not exit as expected" >&2
  exit 1
fi
echo
echo "demo ok: one change allowed (exit 0), one denied (exit 1), evidence listed and verified in $archive/"

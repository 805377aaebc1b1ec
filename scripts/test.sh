#!/usr/bin/env bash
# Install policyengine with its test extras into .venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Debian packages some tests need: chromium (the report.html browser test) and faketime (the golden
# outputs under shifted wall clocks). On a fresh CI machine (as root) install them; otherwise leave
# the machine alone and let those tests skip, each naming the install command.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
if [ "$(id -u)" = "0" ] && { [ -n "${CI:-}" ] || [ "${POLICYENGINE_INSTALL_BROWSER:-}" = "1" ]; } \
    && [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Most tests wait on subprocesses, git and loopback servers, so twice as many workers as cores
# (at least 4) keeps both cores busy; each worker has its own cache folder (tests/conftest.py).
# --durations=10 reports the ten slowest tests of every run (docs/performance.md).
cores="$(nproc 2>/dev/null || echo 2)"
workers="${POLICYENGINE_TEST_WORKERS:-$(( cores * 2 > 4 ? cores * 2 : 4 ))}"
exec .venv/bin/python -m pytest -n "$workers" --durations=10 "$@"

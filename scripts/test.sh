#!/usr/bin/env bash
# Install policyengine with its test extras into .venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The report.html browser test needs Debian's chromium; on a fresh CI machine (as root) install it,
# otherwise leave the machine alone and let that test skip with the install command.
if [ "$(id -u)" = "0" ] && { [ -n "${CI:-}" ] || [ "${POLICYENGINE_INSTALL_BROWSER:-}" = "1" ]; } \
    && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest "$@"

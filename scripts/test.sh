#!/usr/bin/env bash
# Install policyengine with its test extras into .venv and run the whole test suite.
# PE_TEST_DATE=YYYY-MM-DD runs it as if today were that date (tests/clockshift/sitecustomize.py,
# test-only; the product has no clock variable): the suite must pass on any date.
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
# --dist loadscope keeps each module on one worker, so a module-scoped fixture (the audit year:
# 2,000 deployments) is built once, not once per worker (xdist_group marks do not reach the
# scheduler with pytest 9). --durations=10 reports the ten slowest tests of every run
# (docs/performance.md).
cores="$(nproc 2>/dev/null || echo 2)"
workers="${POLICYENGINE_TEST_WORKERS:-$(( cores * 2 > 4 ? cores * 2 : 4 ))}"
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# A shifted run killed before its trap ran would leave every later run shifted: start clean.
rm -f "$site/pe-test-clockshift.pth" .venv/pe-test-date
if [ -n "${PE_TEST_DATE:-}" ]; then
  # Every Python process of this run, whatever environment a test gives it, runs as if today were
  # PE_TEST_DATE (tests/clockshift/sitecustomize.py); both files are removed when the run ends.
  echo "$PWD/tests/clockshift" > "$site/pe-test-clockshift.pth"
  echo "$PE_TEST_DATE" > .venv/pe-test-date
  trap 'rm -f "$site/pe-test-clockshift.pth" .venv/pe-test-date' EXIT
  echo "test.sh: running as if today were $PE_TEST_DATE (tests/clockshift/sitecustomize.py)"
  .venv/bin/python -m pytest -n "$workers" --dist loadscope --durations=10 "$@"
  exit $?
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadscope --durations=10 "$@"

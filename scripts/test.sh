#!/usr/bin/env bash
# Install everything the test suite needs, then run it: lint, types, tests.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION=3.35.0

step() { printf '\n==> %s\n' "$*"; }

# The core suite: what a user of the core install runs (file:// tiers, SQLite, the CLI).
CORE_SUITE=(
  tests/test_extras.py tests/test_cli.py tests/test_cli_habits.py tests/test_config.py
  tests/test_units_keys.py tests/test_one_pipeline.py tests/test_orphans.py
  tests/test_tiering.py tests/test_planner.py tests/test_scan.py
)

step "Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

step "Azurite ${AZURITE_VERSION} (npm, into .cache/node)"
if ! [ -x .cache/node/node_modules/.bin/azurite-blob ] ||
   ! grep -q "\"version\": \"${AZURITE_VERSION}\"" .cache/node/node_modules/azurite/package.json 2>/dev/null; then
  rm -rf .cache/node  # an interrupted install is not repaired in place: start clean
  mkdir -p .cache/node
  npm install --prefix .cache/node --no-audit --no-fund --silent "azurite@${AZURITE_VERSION}"
fi

step "Debian packages: prometheus (promtool and the server), chromium and chromium-driver"
missing=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -q >/dev/null &&
      apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi
promtool --version | head -n 1
chromium --version

step "PostgreSQL"
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

step "ruff"
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts

step "mypy"
.venv/bin/mypy

step "import contracts (layers one way down, no circle; pyproject [tool.importlinter])"
.venv/bin/lint-imports --no-cache

step "pip-audit (known vulnerabilities in the installed dependencies)"
.venv/bin/python scripts/audit.py

step "core install: pip install -e . alone (file:// + SQLite + the CLI), and the core suite"
# A venv with no extra: the modules that need one are not collected, the servers only an
# extra reaches are skipped (tests/conftest.py, SHELFLIFE_CORE_ONLY), the rest must pass.
[ -x .venv-core/bin/python ] || python3 -m venv .venv-core
.venv-core/bin/python -m pip install --quiet --upgrade pip
.venv-core/bin/python -m pip install --quiet -e . 'pytest>=8,<10' 'pytest-timeout>=2.3,<3' 'hypothesis>=6.100,<7'
SHELFLIFE_CORE_ONLY=1 SHELFLIFE_ARTIFACTS="$(mktemp -d)" .venv-core/bin/pytest -q -p no:cacheprovider \
  "${CORE_SUITE[@]}"

step "pytest"
# The suite starts hundreds of shelflife and celery processes: let them keep the
# project's compiled bytecode (src/**/__pycache__, ignored by git) instead of compiling
# it again each time, whatever the environment says.
unset PYTHONDONTWRITEBYTECODE
.venv/bin/pytest "$@"

step "docs/reliability.md from this run's figures"
.venv/bin/python scripts/reliability.py
cat docs/reliability.md

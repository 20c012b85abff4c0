#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs): lint, then pytest against real
# Redis, PostgreSQL, Celery workers and the sandbox simulators, slow crash tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
setup_python test
ensure_redis
ensure_postgres
ensure_chromium || true  # without it the browser test fails, saying so; the rest still runs
ensure_promtool || true  # without it the Prometheus check is skipped, saying so
mkdir -p test-artifacts
export MOTCUA_TEST_ARTIFACTS="$PWD/test-artifacts"
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy schemas config store connectors adapters services tasks api cli sandbox bench
echo "== pytest"
# three processes on the two cores (the tests wait on workers, simulators and timers more than they compute), a
# file's tests on one of them (tests/conftest.py gives each its own Redis database, and hands the long files of
# few tests out first); MOTCUA_TEST_PROCESSES=0 runs them in this process
exec .venv/bin/pytest -q -n "${MOTCUA_TEST_PROCESSES:-3}" --dist loadfile --no-loadscope-reorder "$@"

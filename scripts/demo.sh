#!/usr/bin/env bash
# Set up and run the demo: the simulators, the API and a worker on the embedded defaults,
# a simulated working day of a district's dossiers, live progress and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
setup_python ""
ensure_redis || log "no Redis: the demo will use an in-process broker"
exec .venv/bin/motcua-relay demo "$@"

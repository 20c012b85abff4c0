#!/usr/bin/env bash
# Set up and run the demo: the simulators, the API and a worker on the embedded defaults,
# a simulated working day of a ward's desk and of the provincial centre, live progress and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
setup_python ""
ensure_redis || log "no Redis: the demo will use an in-process broker"
.venv/bin/motcua-relay demo "$@" && status=0 || status=$?
log "motcua-relay is .venv/bin/motcua-relay: 'source .venv/bin/activate' puts it on your PATH"
exit "$status"

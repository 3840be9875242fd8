#!/bin/bash
# Run every test: unit tests, module tests against the real daemons, the molecule scenario
# of each role (on namespaced lab hosts), and the end-to-end tests (deploy, runtime with real
# guests, networking) on namespaced lab hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest "$@"

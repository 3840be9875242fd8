#!/bin/bash
# Run every test: unit tests, module tests against the real daemons, the molecule scenario
# of each role (on namespaced lab hosts) and the end-to-end deploy of a cloud-in-a-box.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest "$@"

#!/bin/bash
# The HA lab: inventory/ha on namespaced lab hosts (ha1, ha2, ha-wit, ha-node), deployed with
# cloudctl as the cloud halab. See scripts/halab.py.
#
#   scripts/halab.sh up [--no-deploy] [--single]
#                                       build (again) and deploy (--single: ha1 alone in
#                                       clc, walrus and cc; a later up makes the pairs)
#   scripts/halab.sh status             lab parts, VIP holders, gateway, cloudctl service status
#   scripts/halab.sh cut|mend HOST      the lab gateway unreachable / reachable again from HOST
#   scripts/halab.sh down               remove everything
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
exec python3 scripts/halab.py "$@"

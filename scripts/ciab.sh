#!/bin/bash
# Demo: deploy a cloud-in-a-box on this machine and show its services.
#
# The cloud host is a namespaced lab host (molecule/labhost.py): its own network, /run, /etc,
# /var/lib... and sshd, so the demo never touches this machine's real network. cloudctl runs
# from the normal shell and reaches it over SSH, as it would reach a real server.
#
#   scripts/ciab.sh            deploy (again) and show `cloudctl service status`
#   scripts/ciab.sh --destroy  run reset.yml, then remove the lab host
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT="$PWD"
HOST=ciab
INVENTORY="$PROJECT/.lab/ciab/inventory"
export PATH="$PROJECT/.venv/bin:$PATH"
export CLOUDCTL_INVENTORY="$INVENTORY"
export CLOUDCTL_HOME="$PROJECT/.lab/ciab/cloudctl"

if [ "${1:-}" = "--destroy" ]; then
  if [ -d "$INVENTORY" ]; then
    ANSIBLE_CONFIG="$PROJECT/ansible.cfg" ansible-playbook -i "$INVENTORY" playbooks/reset.yml || true
  fi
  python3 molecule/labhost.py destroy "$HOST"
  rm -rf "$PROJECT/.lab/ciab"
  exit 0
fi

if ! python3 molecule/labhost.py list | grep -q "^$HOST "; then
  python3 molecule/labhost.py create "$HOST"
fi
mkdir -p "$PROJECT/.lab/ciab"
python3 molecule/labhost.py inventory "$HOST" --groups-from inventory/ciab --out "$INVENTORY" >/dev/null

cloudctl deploy
cloudctl service status
echo
echo "The cloud runs in lab host '$HOST' ($(python3 molecule/labhost.py list | awk -v h=$HOST '$1==h {print $2}'))."
echo "Use it:    export CLOUDCTL_INVENTORY=$INVENTORY CLOUDCTL_HOME=$CLOUDCTL_HOME; cloudctl service status"
echo "Remove it: scripts/ciab.sh --destroy"

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

# The tiny test image (Debian kernel + busybox initramfs + dropbear) and a blank root disk.
python3 scripts/build-test-image.py
IMAGES="$PROJECT/.cache/test-image"
[ -e "$IMAGES/root.qcow2" ] || qemu-img create -q -f qcow2 "$IMAGES/root.qcow2" 64M
EMI=$(cloudctl image list -o json | python3 -c \
  'import json,sys; print(next((i["id"] for i in json.load(sys.stdin) if i["name"] == "tiny"), ""))')
if [ -z "$EMI" ]; then
  cloudctl image register tiny --file "$IMAGES/root.qcow2" \
    --kernel "$IMAGES/vmlinuz" --ramdisk "$IMAGES/initrd.img"
  EMI=$(cloudctl image list -o json | python3 -c \
    'import json,sys; print(next(i["id"] for i in json.load(sys.stdin) if i["name"] == "tiny"))')
fi
KEY="$PROJECT/.lab/ciab/demo.pem"
if [ ! -e "$KEY" ]; then
  cloudctl keypair delete demo >/dev/null 2>&1 || true
  cloudctl keypair create demo --output-file "$KEY"
fi

# One instance with a 1 GiB volume.
INSTANCE_JSON=$(cloudctl -o json instance run --image "$EMI" --type m1.small --keypair demo)
read -r IID IP < <(echo "$INSTANCE_JSON" | python3 -c \
  'import json,sys; i=json.load(sys.stdin)[0]; print(i["id"], i["private_ip"])')
VOL=$(cloudctl -o json volume create --size 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
cloudctl instance list
cloudctl volume attach "$VOL" --instance "$IID"

LAB_IP=$(python3 molecule/labhost.py list | awk -v h=$HOST '$1==h {print $2}')
echo
echo "The cloud runs in lab host '$HOST' ($LAB_IP); instance $IID has address $IP"
echo "(the instance network lives inside the lab host: SSH goes through it as a jump host)."
OPTS="-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/dev/null"
echo "SSH in:    ssh -i $KEY $OPTS -o ProxyCommand='ssh -i /root/.cloudlab/id_ed25519 $OPTS -W %h:%p root@$LAB_IP' root@$IP"
echo "           (it boots under TCG: give it a minute; the volume is /dev/disk/by-id/virtio-$VOL)"
echo "Use it:    export CLOUDCTL_INVENTORY=$INVENTORY CLOUDCTL_HOME=$CLOUDCTL_HOME; cloudctl instance list"
echo "Remove it: scripts/ciab.sh --destroy"

#!/bin/bash
# Demo: deploy a cloud-in-a-box on this machine and show its services.
#
# The cloud host is a namespaced lab host (molecule/labhost.py): its own network, /run, /etc,
# /var/lib... and sshd, so the demo never touches this machine's real network. cloudctl runs
# from the normal shell and reaches it over SSH, as it would reach a real server.
#
#   scripts/ciab.sh            deploy (again) and show `cloudctl service status`
#   scripts/ciab.sh --destroy  run reset.yml, then remove the lab host
#
# CIAB_HOST names the lab host, the cloud (`cloudctl --cloud NAME`) and its files in .lab/NAME
# (default ciab), for two demos on one machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT="$PWD"
HOST="${CIAB_HOST:-ciab}"
LAB="$PROJECT/.lab/$HOST"
INVENTORY="$LAB/inventory"
CLOUD_HOME="$LAB/cloudctl"
export PATH="$PROJECT/.venv/bin:$PATH"
# The demo cloud is a named cloud (~/.config/cloudctl/clouds.yaml): any shell reaches it
# with `cloudctl --cloud ciab ...`, or plain `cloudctl ...` while it is the default cloud.
export CLOUDCTL_CLOUD=$HOST

if [ "${1:-}" = "--destroy" ]; then
  if [ -d "$INVENTORY" ]; then
    ANSIBLE_CONFIG="$PROJECT/ansible.cfg" ansible-playbook -i "$INVENTORY" cloudctl.cloud.reset || true
  fi
  python3 molecule/labhost.py destroy "$HOST"
  rm -rf "$LAB"
  if cloudctl cloud list -o json | grep -q "\"name\": \"$HOST\""; then cloudctl cloud remove "$HOST"; fi
  exit 0
fi

if ! python3 molecule/labhost.py list | grep -q "^$HOST "; then
  python3 molecule/labhost.py create "$HOST"
fi
mkdir -p "$LAB"
python3 molecule/labhost.py inventory "$HOST" --groups-from inventory/ciab --out "$INVENTORY" >/dev/null
sed -i "s/\bciab:/$HOST:/" "$INVENTORY/hosts.yml"  # the example's host is the lab host
cloudctl cloud add "$HOST" --inventory "$INVENTORY" --home "$CLOUD_HOME"

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
KEY="$LAB/demo.pem"
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

# SSH checks host keys: the lab host's are in the inventory's known_hosts (labhost.py wrote
# them); the guest prints its own on its console once booted, as cloud-init does, and we
# record them from there, as EC2 users do with get-console-output.
GUEST_KNOWN_HOSTS="$LAB/guest_known_hosts"
KEYS=""
for _ in $(seq 60); do  # it boots under TCG: poll its console for up to 5 minutes
  KEYS=$(cloudctl instance console "$IID" | tr -d '\r' \
    | sed -n '/^-----BEGIN SSH HOST KEY KEYS-----$/,/^-----END SSH HOST KEY KEYS-----$/{/^-----/!p}') || true
  [ -n "$KEYS" ] && break
  sleep 5
done
[ -n "$KEYS" ] || { echo "ciab: $IID printed no SSH host keys on its console" >&2; exit 1; }
echo "$KEYS" | sed "s/^/$IP /" > "$GUEST_KNOWN_HOSTS"

# A user of the cloud: account demo (its first user is demo/admin) and an access key for the
# CLC's EC2 and S3 API. The API serves the CLC's own state, so the CLC's cloudctl makes them
# (the cloudctl of this shell keeps its own state for the operations above).
clc_cloudctl() {
  python3 molecule/labhost.py run "$HOST" -- env -i HOME=/root PATH=/usr/bin:/bin bash -lc "cloudctl $*"
}
CREDS="$LAB/demo-credentials"
if [ ! -d "$CREDS" ]; then
  clc_cloudctl account show demo >/dev/null 2>&1 || clc_cloudctl account create demo
  clc_cloudctl user credentials demo/admin --output-dir "$CREDS"
  # The files name the cloud's CA where the CLC keeps it; here, use the copy cloudctl fetched.
  cp "$CLOUD_HOME/ca.crt" "$CREDS/ca.crt"
  sed -i "s|^ca_bundle = .*|ca_bundle = $CREDS/ca.crt|" "$CREDS/config"
  sed -i "s|^export AWS_CA_BUNDLE=.*|export AWS_CA_BUNDLE=$CREDS/ca.crt|" "$CREDS/eucarc"
fi
API=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["api"]["endpoint"])' \
  "$CLOUD_HOME/cloud.yml")

LAB_IP=$(python3 molecule/labhost.py list | awk -v h=$HOST '$1==h {print $2}')
echo
echo "The cloud runs in lab host '$HOST' ($LAB_IP); instance $IID has address $IP"
echo "(the instance network lives inside the lab host: SSH goes through it as a jump host)."
JUMP="ssh -i /root/.cloudlab/id_ed25519 -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$INVENTORY/known_hosts -W %h:%p root@$LAB_IP"
echo "SSH in:    ssh -i $KEY -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$GUEST_KNOWN_HOSTS -o ProxyCommand='$JUMP' root@$IP"
echo "           (the volume is /dev/disk/by-id/virtio-$VOL)"
echo "Use it:    cloudctl --cloud $HOST instance list   (plain \`cloudctl instance list\` while $HOST is the default cloud)"
echo "The API:   $API (EC2 and S3 over HTTPS, certificate signed by the cloud's CA)"
echo "           user demo/admin's files in $CREDS:"
echo "           credentials + config (AWS profile demo-admin: keys, region, endpoints, CA),"
echo "           eucarc (the same as exports), ca.crt (the cloud's CA)"
echo "           AWS_CONFIG_FILE=$CREDS/config AWS_SHARED_CREDENTIALS_FILE=$CREDS/credentials \\"
echo "             aws --profile demo-admin --endpoint-url $API ec2 describe-availability-zones"
echo "Remove it: scripts/ciab.sh --destroy"

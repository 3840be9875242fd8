#!/bin/bash
# Set up this machine to run cloudctl, the deploy and the tests (as root, Debian 12):
# the daemons' Debian packages, and a virtualenv (.venv) with cloudctl and its tools.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # controller side
  python3 python3-venv python3-apt openssh-client openssh-server git
  # what the roles run on cloud hosts (installed here so labs and CI need no download)
  qemu-system-x86 qemu-utils qemu-block-extra libvirt-daemon-system libvirt-clients
  python3-libvirt python3-boto3 python3-yaml genisoimage tgt dnsmasq-base dnsmasq-utils iptables ebtables
  bridge-utils iproute2 supervisor lvm2 busybox-static dropbear-bin cpio conntrack
  # HA (issue 12): the CLC state store and the Walrus filer store (etcdctl: looking at it);
  # keepalived: the virtual addresses of the HA pairs
  etcd-server etcd-client keepalived
  # used by the tests (strace: command lines of a module run; chromium: screenshots of the
  # HTML usage report; awscli: the EC2 API driven by Debian's aws), and by the benchmarks
  # (GNU time: peak RSS)
  iputils-ping time strace chromium awscli
  # the benchmarks' Debian image with cloud-init (scripts/build-distro-image.py): debootstrap,
  # fdisk (sfdisk: its partition table), and extlinux + its MBR boot code to boot it from its
  # own disk
  debootstrap extlinux syslinux-common fdisk
)

export DEBIAN_FRONTEND=noninteractive
# Do not let package scripts start libvirtd, tgtd, supervisord... in the machine's own
# namespaces: the cloud's daemons run only where the deploy starts them.
created_policy=no
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  created_policy=yes
fi
trap '[ "$created_policy" = yes ] && rm -f /usr/sbin/policy-rc.d' EXIT

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'

# ansible-test sanity (tests/collection/test_sanity.py) makes one virtualenv per sanity test
# with the exact requirements it pins, from PyPI. It bootstraps pip in them with a get-pip.py
# it downloads from a host that is not reachable here; our stand-in goes where it looks first.
python_version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pip_version=$(.venv/bin/python -c 'import sys, types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))["pip"])' "$python_version")
mkdir -p ~/.ansible/test/cache
install -m 0644 scripts/ansible_test_get_pip.py ~/.ansible/test/cache/get_pip_"${pip_version//./_}".py
# Cached by their requirements: a second run only checks them.
(cd collections/ansible_collections/cloudctl/cloud &&
  ../../../../.venv/bin/ansible-test sanity --prime-venvs --python "$python_version" >/dev/null)
echo "setup done: $(.venv/bin/cloudctl --version 2>/dev/null || echo 'cloudctl installed')"

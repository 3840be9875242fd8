#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""List what the cloud made on a host, for `cloudctl reconcile` to compare with its state."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloud_resources
short_description: What the cloud runs on a host (domains, targets, reservations, NAT, cache)
description:
  - Reads, and never changes, the resources the runtime modules make on a host, for each
    role deployed there (found by the JSON file the role writes).
  - "Node controller (I(node_config)): libvirt domains named like instances (C(i-0a1b2c3d))
    with their state, the volumes attached to each (iSCSI network disks whose serial is a
    volume id, in the live domain or its definition, with their target device), instance
    directories, per-instance firewall chains (iptables C(cloud-i-*)/C(cloud-o-*), ebtables
    C(cloud-e-*)) and image cache files."
  - "Storage controller (I(sc_config)): volumes with a tgt target (found by IQN) and volumes
    with a backing store (file or logical volume)."
  - "Cluster controller (I(cc_config)): DHCP reservation files per zone and elastic IP
    associations (the C(CLOUD-EIP-PRE) DNAT rules)."
  - Check mode runs the same reads.
options:
  node_config:
    description: The nc role's facts.
    type: path
    default: /etc/cloud/nc/node.json
  sc_config:
    description: The sc role's facts.
    type: path
    default: /etc/cloud/sc/sc.json
  cc_config:
    description: The cc role's facts.
    type: path
    default: /etc/cloud/cc/cc.json
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  cloud_id_file:
    description: The file in which the deploy records the id of the cloud the host belongs to.
    type: path
    default: /var/lib/cloud/cloud-id
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: It only reads, and runs the same way in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Find what the cloud made on the host
  cloudctl.cloud.cloud_resources:
  register: found
"""

RETURN = r"""
cloud_id:
  description: The id of the cloud the host belongs to; empty when none is recorded.
  returned: always
  type: str
  sample: cloud-0a1b2c3d4e5f6a7b
nc:
  description: Null when the host is no node controller.
  returned: always
  type: dict
  sample: {domains: {i-0a1b2c3d: running}, volumes: {i-0a1b2c3d: {vol-0a1b2c3d: vdb}},
           instance_dirs: [i-0a1b2c3d], firewalls: [i-0a1b2c3d], cache: [9f86d081...]}
sc:
  description: Null when the host is no storage controller.
  returned: always
  type: dict
  sample: {targets: [vol-0a1b2c3d], stores: [vol-0a1b2c3d]}
cc:
  description: Null when the host is no cluster controller.
  returned: always
  type: dict
  sample: {reservations: {zone-a: [i-0a1b2c3d]},
           elastic_ips: [{public_ip: 198.51.100.16, private_ip: 172.31.0.5, instance: i-0a1b2c3d}]}
"""

import os
import re
import xml.etree.ElementTree as ET

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_role_config import (
    RoleConfigError,
    read_role_config,
)

try:
    import libvirt

    HAS_LIBVIRT = True
except ImportError:
    HAS_LIBVIRT = False

INSTANCE = re.compile(r"^i-[0-9a-f]{8}$")
VOLUME = re.compile(r"^vol-[0-9a-f]{8}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHAIN = re.compile(r"^(?:-N |:)cloud-[ioe]-([0-9a-f]{8})\b")  # iptables -S, ebtables-save
TARGET = re.compile(r"^Target \d+: (\S+)$", re.MULTILINE)
DNAT = re.compile(
    r'^-A CLOUD-EIP-PRE -d (?P<public_ip>[\d.]+)/32 .*--comment "cloud-eip \S+ ?(?P<instance>\S*)"'
    r" -j DNAT --to-destination (?P<private_ip>[\d.]+)"
)
DOMAIN_STATES = {1: "running", 3: "paused", 5: "stopped"}


class Host:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module

    def run(self, *cmd: str) -> str:
        """A command's output; empty when the tool or its table/chain does not exist."""
        path = self.module.get_bin_path(cmd[0])
        if path is None:
            return ""
        rc, out, _err = self.module.run_command([path, *cmd[1:]], environ_update={"LC_ALL": "C"})
        return out if rc == 0 else ""

    def config(self, key: str, role: str) -> dict | None:
        path = self.module.params[key]
        if not os.path.exists(path):
            return None
        try:
            return read_role_config(path, role)
        except RoleConfigError as exc:
            self.module.fail_json(msg=str(exc))

    def node(self, conf: dict) -> dict:
        if not HAS_LIBVIRT:
            self.module.fail_json(msg=missing_required_lib("libvirt-python (python3-libvirt)"))
        try:
            conn = libvirt.openReadOnly(self.module.params["uri"])
            found = [d for d in conn.listAllDomains() if INSTANCE.match(d.name())]
            domains = {d.name(): DOMAIN_STATES.get(d.state()[0], "other") for d in found}
            volumes = {d.name(): v for d in found if (v := _volumes(d))}
        except libvirt.libvirtError as exc:
            self.module.fail_json(msg=f"libvirt {self.module.params['uri']}: {exc}")
        chains = self.run("iptables", "-w", "-S") + self.run("ebtables-save")
        return {
            "domains": domains,
            "volumes": volumes,
            "instance_dirs": _names(conf.get("instances_dir"), INSTANCE),
            "firewalls": sorted({f"i-{m[1]}" for m in map(CHAIN.match, chains.splitlines()) if m}),
            "cache": _names(conf.get("cache_dir"), SHA256),
        }

    def storage(self, conf: dict) -> dict:
        prefix = conf["iqn_prefix"] + ":"
        iqns = TARGET.findall(
            self.run("tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show")
        )
        if conf.get("volume_group"):
            lvs = self.run("lvs", "--noheadings", "-o", "lv_name", conf["volume_group"])
            stores = sorted(name.strip() for name in lvs.splitlines() if name.strip())
        else:
            stores = sorted(
                n[: -len(".img")] for n in _names(conf.get("volume_dir")) if n.endswith(".img")
            )
        return {
            "targets": sorted(i[len(prefix) :] for i in iqns if i.startswith(prefix)),
            "stores": [s for s in stores if s.startswith("vol-")],
        }

    def cluster(self, conf: dict) -> dict:
        nat = self.run("iptables", "-w", "-t", "nat", "-S", "CLOUD-EIP-PRE")
        return {
            "reservations": {
                zone: _names(z.get("hosts_dir"), INSTANCE) for zone, z in conf["zones"].items()
            },
            "elastic_ips": [m.groupdict() for m in map(DNAT.match, nat.splitlines()) if m],
        }


def _volumes(dom) -> dict[str, str]:
    """Volume id -> target device of the domain's iSCSI disks, live or in its definition (a
    stopped domain gets them back when it starts)."""
    xmls = [dom.XMLDesc(0)]
    if dom.isActive() and dom.isPersistent():
        xmls.append(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    found = {}
    for text in xmls:
        for disk in ET.fromstring(text).findall("./devices/disk[@type='network']"):
            serial = (disk.findtext("serial") or "").strip()
            source, target = disk.find("source"), disk.find("target")
            if VOLUME.match(serial) and source is not None and source.get("protocol") == "iscsi":
                found[serial] = target.get("dev", "") if target is not None else ""
    return found


def _names(directory: str | None, pattern: re.Pattern | None = None) -> list[str]:
    if not directory or not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if pattern is None or pattern.match(n))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "node_config": {"type": "path", "default": "/etc/cloud/nc/node.json"},
            "sc_config": {"type": "path", "default": "/etc/cloud/sc/sc.json"},
            "cc_config": {"type": "path", "default": "/etc/cloud/cc/cc.json"},
            "uri": {"type": "str", "default": "qemu:///system"},
            "cloud_id_file": {"type": "path", "default": "/var/lib/cloud/cloud-id"},
        },
        supports_check_mode=True,
    )
    host = Host(module)
    found = {}
    for role, key, reader in (
        ("nc", "node_config", host.node),
        ("sc", "sc_config", host.storage),
        ("cc", "cc_config", host.cluster),
    ):
        conf = host.config(key, role)
        found[role] = reader(conf) if conf is not None else None
    try:
        with open(module.params["cloud_id_file"], encoding="utf-8") as f:
            found["cloud_id"] = f.read().strip()
    except FileNotFoundError:
        found["cloud_id"] = ""
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()

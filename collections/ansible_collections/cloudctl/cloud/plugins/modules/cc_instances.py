#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A Cluster Controller's part of launching or terminating instances: their DHCP reservations."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cc_instances
short_description: Add or remove the DHCP reservations of many instances on a Cluster Controller
description:
  - Does a Cluster Controller's part of an instance launch (C(present)) or termination
    (C(absent)) in one module run, the DHCP reservation of every instance of I(instances)
    whose zone this CC serves, as M(cloudctl.cloud.dhcp_reservation) keeps one (same files,
    same reload of dnsmasq and release of old leases), the instances at the same time.
  - The zones the CC serves, and each zone's C(dhcp-hostsdir), pid file, lease file and
    bridge, come from I(cc_config) (written by the cc role). Instances of other zones are left
    out (on a CC pair both CCs serve the zone and both get the reservation).
  - One instance failing does not stop the others. Its entry in RV(reservations) says
    C(failed) with the message, and the module fails once the others are done, naming it.
  - Items may carry keys that are not options here (cloudctl passes its own views of the
    instances), which are ignored.
  - Check mode reports what would change and changes nothing; diff mode returns one diff
    per reservation file.
requirements:
  - dnsmasq with C(dhcp-hostsdir) and C(dhcp_release) (Debian C(dnsmasq-utils))
options:
  instances:
    description: The instances.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Instance id; the reservation's file name.
        type: str
        required: true
      zone:
        description: The instance's zone (cluster).
        type: str
        required: true
      mac:
        description: MAC address of the instance's NIC (with C(present)).
        type: str
      ip:
        description: IPv4 address reserved for it (with C(present)).
        type: str
      hostname:
        description: Host name handed to the instance (default its name).
        type: str
  state:
    description: Whether the reservations must exist.
    type: str
    choices: [present, absent]
    default: present
  cc_config:
    description: The cluster facts written by the cc role (C(zones)).
    type: path
    default: /etc/cloud/cc/cc.json
notes:
  - Runs on the Cluster Controller as root.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: One diff per reservation file.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Reserve the addresses of a launch's instances
  cloudctl.cloud.cc_instances:
    instances:
      - {name: i-0a1b2c3d, zone: zone-a, mac: "d0:0d:0a:1b:2c:3d", ip: 172.31.0.23}
      - {name: i-0a1b2c3e, zone: zone-a, mac: "d0:0d:0a:1b:2c:3e", ip: 172.31.0.24}

- name: Release them when the instances are terminated
  cloudctl.cloud.cc_instances:
    state: absent
    instances:
      - {name: i-0a1b2c3d, zone: zone-a}
      - {name: i-0a1b2c3e, zone: zone-a}
"""

RETURN = r"""
reservations:
  description:
    - One result per instance of a zone this CC serves, as M(cloudctl.cloud.dhcp_reservation)
      returns it, with C(name) and C(changed), and C(failed) and C(msg) when it failed.
  returned: always
  type: list
  elements: dict
  sample: [{name: i-0a1b2c3d, changed: true, path: /etc/cloud/cc/zone-a/hosts/i-0a1b2c3d}]
zones:
  description: The zones this CC serves.
  returned: always
  type: list
  elements: str
"""

from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cloudctl.cloud.plugins.module_utils import cc_reservation
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_role_config import (
    RoleConfigError,
    read_role_config,
)
from ansible_collections.cloudctl.cloud.plugins.module_utils.item_module import run_item

MAX_WORKERS = 16


def core(module: AnsibleModule) -> dict:
    p = module.params
    try:
        zones = read_role_config(p["cc_config"], "cc", ("zones",))["zones"]
    except RoleConfigError as exc:
        module.fail_json(msg=f"cc_config: {exc}")
    served = [item for item in p["instances"] if item.get("zone") in zones]

    def reserve(item: dict) -> dict:
        zone = zones[item["zone"]]
        params = {
            "hosts_dir": zone.get("hosts_dir"),
            "pid_file": zone.get("pid_file"),
            "interface": zone.get("bridge"),
            "lease_file": zone.get("lease_file"),
            "state": p["state"],
            **{k: item[k] for k in ("name", "mac", "ip", "hostname") if item.get(k)},
        }
        res = run_item(
            module, cc_reservation.ARGUMENT_SPEC, params, cc_reservation.core,
            cc_reservation.REQUIRED_IF,
        )  # fmt: skip
        if res.get("failed"):
            res["msg"] = f"reservation of {item.get('name')}: {res['msg']}"
        return {"name": item.get("name"), **res}

    with ThreadPoolExecutor(max_workers=max(1, min(len(served), MAX_WORKERS))) as ex:
        reservations = list(ex.map(reserve, served))
    res = {
        "changed": any(r.get("changed") for r in reservations),
        "reservations": reservations,
        "zones": sorted(zones),
    }
    if module._diff:
        res["diff"] = [r.pop("diff") for r in reservations if "diff" in r]
    failures = [r["msg"] for r in reservations if r.get("failed")]
    if failures:
        res.update(failed=True, msg="; ".join(failures))
    return res


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "instances": {"type": "list", "elements": "dict", "default": []},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "cc_config": {"type": "path", "default": "/etc/cloud/cc/cc.json"},
        },
        supports_check_mode=True,
    )
    res = core(module)
    if res.get("failed"):
        module.fail_json(**res)
    module.exit_json(**res)


if __name__ == "__main__":
    main()

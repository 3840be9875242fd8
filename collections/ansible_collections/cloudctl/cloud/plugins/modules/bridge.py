#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Manage a Linux bridge (ports, addresses, STP, link state) with iproute2."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bridge
short_description: Manage a Linux bridge with iproute2
description:
  - Creates, updates or removes a Linux bridge with C(ip) (iproute2), the instance bridge of
    a Cluster Controller or a Node Controller.
  - Reads the current state with C(ip -j -d link show), C(ip -j link show master NAME) and
    C(ip -j addr show), changes only what differs, and reports the difference as before/after
    dictionaries in diff mode. In check mode it reports what it would change and changes
    nothing.
  - Interfaces already enslaved to the bridge but not listed in I(ports) are left alone
    (libvirt's C(vnetN) taps of running guests are such ports) unless I(exclusive_ports=true).
  - The settings do not survive a reboot; the role runs the module at every deploy.
requirements:
  - iproute2 with JSON output (C(ip -j), iproute2 4.13 or later)
options:
  name:
    description: Bridge name, a valid Linux interface name of at most 15 characters.
    type: str
    required: true
  state:
    description: C(absent) deletes the bridge; its ports are released (they are not deleted).
    type: str
    choices: [present, absent]
    default: present
  ports:
    description:
      - Interfaces to enslave to the bridge. Each must exist, otherwise the module fails and
        names it. An interface enslaved to another bridge is moved to this one.
      - When I(up=true) the listed ports are set up too (a down port forwards nothing).
    type: list
    elements: str
    default: []
  exclusive_ports:
    description: Release ports of the bridge that are not listed in I(ports).
    type: bool
    default: false
  addresses:
    description:
      - Addresses of the bridge in CIDR notation (C(172.31.0.1/24)). IPv4 or IPv6.
      - When omitted, the bridge's addresses are not managed at all (an NC whose uplink,
        and so its own address, lives on the bridge keeps it). C([]) means "no IPv4 address"
        when I(exclusive_addresses=true).
    type: list
    elements: str
  exclusive_addresses:
    description:
      - When I(addresses) is given, remove the bridge's IPv4 addresses not listed in it (an address listed
        with another prefix length counts as not listed). IPv6 addresses not listed are
        left alone (the kernel adds link-local ones itself).
    type: bool
    default: true
  stp:
    description: Run the kernel's Spanning Tree Protocol on the bridge.
    type: bool
    default: false
  forward_delay:
    description:
      - Forward delay in seconds (time spent in listening and learning states).
      - With I(stp=true) the kernel accepts only 2 to 30.
    type: int
    default: 0
  up:
    description: Administrative state of the bridge (C(ip link set NAME up/down)).
    type: bool
    default: true
notes:
  - Needs root (CAP_NET_ADMIN) on the target host.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the bridge's state before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Instance bridge of the cluster, with the gateway (first address of the subnet) on the CC
  cloudctl.cloud.bridge:
    name: "{{ cloud_clusters[cloud_cluster].bridge }}"
    addresses: ["172.31.0.1/24"]

- name: Instance bridge of a node controller, with its uplink enslaved (addresses untouched)
  cloudctl.cloud.bridge:
    name: cloudbr0
    ports: [eth1]

- name: Bridge with STP on
  cloudctl.cloud.bridge:
    name: cloudbr1
    stp: true
    forward_delay: 4

- name: Remove the bridge (its ports are released)
  cloudctl.cloud.bridge:
    name: cloudbr0
    state: absent
"""

RETURN = r"""
bridge:
  description: State of the bridge after the run (in check mode, the predicted state).
  returned: always
  type: dict
  contains:
    name:
      description: Bridge name.
      type: str
    state:
      description: C(present) or C(absent).
      type: str
    up:
      description: Administratively up.
      type: bool
    stp:
      description: STP enabled.
      type: bool
    forward_delay:
      description: Forward delay in seconds.
      type: int
    ports:
      description: Enslaved interfaces, sorted.
      type: list
      elements: str
    addresses:
      description: IPv4 and global IPv6 addresses as C(ADDRESS/PREFIX), sorted.
      type: list
      elements: str
  sample:
    name: cloudbr0
    state: present
    up: true
    stp: false
    forward_delay: 0
    ports: [eth1]
    addresses: [172.31.0.1/24]
commands:
  description: The ip commands run (in check mode, the ones that would run).
  returned: always
  type: list
  elements: str
  sample: ["ip link add name cloudbr0 type bridge forward_delay 0 stp_state 0"]
"""

import ipaddress

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_net import (
    IpRoute,
    ifname_problem,
    interface_key,
)

# Kernel BR_MIN/MAX_FORWARD_DELAY, enforced while STP runs.
STP_MIN_FD = 2
STP_MAX_FD = 30


def absent_state(name: str) -> dict:
    return {"name": name, "state": "absent"}


def read_state(module: AnsibleModule, ipr: IpRoute, name: str) -> dict:
    link = ipr.link(name, details=True)
    if link is None:
        return absent_state(name)
    kind = (link.get("linkinfo") or {}).get("info_kind")
    if kind != "bridge":
        module.fail_json(
            msg=f"interface {name} exists but is not a bridge (kind {kind or 'unknown'})"
        )
    data = link["linkinfo"].get("info_data") or {}
    fd_cs = int(data.get("forward_delay", 0))  # centiseconds (clock_t)
    return {
        "name": name,
        "state": "present",
        "up": "UP" in link.get("flags", []),
        "stp": bool(data.get("stp_state", 0)),
        "forward_delay": fd_cs // 100 if fd_cs % 100 == 0 else fd_cs / 100,
        "ports": sorted(p["ifname"] for p in ipr.ports(name)),
        "addresses": sorted(set(read_addresses(ipr, name)), key=interface_key),
    }


def normalize_addresses(module: AnsibleModule, addresses: list[str]) -> list[str]:
    out = []
    for addr in addresses:
        if "/" not in str(addr):
            module.fail_json(
                msg=f"addresses: {addr!r} has no prefix length (write it as ADDRESS/PREFIX, e.g. 172.31.0.1/24)"
            )
        try:
            iface = ipaddress.ip_interface(str(addr))
        except ValueError:
            module.fail_json(
                msg=f"addresses: {addr!r} is not an IP address in CIDR notation (e.g. 172.31.0.1/24)"
            )
        out.append(iface.with_prefixlen)
    return sorted(set(out), key=interface_key)


def desired_state(params: dict, before: dict, addresses: list[str]) -> dict:
    """The state the bridge will have after the run (used for check mode and diff)."""
    current_ports = set(before.get("ports", []))
    current_addrs = set(before.get("addresses", []))
    ports = (
        set(params["ports"]) if params["exclusive_ports"] else current_ports | set(params["ports"])
    )
    if params["addresses"] is None:
        kept = current_addrs
    elif params["exclusive_addresses"]:
        kept = {a for a in current_addrs if ipaddress.ip_interface(a).version == 6}
    else:
        kept = current_addrs
    return {
        "name": params["name"],
        "state": "present",
        "up": params["up"],
        "stp": params["stp"],
        "forward_delay": params["forward_delay"],
        "ports": sorted(ports),
        "addresses": sorted(kept | set(addresses), key=interface_key),
    }


class Bridge:
    """Turns the before/after difference into ip commands; runs them unless in check mode."""

    def __init__(self, module: AnsibleModule, ipr: IpRoute) -> None:
        self.module = module
        self.ipr = ipr
        self.commands: list[str] = []

    def ip(self, *args: str) -> None:
        self.commands.append("ip " + " ".join(args))
        if not self.module.check_mode:
            self.ipr.run(*args)

    def apply(self, before: dict, after: dict, port_links: dict) -> None:
        name = after["name"]
        fd = str(after["forward_delay"] * 100)
        stp = "1" if after["stp"] else "0"
        if before["state"] == "absent":
            self.ip(
                "link", "add", "name", name, "type", "bridge", "forward_delay", fd, "stp_state", stp
            )
            before = {
                **before,
                "up": False,
                "stp": after["stp"],
                "forward_delay": after["forward_delay"],
                "ports": [],
                "addresses": [],
            }
        # The kernel checks forward_delay against 2..30 s only while STP runs: switch STP off
        # before lowering the delay, and set the delay before switching STP on.
        if before["stp"] and not after["stp"]:
            self.ip("link", "set", "dev", name, "type", "bridge", "stp_state", "0")
        if before["forward_delay"] != after["forward_delay"]:
            self.ip("link", "set", "dev", name, "type", "bridge", "forward_delay", fd)
        if after["stp"] and not before["stp"]:
            self.ip("link", "set", "dev", name, "type", "bridge", "stp_state", "1")

        for port in sorted(set(before["ports"]) - set(after["ports"])):
            self.ip("link", "set", "dev", port, "nomaster")
        for port in self.module.params["ports"]:
            if port not in before["ports"]:
                self.ip("link", "set", "dev", port, "master", name)
            if after["up"] and "UP" not in port_links[port].get("flags", []):
                self.ip("link", "set", "dev", port, "up")

        self.apply_addresses(name, before["addresses"], after["addresses"])

        if after["up"] != before["up"]:
            self.ip("link", "set", "dev", name, "up" if after["up"] else "down")

    def apply_addresses(self, name: str, current: list[str], wanted: list[str]) -> None:
        for addr in sorted(set(current) - set(wanted), key=interface_key):
            self.ip("addr", "del", addr, "dev", name)
        if not self.module.check_mode and set(current) - set(wanted):
            # Deleting a primary IPv4 address also deletes its secondaries: look again.
            current = read_addresses(self.ipr, name)
        for addr in wanted:
            if addr not in current:
                iface = ipaddress.ip_interface(addr)
                extra = ["brd", "+"] if iface.version == 4 and iface.network.prefixlen < 31 else []
                self.ip("addr", "add", addr, *extra, "dev", name)


def read_addresses(ipr: IpRoute, name: str) -> list[str]:
    """IPv4 and global IPv6 addresses of ``name`` as ADDRESS/PREFIX."""
    return [
        f"{i['local']}/{i['prefixlen']}"
        for i in ipr.addresses(name)
        if i.get("family") == "inet" or (i.get("family") == "inet6" and i.get("scope") == "global")
    ]


def core(module: AnsibleModule) -> dict:
    params = module.params
    name = params["name"]
    problem = ifname_problem(name)
    if problem:
        module.fail_json(msg=f"name: bridge name {name!r} {problem}")

    ipr = IpRoute(module)
    before = read_state(module, ipr, name)
    bridge = Bridge(module, ipr)

    if params["state"] == "absent":
        after = absent_state(name)
        if before["state"] == "present":
            bridge.ip("link", "del", "dev", name)
        return result(module, ipr, before, after, bridge.commands)

    if params["stp"] and not STP_MIN_FD <= params["forward_delay"] <= STP_MAX_FD:
        module.fail_json(
            msg=f"forward_delay: {params['forward_delay']} s is out of range: with stp=true "
            f"the kernel accepts {STP_MIN_FD} to {STP_MAX_FD} s"
        )
    if params["forward_delay"] < 0:
        module.fail_json(msg="forward_delay: must not be negative")
    addresses = normalize_addresses(module, params["addresses"] or [])

    port_links = {}
    for port in params["ports"]:
        problem = ifname_problem(port)
        if problem:
            module.fail_json(msg=f"ports: {port!r} {problem}")
        if port == name:
            module.fail_json(msg=f"ports: {port} is the bridge itself")
        link = ipr.link(port)
        if link is None:
            module.fail_json(
                msg=f"ports: interface {port} does not exist (bridge {name} cannot enslave it)"
            )
        port_links[port] = link

    after = desired_state(params, before, addresses)
    bridge.apply(before, after, port_links)
    return result(module, ipr, before, after, bridge.commands)


def result(
    module: AnsibleModule, ipr: IpRoute, before: dict, after: dict, commands: list[str]
) -> dict:
    changed = bool(commands)
    if changed and not module.check_mode:
        after = read_state(module, ipr, after["name"])
    res = {"changed": changed, "bridge": after, "commands": commands}
    if module._diff:
        res["diff"] = {"before": before, "after": after}
    return res


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "ports": {"type": "list", "elements": "str", "default": []},
            "exclusive_ports": {"type": "bool", "default": False},
            "addresses": {"type": "list", "elements": "str"},
            "exclusive_addresses": {"type": "bool", "default": True},
            "stp": {"type": "bool", "default": False},
            "forward_delay": {"type": "int", "default": 0},
            "up": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()

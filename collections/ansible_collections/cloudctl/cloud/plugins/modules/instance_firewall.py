#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Security-group and anti-spoofing firewall of one instance on a Node Controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: instance_firewall
short_description: Per-instance security-group and anti-spoofing rules on a Node Controller
description:
  - Enforces the security groups of one instance and keeps it from spoofing, as Eucalyptus
    EDGE does, with iptables (filter table) and ebtables (filter table) in the network
    namespace of the node, where the instance bridge and the taps live.
  - "Inbound: chain C(cloud-i-<hex>) (hex = the hex part of the instance id) accepts
    ESTABLISHED,RELATED, DHCP replies (udp 67 to 68, only from I(dhcp_server_ip) when given),
    then one rule per entry of I(rules) (sorted), and drops the rest. It is reached from the
    shared dispatch chain C(cloud-instances) by C(-d <ip>/32), and C(cloud-instances) is the
    first rule of C(FORWARD): routed traffic (from the gateway, DNAT'd elastic-IP traffic) and
    bridged traffic (instance to instance, or from another host over the bridge's port, which
    traverses FORWARD through bridge netfilter) are both filtered by destination address.
    Traffic the node itself sends (OUTPUT) is not filtered. Outbound traffic is allowed."
  - "Anti-spoofing: chain C(cloud-o-<hex>), jumped from the shared chain C(cloud-antispoof)
    by C(-m physdev --physdev-in <tap>), drops IPv4 packets from the instance's tap whose
    source is not I(ip), except DHCP requests from C(0.0.0.0:68) to C(255.255.255.255:67)
    (or to I(dhcp_server_ip)), and drops DHCP server replies sent by the instance.
    C(cloud-antispoof) is the first rule of C(INPUT) and of C(cloud-instances), so it is
    checked before any rule that accepts. With ebtables, chain C(cloud-e-<hex>) (jumped from
    the bridge C(INPUT) and C(FORWARD) chains by C(-i <tap>)) drops frames whose source MAC is
    not I(mac), ARP whose sender IP is not I(ip) (C(0.0.0.0) probes pass) or whose sender MAC
    is not I(mac), and every frame that is neither IPv4 nor ARP (the cloud network is IPv4
    only; IPv6 would pass around the security groups)."
  - Bridge netfilter must be on for bridged traffic to reach iptables. C(present) sets
    C(net.bridge.bridge-nf-call-iptables=1) (a per network namespace setting) when it is
    off, loading C(br_netfilter) when C(/proc/sys/net/bridge) is missing.
  - The wanted rules are compared with C(iptables-save) and C(ebtables-save); only a
    difference changes anything, in one C(iptables-restore --noflush) and one
    C(ebtables-restore --noflush) transaction, so an instance never runs with half its rules.
    Rules that are not the module's (other instances, NAT, the host's own) are never
    touched; the module's jumps are moved back to the top of C(FORWARD) and C(INPUT) when
    something was inserted before them.
  - C(absent) removes the instance's chains and the rules that jump to them; the shared
    chains stay. An unknown instance is C(ok).
  - >-
    With I(generation), changes of one instance apply in the order they were planned, not in
    the order they arrive: several cloudctl operations at once each plan the rules of other
    instances (a launch widens its group's members' rules, a termination narrows them), and
    their plays run side by side. A run older than the last one applied to the instance (or
    than the C(absent) that removed it) changes nothing and returns C(stale=true), so an
    operation that started earlier can neither put back the firewall of an instance that a
    later one removed (whose address the next instance may get) nor older rules over newer.
  - The rules can be applied before the instance's tap exists (they match its name), so
    the instance is protected from its first packet.
  - Check mode reports what would change; diff mode shows the instance's rules before and
    after (C(iptables -S) and C(ebtables-save) lines).
requirements:
  - iptables (nf_tables or legacy, with the physdev and conntrack matches), ebtables
options:
  instance:
    description: Instance id (C(i-) and 1 to 12 hex digits).
    type: str
    required: true
  tap:
    description: Host name of the instance's tap (C(vn-<hex>), see M(cloudctl.cloud.cloud_instance)). Required with C(state=present).
    type: str
  mac:
    description: MAC address of the instance's NIC. Without it the source MAC of its frames is not checked.
    type: str
  ip:
    description: Private IPv4 address of the instance. Required with C(state=present).
    type: str
  rules:
    description:
      - Inbound rules of the instance's security groups. cloudctl turns a rule naming a
        source group into one rule per member with the member's C(/32).
    type: list
    elements: dict
    default: []
    suboptions:
      protocol:
        description: C(tcp), C(udp), C(icmp) or C(all) (C(-1) is read as C(all)).
        type: str
        required: true
      from_port:
        description: First port (tcp, udp). Both ports omitted (or C(-1)) = all ports; one alone = that port.
        type: int
      to_port:
        description: Last port (tcp, udp).
        type: int
      icmp_type:
        description: ICMP type (icmp); C(-1) = any.
        type: int
      icmp_code:
        description: ICMP code (icmp, with I(icmp_type)); C(-1) = any.
        type: int
      cidr:
        description: Source network, an IPv4 CIDR (C(0.0.0.0/0) = anywhere).
        type: str
        required: true
  dhcp_server_ip:
    description: Address of the cluster's DHCP server; DHCP is then allowed to and from it only.
    type: str
  state:
    description: Whether the instance's rules must exist.
    type: str
    choices: [present, absent]
    default: present
  generation:
    description:
      - Order of this change among the changes of the instance's firewall (cloudctl stamps
        the changes it plans with numbers that grow). Not given = applied whatever ran before.
    type: int
  generation_dir:
    description:
      - >-
        Where the last generation of every instance is kept, one file per instance, also
        after C(absent). On tmpfs by default: the rules do not survive a reboot either.
    type: path
    default: /run/cloud-instance-firewall
notes:
  - Runs as root on the Node Controller, in its network namespace.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the instance's rules before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Apply the security groups of an instance (before its domain starts)
  cloudctl.cloud.instance_firewall:
    instance: i-0a1b2c3d
    tap: vn-0a1b2c3d
    mac: "d0:0d:0a:1b:2c:3d"
    ip: 172.31.0.23
    dhcp_server_ip: 172.31.0.1
    rules:
      - {protocol: tcp, from_port: 22, to_port: 22, cidr: 0.0.0.0/0}
      - {protocol: icmp, icmp_type: 8, icmp_code: -1, cidr: 10.0.0.0/8}
      - {protocol: all, cidr: 172.31.0.24/32}   # a member of a source group

- name: Remove them when the instance is terminated
  cloudctl.cloud.instance_firewall:
    instance: i-0a1b2c3d
    state: absent
"""

RETURN = r"""
chains:
  description: The instance's chains (iptables C(cloud-i-<hex>), C(cloud-o-<hex>); ebtables C(cloud-e-<hex>)); empty when absent.
  type: list
  elements: str
  returned: always
  sample: [cloud-i-0a1b2c3d, cloud-o-0a1b2c3d, cloud-e-0a1b2c3d]
rules:
  description: The instance's iptables rules after the run, as C(iptables -S) lines (its chains and the dispatch rules jumping to them).
  type: list
  elements: str
  returned: always
  sample: ["-A cloud-i-0a1b2c3d -p tcp -m tcp --dport 22 -j ACCEPT"]
ebtables:
  description: The instance's ebtables rules after the run, as C(ebtables-save) lines.
  type: list
  elements: str
  returned: always
bridge_nf_call_iptables:
  description: Whether C(net.bridge.bridge-nf-call-iptables) had to be turned on (or would be).
  type: bool
  returned: always
stale:
  description: Whether the run was older than I(generation) last applied, and changed nothing.
  type: bool
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cloudctl.cloud.plugins.module_utils.nc_firewall import (
    ARGUMENT_SPEC,
    REQUIRED_IF,
    core,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=REQUIRED_IF,
        supports_check_mode=True,
    )
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()

#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Add or remove the DHCP reservation of one instance in a dnsmasq dhcp-hostsdir."""

from __future__ import annotations

DOCUMENTATION = r"""
module: dhcp_reservation
short_description: Per-instance DHCP reservation for the dnsmasq of a Cluster Controller
description:
  - Keeps one file per instance, C(<hosts_dir>/<name>), holding one C(MAC,IP,HOSTNAME) line, in
    the C(dhcp-hostsdir) of the cluster's dnsmasq (see the cc role).
  - >-
    dnsmasq watches that directory with inotify and reads a new file as soon as it appears, so
    the file is written under a dot name (dnsmasq ignores those) with mode 0644 and then
    renamed into place: a file still being written, or not yet readable by the dnsmasq user,
    would be read too early and never again.
  - >-
    dnsmasq only ever adds what it reads from the directory. When a reservation is removed or
    changed the module sends SIGHUP to the dnsmasq of I(pid_file) (if it runs), which
    re-reads the directory, and releases the old lease with C(dhcp_release) (Debian
    C(dnsmasq-utils)): while a lease of the old MAC exists dnsmasq refuses to hand the same
    address to a new MAC. When dnsmasq does not run, the stale lines are removed from
    I(lease_file) instead.
  - With I(lease_file) the module also releases any lease of the reserved address held by
    another MAC, and waits until dnsmasq has dropped the released leases from the file.
  - Check mode reports what would change; diff mode shows the file content before and after.
requirements:
  - dnsmasq with C(dhcp-hostsdir) (2.73 or later) and C(dhcp_release) (Debian C(dnsmasq-utils))
options:
  hosts_dir:
    description: The C(dhcp-hostsdir) of the dnsmasq. It must exist.
    type: path
    required: true
  pid_file:
    description: The C(pid-file) of the dnsmasq. A missing file means dnsmasq does not run.
    type: path
    required: true
  interface:
    description: The bridge dnsmasq serves; C(dhcp_release) sends its DHCPRELEASE through it.
    type: str
    required: true
  lease_file:
    description:
      - The C(dhcp-leasefile) of the dnsmasq. Optional but recommended; without it only the
        lease of the removed or replaced reservation itself is released.
    type: path
  name:
    description: The instance id; the reservation's file name (no C(/), no leading dot).
    type: str
    required: true
  mac:
    description: MAC address of the instance's NIC. Required with C(state=present).
    type: str
  ip:
    description: IPv4 address reserved for it. Required with C(state=present).
    type: str
  hostname:
    description: Host name handed to the instance. Defaults to I(name).
    type: str
  state:
    description: Whether the reservation must exist.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Runs on the Cluster Controller as root (C(dhcp_release) and signalling dnsmasq need it).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the reservation file before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Reserve the instance's address
  cloudctl.cloud.dhcp_reservation:
    hosts_dir: /etc/cloud/cc/zone-a/hosts
    pid_file: /var/lib/cloud/cc/zone-a/dnsmasq.pid
    lease_file: /var/lib/cloud/cc/zone-a/dnsmasq.leases
    interface: cloudbr0
    name: i-0a1b2c3d
    mac: "52:54:00:12:34:56"
    ip: 172.31.0.23

- name: Forget it when the instance is terminated (its lease is released too)
  cloudctl.cloud.dhcp_reservation:
    hosts_dir: /etc/cloud/cc/zone-a/hosts
    pid_file: /var/lib/cloud/cc/zone-a/dnsmasq.pid
    lease_file: /var/lib/cloud/cc/zone-a/dnsmasq.leases
    interface: cloudbr0
    name: i-0a1b2c3d
    state: absent
"""

RETURN = r"""
path:
  description: The reservation file.
  type: str
  returned: always
  sample: /etc/cloud/cc/zone-a/hosts/i-0a1b2c3d
reservation:
  description: The reservation after the task (predicted in check mode), null when absent.
  type: dict
  returned: always
  sample: {mac: "52:54:00:12:34:56", ip: 172.31.0.23, hostname: i-0a1b2c3d}
released:
  description: Leases released (or that would be), as C(MAC IP).
  type: list
  elements: str
  returned: always
  sample: ["52:54:00:12:34:56 172.31.0.23"]
reloaded:
  description: Whether dnsmasq was (or would be) sent SIGHUP.
  type: bool
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cloudctl.cloud.plugins.module_utils.cc_reservation import (
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

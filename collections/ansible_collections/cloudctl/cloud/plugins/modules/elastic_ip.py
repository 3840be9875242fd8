#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Associate an elastic (public) IP with an instance's private IP on the Cluster Controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: elastic_ip
short_description: Elastic IP of an instance on a Cluster Controller (DNAT, SNAT, address)
description:
  - Associates a public address of the cluster's pool with an instance's private address, as
    EC2-Classic and Eucalyptus do on their cluster controllers. With I(state=present)
    the CC holds I(public_ip) as a C(/32) address on I(public_interface) (so it answers ARP
    for it), rewrites the destination of traffic to it into I(private_ip) (DNAT) and the
    source of the instance's traffic leaving by I(public_interface) into I(public_ip) (SNAT).
  - "The rules live in two chains of the C(nat) table that only this module writes:
    C(CLOUD-EIP-PRE) (one C(-d PUBLIC/32 -j DNAT --to-destination PRIVATE) rule per address),
    jumped to from C(PREROUTING) (traffic arriving from outside or from instances) and from
    C(OUTPUT) (the CC itself), and C(CLOUD-EIP-POST) (one
    C(-s PRIVATE/32 -o PUBLIC_INTERFACE -j SNAT --to-source PUBLIC) rule per address),
    jumped to from C(POSTROUTING) before any C(MASQUERADE)/C(SNAT) rule there, such as the
    cc role's egress C(MASQUERADE) of the subnet: an instance with an elastic IP leaves
    with it, the others with the CC's address. The jumps are inserted at the top of their
    chains. Other rules and chains are never touched."
  - Re-associating an address that points at another private address moves it (C(changed),
    the diff shows both). An instance has at most one elastic IP, as in EC2; an association
    of I(private_ip) with another public address is removed (reported in C(disassociated)).
  - No C(FORWARD) rule is added. The DNAT-ed traffic is forwarded by the CC's C(FORWARD)
    policy (C(ACCEPT) unless the site changed it); security groups are enforced on the
    node controllers and must not be bypassed here. The module warns when the policy is not
    C(ACCEPT).
  - "A zone served by a CC pair (HA): both CCs keep the rules, but only the holder of the
    zone's gateway address (I(gateway) on I(gateway_interface), moved by keepalived) may hold
    I(public_ip), or both would answer ARP for it. With I(gateway) and I(gateway_interface)
    the module holds the address only while the gateway is on this host, and removes it
    otherwise; the cc role's notify script (C(cloud-cc-notify)) adds and removes the public
    addresses of the rules when the gateway moves. Without them (a zone of one CC, which
    holds its gateway for good) the address is always held."
  - When C(conntrack) (Debian C(conntrack)) is installed, the connection tracking entries of
    a moved or removed association are deleted, so that running flows do not keep using it.
  - Check mode reports what would change; diff mode shows the association before and after.
requirements:
  - iptables (legacy or nf_tables backend), iproute2
options:
  public_ip:
    description: The elastic IP (IPv4), an address of the cluster's pool.
    type: str
    required: true
  private_ip:
    description:
      - The instance's private address. Required with I(state=present).
      - With I(state=absent), if given, the association is removed only when the address
        points at this private address (a late disassociation never undoes a newer one).
    type: str
  public_interface:
    description: The CC's interface on the public side, where I(public_ip) is held.
    type: str
    required: true
  gateway:
    description:
      - The zone's gateway address (IPv4). With I(gateway_interface), I(public_ip) is held only
        while this address is on I(gateway_interface) (the holder of a CC pair's zone).
    type: str
  gateway_interface:
    description: The zone's bridge, where the holder of the zone holds I(gateway).
    type: str
  instance:
    description: The instance id; written into the rules' comments (C(cloud-eip PUBLIC INSTANCE)).
    type: str
    aliases: [comment]
  state:
    description: C(present) = associated, C(absent) = not associated (rules and address removed).
    type: str
    choices: [present, absent]
    default: present
notes:
  - Runs on the Cluster Controller as root. Several runs at once (and the cc role's notify
    script) are serialised by a lock file (C(/run/cloud-elastic-ip.lock)).
  - The chains and the jumps stay when the last association is removed; the cc role's reset
    removes them.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the association before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Associate 198.51.100.10 with i-0a1b2c3d
  cloudctl.cloud.elastic_ip:
    public_ip: 198.51.100.10
    private_ip: 172.31.0.5
    public_interface: eth1
    instance: i-0a1b2c3d

- name: Associate it on both CCs of a pair; the holder of 172.31.0.1 holds the address
  cloudctl.cloud.elastic_ip:
    public_ip: 198.51.100.10
    private_ip: 172.31.0.5
    public_interface: eth1
    gateway: 172.31.0.1
    gateway_interface: cloudbr0
    instance: i-0a1b2c3d

- name: Disassociate it
  cloudctl.cloud.elastic_ip:
    public_ip: 198.51.100.10
    public_interface: eth1
    state: absent
"""

RETURN = r"""
public_ip:
  description: The elastic IP.
  type: str
  returned: always
  sample: 198.51.100.10
private_ip:
  description: The private address it points at after the task (predicted in check mode), null when not associated.
  type: str
  returned: always
  sample: 172.31.0.5
rules:
  description: The module's rules for I(public_ip) after the task, as C(iptables -t nat -S) lines.
  type: list
  elements: str
  returned: always
  sample:
    - -A CLOUD-EIP-PRE -d 198.51.100.10/32 -m comment --comment "cloud-eip 198.51.100.10 i-0a1b2c3d" -j DNAT --to-destination 172.31.0.5
    - -A CLOUD-EIP-POST -s 172.31.0.5/32 -o eth1 -m comment --comment "cloud-eip 198.51.100.10 i-0a1b2c3d" -j SNAT --to-source 198.51.100.10
address_added:
  description: Whether I(public_ip)/32 was (or would be) added to I(public_interface) by this run.
  type: bool
  returned: always
address_removed:
  description: Whether I(public_ip)/32 was (or would be) removed from I(public_interface) by this run.
  type: bool
  returned: always
holder:
  description:
    - Whether this host holds the zone's gateway (always true without I(gateway)), so holds
      I(public_ip) while it is associated.
  type: bool
  returned: always
disassociated:
  description: Other public addresses that pointed at I(private_ip) and were (or would be) disassociated.
  type: list
  elements: str
  returned: always
  sample: [198.51.100.11]
"""

import fcntl
import ipaddress
import re
import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_net import (
    IpRoute,
    ifname_problem,
)

PRE = "CLOUD-EIP-PRE"
POST = "CLOUD-EIP-POST"
# (hook chain, our chain): the jumps into our chains.
JUMPS = (("PREROUTING", PRE), ("OUTPUT", PRE), ("POSTROUTING", POST))
INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
LOCK_FILE = "/run/cloud-elastic-ip.lock"


def dnat_line(pub: str, priv: str, comment: str) -> str:
    """A rule of CLOUD-EIP-PRE, exactly as ``iptables -S`` prints it."""
    return f'-A {PRE} -d {pub}/32 -m comment --comment "{comment}" -j DNAT --to-destination {priv}'


def snat_line(pub: str, priv: str, interface: str, comment: str) -> str:
    """A rule of CLOUD-EIP-POST, exactly as ``iptables -S`` prints it."""
    return (
        f'-A {POST} -s {priv}/32 -o {interface} -m comment --comment "{comment}" '
        f"-j SNAT --to-source {pub}"
    )


def option(args: list[str], name: str) -> str | None:
    """The value following ``name`` in a split rule, without a /32 suffix."""
    if name in args and args.index(name) + 1 < len(args):
        value = args[args.index(name) + 1]
        return value.removesuffix("/32")
    return None


def parse_associations(lines: list[str]) -> list[dict]:
    """Every rule of our two chains as {line, chain, public, private}."""
    out = []
    for line in lines:
        args = shlex.split(line)
        if len(args) < 2 or args[0] != "-A" or args[1] not in (PRE, POST):
            continue
        if args[1] == PRE:
            public, private = option(args, "-d"), option(args, "--to-destination")
        else:
            public, private = option(args, "--to-source"), option(args, "-s")
        out.append({"line": line, "chain": args[1], "public": public, "private": private})
    return out


def jump_fixes(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(description, iptables arguments) that put each jump into our chains where it belongs:
    present once, and in POSTROUTING before every MASQUERADE/SNAT rule."""
    fixes = []
    for hook, chain in JUMPS:
        rules = [ln for ln in lines if ln.startswith(f"-A {hook} ")]
        jump = f"-A {hook} -j {chain}"
        where = [i for i, ln in enumerate(rules) if ln == jump]
        nat = [i for i, ln in enumerate(rules) if re.search(r" -j (MASQUERADE|SNAT)\b", ln)]
        misplaced = bool(where) and hook == "POSTROUTING" and bool(nat) and nat[0] < where[0]
        if where and not misplaced and len(where) == 1:
            continue
        for _position in where:
            fixes.append((f"remove {jump}", ["-D", hook, "-j", chain]))
        fixes.append((f"insert {jump} at 1", ["-I", hook, "1", "-j", chain]))
    return fixes


class ElasticIp:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        p = module.params
        self.pub = p["public_ip"]
        self.priv = p["private_ip"]
        self.iface = p["public_interface"]
        self.state = p["state"]
        self.gateway = p["gateway"]
        self.gateway_interface = p["gateway_interface"]
        self.comment = f"cloud-eip {self.pub}" + (f" {p['instance']}" if p["instance"] else "")
        self.iptables = module.get_bin_path("iptables", required=True)
        self.ip = IpRoute(module)

    def run(self, args: list[str]) -> str:
        rc, out, err = self.module.run_command(
            [self.iptables, "-w", *args], environ_update={"LC_ALL": "C"}
        )
        if rc != 0:
            self.module.fail_json(
                msg=f"iptables {' '.join(args)} failed (rc {rc}): {(err or out).strip()}"
            )
        return out

    def nat_lines(self) -> list[str]:
        return self.run(["-t", "nat", "-S"]).splitlines()

    def held_addresses(self) -> list[dict]:
        """The interface's IPv4 addresses as ip -j addr_info entries (fails if it is missing)."""
        links = self.ip.json("addr", "show", "dev", self.iface, missing_ok=True)
        if not links and self.state == "absent":
            return []  # the interface is gone, and its addresses with it
        if not links:
            self.module.fail_json(
                msg=f"public_interface {self.iface} is not an interface of this host"
            )
        return [a for a in links[0].get("addr_info", []) if a.get("family") == "inet"]

    def holder(self) -> bool:
        """Whether this host holds the zone's gateway (always, without gateway options)."""
        if not self.gateway:
            return True
        links = self.ip.json("addr", "show", "dev", self.gateway_interface, missing_ok=True)
        addresses = links[0].get("addr_info", []) if links else []
        return any(a.get("local") == self.gateway for a in addresses)

    def check_not_host_address(self) -> None:
        """The public IP must not be one of the host's own addresses (other than our /32)."""
        for link in self.ip.json("addr", "show") or []:
            for a in link.get("addr_info", []):
                if a.get("local") != self.pub:
                    continue
                if link.get("ifname") == self.iface and a.get("prefixlen") == 32:
                    continue
                self.module.fail_json(
                    msg=f"public_ip {self.pub} is an address of this host "
                    f"({self.pub}/{a.get('prefixlen')} on {link.get('ifname')}), not an "
                    "elastic IP"
                )

    def forward_policy(self) -> str:
        for line in self.run(["-S", "FORWARD"]).splitlines():
            if line.startswith("-P FORWARD "):
                return line.split()[2]
        return "ACCEPT"

    def flush_conntrack(self, publics: list[str]) -> None:
        """Forget tracked flows of the moved/removed associations (best effort)."""
        binary = self.module.get_bin_path("conntrack")
        if not binary:
            return
        for pub in publics:
            # inbound flows (original destination) and SNAT-ed outbound ones (reply destination)
            for match in ("--orig-dst", "--reply-dst"):
                # rc 1 = nothing to delete
                self.module.run_command([binary, "-D", match, pub])

    def apply(self) -> dict:
        """Read, compare and change under one lock: runs at once (several cloudctl
        operations on one CC) would otherwise race on the chains, jumps and rules."""
        if self.module.check_mode:
            return self.converge()
        with open(LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self.converge()

    def converge(self) -> dict:
        module = self.module
        present = self.state == "present"
        lines = self.nat_lines()
        rules = parse_associations(lines)
        current = [r["line"] for r in rules if r["public"] == self.pub]
        before_priv = next(
            (r["private"] for r in rules if r["public"] == self.pub and r["chain"] == PRE), None
        )
        # absent with a private_ip while the address points elsewhere: a newer association
        keep = not present and self.priv is not None and before_priv not in (None, self.priv)

        wanted, others, missing, fixes = [], [], [], []
        if present:
            self.check_not_host_address()
            wanted = [
                dnat_line(self.pub, self.priv, self.comment),
                snat_line(self.pub, self.priv, self.iface, self.comment),
            ]
            # other public addresses of this private address (one elastic IP per instance)
            others = sorted(
                {
                    r["public"]
                    for r in rules
                    if r["private"] == self.priv and r["public"] != self.pub
                }
            )
            stale = [ln for ln in current if ln not in wanted]
            stale += [r["line"] for r in rules if r["public"] in others]
            missing = [w for w in wanted if w not in current]
            fixes = jump_fixes(lines)
        else:
            stale = [] if keep else current

        held = {a.get("local") for a in self.held_addresses() if a.get("prefixlen") == 32}
        holder = self.holder()
        hold = holder and (present or keep)  # a host that is not the holder holds none
        add_address = present and hold and self.pub not in held
        remove_address = not hold and self.pub in held
        drop_others = [o for o in others if o in held]

        changed = bool(stale or missing or fixes or add_address or remove_address or drop_others)
        if changed and not module.check_mode:
            have = {ln.split()[1] for ln in lines if ln.startswith("-N ")}
            for chain in (PRE, POST):
                if present and chain not in have:
                    self.run(["-t", "nat", "-N", chain])
            for line in stale:
                self.run(["-t", "nat", "-D", *shlex.split(line)[1:]])
            for line in missing:
                self.run(["-t", "nat", *shlex.split(line)])
            for _what, args in fixes:
                self.run(["-t", "nat", *args])
            for pub in drop_others:
                self.ip.run("addr", "del", f"{pub}/32", "dev", self.iface)
            if add_address:
                self.ip.run("addr", "add", f"{self.pub}/32", "dev", self.iface)
            if remove_address:
                self.ip.run("addr", "del", f"{self.pub}/32", "dev", self.iface)
            moved = [self.pub] if before_priv and before_priv != self.priv else []
            if stale:
                self.flush_conntrack(moved + others)

        if present and self.forward_policy() != "ACCEPT":
            module.warn(
                f"the FORWARD policy of this host is not ACCEPT: traffic to {self.pub} is "
                f"DNAT-ed to {self.priv} but forwarded only if a FORWARD rule accepts it"
            )

        after_priv = self.priv if present else (before_priv if keep else None)
        after_rules = wanted if present else (current if keep else [])
        address = f"{self.pub}/32 on {self.iface}"
        result = {
            "changed": changed,
            "public_ip": self.pub,
            "private_ip": after_priv,
            "rules": after_rules,
            "address_added": add_address,
            "address_removed": remove_address,
            "holder": holder,
            "disassociated": others,
        }
        if module._diff:
            result["diff"] = {
                "before": {
                    "private_ip": before_priv,
                    "address": address if self.pub in held else None,
                    "rules": current,
                    "jumps": "" if not fixes else "missing or misplaced",
                    "disassociated": [],
                },
                "after": {
                    "private_ip": after_priv,
                    "address": address if hold and (present or self.pub in held) else None,
                    "rules": after_rules,
                    "jumps": "",
                    "disassociated": others,
                },
            }
        return result


def validate(module: AnsibleModule) -> None:
    p = module.params
    for key in ("public_ip", "private_ip", "gateway"):
        if p[key] is None:
            continue
        try:
            ipaddress.IPv4Address(p[key])
        except ValueError:
            module.fail_json(msg=f"{key} must be an IPv4 address, got {p[key]!r}")
    if p["state"] == "present" and not p["private_ip"]:
        module.fail_json(
            msg=f"private_ip is required to associate {p['public_ip']} (state=present)"
        )
    if p["private_ip"] == p["public_ip"]:
        module.fail_json(msg=f"public_ip and private_ip are both {p['public_ip']}")
    problem = ifname_problem(p["public_interface"])
    if problem:
        module.fail_json(msg=f"public_interface {p['public_interface']!r} {problem}")
    if p["gateway_interface"] is not None:
        problem = ifname_problem(p["gateway_interface"])
        if problem:
            module.fail_json(msg=f"gateway_interface {p['gateway_interface']!r} {problem}")
    if p["instance"] is not None and not INSTANCE.match(p["instance"]):
        module.fail_json(
            msg=f"instance must be an id of letters, digits, '.', '_', ':' or '-', "
            f"got {p['instance']!r}"
        )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "public_ip": {"type": "str", "required": True},
            "private_ip": {"type": "str"},
            "public_interface": {"type": "str", "required": True},
            "instance": {"type": "str", "aliases": ["comment"]},
            "gateway": {"type": "str"},
            "gateway_interface": {"type": "str"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        },
        supports_check_mode=True,
        required_together=[("gateway", "gateway_interface")],
    )
    validate(module)
    module.exit_json(**ElasticIp(module).apply())


if __name__ == "__main__":
    main()

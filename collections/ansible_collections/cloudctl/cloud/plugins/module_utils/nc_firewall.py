# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The security-group and anti-spoofing firewall of one instance on a Node Controller (the
code of instance_firewall, also run per instance by node_instances)."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re

from ansible.module_utils.basic import AnsibleModule

INSTANCE = re.compile(r"^i-([0-9a-f]{1,12})$")
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
TAP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
DISPATCH = "cloud-instances"  # FORWARD -> here: anti-spoofing first, then -d IP -> cloud-i-*
ANTISPOOF = "cloud-antispoof"  # INPUT and cloud-instances -> here: physdev-in TAP -> cloud-o-*
BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"
LOCK = "/run/cloud-instance-firewall.lock"
RULE_KEYS = {"protocol", "from_port", "to_port", "icmp_type", "icmp_code", "cidr"}


def read_generation(directory: str, instance: str) -> int | None:
    try:
        with open(os.path.join(directory, instance)) as f:
            return int(f.read().strip())
    except (FileNotFoundError, ValueError):
        return None


def write_generation(directory: str, instance: str, generation: int) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, instance)
    with open(f"{path}.tmp", "w") as f:
        f.write(f"{generation}\n")
    os.replace(f"{path}.tmp", path)


class RuleError(ValueError):
    """A rule of the ``rules`` option that cannot be rendered."""


def chain_names(hex_id: str) -> tuple[str, str, str]:
    """(inbound, anti-spoofing, ebtables) chain names; at most 20 characters (limit 28)."""
    return f"cloud-i-{hex_id}", f"cloud-o-{hex_id}", f"cloud-e-{hex_id}"


def _number(rule: dict, key: str, high: int) -> int | None:
    """rule[key] as an int in 0..high; None when missing or -1 (= any)."""
    value = rule.get(key)
    if value is None:
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise RuleError(f"{key} {value!r} is not a number") from None
    if value == -1:
        return None
    if not 0 <= value <= high:
        raise RuleError(f"{key} {value} is not between -1 and {high}")
    return value


def render_rule(chain: str, rule: dict) -> str:
    """One security-group rule as the line ``iptables -S`` shows for it."""
    unknown = set(rule) - RULE_KEYS
    if unknown:
        raise RuleError(f"unknown keys {sorted(unknown)} (allowed: {sorted(RULE_KEYS)})")
    protocol = str(rule.get("protocol", "")).lower()
    if protocol == "-1":
        protocol = "all"
    if protocol not in ("tcp", "udp", "icmp", "all"):
        raise RuleError(f"protocol {rule.get('protocol')!r} is not tcp, udp, icmp or all")
    if rule.get("cidr") in (None, ""):
        raise RuleError("cidr is missing (0.0.0.0/0 means anywhere)")
    try:
        net = ipaddress.IPv4Network(str(rule["cidr"]).strip(), strict=False)
    except ValueError:
        raise RuleError(f"cidr {rule['cidr']!r} is not an IPv4 network") from None
    parts = ["-A", chain]
    if net.prefixlen:  # iptables does not show -s 0.0.0.0/0
        parts += ["-s", str(net)]
    if protocol in ("tcp", "udp"):
        low, high = _number(rule, "from_port", 65535), _number(rule, "to_port", 65535)
        if low is None and high is not None or low is not None and high is None:
            low = high = low if high is None else high
        if low is not None and low > high:
            raise RuleError(f"from_port {low} is above to_port {high}")
        parts += ["-p", protocol, "-m", protocol]
        if low is not None and (low, high) != (0, 65535):  # the full range shows as no --dport
            parts += ["--dport", str(low) if low == high else f"{low}:{high}"]
    elif protocol == "icmp":
        icmp_type, icmp_code = _number(rule, "icmp_type", 255), _number(rule, "icmp_code", 255)
        if icmp_type is None and icmp_code is not None:
            raise RuleError("icmp_code needs an icmp_type")
        parts += ["-p", "icmp"]
        if icmp_type is not None:
            wanted = str(icmp_type) if icmp_code is None else f"{icmp_type}/{icmp_code}"
            parts += ["-m", "icmp", "--icmp-type", wanted]
    return " ".join([*parts, "-j", "ACCEPT"])


def inbound_rules(chain: str, rules: list[dict], dhcp_server_ip: str | None) -> list[str]:
    """The inbound chain: replies, DHCP replies, the group rules (sorted), drop."""
    dhcp_from = f"-s {dhcp_server_ip}/32 " if dhcp_server_ip else ""
    return [
        f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {chain} {dhcp_from}-p udp -m udp --sport 67 --dport 68 -j ACCEPT",
        *sorted({render_rule(chain, rule) for rule in rules}),
        f"-A {chain} -j DROP",
    ]


def antispoof_rules(chain: str, ip: str, dhcp_server_ip: str | None) -> list[str]:
    """The anti-spoofing chain of packets from the tap (RETURN = may go on)."""
    dhcp = "-p udp -m udp --sport 68 --dport 67 -j RETURN"
    out = [
        f"-A {chain} -p udp -m udp --sport 67 --dport 68 -j DROP",  # no rogue DHCP server
        f"-A {chain} -s {ip}/32 -j RETURN",
        f"-A {chain} -s 0.0.0.0/32 -d 255.255.255.255/32 {dhcp}",
    ]
    if dhcp_server_ip:
        out.append(f"-A {chain} -s 0.0.0.0/32 -d {dhcp_server_ip}/32 {dhcp}")
    return [*out, f"-A {chain} -j DROP"]


def ebtables_rules(chain: str, mac: str | None, ip: str) -> list[str]:
    """The ebtables chain of frames from the tap (policy RETURN)."""
    out = [f"-A {chain} -s ! {mac} -j DROP"] if mac else []
    out += [
        f"-A {chain} -p ARP --arp-ip-src 0.0.0.0 -j RETURN",  # address probes (RFC 5227)
        f"-A {chain} -p ARP --arp-ip-src ! {ip} -j DROP",
    ]
    if mac:
        out.append(f"-A {chain} -p ARP --arp-mac-src ! {mac} -j DROP")
    return [
        *out,
        f"-A {chain} -p IPv4 -j RETURN",
        f"-A {chain} -p ARP -j RETURN",
        f"-A {chain} -j DROP",
    ]


class Table:
    """The chains and rules of one table, as its save command prints them."""

    def __init__(self) -> None:
        self.chains: set[str] = set()
        self.rules: dict[str, list[str]] = {}

    def chain(self, name: str) -> list[str]:
        return self.rules.get(name, [])


def parse_save(text: str, table: str = "filter") -> Table:
    """Parse ``iptables-save`` / ``ebtables-save`` output, keeping one table."""
    out, current = Table(), None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            current = line[1:]
        elif current != table:
            continue
        elif line.startswith(":"):
            out.chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            out.rules.setdefault(line.split()[1], []).append(line)
    return out


class Wanted:
    """What one instance needs in one table (``own`` None: the instance is absent)."""

    def __init__(
        self,
        own: dict[str, list[str]] | None,  # chain -> its rules in order
        refs: list[str],  # dispatch rules that jump to the own chains
        first: list[str],  # shared rules that must be the first of their chain
        shared: list[str],  # shared chains that must exist
        own_names: tuple[str, ...],  # the instance's chain names (also when absent)
        ref_chains: tuple[str, ...],  # chains where the instance's dispatch rules live
        insert_refs: bool = False,  # new dispatch rules go to the top (True) or the end
    ) -> None:
        self.own = own
        self.refs = refs
        self.first = first
        self.shared = shared
        self.own_names = own_names
        self.ref_chains = ref_chains
        self.insert_refs = insert_refs


def _jumps_to(line: str, names: tuple[str, ...]) -> bool:
    return line.split()[-1] in names and " -j " in line


def view(table: Table, want: Wanted) -> list[str]:
    """The instance's part of a table: its chains (":name" + rules) and the rules to them."""
    out = []
    for name in want.own_names:
        if name in table.chains:
            out += [f":{name}", *table.chain(name)]
    for chain in want.ref_chains:
        out += [line for line in table.chain(chain) if _jumps_to(line, want.own_names)]
    return out


def wanted_view(want: Wanted) -> list[str]:
    out = []
    for name, lines in (want.own or {}).items():
        out += [f":{name}", *lines]
    for chain in want.ref_chains:
        out += [line for line in want.refs if line.split()[1] == chain]
    return out


def _delete(line: str) -> str:
    return "-D" + line[2:]


def plan(table: Table, want: Wanted, declare: str) -> list[str]:
    """Restore lines (no header) that turn ``table`` into what ``want`` says; [] = nothing.

    ``declare`` formats a chain declaration (which also flushes an existing chain)."""
    out = []
    for name in want.shared:
        if name not in table.chains:
            out.append(declare.format(name))
    if want.own is not None:
        for name, lines in want.own.items():
            if name not in table.chains or table.chain(name) != lines:
                out += [declare.format(name), *lines]
    for line in want.first:
        chain = line.split()[1]
        rules = table.chain(chain)
        if rules[:1] != [line] or rules.count(line) > 1:
            out += [_delete(line)] * rules.count(line)
            out.append(f"-I {chain} 1 " + line.split(None, 2)[2])
    # Dispatch rules: drop the stale ones (old address or tap, duplicates), add the missing.
    for chain in want.ref_chains:
        present = [line for line in table.chain(chain) if _jumps_to(line, want.own_names)]
        wanted = [line for line in want.refs if line.split()[1] == chain] if want.own else []
        for line in sorted(set(present)):
            keep = 1 if line in wanted else 0
            out += [_delete(line)] * (present.count(line) - keep)
        for line in wanted:
            if line not in present:
                body = line.split(None, 2)[2]
                out.append(f"-I {chain} 1 {body}" if want.insert_refs else line)
    if want.own is None:
        for name in want.own_names:
            if name in table.chains:
                out += [f"-F {name}", f"-X {name}"]
    return out


def iptables_wanted(hex_id: str, p: dict, present: bool) -> Wanted:
    inbound, outbound, _ebtables = chain_names(hex_id)
    own = refs = None
    if present:
        own = {
            inbound: inbound_rules(inbound, p["rules"], p["dhcp_server_ip"]),
            outbound: antispoof_rules(outbound, p["ip"], p["dhcp_server_ip"]),
        }
        refs = [
            f"-A {ANTISPOOF} -m physdev --physdev-in {p['tap']} -j {outbound}",
            f"-A {DISPATCH} -d {p['ip']}/32 -j {inbound}",
        ]
    return Wanted(
        own=own,
        refs=refs or [],
        first=[
            f"-A FORWARD -j {DISPATCH}",
            f"-A INPUT -j {ANTISPOOF}",
            f"-A {DISPATCH} -j {ANTISPOOF}",
        ]
        if present
        else [],
        shared=[ANTISPOOF, DISPATCH] if present else [],
        own_names=(inbound, outbound),
        ref_chains=(ANTISPOOF, DISPATCH),
    )


def ebtables_wanted(hex_id: str, p: dict, present: bool) -> Wanted:
    chain = chain_names(hex_id)[2]
    return Wanted(
        own={chain: ebtables_rules(chain, p["mac"], p["ip"])} if present else None,
        refs=[f"-A INPUT -i {p['tap']} -j {chain}", f"-A FORWARD -i {p['tap']} -j {chain}"]
        if present
        else [],
        first=[],
        shared=[],
        own_names=(chain,),
        ref_chains=("INPUT", "FORWARD"),
        insert_refs=True,
    )


class Firewall:
    """Reads and writes one table through its save/restore commands."""

    def __init__(self, module: AnsibleModule, tool: str, declare: str, commit: bool) -> None:
        self.module = module
        self.tool = tool
        self.save_bin = module.get_bin_path(f"{tool}-save", required=True)
        self.restore_bin = module.get_bin_path(f"{tool}-restore", required=True)
        self.declare = declare
        self.commit = commit

    def read(self) -> Table:
        args = [self.save_bin] + (["-t", "filter"] if self.tool == "iptables" else [])
        rc, out, err = self.module.run_command(args, environ_update={"LC_ALL": "C"})
        if rc != 0:
            self.module.fail_json(msg=f"{' '.join(args)} failed (rc {rc}): {err.strip()}")
        return parse_save(out)

    def restore(self, lines: list[str]) -> None:
        script = "\n".join(["*filter", *lines, *(["COMMIT"] if self.commit else [])]) + "\n"
        args = [self.restore_bin, "--noflush"] + (["-w"] if self.tool == "iptables" else [])
        rc, out, err = self.module.run_command(args, data=script, binary_data=True)
        if rc != 0:
            self.module.fail_json(
                msg=f"{self.tool}-restore failed (rc {rc}): {(err or out).strip()}",
                script=script,
            )


def bridge_netfilter(module: AnsibleModule) -> bool:
    """Turn bridge netfilter on for iptables; True when it was (or would be) off."""
    if not os.path.exists(BRIDGE_NF):
        # Built into some kernels; a module (br_netfilter) on Debian's.
        if module.check_mode:
            return True
        modprobe = module.get_bin_path("modprobe")
        if modprobe:
            module.run_command([modprobe, "br_netfilter"])
        if not os.path.exists(BRIDGE_NF):
            module.fail_json(
                msg=f"{BRIDGE_NF} is missing: the kernel has no bridge netfilter "
                "(modprobe br_netfilter failed); bridged traffic cannot be filtered"
            )
    with open(BRIDGE_NF) as f:
        if f.read().strip() == "1":
            return False
    if not module.check_mode:
        with open(BRIDGE_NF, "w") as f:
            f.write("1\n")
    return True


def validate(module: AnsibleModule) -> str:
    """Check and normalise the options; return the hex part of the instance id."""
    p = module.params
    match = INSTANCE.match(p["instance"])
    if not match:
        module.fail_json(msg=f"instance: {p['instance']!r} is not an instance id like i-0a1b2c3d")
    if p["state"] == "absent":
        return match.group(1)
    if not TAP.match(p["tap"]):
        module.fail_json(msg=f"tap: {p['tap']!r} is not an interface name like vn-0a1b2c3d")
    try:
        p["ip"] = str(ipaddress.IPv4Address(p["ip"].strip()))
    except ValueError:
        module.fail_json(msg=f"ip: {p['ip']!r} is not an IPv4 address")
    if p["dhcp_server_ip"]:
        try:
            p["dhcp_server_ip"] = str(ipaddress.IPv4Address(p["dhcp_server_ip"].strip()))
        except ValueError:
            module.fail_json(msg=f"dhcp_server_ip: {p['dhcp_server_ip']!r} is not an IPv4 address")
    if p["mac"]:
        p["mac"] = p["mac"].strip().lower()
        if not MAC.match(p["mac"]):
            module.fail_json(msg=f"mac: {p['mac']!r} is not a MAC address like 52:54:00:12:34:56")
    for i, rule in enumerate(p["rules"]):
        try:
            render_rule("x", rule)
        except RuleError as e:
            module.fail_json(msg=f"rules[{i}] {rule}: {e}")
    return match.group(1)


def core(module: AnsibleModule) -> dict:
    p = module.params
    hex_id = validate(module)
    present = p["state"] == "present"
    tables = [
        (Firewall(module, "iptables", ":{} - [0:0]", True), iptables_wanted(hex_id, p, present)),
        (Firewall(module, "ebtables", ":{} RETURN", False), ebtables_wanted(hex_id, p, present)),
    ]
    nf_changed = bridge_netfilter(module) if present else False
    changed = nf_changed
    before, after = [], []
    with open(LOCK, "a") as lock:
        # Two runs at once (several cloudctl commands) must not both add the shared jumps,
        # nor apply their generations out of order.
        fcntl.flock(lock, fcntl.LOCK_EX)
        generation = p["generation"]
        last = None if generation is None else read_generation(p["generation_dir"], p["instance"])
        stale = last is not None and last > generation
        for fw, want in tables:
            table = fw.read()
            lines = [] if stale else plan(table, want, fw.declare)
            before.append(view(table, want))
            if lines:
                changed = True
                if not module.check_mode:
                    fw.restore(lines)
                    table = fw.read()
                    problem = plan(table, want, fw.declare)
                    if problem:  # a rendering that the tool shows differently: a bug here
                        module.fail_json(
                            msg=f"{fw.tool} does not show the rules as written; "
                            f"still to do: {problem}"
                        )
            after.append(view(table, want) if stale or not module.check_mode else wanted_view(want))
        if generation is not None and not stale and not module.check_mode:
            write_generation(p["generation_dir"], p["instance"], generation)
    res = {
        "changed": changed,
        "stale": stale,
        "chains": [name for name in chain_names(hex_id) if f":{name}" in after[0] + after[1]],
        "rules": [line for line in after[0] if not line.startswith(":")],
        "ebtables": [line for line in after[1] if not line.startswith(":")],
        "bridge_nf_call_iptables": nf_changed,
    }
    if module._diff:
        res["diff"] = {
            "before": "".join(line + "\n" for line in before[0] + before[1]),
            "after": "".join(line + "\n" for line in after[0] + after[1]),
            "before_header": p["instance"],
            "after_header": p["instance"],
        }
    return res


ARGUMENT_SPEC = {
    "instance": {"type": "str", "required": True},
    "tap": {"type": "str"},
    "mac": {"type": "str"},
    "ip": {"type": "str"},
    "rules": {"type": "list", "elements": "dict", "default": []},
    "dhcp_server_ip": {"type": "str"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "generation": {"type": "int"},
    "generation_dir": {"type": "path", "default": "/run/cloud-instance-firewall"},
}
REQUIRED_IF = [("state", "present", ("tap", "ip"))]

"""The instance_firewall module: rule rendering (unit) and real traffic in namespaces.

The lab (made once for the file) is a "node" network namespace holding the instance bridge
with the gateway address, three "instances" (each a namespace whose veth has its host end
``vn-<hex>`` on the bridge, as libvirt's tap would be), a "cc" namespace on the bridge (a
DHCP server reached over a bridge port, as on a multi-host cluster) and a "client" namespace
routed through the node (as DNAT'd elastic-IP traffic is). The module runs through
ansible-playbook inside the node namespace; busybox httpd, ping, arping, udhcpc/udhcpd and
small Python UDP senders/receivers make the traffic.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from modhelpers import load_module_utils, run_module

fw = load_module_utils("nc_firewall")  # the code of instance_firewall

GATEWAY = "10.77.9.1"
BR_MAC = "02:77:09:00:00:01"
CC_IP = "10.77.9.2"
UPLINK = "10.78.9.1"  # the node's side of the client link
CLIENT = "10.78.9.2"
PORT = 8080  # busybox httpd in every instance and in the client
UDP_PORT = 9999  # UDP receivers on the gateway and on instance C
NEGATIVE = 1.0  # seconds a connection that must fail is given

integration = pytest.mark.integration


class Instance:
    def __init__(self, key: str, hex_id: str, ip: str, mac: str) -> None:
        self.key, self.hex, self.ip, self.mac = key, hex_id, ip, mac
        self.id = f"i-{hex_id}"
        self.tap = f"vn-{hex_id}"
        self.ns = ""


A = Instance("a", "0000000a", "10.77.9.11", "52:54:00:77:00:0a")
B = Instance("b", "0000000b", "10.77.9.12", "52:54:00:77:00:0b")
C = Instance("c", "0000000c", "10.77.9.13", "52:54:00:77:00:0c")
INSTANCES = (A, B, C)

UDP_RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
with open(sys.argv[2], "a") as out:
    while True:
        data, addr = s.recvfrom(2048)
        out.write(f"{addr[0]} {data.decode()}\\n")
        out.flush()
"""


class Lab:
    def __init__(self, tmp: Path) -> None:
        tag = secrets.token_hex(3)
        self.tmp = tmp
        self.node = f"fwn-{tag}"
        self.cc = f"fwd-{tag}"
        self.client = f"fwc-{tag}"
        for inst in INSTANCES:
            inst.ns = f"fwi{inst.key}-{tag}"
        self.namespaces = [self.node, self.cc, self.client, *(i.ns for i in INSTANCES)]
        self.procs: list[subprocess.Popen] = []

    def sh(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30):
        return subprocess.run(
            ["ip", "netns", "exec", ns, *cmd],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def ip(self, ns: str, cmd: str) -> None:
        self.sh(ns, "ip", *cmd.split())

    def spawn(self, ns: str, *cmd: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def setup(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self.ip(ns, "link set lo up")
        n = self.node
        # A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, changing with them.
        self.ip(n, f"link add br0 address {BR_MAC} type bridge")
        self.ip(n, f"addr add {GATEWAY}/24 dev br0")
        self.ip(n, "link set br0 up")
        self.sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for inst in INSTANCES:
            self.ip(n, f"link add {inst.tap} type veth peer name eth0 netns {inst.ns}")
            self.ip(n, f"link set {inst.tap} master br0 up")
            self.ip(inst.ns, f"link set eth0 address {inst.mac} up")
            self.set_address(inst, inst.ip)
        # The cluster's DHCP server on another host, behind the bridge's port.
        self.ip(n, f"link add cc0 type veth peer name eth0 netns {self.cc}")
        self.ip(n, "link set cc0 master br0 up")
        self.ip(self.cc, f"addr add {CC_IP}/24 dev eth0")
        self.ip(self.cc, "link set eth0 up")
        # The client is routed through the node.
        self.ip(n, f"link add up0 type veth peer name eth0 netns {self.client}")
        self.ip(n, f"addr add {UPLINK}/24 dev up0")
        self.ip(n, "link set up0 up")
        self.ip(self.client, f"addr add {CLIENT}/24 dev eth0")
        self.ip(self.client, "link set eth0 up")
        self.ip(self.client, f"route add {GATEWAY.rsplit('.', 1)[0]}.0/24 via {UPLINK}")
        www = self.tmp / "www"
        www.mkdir()
        (www / "index.html").write_text("hello\n")
        for ns in (self.client, *(i.ns for i in INSTANCES)):
            self.spawn(ns, "busybox", "httpd", "-f", "-p", str(PORT), "-h", str(www))
        self.received = {ns: self.tmp / f"udp-{ns}.log" for ns in (self.node, C.ns)}
        for ns, path in self.received.items():
            path.touch()
            self.spawn(ns, sys.executable, "-c", UDP_RECEIVER, str(UDP_PORT), str(path))
        for ns in (self.client, *(i.ns for i in INSTANCES)):
            self.wait_listening(ns, "tcp", PORT)
        for ns in self.received:
            self.wait_listening(ns, "udp", UDP_PORT)

    def wait_listening(self, ns: str, proto: str, port: int) -> None:
        deadline = time.monotonic() + 20
        while f":{port} " not in self.sh(ns, "ss", "-lnH", f"--{proto}").stdout:
            assert time.monotonic() < deadline, f"nothing listens on {proto} {port} in {ns}"
            time.sleep(0.05)

    def teardown(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False)

    def set_address(self, inst: Instance, ip: str | None) -> None:
        self.ip(inst.ns, "addr flush dev eth0")
        self.ip(inst.ns, "neigh flush dev eth0")
        if ip:
            self.ip(inst.ns, f"addr add {ip}/24 dev eth0")
            self.ip(inst.ns, f"route add default via {GATEWAY}")

    def reset(self) -> None:
        """Back to a clean node: no rules, bridge netfilter on, the instances' own addresses."""
        for tool in ("iptables", "ebtables"):
            self.sh(self.node, tool, "-F")
            self.sh(self.node, tool, "-X")
        self.sh(self.node, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
        self.ip(self.node, "neigh flush dev br0")
        for inst in INSTANCES:
            self.ip(inst.ns, f"link set eth0 address {inst.mac}")
            self.set_address(inst, inst.ip)

    # --- traffic -----------------------------------------------------------------------
    def tcp(self, ns: str, ip: str, timeout: float = 3.0) -> bool:
        """Whether a TCP connection from namespace ``ns`` to ip:PORT is accepted."""
        code = (
            "import socket,sys\n"
            "socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()"
        )
        proc = self.sh(ns, sys.executable, "-c", code, ip, str(PORT), str(timeout), check=False)
        return proc.returncode == 0

    def ping(self, ns: str, ip: str, timeout: int = 3) -> bool:
        return (
            self.sh(
                ns, "busybox", "ping", "-c", "1", "-W", str(timeout), ip, check=False
            ).returncode
            == 0
        )

    def send_udp(self, ns: str, ip: str, marker: str) -> None:
        code = (
            "import socket,sys\n"
            "socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            ".sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))"
        )
        self.sh(ns, sys.executable, "-c", code, ip, str(UDP_PORT), marker, check=False)

    def got_udp(self, ns: str, marker: str, wait: float) -> list[str]:
        """Sources of the datagrams ``marker`` that the receiver in ``ns`` got within ``wait`` s."""
        deadline = time.monotonic() + wait
        while True:
            lines = self.received[ns].read_text().splitlines()
            sources = [line.split()[0] for line in lines if line.endswith(f" {marker}")]
            if sources or time.monotonic() > deadline:
                return sources
            time.sleep(0.05)

    def arping(self, inst: Instance, source: str, target: str) -> bool:
        """Whether ``target`` answers an ARP request from ``inst`` with sender IP ``source``."""
        proc = self.sh(
            inst.ns,
            "busybox", "arping", "-f", "-c", "2", "-w", "2", "-I", "eth0", "-s", source, target,
            check=False,
        )  # fmt: skip
        return proc.returncode == 0

    # --- module --------------------------------------------------------------------------
    def module(self, inst: Instance, check: bool = False, **args) -> dict:
        params = {"instance": inst.id, **args}
        if params.get("state", "present") == "present":
            params = {"tap": inst.tap, "mac": inst.mac, "ip": inst.ip, **params}
        res = run_module(
            self.tmp,
            "instance_firewall",
            params,
            check=check,
            wrapper=["ip", "netns", "exec", self.node],
        )
        assert not res.get("failed"), res.get("msg")
        return res

    def save(self, tool: str) -> str:
        return self.sh(
            self.node, f"{tool}-save", *(["-t", "filter"] if tool == "iptables" else [])
        ).stdout

    def filter_lines(self, tool: str) -> list[str]:
        return [line for line in self.save(tool).splitlines() if line.startswith(("-A", ":"))]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("busybox", "iptables-restore", "ebtables-restore", "ss"):
        assert shutil.which(tool), f"{tool} is missing"
    lab = Lab(tmp_path_factory.mktemp("fw"))
    try:
        lab.setup()
        yield lab
    finally:
        lab.teardown()


@pytest.fixture
def node(lab):
    lab.reset()
    yield lab


TCP_ANY = {"protocol": "tcp", "from_port": PORT, "to_port": PORT, "cidr": "0.0.0.0/0"}


# --- unit tests of the rendering and the plan --------------------------------------------
def test_render_rules():
    r = fw.render_rule
    assert r("x", TCP_ANY) == f"-A x -p tcp -m tcp --dport {PORT} -j ACCEPT"
    assert (
        r("x", {"protocol": "udp", "from_port": 1000, "to_port": 2000, "cidr": "10.1.2.3/8"})
        == "-A x -s 10.0.0.0/8 -p udp -m udp --dport 1000:2000 -j ACCEPT"
    )
    full = {"protocol": "tcp", "from_port": 0, "to_port": 65535, "cidr": "10.0.0.1/32"}
    assert r("x", full) == "-A x -s 10.0.0.1/32 -p tcp -m tcp -j ACCEPT"
    assert r("x", {"protocol": "tcp", "cidr": "0.0.0.0/0"}) == "-A x -p tcp -m tcp -j ACCEPT"
    assert r("x", {"protocol": "tcp", "from_port": "22", "cidr": "0.0.0.0/0"}).endswith(
        "--dport 22 -j ACCEPT"
    )
    icmp = {"protocol": "icmp", "cidr": "0.0.0.0/0"}
    assert r("x", {**icmp, "icmp_type": -1, "icmp_code": -1}) == "-A x -p icmp -j ACCEPT"
    assert r("x", {**icmp, "icmp_type": 8}) == "-A x -p icmp -m icmp --icmp-type 8 -j ACCEPT"
    assert r("x", {**icmp, "icmp_type": 3, "icmp_code": 4}).endswith("--icmp-type 3/4 -j ACCEPT")
    assert r("x", {"protocol": "-1", "cidr": "10.0.0.7/32"}) == "-A x -s 10.0.0.7/32 -j ACCEPT"
    for bad, why in [
        ({"protocol": "gre", "cidr": "0.0.0.0/0"}, "protocol"),
        ({"protocol": "tcp"}, "cidr is missing"),
        ({"protocol": "tcp", "cidr": "fe80::/64"}, "not an IPv4 network"),
        ({"protocol": "tcp", "from_port": 70000, "cidr": "0.0.0.0/0"}, "between -1 and 65535"),
        ({"protocol": "tcp", "from_port": 9, "to_port": 3, "cidr": "0.0.0.0/0"}, "above"),
        ({"protocol": "icmp", "icmp_code": 1, "cidr": "0.0.0.0/0"}, "needs an icmp_type"),
        ({"protocol": "tcp", "port": 22, "cidr": "0.0.0.0/0"}, "unknown keys"),
    ]:
        with pytest.raises(fw.RuleError, match=why):
            r("x", bad)


def test_inbound_chain_is_sorted_and_deduplicated():
    rules = [
        {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0"},
        {"protocol": "all", "cidr": "10.0.0.9/32"},
        {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0"},
    ]
    lines = fw.inbound_rules("cloud-i-1", rules, None)
    assert lines[0] == "-A cloud-i-1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    assert lines[1] == "-A cloud-i-1 -p udp -m udp --sport 67 --dport 68 -j ACCEPT"
    assert lines[2:-1] == sorted(set(lines[2:-1])) and len(lines) == 5
    assert lines[-1] == "-A cloud-i-1 -j DROP"
    assert fw.inbound_rules("cloud-i-1", list(reversed(rules)), None) == lines
    with_server = fw.inbound_rules("cloud-i-1", [], "10.0.0.2")
    assert "-s 10.0.0.2/32 -p udp -m udp --sport 67 --dport 68 -j ACCEPT" in with_server[1]
    assert max(len(n) for n in fw.chain_names("f" * 12)) <= 28


def test_plan_changes_only_what_differs():
    p = {"rules": [TCP_ANY], "dhcp_server_ip": None, "ip": "10.0.0.5", "tap": "vn-1", "mac": None}
    want = fw.iptables_wanted("1", p, True)
    empty = fw.parse_save("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    lines = fw.plan(empty, want, ":{} - [0:0]")
    assert ":cloud-antispoof - [0:0]" in lines and "-I FORWARD 1 -j cloud-instances" in lines
    # The table as iptables-save shows it once applied: nothing left to do.
    saved = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":cloud-antispoof - [0:0]",
        ":cloud-instances - [0:0]",
        ":cloud-i-1 - [0:0]",
        ":cloud-o-1 - [0:0]",
        "-A INPUT -j cloud-antispoof",
        "-A FORWARD -j cloud-instances",
        "-A FORWARD -s 10.9.0.0/16 -j ACCEPT",
        "-A cloud-instances -j cloud-antispoof",
        "-A cloud-instances -d 10.0.0.9/32 -j cloud-i-2",  # another instance
        *[line for line in fw.wanted_view(want) if line.startswith("-A")],
        "COMMIT",
    ]
    assert fw.plan(fw.parse_save("\n".join(saved)), want, ":{} - [0:0]") == []
    # A new address: the old dispatch rule goes, the chain is rewritten, others stay.
    moved = fw.iptables_wanted("1", {**p, "ip": "10.0.0.6"}, True)
    lines = fw.plan(fw.parse_save("\n".join(saved)), moved, ":{} - [0:0]")
    assert "-D cloud-instances -d 10.0.0.5/32 -j cloud-i-1" in lines
    assert "-A cloud-instances -d 10.0.0.6/32 -j cloud-i-1" in lines
    assert ":cloud-o-1 - [0:0]" in lines and ":cloud-i-1 - [0:0]" not in lines
    assert not [line for line in lines if "cloud-i-2" in line or "10.9.0.0" in line]
    # Something inserted above the dispatch jump: the jump moves back to the top.
    first = [saved[0], saved[1], saved[2], "-A FORWARD -j ACCEPT", *saved[3:]]
    lines = fw.plan(fw.parse_save("\n".join(first)), want, ":{} - [0:0]")
    assert lines == ["-D FORWARD -j cloud-instances", "-I FORWARD 1 -j cloud-instances"]
    # Absent: the dispatch rules, then the chains; nothing else.
    gone = fw.plan(fw.parse_save("\n".join(saved)), fw.iptables_wanted("1", p, False), "")
    assert gone == [
        "-D cloud-antispoof -m physdev --physdev-in vn-1 -j cloud-o-1",
        "-D cloud-instances -d 10.0.0.5/32 -j cloud-i-1",
        "-F cloud-i-1",
        "-X cloud-i-1",
        "-F cloud-o-1",
        "-X cloud-o-1",
    ]


# --- real traffic ---------------------------------------------------------------------------
@integration
def test_tcp_rule_opens_and_closes_routed_and_bridged(node):
    for inst in INSTANCES:
        node.module(inst)
    assert not node.tcp(node.client, A.ip, NEGATIVE), "routed traffic passed without a rule"
    assert not node.tcp(B.ns, A.ip, NEGATIVE), "bridged traffic passed without a rule"
    assert node.tcp(A.ns, CLIENT), "outbound connection (replies ESTABLISHED) failed"
    assert not node.tcp(A.ns, B.ip, NEGATIVE)  # B has no rule either

    res = node.module(A, rules=[TCP_ANY])
    assert res["changed"] is True
    assert f"-A cloud-i-{A.hex} -p tcp -m tcp --dport {PORT} -j ACCEPT" in res["rules"]
    assert node.tcp(node.client, A.ip), "routed connection refused with the rule"
    assert node.tcp(B.ns, A.ip), "bridged connection refused with the rule"
    assert node.module(A, rules=[TCP_ANY])["changed"] is False

    res = node.module(A, rules=[])
    assert res["changed"] is True
    assert not node.tcp(node.client, A.ip, NEGATIVE), "routed traffic passed after removal"
    assert not node.tcp(B.ns, A.ip, NEGATIVE), "bridged traffic passed after removal"
    assert node.module(A, rules=[])["changed"] is False


@integration
def test_icmp_rule_and_source_cidr(node):
    node.module(B)
    node.module(C)
    node.module(A, rules=[])
    assert not node.ping(node.client, A.ip, 1)
    icmp = {"protocol": "icmp", "icmp_type": 8, "icmp_code": -1, "cidr": "0.0.0.0/0"}
    only_b = {**TCP_ANY, "cidr": f"{B.ip}/32"}
    res = node.module(A, rules=[only_b, icmp])
    assert res["changed"] is True
    assert node.ping(node.client, A.ip), "echo request refused with the icmp rule"
    assert node.ping(B.ns, A.ip)
    assert node.tcp(B.ns, A.ip), "the /32 of B does not let B in"
    assert not node.tcp(C.ns, A.ip, NEGATIVE), "C came in through B's /32"
    assert not node.tcp(node.client, A.ip, NEGATIVE), "the client came in through B's /32"
    assert node.module(A, rules=[icmp, only_b])["changed"] is False  # order does not matter


@pytest.fixture
def no_firewall_ping_works(node):
    """Without any firewall the lab's plain paths work (so that failures below mean something)."""
    assert node.ping(A.ns, GATEWAY)
    assert node.ping(node.client, A.ip)
    return node


@integration
def test_spoofed_address_reaches_nothing(no_firewall_ping_works):
    node = no_firewall_ping_works
    udp_c = {"protocol": "udp", "from_port": UDP_PORT, "to_port": UDP_PORT, "cidr": "0.0.0.0/0"}
    node.module(B)
    node.module(C, rules=[udp_c])
    # Control: with A's own address and its firewall, A reaches the gateway and C.
    node.module(A)
    node.send_udp(A.ns, GATEWAY, "own-gw")
    node.send_udp(A.ns, C.ip, "own-c")
    assert node.got_udp(node.node, "own-gw", 10) == [A.ip]
    assert node.got_udp(C.ns, "own-c", 10) == [A.ip]
    assert node.arping(A, A.ip, GATEWAY)

    # A takes B's address; static neighbours so that ARP cannot be what stops it.
    node.set_address(A, B.ip)
    node.ip(A.ns, f"neigh replace {GATEWAY} lladdr {BR_MAC} dev eth0 nud permanent")
    node.ip(A.ns, f"neigh replace {C.ip} lladdr {C.mac} dev eth0 nud permanent")
    node.send_udp(A.ns, GATEWAY, "spoof-gw")
    node.send_udp(A.ns, C.ip, "spoof-c")
    assert node.got_udp(node.node, "spoof-gw", 1.5) == [], "the spoofed source reached the gateway"
    assert node.got_udp(C.ns, "spoof-c", 0.2) == [], "the spoofed source reached C"
    assert not node.ping(A.ns, GATEWAY, 1)
    assert not node.arping(A, B.ip, GATEWAY), "ARP with B's address answered"
    assert not node.arping(A, B.ip, C.ip), "ARP with B's address answered by C"
    neigh = node.sh(node.node, "ip", "neigh", "show", B.ip).stdout
    assert A.mac not in neigh, f"the gateway learnt B's address at A's MAC: {neigh}"

    # Without A's firewall the same packets arrive: it was the firewall that stopped them.
    assert node.module(A, state="absent")["changed"] is True
    node.send_udp(A.ns, GATEWAY, "open-gw")
    node.send_udp(A.ns, C.ip, "open-c")
    assert node.got_udp(node.node, "open-gw", 10) == [B.ip]
    assert node.got_udp(C.ns, "open-c", 10) == [B.ip]
    assert node.arping(A, B.ip, GATEWAY)


@integration
def test_spoofed_mac_is_dropped(node):
    node.module(A)
    node.ip(A.ns, f"neigh replace {GATEWAY} lladdr {BR_MAC} dev eth0 nud permanent")
    node.send_udp(A.ns, GATEWAY, "mac-own")
    assert node.got_udp(node.node, "mac-own", 10) == [A.ip]
    node.ip(A.ns, "link set eth0 address 52:54:00:77:00:ee")
    node.send_udp(A.ns, GATEWAY, "mac-spoof")
    assert node.got_udp(node.node, "mac-spoof", 1.5) == [], "a frame with another MAC passed"
    assert not node.arping(A, A.ip, GATEWAY)


@integration
@pytest.mark.parametrize("server", ["cc", "node"])
def test_dhcp_passes_the_antispoofing(node, server):
    """DHCP from 0.0.0.0 reaches the server on the node (INPUT) or over the bridge (FORWARD),
    and the server's answers reach the instance through its inbound chain."""
    ns, ifname, server_ip = (
        (node.cc, "eth0", CC_IP) if server == "cc" else (node.node, "br0", GATEWAY)
    )
    node.module(A, dhcp_server_ip=server_ip)
    conf = node.tmp / f"udhcpd-{server}.conf"
    conf.write_text(
        f"interface {ifname}\nstart {A.ip}\nend {A.ip}\nlease_file {node.tmp}/leases-{server}\n"
        f"static_lease {A.mac} {A.ip}\noption subnet 255.255.255.0\n"
    )
    (node.tmp / f"leases-{server}").touch()
    proc = node.spawn(ns, "busybox", "udhcpd", "-f", "-a", "100", str(conf))
    try:
        script = node.tmp / "report.sh"
        script.write_text('#!/bin/sh\necho "$1 ip=$ip"\n')
        script.chmod(0o755)
        node.set_address(A, None)
        out = node.sh(
            A.ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-T", "1", "-t", "8",
            "-s", str(script), check=False,
        ).stdout  # fmt: skip
        assert f"bound ip={A.ip}" in out, out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@integration
def test_absent_check_mode_and_foreign_rules(node):
    n = node.node
    # Rules that are not the module's: the host's, the CC's NAT, another tool's bridge rule.
    node.sh(n, "iptables", "-A", "FORWARD", "-s", "10.99.0.0/16", "-j", "ACCEPT")
    node.sh(
        n, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.77.9.0/24", "-j", "MASQUERADE"
    )
    node.sh(n, "ebtables", "-A", "FORWARD", "-i", "cc0", "-j", "ACCEPT")
    nat_before = node.sh(n, "iptables", "-t", "nat", "-S").stdout

    res = node.module(A, check=True, rules=[TCP_ANY])
    assert res["changed"] is True
    assert f"--dport {PORT} -j ACCEPT" in res["diff"]["after"] and res["diff"]["before"] == ""
    assert "cloud-" not in node.save("iptables") + node.save("ebtables"), "check mode changed"

    node.module(B, rules=[TCP_ANY])
    b_lines = [line for line in node.filter_lines("iptables") if B.hex in line]
    b_eb = [line for line in node.filter_lines("ebtables") if B.hex in line]
    res = node.module(A, rules=[TCP_ANY])
    assert res["changed"] is True and res["chains"] == [f"cloud-{k}-{A.hex}" for k in "ioe"]
    assert node.module(A, rules=[TCP_ANY])["changed"] is False
    forward = [line for line in node.filter_lines("iptables") if line.startswith("-A FORWARD")]
    assert forward == ["-A FORWARD -j cloud-instances", "-A FORWARD -s 10.99.0.0/16 -j ACCEPT"]

    # Someone inserts a rule above ours: it moves back to the top, the other rule stays.
    node.sh(n, "iptables", "-I", "FORWARD", "1", "-i", "up0", "-j", "ACCEPT")
    assert node.module(A, rules=[TCP_ANY])["changed"] is True
    forward = [line for line in node.filter_lines("iptables") if line.startswith("-A FORWARD")]
    assert forward[0] == "-A FORWARD -j cloud-instances" and len(forward) == 3

    res = node.module(A, check=True, state="absent")
    assert res["changed"] is True and res["diff"]["after"] == ""
    assert any(A.hex in line for line in node.filter_lines("iptables"))
    res = node.module(A, state="absent")
    assert res["changed"] is True and res["rules"] == [] and res["ebtables"] == []
    assert not [line for line in node.filter_lines("iptables") if A.hex in line]
    assert not [line for line in node.filter_lines("ebtables") if A.hex in line]
    assert [line for line in node.filter_lines("iptables") if B.hex in line] == b_lines
    assert [line for line in node.filter_lines("ebtables") if B.hex in line] == b_eb
    assert "-A FORWARD -i cc0 -j ACCEPT" in node.filter_lines("ebtables")
    assert node.sh(n, "iptables", "-t", "nat", "-S").stdout == nat_before
    assert node.tcp(node.client, A.ip), "A is still filtered after absent"
    assert node.module(A, state="absent")["changed"] is False
    assert node.module(Instance("x", "fff", "10.77.9.99", ""), state="absent")["changed"] is False


@integration
def test_turns_bridge_netfilter_on(node):
    n = node.node
    bridge_nf = "/proc/sys/net/bridge/bridge-nf-call-iptables"
    node.sh(n, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
    res = node.module(A, check=True)
    assert res["changed"] is True and res["bridge_nf_call_iptables"] is True
    assert node.sh(n, "cat", bridge_nf).stdout.strip() == "0"
    res = node.module(A)
    assert res["bridge_nf_call_iptables"] is True
    assert node.sh(n, "cat", bridge_nf).stdout.strip() == "1"
    assert not node.tcp(B.ns, A.ip, NEGATIVE), "bridged traffic not filtered"
    assert node.module(A)["changed"] is False


@integration
def test_runs_at_once_share_the_dispatch_chains(node):
    """Two instances' runs at the same time (two cloudctl operations): each keeps its rules
    and the shared jumps exist once."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda inst: node.module(inst, rules=[TCP_ANY]), INSTANCES))
    assert all(res["changed"] for res in results)
    lines = node.filter_lines("iptables")
    for shared in (
        "-A FORWARD -j cloud-instances",
        "-A INPUT -j cloud-antispoof",
        "-A cloud-instances -j cloud-antispoof",
    ):
        assert lines.count(shared) == 1, lines
    for inst in INSTANCES:
        assert f"-A cloud-instances -d {inst.ip}/32 -j cloud-i-{inst.hex}" in lines
        assert (
            f"-A cloud-antispoof -m physdev --physdev-in {inst.tap} -j cloud-o-{inst.hex}" in lines
        )
        assert node.tcp(node.client, inst.ip)


@integration
def test_generations_apply_in_the_planned_order(node, tmp_path):
    """Two cloudctl operations at once: the change planned earlier but arriving later must
    neither put older rules over newer ones nor bring back a removed instance's chains."""
    gens = {"generation_dir": str(tmp_path / "generations")}
    newer = node.module(A, rules=[TCP_ANY], generation=20, **gens)
    assert newer["changed"] is True and newer["stale"] is False
    older = node.module(A, rules=[], generation=10, **gens)
    assert older["changed"] is False and older["stale"] is True
    assert node.tcp(node.client, A.ip), "the older (closed) rules replaced the newer ones"
    assert node.module(A, rules=[TCP_ANY], generation=20, **gens)["changed"] is False

    removed = node.module(A, state="absent", generation=30, **gens)
    assert removed["changed"] is True and removed["stale"] is False
    late = node.module(A, rules=[TCP_ANY], generation=25, **gens)
    assert late["stale"] is True and late["changed"] is False and late["chains"] == []
    assert not [line for line in node.filter_lines("iptables") if A.hex in line]
    assert not [line for line in node.filter_lines("ebtables") if A.hex in line]
    # Without a generation the rules are applied whatever ran before.
    assert node.module(A, rules=[TCP_ANY])["changed"] is True
    assert node.tcp(node.client, A.ip)

"""elastic_ip against the real kernel: DNAT/SNAT on a Cluster Controller in network namespaces.

The lab (all in namespaces the test makes, random names):

    client 198.51.100.254/24 ---- pub0 198.51.100.1/24 [cc] br0 172.31.77.1/24 ---- inst1 .5
           (knows only the public /24)                       \\--------------------- inst2 .6

The cc namespace forwards, masquerades the subnet out of pub0 as the cc role does, and holds
unrelated nat rules that must survive. Each instance runs a TCP server answering
"<name> <peer address>"; so does the client, which shows the source the instance's outbound
traffic arrives with.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from modhelpers import TCP_CLIENT, TCP_SERVER, needs_root, ns_ip_json, run_module

pytestmark = needs_root

PUB = "198.51.100.10"
PUB2 = "198.51.100.11"
CC_PUBLIC = "198.51.100.1"
CLIENT = "198.51.100.254"
INST = {"inst1": "172.31.77.5", "inst2": "172.31.77.6"}
PORT = 8080
CLIENT_PORT = 9090
MASQUERADE = (
    '-A POSTROUTING -s 172.31.77.0/24 -o pub0 -m comment --comment "cloud-cc zone-a egress" '
    "-j MASQUERADE"
)
# nat rules that are not the module's (iptables -S form): they must survive every step.
OTHER_RULES = [
    "-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 172.31.77.9:22",
    MASQUERADE,
    "-A POSTROUTING -s 10.9.0.0/16 -o pub0 -j SNAT --to-source 198.51.100.1",
    "-A OTHER-CHAIN -d 203.0.113.7/32 -j RETURN",
]


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


class Lab:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = {n: f"eip-{tag}-{n}" for n in ("cc", "client", "inst1", "inst2")}
        self.servers: list[subprocess.Popen] = []

    @property
    def cc(self) -> str:
        return self.ns["cc"]

    def setup(self) -> None:
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        cc = self.cc
        sh("ip", "-n", cc, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", cc, "addr", "add", "172.31.77.1/24", "dev", "br0")
        sh("ip", "-n", cc, "link", "set", "br0", "up")
        for name, addr in INST.items():
            port = f"v-{name}"
            sh("ip", "-n", cc, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[name])  # fmt: skip
            sh("ip", "-n", cc, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", self.ns[name], "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", self.ns[name], "link", "set", "eth0", "up")
            sh("ip", "-n", self.ns[name], "route", "add", "default", "via", "172.31.77.1")
        sh("ip", "-n", cc, "link", "add", "pub0", "type", "veth", "peer", "name", "eth0",
           "netns", self.ns["client"])  # fmt: skip
        sh("ip", "-n", cc, "addr", "add", f"{CC_PUBLIC}/24", "dev", "pub0")
        sh("ip", "-n", cc, "link", "set", "pub0", "up")
        sh("ip", "-n", self.ns["client"], "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        sh("ip", "-n", self.ns["client"], "link", "set", "eth0", "up")
        self.exec(cc, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # what the cc role writes (roles/cc/tasks/nat.yml), plus rules of somebody else
        for rule in [
            ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "2222", "-j", "DNAT",
             "--to-destination", "172.31.77.9:22"],
            ["-t", "nat", "-A", "POSTROUTING", "-s", "172.31.77.0/24", "-o", "pub0", "-m",
             "comment", "--comment", "cloud-cc zone-a egress", "-j", "MASQUERADE"],
            ["-t", "nat", "-A", "POSTROUTING", "-s", "10.9.0.0/16", "-o", "pub0", "-j", "SNAT",
             "--to-source", CC_PUBLIC],
            ["-t", "nat", "-N", "OTHER-CHAIN"],
            ["-t", "nat", "-A", "OTHER-CHAIN", "-d", "203.0.113.7", "-j", "RETURN"],
            ["-I", "FORWARD", "-i", "br0", "-o", "pub0", "-s", "172.31.77.0/24", "-j", "ACCEPT"],
            ["-I", "FORWARD", "-i", "pub0", "-o", "br0", "-d", "172.31.77.0/24", "-m",
             "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ]:  # fmt: skip
            self.exec(cc, "iptables", *rule)
        for name in INST:
            self.serve(name, PORT)
        self.serve("client", CLIENT_PORT)

    def exec(self, ns: str, *args: str) -> str:
        return sh("ip", "netns", "exec", ns, *args)

    def serve(self, name: str, port: int) -> None:
        ns = self.ns[name]
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", TCP_SERVER, name, str(port)]
        self.servers.append(subprocess.Popen(cmd))
        deadline = time.monotonic() + 20
        while not self.connect(name, "127.0.0.1", port, 1).startswith(name):
            assert time.monotonic() < deadline, f"server in {ns} did not start"
            time.sleep(0.1)

    def connect(self, src: str, addr: str, port: int = PORT, timeout: float = 2.0) -> str:
        """One TCP connection from namespace ``src``: the server's line, or 'ERR ...'."""
        ns = self.ns[src]
        out = self.exec(ns, sys.executable, "-c", TCP_CLIENT, addr, str(port), str(timeout))
        return out.strip()

    def reach(self, src: str, addr: str, port: int = PORT, expect: str = "") -> str:
        """Poll until a connection from ``src`` answers with ``expect`` (generous deadline)."""
        deadline = time.monotonic() + 20
        while True:
            out = self.connect(src, addr, port)
            if out.startswith(expect) and not out.startswith("ERR"):
                return out
            assert time.monotonic() < deadline, f"{src} -> {addr}:{port}: {out}"
            time.sleep(0.2)

    def nat(self) -> list[str]:
        return self.exec(self.cc, "iptables", "-t", "nat", "-S").splitlines()

    def addresses(self) -> list[str]:
        link = ns_ip_json(self.cc, "addr", "show", "dev", "pub0")[0]
        return [
            f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"
        ]

    def teardown(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture
def lab():
    lab = Lab()
    try:
        lab.setup()
        yield lab
    finally:
        lab.teardown()


def eip(tmp_path, lab: Lab, check: bool = False, **args) -> dict:
    args.setdefault("public_interface", "pub0")
    return run_module(
        tmp_path, "elastic_ip", args, check=check, wrapper=["ip", "netns", "exec", lab.cc]
    )


def ok(res: dict) -> dict:
    assert not res.get("failed"), res.get("msg") or res["_stdout"]
    return res


def others(nat: list[str]) -> list[str]:
    return [ln for ln in nat if ln in OTHER_RULES]


def test_associate_move_disassociate(tmp_path, lab):
    nat_before = lab.nat()
    assert others(nat_before) == OTHER_RULES
    # Not associated: the public address answers nobody; the instance leaves masqueraded.
    assert lab.connect("client", PUB).startswith("ERR")
    assert lab.reach("inst1", CLIENT, CLIENT_PORT) == f"client {CC_PUBLIC}"

    # Check mode: reports the change, changes nothing.
    res = ok(
        eip(tmp_path, lab, check=True, public_ip=PUB, private_ip=INST["inst1"], instance="i-1")
    )
    assert res["changed"] is True
    assert res["address_added"] is True
    assert res["diff"]["before"]["private_ip"] is None
    assert res["diff"]["after"]["private_ip"] == INST["inst1"]
    assert lab.nat() == nat_before
    assert f"{PUB}/32" not in lab.addresses()

    t0 = time.monotonic()
    res = ok(eip(tmp_path, lab, public_ip=PUB, private_ip=INST["inst1"], instance="i-1"))
    associate_s = time.monotonic() - t0
    assert res["changed"] is True
    assert res["address_added"] is True
    assert res["private_ip"] == INST["inst1"]
    nat = lab.nat()
    comment = f'-m comment --comment "cloud-eip {PUB} i-1"'
    assert res["rules"] == [
        f"-A CLOUD-EIP-PRE -d {PUB}/32 {comment} -j DNAT --to-destination {INST['inst1']}",
        f"-A CLOUD-EIP-POST -s {INST['inst1']}/32 -o pub0 {comment} -j SNAT --to-source {PUB}",
    ]
    assert set(res["rules"]) <= set(nat)
    assert f"{PUB}/32" in lab.addresses()
    assert others(nat) == OTHER_RULES
    # The jumps come first: POSTROUTING's before the cc role's MASQUERADE.
    assert next(ln for ln in nat if ln.startswith("-A POSTROUTING")) == (
        "-A POSTROUTING -j CLOUD-EIP-POST"
    )
    assert next(ln for ln in nat if ln.startswith("-A PREROUTING")) == (
        "-A PREROUTING -j CLOUD-EIP-PRE"
    )
    assert "-A OUTPUT -j CLOUD-EIP-PRE" in nat

    # Inbound: the client reaches inst1 through the public address; inst1 sees the client.
    assert lab.reach("client", PUB, expect="inst1") == f"inst1 {CLIENT}"
    # The CC itself reaches it too (nat OUTPUT).
    assert lab.reach("cc", PUB, expect="inst1").startswith("inst1 ")
    # Outbound: inst1 leaves with its elastic IP (SNAT before MASQUERADE); inst2 masqueraded.
    assert lab.reach("inst1", CLIENT, CLIENT_PORT) == f"client {PUB}"
    assert lab.reach("inst2", CLIENT, CLIENT_PORT) == f"client {CC_PUBLIC}"

    # Idempotence, also in check mode.
    res = ok(eip(tmp_path, lab, public_ip=PUB, private_ip=INST["inst1"], instance="i-1"))
    assert res["changed"] is False
    assert res["address_added"] is False
    res = ok(
        eip(tmp_path, lab, check=True, public_ip=PUB, private_ip=INST["inst1"], instance="i-1")
    )
    assert res["changed"] is False
    assert lab.nat() == nat

    # Re-associate with inst2: check mode first, then for real.
    res = ok(
        eip(tmp_path, lab, check=True, public_ip=PUB, private_ip=INST["inst2"], instance="i-2")
    )
    assert res["changed"] is True
    assert lab.nat() == nat
    res = ok(eip(tmp_path, lab, public_ip=PUB, private_ip=INST["inst2"], instance="i-2"))
    assert res["changed"] is True
    assert res["address_added"] is False
    assert res["diff"]["before"]["private_ip"] == INST["inst1"]
    assert res["diff"]["after"]["private_ip"] == INST["inst2"]
    assert res["diff"]["before"]["rules"] != res["diff"]["after"]["rules"]
    nat = lab.nat()
    assert sorted(ln for ln in nat if "cloud-eip" in ln) == sorted(res["rules"])
    assert others(nat) == OTHER_RULES
    assert lab.reach("client", PUB, expect="inst2") == f"inst2 {CLIENT}"
    assert lab.reach("inst2", CLIENT, CLIENT_PORT) == f"client {PUB}"
    assert lab.reach("inst1", CLIENT, CLIENT_PORT) == f"client {CC_PUBLIC}"

    # A late disassociation naming the old private address leaves the new association alone.
    res = ok(eip(tmp_path, lab, public_ip=PUB, private_ip=INST["inst1"], state="absent"))
    assert res["changed"] is False
    assert res["private_ip"] == INST["inst2"]
    assert lab.nat() == nat

    # Disassociate: check mode, then for real, then again (idempotent).
    res = ok(eip(tmp_path, lab, check=True, public_ip=PUB, state="absent"))
    assert res["changed"] is True
    assert res["address_removed"] is True
    assert lab.nat() == nat
    res = ok(eip(tmp_path, lab, public_ip=PUB, state="absent"))
    assert res["changed"] is True
    assert res["address_removed"] is True
    assert res["private_ip"] is None
    assert res["rules"] == []
    assert res["diff"]["before"]["private_ip"] == INST["inst2"]
    nat = lab.nat()
    assert not [ln for ln in nat if "cloud-eip" in ln]
    assert others(nat) == OTHER_RULES
    assert f"{PUB}/32" not in lab.addresses()
    assert f"{CC_PUBLIC}/24" in lab.addresses()
    assert lab.connect("client", PUB).startswith("ERR")
    assert lab.reach("inst2", CLIENT, CLIENT_PORT) == f"client {CC_PUBLIC}"
    res = ok(eip(tmp_path, lab, public_ip=PUB, state="absent"))
    assert res["changed"] is False
    assert lab.nat() == nat
    print(f"associate: {associate_s:.2f} s (ansible-playbook run included)")


def test_one_address_per_instance_and_jump_order(tmp_path, lab):
    ok(eip(tmp_path, lab, public_ip=PUB, private_ip=INST["inst1"], instance="i-1"))
    assert lab.reach("client", PUB, expect="inst1")

    # A second elastic IP for inst1 replaces the first (EC2: one per instance).
    res = ok(eip(tmp_path, lab, public_ip=PUB2, private_ip=INST["inst1"], instance="i-1"))
    assert res["changed"] is True
    assert res["disassociated"] == [PUB]
    assert res["diff"]["after"]["disassociated"] == [PUB]
    assert f"{PUB}/32" not in lab.addresses()
    assert f"{PUB2}/32" in lab.addresses()
    assert not [ln for ln in lab.nat() if PUB + "/" in ln or ln.endswith(PUB)]
    assert lab.reach("client", PUB2, expect="inst1") == f"inst1 {CLIENT}"
    assert lab.connect("client", PUB).startswith("ERR")
    assert lab.reach("inst1", CLIENT, CLIENT_PORT) == f"client {PUB2}"

    # Somebody re-appends our POSTROUTING jump after the MASQUERADE: the module puts it first.
    lab.exec(lab.cc, "iptables", "-t", "nat", "-D", "POSTROUTING", "-j", "CLOUD-EIP-POST")
    lab.exec(lab.cc, "iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "CLOUD-EIP-POST")
    assert lab.reach("inst1", CLIENT, CLIENT_PORT) == f"client {CC_PUBLIC}"  # masqueraded now
    res = ok(eip(tmp_path, lab, public_ip=PUB2, private_ip=INST["inst1"], instance="i-1"))
    assert res["changed"] is True
    post = [ln for ln in lab.nat() if ln.startswith("-A POSTROUTING")]
    assert post[0] == "-A POSTROUTING -j CLOUD-EIP-POST"
    assert post.count("-A POSTROUTING -j CLOUD-EIP-POST") == 1
    assert lab.reach("inst1", CLIENT, CLIENT_PORT) == f"client {PUB2}"
    assert others(lab.nat()) == OTHER_RULES


def test_concurrent_runs_on_a_fresh_cc(tmp_path, lab):
    """Two associations at once, before the chains exist: the lock keeps them apart."""
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(eip, tmp_path, lab, public_ip=pub, private_ip=INST[name], instance=name)
            for pub, name in ((PUB, "inst1"), (PUB2, "inst2"))
        ]
        for run in runs:
            assert ok(run.result())["changed"] is True
    nat = lab.nat()
    for jump in (
        "-A PREROUTING -j CLOUD-EIP-PRE",
        "-A OUTPUT -j CLOUD-EIP-PRE",
        "-A POSTROUTING -j CLOUD-EIP-POST",
    ):
        assert nat.count(jump) == 1
    assert len([ln for ln in nat if "cloud-eip" in ln]) == 4
    assert lab.reach("client", PUB, expect="inst1") == f"inst1 {CLIENT}"
    assert lab.reach("client", PUB2, expect="inst2") == f"inst2 {CLIENT}"


def test_refuses_bad_input(tmp_path, lab):
    nat = lab.nat()
    res = eip(tmp_path, lab, public_ip=CC_PUBLIC, private_ip=INST["inst1"])
    assert res["failed"] is True
    assert res["msg"] == (
        f"public_ip {CC_PUBLIC} is an address of this host ({CC_PUBLIC}/24 on pub0), "
        "not an elastic IP"
    )
    res = eip(tmp_path, lab, public_ip=PUB, private_ip=INST["inst1"], public_interface="nosuch0")
    assert res["failed"] is True
    assert res["msg"] == "public_interface nosuch0 is not an interface of this host"
    # absent does not need the interface (the cc role's reset, after the NIC is gone)
    res = ok(eip(tmp_path, lab, public_ip=PUB, public_interface="nosuch0", state="absent"))
    assert res["changed"] is False
    res = eip(tmp_path, lab, public_ip=PUB)
    assert res["failed"] is True
    assert res["msg"] == f"private_ip is required to associate {PUB} (state=present)"
    res = eip(tmp_path, lab, public_ip="198.51.100.300", private_ip=INST["inst1"])
    assert res["failed"] is True
    assert res["msg"] == "public_ip must be an IPv4 address, got '198.51.100.300'"
    assert lab.nat() == nat

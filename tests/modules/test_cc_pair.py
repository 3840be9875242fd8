"""A zone served by a CC pair (HA), with real dnsmasq, supervisord, iptables and the kernel:
both CCs get the reservation and the elastic IP's rules from the modules, only the holder of
the gateway address answers DHCP and holds the public address, and the cc role's notify
script (files/cc_notify.py, run as keepalived runs it) moves both with the gateway.

    client 198.51.100.254 --- public wire --- pub0 .11 [cc1] br0 --- instance wire --- inst
                                         \\--- pub0 .12 [cc2] br0 ---/

The wires are bridges in a namespace of their own; each CC's br0 has the wire's port (eth1)
and the gateway 172.31.77.1/24 only while it holds it. Each CC runs its own supervisord
(autostart off, as the notify script decides) with the zone's dnsmasq program.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from modhelpers import PLUGINS, TCP_CLIENT, TCP_SERVER, needs_root, run_module

pytestmark = [needs_root, pytest.mark.integration]

NOTIFY = PLUGINS.parent / "roles" / "cc" / "files" / "cc_notify.py"
GATEWAY = "172.31.77.1"
INST_IP, INST_MAC = "172.31.77.5", "52:54:00:77:00:05"
PUBLIC, CLIENT = "198.51.100.20", "198.51.100.254"
CCS = {"cc1": "198.51.100.11", "cc2": "198.51.100.12"}
SERVICE = "cloud-dnsmasq-zone-a"
PORT = 8080
SUPERVISOR = """[unix_http_server]
file={d}/supervisor.sock
[supervisord]
pidfile={d}/supervisord.pid
logfile={d}/supervisord.log
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{d}/supervisor.sock
[program:{service}]
command=/usr/sbin/dnsmasq -k --conf-file={d}/dnsmasq.conf
autostart=false
startsecs=1
redirect_stderr=true
stdout_logfile={d}/dnsmasq.log
"""
# As roles/cc/templates/dnsmasq.conf.j2 renders it.
DNSMASQ = """port=0
interface=br0
except-interface=lo
bind-interfaces
user=dnsmasq
dhcp-range=172.31.77.0,static,255.255.255.0,12h
dhcp-hostsdir={d}/hosts
dhcp-option=option:router,172.31.77.1
dhcp-authoritative
dhcp-leasefile={d}/dnsmasq.leases
pid-file={d}/dnsmasq.pid
log-facility=-
"""


class Pair:
    def __init__(self, tmp_path: Path) -> None:
        tag = secrets.token_hex(3)
        self.tmp_path = tmp_path
        self.ns = {n: f"ccp-{tag}-{n}" for n in ("wire", "cc1", "cc2", "inst", "client")}
        # dnsmasq reads its hostsdir as user dnsmasq: not below pytest's 0700 tmp_path
        self.root = Path(tempfile.mkdtemp(prefix="ccp-", dir="/tmp"))
        self.root.chmod(0o755)
        self.server: subprocess.Popen | None = None

    def sh(self, ns: str, *cmd: str, check: bool = True) -> str:
        proc = subprocess.run(["ip", "netns", "exec", self.ns[ns], *cmd],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert not check or proc.returncode == 0, f"{ns}: {cmd}: {proc.stderr}"
        return proc.stdout

    def dir(self, cc: str) -> Path:
        return self.root / cc

    def setup(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
        for name in self.ns:
            self.sh(name, "ip", "link", "set", "lo", "up")
        for bridge in ("inst", "pub"):
            self.sh("wire", "ip", "link", "add", bridge, "type", "bridge")
            self.sh("wire", "ip", "link", "set", bridge, "up")
        self.plug("inst", "inst", "eth0")
        self.plug("pub", "client", "eth0")
        self.sh("inst", "ip", "link", "set", "eth0", "address", INST_MAC, "up")
        self.sh("client", "ip", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        self.sh("client", "ip", "link", "set", "eth0", "up")
        for cc, public in CCS.items():
            self.plug("inst", cc, "eth1")
            self.plug("pub", cc, "pub0")
            for cmd in ("ip link add br0 type bridge", "ip link set eth1 master br0 up",
                        "ip link set br0 up", f"ip addr add {public}/24 dev pub0",
                        "ip link set pub0 up", "sysctl -qw net.ipv4.ip_forward=1"):  # fmt: skip
                self.sh(cc, *cmd.split())
            d = self.dir(cc)
            (d / "hosts").mkdir(parents=True)
            d.chmod(0o755)
            (d / "dnsmasq.conf").write_text(DNSMASQ.format(d=d))
            (d / "supervisord.conf").write_text(SUPERVISOR.format(d=d, service=SERVICE))
            zone = {"zone": "zone-a", "bridge": "br0", "gateway": GATEWAY,
                    "subnet": "172.31.77.0/24", "hosts_dir": str(d / "hosts"),
                    "pid_file": str(d / "dnsmasq.pid"), "lease_file": str(d / "dnsmasq.leases"),
                    "public_interface": "pub0", "public_ips": "198.51.100.16/28",
                    "pair": True, "service": SERVICE}  # fmt: skip
            (d / "cc.json").write_text(json.dumps({
                "zones": {"zone-a": zone}, "service_manager": "supervisor",
                "supervisor_config": str(d / "supervisord.conf"),
                "notify_log": str(d / "notify.log")}))  # fmt: skip
            self.sh(cc, "supervisord", "-c", str(d / "supervisord.conf"))

    def plug(self, bridge: str, ns: str, name: str) -> None:
        port = f"{bridge[0]}-{ns}"
        self.sh("wire", "ip", "link", "add", port, "type", "veth", "peer", "name", name,
                "netns", self.ns[ns])  # fmt: skip
        self.sh("wire", "ip", "link", "set", port, "master", bridge, "up")

    def teardown(self) -> None:
        if self.server:
            self.server.kill()
            self.server.wait()
        for cc in CCS:
            conf = self.dir(cc) / "supervisord.conf"
            if conf.exists():
                subprocess.run(["supervisorctl", "-c", str(conf), "shutdown"],
                               capture_output=True, check=False)  # fmt: skip
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def hold_gateway(self, cc: str) -> None:
        """What keepalived does on a change: the gateway leaves the holder, comes to `cc`
        (keepalived's own gratuitous ARP for it is replaced by flushing the instance's
        neighbour entry), and each host's notify runs."""
        other = next(c for c in CCS if c != cc)
        self.sh(other, "ip", "addr", "del", f"{GATEWAY}/24", "dev", "br0", check=False)
        self.notify(other, "BACKUP")
        self.sh(cc, "ip", "addr", "add", f"{GATEWAY}/24", "dev", "br0")
        self.sh("inst", "ip", "neigh", "flush", "dev", "eth0")
        self.notify(cc, "MASTER")

    def notify(self, cc: str, state: str) -> str:
        config = str(self.dir(cc) / "cc.json")
        return self.sh(cc, sys.executable, str(NOTIFY), "--config", config, "INSTANCE",
                       "cc-zone-a", state, "100")  # fmt: skip

    def dnsmasq_runs(self, cc: str) -> bool:
        try:
            pid = int((self.dir(cc) / "dnsmasq.pid").read_text().split()[0])
            return Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq"
        except (FileNotFoundError, IndexError, ValueError):
            return False

    def holds_public(self, cc: str) -> bool:
        out = json.loads(self.sh(cc, "ip", "-j", "-4", "addr", "show", "dev", "pub0"))
        return any(a["local"] == PUBLIC for a in out[0]["addr_info"])

    def module(self, cc: str, name: str, args: dict) -> dict:
        res = run_module(self.tmp_path, name, args, wrapper=["ip", "netns", "exec", self.ns[cc]])
        assert not res.get("failed"), res.get("msg") or res["_stdout"]
        return res

    def dhcp(self) -> str:
        """The address the instance gets by DHCP (polled)."""
        script = self.root / "report"
        script.write_text('#!/bin/sh\necho "$1 ip=$ip"\n')
        script.chmod(0o755)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = self.sh("inst", "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-T", "1",
                          "-t", "3", "-s", str(script), check=False)  # fmt: skip
            for line in out.splitlines():
                if line.startswith("bound ip="):
                    return line.split("=", 1)[1]
        return ""

    def leased(self, cc: str) -> bool:
        leases = self.dir(cc) / "dnsmasq.leases"
        return leases.exists() and INST_MAC in leases.read_text()

    def reach(self) -> tuple[str, float]:
        """The instance's answer through the elastic IP from the client, and how long it took
        to get one (polled)."""
        start = time.monotonic()
        while True:
            out = self.sh(
                "client", sys.executable, "-c", TCP_CLIENT, PUBLIC, str(PORT), "1"
            ).strip()
            if out.startswith("inst") or time.monotonic() - start > 20:
                return out, time.monotonic() - start
            time.sleep(0.1)


@pytest.fixture
def pair(tmp_path):
    for tool in ("dnsmasq", "busybox", "supervisord", "iptables"):
        assert shutil.which(tool), f"{tool} is missing (scripts/setup.sh installs it)"
    pair = Pair(tmp_path)
    try:
        pair.setup()
        yield pair
    finally:
        pair.teardown()


def test_the_holder_serves_and_the_notify_script_moves_it(pair):
    pair.hold_gateway("cc1")
    assert pair.dnsmasq_runs("cc1") and not pair.dnsmasq_runs("cc2")

    # The runtime plays apply every reservation and association to both CCs of the zone
    # (the reservation file as the dhcp_reservation module writes it; that module's own
    # test covers it with and without a running dnsmasq).
    for cc in CCS:
        reservation = pair.dir(cc) / "hosts" / "i-0a1b2c3d"
        reservation.write_text(f"{INST_MAC},{INST_IP},i-0a1b2c3d\n")
        reservation.chmod(0o644)
        res = pair.module(cc, "elastic_ip", {
            "public_ip": PUBLIC, "private_ip": INST_IP, "public_interface": "pub0",
            "instance": "i-0a1b2c3d", "gateway": GATEWAY, "gateway_interface": "br0"})  # fmt: skip
        assert res["holder"] is (cc == "cc1") and res["address_added"] is (cc == "cc1")
        assert len(res["rules"]) == 2
    assert pair.holds_public("cc1") and not pair.holds_public("cc2")

    # Only the holder answers DHCP.
    assert pair.dhcp() == INST_IP
    assert pair.leased("cc1") and not pair.leased("cc2")
    pair.sh("inst", "ip", "addr", "add", f"{INST_IP}/24", "dev", "eth0")
    pair.sh("inst", "ip", "route", "add", "default", "via", GATEWAY)
    pair.server = subprocess.Popen(["ip", "netns", "exec", pair.ns["inst"], sys.executable,
                                    "-c", TCP_SERVER, "inst", str(PORT)])  # fmt: skip
    answer, _ = pair.reach()
    assert answer == f"inst {CLIENT}"  # DNAT in, the reply un-NATed by the holder

    # The gateway moves to cc2: the public address and dnsmasq follow; the client's ARP
    # entry for the elastic IP is switched by the gratuitous ARP (not flushed here).
    pair.hold_gateway("cc2")
    assert pair.dnsmasq_runs("cc2") and not pair.dnsmasq_runs("cc1")
    assert pair.holds_public("cc2") and not pair.holds_public("cc1")
    answer, took = pair.reach()
    assert answer == f"inst {CLIENT}" and took < 3, (answer, took)
    pair.sh("inst", "ip", "addr", "flush", "dev", "eth0")
    assert pair.dhcp() == INST_IP and pair.leased("cc2")

    # The notify runs again in the other order (keepalived forks one per change): each host
    # still does what holding the gateway says, whatever the state word.
    pair.notify("cc1", "MASTER")
    pair.notify("cc2", "BACKUP")
    assert pair.dnsmasq_runs("cc2") and not pair.dnsmasq_runs("cc1")
    assert pair.holds_public("cc2") and not pair.holds_public("cc1")
    assert "holder: True; added 198.51.100.20" in (pair.dir("cc2") / "notify.log").read_text()

"""The dhcp_reservation module against a real dnsmasq.

Each test makes two network namespaces: the "CC" (a bridge with the gateway address and a
dnsmasq configured like roles/cc/templates/dnsmasq.conf.j2, hostsdir + reserved addresses
only) and a "client" whose veth is plugged into that bridge and asks for an address with
busybox udhcpc. The module runs through ansible-playbook inside the CC namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from modhelpers import run_module

pytestmark = pytest.mark.integration

GATEWAY = "10.77.3.1"
IP = "10.77.3.23"
MAC1 = "52:54:00:aa:00:01"
MAC2 = "52:54:00:aa:00:02"
NAME = "i-0a1b2c3d"
DEADLINE = 20  # seconds for a client to get its address


class Lab:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        tag = secrets.token_hex(3)
        self.server = f"drs-{tag}"
        self.client = f"drc-{tag}"
        # dnsmasq reads the hostsdir as user dnsmasq: pytest's tmp_path (0700) is out of reach.
        self.dir = Path(tempfile.mkdtemp(prefix="drt-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.hosts = self.dir / "hosts"
        self.hosts.mkdir(mode=0o755)
        self.pid_file = self.dir / "dnsmasq.pid"
        self.lease_file = self.dir / "dnsmasq.leases"
        self.log = self.dir / "dnsmasq.log"
        self.report = self.dir / "report"
        self.report.write_text('#!/bin/sh\necho "$1 ip=$ip"\n')
        self.report.chmod(0o755)

    def sh(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check
        )

    def setup(self) -> None:
        for ns in (self.server, self.client):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self.sh(ns, "ip", "link", "set", "lo", "up")
        for cmd in (
            "ip link add br0 type bridge",
            f"ip addr add {GATEWAY}/24 dev br0",
            "ip link set br0 up",
            f"ip link add p0 type veth peer name c0 netns {self.client}",
            "ip link set p0 master br0 up",
        ):
            self.sh(self.server, *cmd.split())
        self.set_client_mac(MAC1)
        self.start_dnsmasq()

    def start_dnsmasq(self) -> None:
        self.sh(
            self.server,
            "dnsmasq",
            "--port=0",
            "--interface=br0",
            "--except-interface=lo",
            "--bind-interfaces",
            "--user=dnsmasq",
            "--dhcp-range=10.77.3.0,static,255.255.255.0,12h",
            f"--dhcp-hostsdir={self.hosts}",
            "--dhcp-authoritative",
            f"--dhcp-leasefile={self.lease_file}",
            f"--pid-file={self.pid_file}",
            f"--log-facility={self.log}",
            "--log-dhcp",
        )
        deadline = time.monotonic() + 10
        while not self.dnsmasq_pid():
            assert time.monotonic() < deadline, "dnsmasq wrote no pid file"
            time.sleep(0.05)

    def dnsmasq_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def stop_dnsmasq(self) -> None:
        pid = self.dnsmasq_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def teardown(self) -> None:
        self.stop_dnsmasq()
        for ns in (self.client, self.server):
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def set_client_mac(self, mac: str) -> None:
        self.sh(self.client, "ip", "link", "set", "c0", "down")
        self.sh(self.client, "ip", "link", "set", "c0", "address", mac, "up")

    def dhcp(self, tries: int = 3) -> str | None:
        """One udhcpc run of the client (about 1 s per try): the address it was given."""
        out = self.sh(
            self.client,
            "busybox",
            "udhcpc",
            "-i",
            "c0",
            "-n",
            "-q",
            "-T",
            "1",
            "-t",
            str(tries),
            "-s",
            str(self.report),
            check=False,
        ).stdout
        for line in out.splitlines():
            if line.startswith("bound ip="):
                return line.split("=", 1)[1]
        return None

    def wait_for_address(self) -> str | None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            got = self.dhcp(tries=3)
            if got:
                return got
        return None

    def leases(self) -> str:
        return self.lease_file.read_text() if self.lease_file.exists() else ""

    def module(self, check: bool = False, **args) -> dict:
        params = {
            "hosts_dir": str(self.hosts),
            "pid_file": str(self.pid_file),
            "lease_file": str(self.lease_file),
            "interface": "br0",
            "name": NAME,
            **args,
        }
        return run_module(
            self.tmp_path,
            "dhcp_reservation",
            params,
            check=check,
            diff=True,
            wrapper=["ip", "netns", "exec", self.server],
        )


@pytest.fixture
def lab(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("dnsmasq", "dhcp_release", "busybox"):
        assert shutil.which(tool), f"{tool} is missing (scripts/setup.sh installs it)"
    lab = Lab(tmp_path)
    try:
        lab.setup()
        yield lab
    finally:
        lab.teardown()


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result


def test_reserve_check_mode_then_lease_then_idempotent(lab):
    path = lab.hosts / NAME
    res = ok(lab.module(check=True, mac=MAC1.upper(), ip=IP))
    assert res["changed"] is True
    assert res["diff"]["before"] == ""
    assert res["diff"]["after"] == f"{MAC1},{IP},{NAME}\n"
    assert not path.exists() and list(lab.hosts.iterdir()) == []

    assert lab.dhcp() is None, "no reservation yet: dnsmasq hands out reserved addresses only"

    start = time.monotonic()
    res = ok(lab.module(mac=MAC1.upper(), ip=IP))
    assert res["changed"] is True
    assert res["path"] == str(path)
    assert res["reservation"] == {"mac": MAC1, "ip": IP, "hostname": NAME}
    assert path.read_text() == f"{MAC1},{IP},{NAME}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in lab.hosts.iterdir()] == [NAME], "no temporary file is left"
    assert lab.wait_for_address() == IP, lab.log.read_text()
    print(f"\nreservation to lease: {time.monotonic() - start:.1f}s (incl. ansible-playbook)")
    assert f"{MAC1} {IP} {NAME}" in lab.leases()

    res = ok(lab.module(mac=MAC1, ip=IP))
    assert res["changed"] is False
    assert res["released"] == [] and res["reloaded"] is False
    res = ok(lab.module(check=True, mac=MAC1, ip=IP))
    assert res["changed"] is False


def test_remove_then_new_mac_gets_the_same_address(lab):
    ok(lab.module(mac=MAC1, ip=IP))
    assert lab.wait_for_address() == IP
    path = lab.hosts / NAME

    res = ok(lab.module(check=True, state="absent"))
    assert res["changed"] is True
    assert res["released"] == [f"{MAC1} {IP}"]
    assert res["diff"] == {
        "before": f"{MAC1},{IP},{NAME}\n",
        "after": "",
        "before_header": str(path),
        "after_header": str(path),
    }
    assert path.exists() and MAC1 in lab.leases()

    res = ok(lab.module(state="absent"))
    assert res["changed"] is True
    assert res["released"] == [f"{MAC1} {IP}"] and res["reloaded"] is True
    assert res["reservation"] is None
    assert not path.exists()
    assert MAC1 not in lab.leases(), "the lease is released"
    assert "DHCPRELEASE(br0) 10.77.3.23 52:54:00:aa:00:01" in lab.log.read_text()
    assert lab.dhcp() is None, "the old MAC gets nothing once its reservation is gone"

    res = ok(lab.module(state="absent"))
    assert res["changed"] is False and res["released"] == []

    # the same address for a new instance with a new MAC
    lab.set_client_mac(MAC2)
    ok(lab.module(name="i-0e0e0e0e", mac=MAC2, ip=IP))
    assert lab.wait_for_address() == IP, lab.log.read_text()
    assert f"{MAC2} {IP} i-0e0e0e0e" in lab.leases()


def test_changing_the_mac_of_a_reservation_releases_the_old_lease(lab):
    ok(lab.module(mac=MAC1, ip=IP))
    assert lab.wait_for_address() == IP
    res = ok(lab.module(mac=MAC2, ip=IP))
    assert res["changed"] is True
    assert res["released"] == [f"{MAC1} {IP}"] and res["reloaded"] is True
    assert res["diff"]["before"] == f"{MAC1},{IP},{NAME}\n"
    assert res["diff"]["after"] == f"{MAC2},{IP},{NAME}\n"
    lab.set_client_mac(MAC2)
    assert lab.wait_for_address() == IP, lab.log.read_text()
    assert MAC1 not in lab.leases()


def test_without_release_dnsmasq_refuses_the_address_to_a_new_mac(lab):
    """Why the module releases leases: a plain remove + SIGHUP is not enough."""
    path = lab.hosts / NAME
    ok(lab.module(mac=MAC1, ip=IP))
    assert lab.wait_for_address() == IP
    path.unlink()
    os.kill(lab.dnsmasq_pid(), signal.SIGHUP)
    (lab.hosts / ".new").write_text(f"{MAC2},{IP},i-new\n")
    (lab.hosts / ".new").chmod(0o644)
    (lab.hosts / ".new").rename(lab.hosts / "i-new")
    lab.set_client_mac(MAC2)
    assert lab.dhcp() is None
    assert f"not using configured address {IP} because it is leased to {MAC1}" in (
        lab.log.read_text()
    )
    # the module sees the stale lease of the reserved address and releases it
    res = ok(lab.module(name="i-new", mac=MAC2, ip=IP))
    assert res["changed"] is True and res["released"] == [f"{MAC1} {IP}"]
    assert lab.wait_for_address() == IP


def test_remove_while_dnsmasq_is_stopped_edits_the_lease_file(lab):
    ok(lab.module(mac=MAC1, ip=IP))
    assert lab.wait_for_address() == IP
    lab.stop_dnsmasq()
    assert MAC1 in lab.leases()
    res = ok(lab.module(state="absent"))
    assert res["changed"] is True and res["reloaded"] is False
    assert res["released"] == [f"{MAC1} {IP}"]
    assert MAC1 not in lab.leases()
    # a restarted dnsmasq hands the address to a new MAC at once
    lab.start_dnsmasq()
    ok(lab.module(name="i-new", mac=MAC2, ip=IP))
    lab.set_client_mac(MAC2)
    assert lab.wait_for_address() == IP


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        ({"mac": "52:54:00:zz:00:01", "ip": IP}, "mac: '52:54:00:zz:00:01' is not a MAC address"),
        ({"mac": MAC1, "ip": "10.77.3.300"}, "ip: '10.77.3.300' is not an IPv4 address"),
        ({"mac": MAC1, "ip": IP, "name": "../etc"}, "cannot be a reservation file name"),
        ({"mac": MAC1, "ip": IP, "hosts_dir": "/nonexistent"}, "hosts_dir: /nonexistent is not"),
        ({"ip": IP}, "state is present but all of the following are missing: mac"),
    ],
)
def test_bad_options_fail_clearly(lab, args, msg):
    res = lab.module(**args)
    assert res.get("failed") is True
    assert msg in res["msg"]
    assert list(lab.hosts.iterdir()) == []


def test_cc_instances_reserves_a_launch_at_once(lab):
    """cc_instances: the reservations of every instance of the zones this CC serves
    (cc.json), in one run; one bad instance fails named, the others are reserved."""
    zone = {"hosts_dir": str(lab.hosts), "pid_file": str(lab.pid_file),
            "lease_file": str(lab.lease_file), "bridge": "br0"}  # fmt: skip
    cc_json = lab.dir / "cc.json"
    cc_json.write_text(json.dumps({"zones": {"zone-a": zone}}))
    instances = [
        {"name": NAME, "zone": "zone-a", "mac": MAC1, "ip": IP, "node": "nc1"},
        {"name": "i-0a1b2c3e", "zone": "zone-a", "mac": MAC2, "ip": "10.77.3.24"},
        {"name": "i-0a1b2c3f", "zone": "zone-b", "mac": MAC2, "ip": "10.77.3.25"},  # not ours
    ]
    bad = {"name": "i-0a1b2c40", "zone": "zone-a", "mac": "not-a-mac", "ip": "10.77.3.26"}

    def run(check=False, **args):
        return run_module(lab.tmp_path, "cc_instances", {"cc_config": str(cc_json), **args},
                          check=check, wrapper=["ip", "netns", "exec", lab.server])  # fmt: skip

    res = run(check=True, instances=instances)
    assert res["changed"] and not res["failed"] and list(lab.hosts.iterdir()) == []
    assert [r["name"] for r in res["reservations"]] == [NAME, "i-0a1b2c3e"]
    assert len(res["diff"]) == 2

    res = run(instances=[*instances, bad])
    assert res["failed"] and "i-0a1b2c40" in res["msg"] and NAME not in res["msg"], res["msg"]
    assert sorted(p.name for p in lab.hosts.iterdir()) == [NAME, "i-0a1b2c3e"]
    assert lab.wait_for_address() == IP, lab.log.read_text()

    assert ok(run(instances=instances))["changed"] is False  # idempotent

    gone = [{"name": i["name"], "zone": i["zone"]} for i in instances]
    res = ok(run(state="absent", instances=gone))
    assert res["changed"] and list(lab.hosts.iterdir()) == []
    assert f"{MAC1} {IP}" not in lab.leases()
    assert ok(run(state="absent", instances=gone))["changed"] is False

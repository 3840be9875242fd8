"""End to end: security groups, elastic IPs, two zones and anti-spoofing, with real guests.

Two lab hosts: nw-a (CLC, Walrus, and zone-a's CC/SC/NC, with a public interface) and nw-b
(zone-b's CC/SC/NC). A client network namespace made by this test sits on nw-a's public
side (198.51.100.0/24) and knows nothing of the instance subnets: it reaches instances only
through elastic IPs. The tests of this file run in order and share the cloud; the last one
removes it with reset.yml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.background import job, uses
from tests.conftest import PROJECT, labhost
from tests.integration.cloud_client import CloudClient, PublicSideClient, in_host

pytestmark = pytest.mark.integration
HOST_A, HOST_B = "nw-a", "nw-b"
PUBLIC_GW, CLIENT_IP, POOL = "198.51.100.1", "198.51.100.254", "198.51.100.16/28"

GROUP_VARS = {
    "ansible_python_interpreter": "/usr/bin/python3",
    "ansible_ssh_common_args": "-o UserKnownHostsFile={{ inventory_dir }}/known_hosts",
    "cloud_name": "nw",
    "cloud_service_manager": "auto",
    "nc_max_cores": 8,
    "cloud_clusters": {
        "zone-a": {"subnet": "172.31.0.0/24", "bridge": "cloudbr0",
                   "public_interface": "pub0", "public_ips": POOL},
        "zone-b": {"subnet": "172.31.1.0/24", "bridge": "cloudbr1", "public_interface": ""},
    },
}  # fmt: skip
HOSTS = {
    "all": {
        "hosts": {HOST_A: {"cloud_cluster": "zone-a"}, HOST_B: {"cloud_cluster": "zone-b"}},
        "children": {
            "cloud": {
                "children": {
                    "clc": {"hosts": {HOST_A: None}},
                    "walrus": {"hosts": {HOST_A: None}},
                    "cc": {"hosts": {HOST_A: None, HOST_B: None}},
                    "sc": {"hosts": {HOST_A: None, HOST_B: None}},
                    "nc": {"hosts": {HOST_A: None, HOST_B: None}},
                }
            }
        },
    }
}


class Cloud(PublicSideClient, CloudClient):
    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, "k")
        self.client_ns = CLIENT_NS
        self.client_known_hosts = workdir / "client_known_hosts"

    def from_client(self, *command: str, timeout: int = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.client_ns, *command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def client_ping(self, ip: str) -> bool:
        return self.from_client("ping", "-c", "1", "-W", "2", ip).returncode == 0


def eventually(check, what: str, deadline_s: float = 60) -> None:
    """Poll `check` until it is true (rules apply within one operation; guests need a moment)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)  # poll interval
    rules = in_host(HOST_A, "iptables-save", "-c").stdout
    tracked = in_host(HOST_A, "conntrack", "-L").stdout
    pytest.fail(f"not within {deadline_s}s: {what}\n{rules}\n{tracked}")


CLIENT_NS = "cloudtest-pub-nw"


def remove_labs() -> None:
    for host in (HOST_A, HOST_B):
        labhost.destroy(host)
    subprocess.run(["ip", "netns", "del", CLIENT_NS], capture_output=True, check=False)


@job("two-zone cloud", wanted=uses("cloud"), order=30, cleanup=remove_labs)
def deploy_two_zones(tmp_path_factory) -> Cloud:
    """The two lab hosts, the client namespace, the deployed cloud, a key pair and the test
    image (in the background from the session's start, tests/background.py)."""
    for tool in ("ping", "ssh", "conntrack"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/setup.sh"
    remove_labs()
    c = Cloud(tmp_path_factory.mktemp("network"))
    src = c.workdir / "inventory-src"
    (src / "group_vars").mkdir(parents=True)
    (src / "hosts.yml").write_text(yaml.safe_dump(HOSTS))
    (src / "group_vars" / "all.yml").write_text(yaml.safe_dump(GROUP_VARS))
    for host in (HOST_A, HOST_B):
        labhost.create(host)
    labhost.write_inventory([HOST_A, HOST_B], src, c.inventory)
    # nw-a's public side: a veth to the client namespace.
    netns_a = labhost.netns_of(HOST_A)
    subprocess.run(["ip", "netns", "add", c.client_ns], check=True)
    for cmd in (
        ["ip", "link", "add", "pub0", "netns", netns_a, "type", "veth",
         "peer", "name", "cl0", "netns", c.client_ns],
        ["ip", "-n", netns_a, "addr", "add", f"{PUBLIC_GW}/24", "dev", "pub0"],
        ["ip", "-n", netns_a, "link", "set", "pub0", "up"],
        ["ip", "-n", c.client_ns, "addr", "add", f"{CLIENT_IP}/24", "dev", "cl0"],
        ["ip", "-n", c.client_ns, "link", "set", "cl0", "up"],
        ["ip", "-n", c.client_ns, "link", "set", "lo", "up"],
    ):  # fmt: skip
        subprocess.run(cmd, check=True)
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "build-test-image.py")],
                   check=True)  # fmt: skip
    c.cloudctl("deploy")
    c.cloudctl("keypair", "create", "k", "--output-file", str(c.key))
    disk = c.workdir / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    images = PROJECT / ".cache" / "test-image"
    rows = c.json("image", "register", "tiny", "--file", str(disk),
                  "--kernel", str(images / "vmlinuz"), "--ramdisk", str(images / "initrd.img"))  # fmt: skip
    c.ids["emi"] = next(r["id"] for r in rows if r["kind"] == "machine")
    return c


@pytest.fixture(scope="module")
def cloud(background):
    try:
        yield background.result("two-zone cloud")
    finally:
        remove_labs()


def test_deploy_two_zones_and_launch(cloud):
    emi = cloud.ids["emi"]
    cloud.cloudctl("group", "create", "web")
    cloud.cloudctl("group", "create", "db")
    run = ["instance", "run", "--image", emi, "--keypair", "k"]
    launches = ([*run, "--group", "web"], [*run, "--group", "db"], [*run, "--zone", "zone-b"])
    with ThreadPoolExecutor(len(launches)) as pool:  # three cloudctl processes at once
        web, db, far = (rows[0] for rows in pool.map(lambda args: cloud.json(*args), launches))
    assert (web["node"], db["node"], far["node"]) == (HOST_A, HOST_A, HOST_B)
    assert far["zone"] == "zone-b" and far["private_ip"].startswith("172.31.1.")
    cloud.ids.update(emi=emi, web=web, db=db, far=far)
    # All three boot (reached through their lab hosts, inside the cloud's networks).
    for inst in (web, db, far):
        host = HOST_B if inst is far else HOST_A
        assert cloud.guest(host, inst["private_ip"], "hostname").strip() == inst["id"]


def test_zone_list_verbose_counts_what_runs(cloud):
    rows = cloud.json("zone", "list", "--verbose")
    zones = [r["zone"] for r in rows if not r["zone"].startswith("|-")]
    assert zones == ["zone-a", "zone-b"]
    small = [r for r in rows if r["zone"] == "|- m1.small"]
    assert [(r["free"], r["max"]) for r in small] == [(6, 8), (7, 8)]


def test_elastic_ip_and_security_group_rules(cloud):
    web = cloud.ids["web"]
    address = cloud.json("address", "allocate")[0]
    eip = address["public_ip"]
    cloud.ids["eip"] = eip
    cloud.json("address", "associate", eip, "--instance", web["id"])
    cloud.client_trusts(eip, web["private_ip"])
    assert cloud.client_ssh(eip).returncode != 0  # the group allows nothing yet
    assert not cloud.client_ping(eip)

    cloud.json("group", "authorize", "web", "--protocol", "tcp", "--port", "22",
               "--cidr", "0.0.0.0/0")  # fmt: skip
    eventually(lambda: cloud.client_ssh(eip).stdout.strip() == web["id"], "SSH after authorize")
    # Inbound is only DNAT'd: the instance sees the client's own address.
    seen = cloud.client_ssh(eip, "echo $SSH_CLIENT").stdout.split()
    assert seen and seen[0] == CLIENT_IP

    cloud.json("group", "revoke", "web", "--protocol", "tcp", "--port", "22",
               "--cidr", "0.0.0.0/0")  # fmt: skip
    assert cloud.client_ssh(eip).returncode != 0  # on the still-running instance

    cloud.json("group", "authorize", "web", "--protocol", "icmp", "--cidr", "198.51.100.0/24")
    eventually(lambda: cloud.client_ping(eip), "ping after the icmp rule")
    cloud.json("group", "revoke", "web", "--protocol", "icmp", "--cidr", "198.51.100.0/24")
    assert not cloud.client_ping(eip)

    cloud.json("group", "authorize", "web", "--protocol", "icmp", "--cidr", "198.51.100.0/24")
    eventually(lambda: cloud.client_ping(eip), "ping after the icmp rule, again")
    cloud.json("address", "disassociate", eip)
    assert not cloud.client_ping(eip)


def test_source_group_rule(cloud):
    web, db = cloud.ids["web"], cloud.ids["db"]
    probe = f"nc -w 3 {db['private_ip']} 22 </dev/null | head -c 4; echo"
    assert cloud.guest(HOST_A, web["private_ip"], probe).strip() == ""
    cloud.json("group", "authorize", "db", "--protocol", "tcp", "--port", "22",
               "--source-group", "web")  # fmt: skip
    assert cloud.guest(HOST_A, web["private_ip"], probe).strip() == "SSH-"


def test_a_spoofing_guest_reaches_nothing(cloud):
    web, db = cloud.ids["web"], cloud.ids["db"]
    mine, theirs = web["private_ip"], db["private_ip"]
    gateway = "172.31.0.1"
    # Control: from its own address the guest reaches the gateway.
    assert "REACHED" in cloud.guest(
        HOST_A, mine, f"ping -c 2 -W 2 {gateway} >/dev/null && echo REACHED || echo BLOCKED"
    )
    script = (
        f"ip addr add {theirs}/24 dev eth0; ip addr del {mine}/24 dev eth0; "
        f"if ping -c 3 -W 2 {gateway} >/dev/null; then r=REACHED; else r=BLOCKED; fi; "
        f"ip addr add {mine}/24 dev eth0; ip addr del {theirs}/24 dev eth0; "
        f"ip route add default via {gateway}; echo $r > /tmp/spoof"
    )
    cloud.guest(
        HOST_A, mine, f"rm -f /tmp/spoof; setsid sh -c '{script}' </dev/null >/dev/null 2>&1 &"
    )
    eventually(lambda: cloud.guest(HOST_A, mine, "cat /tmp/spoof 2>/dev/null; true").strip()
               in ("REACHED", "BLOCKED"), "the spoofing script", 120)  # fmt: skip
    assert cloud.guest(HOST_A, mine, "cat /tmp/spoof").strip() == "BLOCKED"


def test_volume_of_zone_a_does_not_attach_in_zone_b(cloud):
    vol = cloud.json("volume", "create", "--size", "1", "--zone", "zone-a")[0]
    state = cloud.home / "state.json"
    before = state.read_bytes()
    refused = cloud.cloudctl("volume", "attach", vol["id"], "--instance", cloud.ids["far"]["id"],
                             ok=False)  # fmt: skip
    assert refused.returncode == 2
    assert "zone" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert state.read_bytes() == before
    cloud.json("volume", "delete", vol["id"])


def test_terminate_removes_chains_reservations_and_nat(cloud):
    ids = [cloud.ids[k]["id"] for k in ("web", "db", "far")]
    cloud.json("address", "associate", cloud.ids["eip"], "--instance", ids[0])
    cloud.json("instance", "terminate", *ids)
    for host in (HOST_A, HOST_B):
        filters = in_host(host, "iptables-save")
        assert "cloud-i-" not in filters.stdout and "cloud-o-" not in filters.stdout
        assert not [line for line in filters.stdout.splitlines() if "vn-" in line]
        reservations = in_host(host, "sh", "-c", "cat /etc/cloud/cc/*/hosts/* 2>/dev/null")
        assert not reservations.stdout.strip()
    nat = in_host(HOST_A, "iptables", "-t", "nat", "-S")
    assert cloud.ids["eip"] not in nat.stdout
    addresses = cloud.json("address", "list")
    assert [a["instance"] for a in addresses] == [None]  # still allocated, not associated
    cloud.cloudctl("address", "release", cloud.ids["eip"])
    assert cloud.json("address", "list") == []


def test_reset_leaves_nothing_behind(cloud):
    """reset.yml on both hosts of the two-zone cloud (the last test of this file)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(cloud.inventory),
         "cloudctl.cloud.reset"],
        capture_output=True, text=True, cwd=PROJECT, timeout=900, check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"),
                 PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:]
    for host in (HOST_A, HOST_B):
        bridges = json.loads(in_host(host, "ip", "-j", "link", "show", "type", "bridge").stdout)
        assert bridges == [], (host, bridges)
        # The lab hosts share the machine's PID namespace: look only at their network namespaces.
        processes = [
            Path(f"/proc/{pid}/comm").read_text().strip()
            for pid in labhost.netns_pids(labhost.netns_of(host))
        ]
        for daemon in ("libvirtd", "virtlogd", "tgtd", "dnsmasq", "weed", "supervisord"):
            assert daemon not in processes, (host, processes)
        for path in ("/etc/cloud", "/etc/supervisor/conf.d/cloud-tgtd.conf", "/opt/cloud"):
            assert in_host(host, "test", "-e", path).returncode != 0, (host, path)
        leftovers = in_host(
            host, "sh", "-c", "ls /etc/supervisor/conf.d /etc/systemd/system | grep cloud-"
        )
        assert leftovers.stdout.strip() == "", (host, leftovers.stdout)

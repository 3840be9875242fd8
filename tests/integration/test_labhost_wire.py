"""molecule/labhost.py's wire and stub: an L2 link between lab hosts (their eth1), and a bare
address on the lab switch that one host can lose while the others still reach it. About 5 s."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import labhost

pytestmark = pytest.mark.integration
HOSTS = ["ha-tw1", "ha-tw2"]
WIRE, STUB, STUB_ADDRESS = "ha-twire", "ha-tgw", "10.213.0.249"
PUBLIC_WIRE = "ha-tpub"


def in_host(name: str, *command: str) -> subprocess.CompletedProcess:
    pid = labhost.load_info(name)["sshd_pid"]
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-n", "--", *command],
                          check=False, capture_output=True, text=True)  # fmt: skip


def ping(name: str, address: str) -> bool:
    return in_host(name, "ping", "-c", "1", "-W", "2", address).returncode == 0


@pytest.fixture
def lab():
    for name in [WIRE, PUBLIC_WIRE, STUB, *HOSTS]:
        labhost.destroy(name)
    for name in HOSTS:
        labhost.create(name)
    yield
    for name in [WIRE, PUBLIC_WIRE, STUB, *HOSTS]:
        labhost.destroy(name)


def test_a_wire_links_hosts_and_a_stub_answers_until_one_host_cuts_it(lab):
    record = labhost.wire(WIRE, HOSTS)
    assert record["netns"] == f"cloudlab-{WIRE}"
    for i, name in enumerate(HOSTS, start=1):
        assert in_host(name, "ip", "addr", "add", f"192.0.2.{i}/24", "dev", "eth1").returncode == 0
    assert ping(HOSTS[0], "192.0.2.2")  # across the wire, not the lab switch

    labhost.stub(STUB, STUB_ADDRESS)
    assert all(ping(name, STUB_ADDRESS) for name in HOSTS)
    with pytest.raises(SystemExit, match="is taken"):
        labhost.stub("ha-tgw2", STUB_ADDRESS)
    # A stub on a wire too: a router with a public side (the HA lab's elastic IP clients).
    labhost.wire(PUBLIC_WIRE, [HOSTS[1], STUB], ifname="pub0")
    assert in_host(HOSTS[1], "ip", "addr", "add", "198.51.100.2/24", "dev", "pub0").returncode == 0
    subprocess.run(["ip", "-n", f"cloudlab-{STUB}", "addr", "add", "198.51.100.1/24", "dev", "pub0"],
                   check=True)  # fmt: skip
    assert ping(HOSTS[1], "198.51.100.1")
    assert in_host(HOSTS[0], "ip", "route", "add", "blackhole", STUB_ADDRESS).returncode == 0
    assert not ping(HOSTS[0], STUB_ADDRESS) and ping(HOSTS[1], STUB_ADDRESS)

    for name in (WIRE, PUBLIC_WIRE, STUB):
        labhost.destroy(name)
    namespaces = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True,
                                text=True).stdout  # fmt: skip
    assert f"cloudlab-{WIRE}" not in namespaces and f"cloudlab-{STUB}" not in namespaces
    assert WIRE not in {w["name"] for w in labhost.extras("wires")}

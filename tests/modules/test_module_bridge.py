"""The bridge module, run for real through ansible-playbook inside a network namespace that
each test creates (and deletes). Nothing touches the machine's own interfaces."""

from __future__ import annotations

import subprocess

import pytest
from modhelpers import ns_ip_json, run_module

pytestmark = pytest.mark.integration

BR = "cloudbr0"


@pytest.fixture
def ns(netns):
    """The test namespace with a veth pair va <-> vb in it."""
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "va", "type", "veth", "peer", "name", "vb"], check=True
    )
    return netns


@pytest.fixture
def bridge(ns, tmp_path):
    """Run the bridge module inside the namespace."""

    def run(args: dict, check: bool = False) -> dict:
        return run_module(
            tmp_path, "bridge", args, check=check, diff=True, wrapper=["ip", "netns", "exec", ns]
        )

    return run


def link(ns: str, name: str, details: bool = False) -> dict | None:
    links = ns_ip_json(ns, *(["-d"] if details else []), "link", "show", "dev", name)
    return links[0] if links else None


def addresses(ns: str, name: str) -> list[str]:
    info = (ns_ip_json(ns, "addr", "show", "dev", name) or [{}])[0].get("addr_info", [])
    return sorted(f"{a['local']}/{a['prefixlen']}" for a in info if a["family"] == "inet")


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result


def test_create_check_mode_changes_nothing(ns, bridge):
    res = ok(bridge({"name": BR, "addresses": ["172.31.0.1/24"], "ports": ["va"]}, check=True))
    assert res["changed"] is True
    assert res["commands"][0].startswith(f"ip link add name {BR} type bridge")
    assert res["diff"]["before"] == {"name": BR, "state": "absent"}
    assert res["diff"]["after"]["ports"] == ["va"]
    assert link(ns, BR) is None
    assert "master" not in link(ns, "va")


def test_create_then_idempotent(ns, bridge):
    args = {"name": BR, "addresses": ["172.31.0.1/24"], "ports": ["va"]}
    res = ok(bridge(args))
    assert res["changed"] is True
    assert res["diff"]["before"]["state"] == "absent"
    after = res["diff"]["after"]
    assert after == res["bridge"]
    assert after == {
        "name": BR,
        "state": "present",
        "up": True,
        "stp": False,
        "forward_delay": 0,
        "ports": ["va"],
        "addresses": ["172.31.0.1/24"],
    }
    # what the kernel says, read independently of the module
    br = link(ns, BR, details=True)
    assert br["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in br["flags"]
    assert br["linkinfo"]["info_data"]["stp_state"] == 0
    assert br["linkinfo"]["info_data"]["forward_delay"] == 0
    assert link(ns, "va")["master"] == BR
    assert "UP" in link(ns, "va")["flags"]
    assert addresses(ns, BR) == ["172.31.0.1/24"]

    again = ok(bridge(args))
    assert again["changed"] is False
    assert again["commands"] == []
    assert again["diff"]["before"] == again["diff"]["after"]


def test_address_change(ns, bridge):
    ok(bridge({"name": BR, "addresses": ["172.31.0.1/24"]}))

    res = ok(bridge({"name": BR, "addresses": ["172.31.0.9/28"]}, check=True))
    assert res["changed"] is True
    assert res["diff"]["after"]["addresses"] == ["172.31.0.9/28"]
    assert addresses(ns, BR) == ["172.31.0.1/24"]  # check mode changed nothing

    res = ok(bridge({"name": BR, "addresses": ["172.31.0.9/28"]}))
    assert res["changed"] is True
    assert res["diff"]["before"]["addresses"] == ["172.31.0.1/24"]
    assert addresses(ns, BR) == ["172.31.0.9/28"]

    # the same address with another prefix length is another address
    ok(bridge({"name": BR, "addresses": ["172.31.0.9/24"]}))
    assert addresses(ns, BR) == ["172.31.0.9/24"]

    # not exclusive: added beside the existing one
    res = ok(bridge({"name": BR, "addresses": ["10.99.0.1/24"], "exclusive_addresses": False}))
    assert res["changed"] is True
    assert addresses(ns, BR) == ["10.99.0.1/24", "172.31.0.9/24"]

    # addresses omitted: left alone
    res = ok(bridge({"name": BR}))
    assert res["changed"] is False
    assert addresses(ns, BR) == ["10.99.0.1/24", "172.31.0.9/24"]

    # empty list with exclusive_addresses (default): every IPv4 address goes
    res = ok(bridge({"name": BR, "addresses": []}))
    assert res["changed"] is True
    assert addresses(ns, BR) == []


def test_primary_and_secondary_in_one_subnet(ns, bridge):
    """Deleting a primary IPv4 address drops its secondaries: the module re-adds them."""
    ok(bridge({"name": BR, "addresses": ["172.31.0.1/24", "172.31.0.2/24"]}))
    assert addresses(ns, BR) == ["172.31.0.1/24", "172.31.0.2/24"]
    ok(bridge({"name": BR, "addresses": ["172.31.0.2/24"]}))
    assert addresses(ns, BR) == ["172.31.0.2/24"]
    assert ok(bridge({"name": BR, "addresses": ["172.31.0.2/24"]}))["changed"] is False


def test_ports_enslave_keep_foreign_and_exclusive(ns, bridge):
    ok(bridge({"name": BR}))
    res = ok(bridge({"name": BR, "ports": ["va"]}))
    assert res["changed"] is True
    assert res["diff"]["before"]["ports"] == []
    assert res["diff"]["after"]["ports"] == ["va"]
    assert link(ns, "va")["master"] == BR

    # a port someone else added (a guest's tap, say) is left alone ...
    subprocess.run(["ip", "-n", ns, "link", "set", "dev", "vb", "master", BR], check=True)
    res = ok(bridge({"name": BR, "ports": ["va"]}))
    assert res["changed"] is False
    assert res["bridge"]["ports"] == ["va", "vb"]

    # ... unless exclusive_ports: check mode first
    res = ok(bridge({"name": BR, "ports": ["va"], "exclusive_ports": True}, check=True))
    assert res["changed"] is True
    assert res["diff"]["after"]["ports"] == ["va"]
    assert link(ns, "vb")["master"] == BR
    res = ok(bridge({"name": BR, "ports": ["va"], "exclusive_ports": True}))
    assert res["changed"] is True
    assert "master" not in link(ns, "vb")
    assert link(ns, "va")["master"] == BR


def test_missing_port_fails_and_names_it(ns, bridge):
    res = bridge({"name": BR, "ports": ["va", "eth9"]})
    assert res["failed"] is True
    assert "eth9" in res["msg"] and "does not exist" in res["msg"]
    assert link(ns, BR) is None  # nothing was done


def test_stp_and_forward_delay(ns, bridge):
    ok(bridge({"name": BR}))
    res = ok(bridge({"name": BR, "stp": True, "forward_delay": 4}))
    assert res["changed"] is True
    data = link(ns, BR, details=True)["linkinfo"]["info_data"]
    assert data["stp_state"] != 0
    assert data["forward_delay"] == 400  # centiseconds
    assert res["bridge"]["stp"] is True and res["bridge"]["forward_delay"] == 4
    assert ok(bridge({"name": BR, "stp": True, "forward_delay": 4}))["changed"] is False

    # back to the defaults: STP off, then forward delay 0 (kernel refuses 0 while STP runs)
    res = ok(bridge({"name": BR}))
    assert res["changed"] is True
    data = link(ns, BR, details=True)["linkinfo"]["info_data"]
    assert data["stp_state"] == 0 and data["forward_delay"] == 0

    res = bridge({"name": BR, "stp": True, "forward_delay": 0})
    assert res["failed"] is True
    assert "forward_delay" in res["msg"]


def test_up_false(ns, bridge):
    ok(bridge({"name": BR}))
    res = ok(bridge({"name": BR, "up": False}))
    assert res["changed"] is True
    assert "UP" not in link(ns, BR)["flags"]
    assert ok(bridge({"name": BR, "up": False}))["changed"] is False


def test_absent_releases_ports(ns, bridge):
    ok(bridge({"name": BR, "ports": ["va"]}))
    res = ok(bridge({"name": BR, "state": "absent"}, check=True))
    assert res["changed"] is True
    assert link(ns, BR) is not None

    res = ok(bridge({"name": BR, "state": "absent"}))
    assert res["changed"] is True
    assert res["diff"]["before"]["ports"] == ["va"]
    assert res["diff"]["after"] == {"name": BR, "state": "absent"}
    assert link(ns, BR) is None
    assert link(ns, "va") is not None and "master" not in link(ns, "va")

    assert ok(bridge({"name": BR, "state": "absent"}))["changed"] is False


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"name": "cloudbr0-too-long"}, ["17 characters", "15"]),
        ({"name": "br/0"}, ["'/'"]),
        ({"name": "vb"}, ["vb", "not a bridge", "veth"]),
        ({"name": BR, "addresses": ["172.31.0.1"]}, ["172.31.0.1", "prefix length"]),
        ({"name": BR, "addresses": ["172.31.0.300/24"]}, ["172.31.0.300/24", "CIDR"]),
        ({"name": BR, "ports": [BR]}, ["bridge itself"]),
    ],
)
def test_invalid_arguments_fail_clearly(ns, bridge, args, words):
    res = bridge(args)
    assert res["failed"] is True
    assert "\n" not in res["msg"]
    for word in words:
        assert word in res["msg"]
    assert link(ns, BR) is None

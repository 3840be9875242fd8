"""Groups, elastic IP allocation and zones against a real state store (no hosts: these
operations record state only; applying them on hosts is tested end to end)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from cloudctl.addresses import Addresses
from cloudctl.cloudconfig import CloudConfig, Cluster, InstanceType, Node, Walrus
from cloudctl.config import Settings
from cloudctl.errors import CapacityError, InputError
from cloudctl.groups import Groups
from cloudctl.state import StateStore
from cloudctl.zones import Zones

SPAWN = multiprocessing.get_context("spawn")
SMALL = InstanceType("m1.small", 1, 128, 2)


def config(pool: str = "198.51.100.16/29") -> CloudConfig:
    cluster = Cluster(zone="zone-a", subnet="172.31.0.0/24", bridge="br0", gateway="172.31.0.1",
                      cc="cc1", sc=["sc1"], nodes=[Node("n1", 4, 1024), Node("n2", 2, 1024)],
                      public_ips=pool, public_interface="pub0")  # fmt: skip
    return CloudConfig(cloud_name="t", clusters={"zone-a": cluster},
                       instance_types={"m1.small": SMALL}, walrus=Walrus("http://x", "a", "s"),
                       path=Path("/dev/null"))  # fmt: skip


def settings(tmp_path: Path) -> Settings:
    return Settings(project_dir=tmp_path, inventory=tmp_path, home=tmp_path / "home")


def test_pool_exhaustion_is_a_clear_capacity_error(tmp_path):
    service = Addresses(settings(tmp_path), config=config("198.51.100.16/30"))
    taken = {service.allocate()["public_ip"] for _ in range(2)}
    assert taken == {"198.51.100.17", "198.51.100.18"}
    with pytest.raises(CapacityError, match="every elastic IP of the pool is allocated"):
        service.allocate()
    assert len(service.list()) == 2
    with pytest.raises(InputError, match="unknown zone"):
        service.allocate("zone-x")


def _allocate(home: str, count: int, out) -> None:
    service = Addresses(settings(Path(home).parent), config=config("198.51.100.0/26"))
    out.put([service.allocate()["public_ip"] for _ in range(count)])


def test_concurrent_processes_never_hand_out_an_address_twice(tmp_path):
    queue = SPAWN.Queue()
    procs = [SPAWN.Process(target=_allocate, args=(str(tmp_path / "home"), 10, queue))
             for _ in range(5)]  # fmt: skip
    for p in procs:
        p.start()
    got = [ip for _ in procs for ip in queue.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
    assert len(got) == 50 and len(set(got)) == 50
    assert len(Addresses(settings(tmp_path), config=config()).list()) == 50


def test_group_rules_and_delete_refusals(tmp_path):
    s = settings(tmp_path)
    groups = Groups(s, config=config())
    groups.create("web")
    with pytest.raises(InputError, match="already exists"):
        groups.create("web")
    with pytest.raises(InputError, match="default group cannot be deleted"):
        groups.delete("default")
    store = StateStore(s.state_path)
    web = groups.show("web")
    with store.transaction() as tx:
        tx.table("instances").insert({"id": "i-0000aaaa", "account": "admin", "user": "admin",
                                      "groups": [web["id"]], "state": "running", "node": "n1",
                                      "type": "m1.small", "private_ip": "172.31.0.2",
                                      "mac": "d0:0d:00:00:00:01"})  # fmt: skip
    with pytest.raises(InputError, match="used by i-0000aaaa"):
        groups.delete("web")
    assert [g["name"] for g in groups.list()] == ["default", "web"]


def test_zone_list_verbose_counts_free_and_max(tmp_path):
    s = settings(tmp_path)
    with StateStore(s.state_path).transaction() as tx:
        for n, node in enumerate(["n1", "n1", "n2"]):
            tx.table("instances").insert({"id": f"i-0000000{n}", "account": "admin",
                                          "user": "admin", "state": "running", "node": node,
                                          "type": "m1.small"})  # fmt: skip
    rows = Zones(s, config=config()).list(verbose=True)
    assert rows[0]["zone"] == "zone-a" and rows[0]["nodes"] == 2
    assert (rows[1]["zone"], rows[1]["free"], rows[1]["max"]) == ("|- m1.small", 3, 6)


def test_zone_network_lists_what_every_cc_of_the_zone_holds(tmp_path):
    s = settings(tmp_path)
    with StateStore(s.state_path).transaction() as tx:
        for n, state in enumerate(["running", "stopped", "terminated", "shutting-down"]):
            tx.table("instances").insert({"id": f"i-0000000{n}", "account": "other",
                                          "user": "u", "state": state, "zone": "zone-a",
                                          "private_ip": f"172.31.0.{n + 2}",
                                          "mac": f"d0:0d:00:00:00:0{n}"})  # fmt: skip
        tx.table("addresses").insert({"id": "eipalloc-1", "account": "other", "user": "u",
                                      "public_ip": "198.51.100.17",
                                      "instance": "i-00000001", "zone": "zone-a", "cc": "cc1",
                                      "public_interface": "pub0"})  # fmt: skip
    rows = Zones(s, config=config()).network()
    assert [(r["name"], r["ip"], r["public_ip"]) for r in rows] == [
        ("i-00000000", "172.31.0.2", ""),
        ("i-00000001", "172.31.0.3", "198.51.100.17"),
    ]
    assert rows[1] | {"zone": "zone-a", "mac": "d0:0d:00:00:00:01", "hostname": "i-00000001",
                      "public_interface": "pub0"} == rows[1]  # fmt: skip
    assert Zones(s, config=config()).network("zone-a") == rows
    with pytest.raises(InputError, match="unknown zone 'zone-x'"):
        Zones(s, config=config()).network("zone-x")

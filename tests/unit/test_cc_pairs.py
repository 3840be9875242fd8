"""A zone's CC pair (HA): the configuration names both CCs, operations go to both, one CC of a
pair failing does not fail an operation, and reconcile finds a CC that missed changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudctl import addresses as addresses_module
from cloudctl import cc_hosts
from cloudctl.addresses import Addresses
from cloudctl.cloudconfig import load_config
from cloudctl.errors import ConfigError, HostUnreachable
from cloudctl.reconcile import _compare, _Plan
from cloudctl.state import StateStore
from tests.unit.helpers import TEST_CLOUD_ID, host_event, init_state, play_result, task_start

OWNER = {"account": "admin", "user": "admin"}
TASK = "Associate or disassociate the addresses"


def config(tmp_path: Path, **zone_a) -> Path:
    zone = {
        "subnet": "172.31.0.0/24",
        "bridge": "br0",
        "gateway": "172.31.0.1",
        "public_ips": "198.51.100.16/28",
        "public_interface": "pub0",
        "nodes": {},
        **zone_a,
    }
    data = {
        "cloud_id": TEST_CLOUD_ID,
        "clusters": {"zone-a": zone},
        "walrus": {"endpoint": "http://127.0.0.1:1", "access_key": "A", "secret_key": "S"},
    }
    path = tmp_path / "cloud.yml"
    path.write_text(yaml.safe_dump(data))
    return path  # fmt: skip


def test_the_zone_names_its_ccs_with_the_single_cc_as_fallback(tmp_path):
    pair = load_config(config(tmp_path, cc="cc1", ccs=["cc1", "cc2"])).clusters["zone-a"]
    assert pair.ccs == ("cc1", "cc2") and pair.cc == "cc1"
    single = load_config(config(tmp_path, cc="cc1")).clusters["zone-a"]  # before pairs
    assert single.ccs == ("cc1",) and single.cc == "cc1"
    assert load_config(config(tmp_path)).clusters["zone-a"].ccs == ()
    with pytest.raises(ConfigError, match="clusters.zone-a.ccs"):
        load_config(config(tmp_path, ccs="cc1"))


def play(tmp_path: Path, *failed: str):
    events = [task_start(TASK)]
    events += [host_event("runner_on_unreachable", h, TASK, {"msg": "no route to host",
                                                             "unreachable": True})
               for h in failed]  # fmt: skip
    return play_result(tmp_path, events)


def test_one_cc_of_a_pair_failing_is_survived_and_named(tmp_path, caplog):
    zones = {"zone-a": ("cc1", "cc2"), "zone-b": ("cc3",)}
    result = cc_hosts.tolerate(play(tmp_path, "cc2"), zones)
    assert result.ok
    assert "cc2: unreachable" in caplog.text and "reconcile --fix" in caplog.text
    # Both CCs of the zone, or the only CC of one: the operation fails.
    assert {f.host for f in cc_hosts.tolerate(play(tmp_path, "cc1", "cc2"), zones).failures} == {
        "cc1", "cc2"}  # fmt: skip
    with pytest.raises(HostUnreachable, match="cc3"):
        cc_hosts.tolerate(play(tmp_path, "cc3"), zones).raise_for_failures()


@pytest.mark.parametrize("down", [(), ("cc2",), ("cc1", "cc2")], ids=["none", "one", "both"])
def test_an_address_goes_to_both_ccs_of_its_zone(tmp_path, settings, monkeypatch, down):
    settings.home.mkdir(parents=True)
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(config(tmp_path, cc="cc1", ccs=["cc1", "cc2"])))
    store = StateStore(init_state(tmp_path / "state.json"))
    with store.transaction() as tx:
        tx.table("instances").insert(
            {
                "id": "i-000000aa",
                **OWNER,
                "state": "running",
                "zone": "zone-a",
                "private_ip": "172.31.0.5",
            }
        )
        tx.table("addresses").insert({"id": "eipalloc-000000aa", **OWNER, "zone": "zone-a",
                                      "public_ip": "198.51.100.17", "cc": "cc1",
                                      "public_interface": "pub0", "instance": None,
                                      "private_ip": None})  # fmt: skip
    runs = []

    def run_playbook(settings, playbook, *, extravars, limit, **kwargs):
        runs.append((limit, extravars["cloud_addresses"]))
        return play(tmp_path / str(len(runs)), *down)

    monkeypatch.setattr(addresses_module, "run_playbook", run_playbook)
    service = Addresses(settings, store)
    if len(down) == 2:
        with pytest.raises(Exception, match="cc1.*cc2"):
            service.associate("198.51.100.17", "i-000000aa")
        return
    assert service.associate("198.51.100.17", "i-000000aa")["instance"] == "i-000000aa"
    [(limit, [view])] = runs
    assert limit == "cc1,cc2" and view["zone"] == "zone-a" and view["state"] == "present"


NODE = {"domains": {"i-000000aa": "running", "i-000000bb": "running"}, "instance_dirs": [],
        "firewalls": [], "cache": []}  # fmt: skip


def test_reconcile_finds_what_one_cc_of_the_pair_missed(tmp_path):
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as tx:
        for n, iid in enumerate(("i-000000aa", "i-000000bb")):
            tx.table("instances").insert({"id": iid, **OWNER, "state": "running", "node": "nc1",
                                          "cc": "cc1", "zone": "zone-a", "mac": f"52:54:00:00:00:0{n}",
                                          "private_ip": f"172.31.0.{10 + n}"})  # fmt: skip
        tx.table("instances").insert({"id": "i-000000cc", **OWNER, "state": "terminated",
                                      "node": "nc1", "cc": "cc1", "zone": "zone-a"})  # fmt: skip
        tx.table("addresses").insert({"id": "eipalloc-000000aa", **OWNER, "zone": "zone-a",
                                      "public_ip": "198.51.100.17", "instance": "i-000000aa",
                                      "private_ip": "172.31.0.10", "cc": "cc1",
                                      "public_interface": "pub0"})  # fmt: skip
    rule = {"public_ip": "198.51.100.17", "private_ip": "172.31.0.10", "instance": "i-000000aa"}
    # cc1 is in sync; cc2 was down while i-000000bb started, the address was associated
    # and i-000000cc was terminated.
    found = {
        "nc1": {"nc": NODE},
        "cc1": {"cc": {"reservations": {"zone-a": ["i-000000aa", "i-000000bb"]},
                       "elastic_ips": [rule]}},
        "cc2": {"cc": {"reservations": {"zone-a": ["i-000000aa", "i-000000cc"]},
                       "elastic_ips": []}},
    }  # fmt: skip
    plan = _Plan()
    with store.transaction() as tx:
        drifts = _compare(tx, found, set(), {"cc1": "pub0", "cc2": "pub0"}, plan, fix=True,
                          unknown=_Plan(), zones={"zone-a": ("cc1", "cc2")})  # fmt: skip
    assert {(d.kind, d.resource, d.host) for d in drifts} == {
        ("missing-reservation", "i-000000bb", "cc2"),
        ("orphan-reservation", "i-000000cc", "cc2"),
        ("missing-address", "198.51.100.17", "cc2"),
    }
    assert plan.missing_reservations == [{"name": "i-000000bb", "hostname": "i-000000bb",
                                          "mac": "52:54:00:00:00:01", "ip": "172.31.0.11",
                                          "cc": "cc2", "zone": "zone-a"}]  # fmt: skip
    assert [(a["public_ip"], a["cc"]) for a in plan.missing_addresses] == [("198.51.100.17", "cc2")]
    assert plan.hosts() == {"cc2"}


def test_a_lost_instance_loses_its_reservation_on_both_ccs(tmp_path):
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as tx:
        tx.table("instances").insert(
            {
                "id": "i-000000aa",
                **OWNER,
                "state": "running",
                "node": "nc1",
                "cc": "cc1",
                "zone": "zone-a",
                "mac": "52:54:00:00:00:01",
                "private_ip": "172.31.0.10",
            }
        )
    cc = {"cc": {"reservations": {"zone-a": ["i-000000aa"]}, "elastic_ips": []}}
    found = {"nc1": {"nc": {**NODE, "domains": {}}}, "cc1": cc, "cc2": cc}
    plan = _Plan()
    with store.transaction() as tx:
        _compare(
            tx, found, set(), {}, plan, fix=True, unknown=_Plan(), zones={"zone-a": ("cc1", "cc2")}
        )
    assert sorted(r["cc"] for r in plan.orphan_reservations) == ["cc1", "cc2"]

"""A partly failed launch gives its failed instances' IP and MAC back only once their
clean-up play succeeded (plays are synthetic here)."""

from __future__ import annotations

import pytest

from cloudctl.errors import CloudError
from cloudctl.ids import InstanceState
from cloudctl.instances import MAC_POOL, TASK_START, Instances, end_instance, ip_pool
from cloudctl.state import StateStore
from tests.unit.helpers import host_event, play_result, task_start

OWNER = {"account": "admin", "user": "admin"}


def launch(tmp_path) -> tuple[StateStore, list[dict]]:
    """Two pending instances, on nc1 and nc2, with their IP and MAC allocated."""
    store = StateStore(tmp_path / "state.json")
    records = []
    with store.transaction() as tx:
        for n in (1, 2):
            iid = f"i-0000000{n}"
            ip = tx.allocate(ip_pool("zone-a"), [f"172.31.0.{10 + n}"], iid)
            mac = tx.allocate(MAC_POOL, [f"d0:0d:00:00:00:0{n}"], iid)
            records.append(tx.table("instances").insert({
                "id": iid, **OWNER, "state": "pending", "reason": "", "node": f"nc{n}",
                "cc": "cc1", "zone": "zone-a", "private_ip": ip, "mac": mac, "groups": [],
                "type": "m1.small", "vcpus": 1, "memory_mb": 128, "disk_gb": 2,
            }))  # fmt: skip
    return store, records


def run_dir(tmp_path, name: str):
    path = tmp_path / f"20260101T000000Z-{name}-0a1b2c3d"
    path.mkdir()
    return path


def started(host: str, iid: str) -> dict:
    return host_event("runner_on_ok", host, TASK_START, {"instances": [{"name": iid}]})


def owners(store: StateStore) -> set[str]:
    with store.snapshot() as snap:
        return {o for pool in snap.pools() for o in snap.allocations(pool).values()}


@pytest.mark.parametrize("cleanup_ok", [True, False], ids=["cleanup-ok", "cleanup-failed"])
def test_failed_instance_keeps_its_addresses_until_cleaned(
    tmp_path, settings, monkeypatch, cleanup_ok
):
    store, records = launch(tmp_path)
    launch_play = play_result(run_dir(tmp_path, "instance-run"), [
        task_start(TASK_START), started("nc1", "i-00000001"),
        host_event("runner_on_failed", "nc2", TASK_START, {"msg": "libvirt is down"}),
    ])  # fmt: skip
    cleanup_events = [task_start("Remove the instances")]
    if not cleanup_ok:
        cleanup_events.append(host_event("runner_on_unreachable", "nc2", "Remove the instances",
                                         {"msg": "no route to host", "unreachable": True}))  # fmt: skip
    seen = []

    def cleanup(self, failed, firewalls, generation):
        seen.append(owners(store))  # what is allocated while the clean-up runs
        return play_result(run_dir(tmp_path, "instance-cleanup"), cleanup_events)

    monkeypatch.setattr(Instances, "_cleanup_hosts", cleanup)
    result = Instances(settings, store)._record_launch(records, launch_play, "0a1b2c3d")
    ok, failed = result.instances
    assert ok["state"] == "running" and failed["state"] == "failed"
    assert "libvirt is down" in failed["reason"]
    assert seen == [{"i-00000001", "i-00000002"}]
    if cleanup_ok:
        assert owners(store) == {"i-00000001"}
        assert "clean-up" not in failed["reason"]
    else:
        assert owners(store) == {"i-00000001", "i-00000002"}
        assert "clean-up failed" in failed["reason"] and "no route to host" in failed["reason"]
        assert "reconcile --fix" in failed["reason"]


def test_a_launch_that_failed_everywhere_raises(tmp_path, settings, monkeypatch):
    store, records = launch(tmp_path)
    play = play_result(run_dir(tmp_path, "instance-run"), [
        task_start(TASK_START),
        host_event("runner_on_failed", "nc1", TASK_START, {"msg": "no"}),
        host_event("runner_on_failed", "nc2", TASK_START, {"msg": "no"}),
    ])  # fmt: skip
    monkeypatch.setattr(
        Instances, "_cleanup_hosts",
        lambda *a: play_result(run_dir(tmp_path, "instance-cleanup"), []),
    )  # fmt: skip
    with pytest.raises(CloudError):
        Instances(settings, store)._record_launch(records, play, "0a1b2c3d")
    assert owners(store) == set()


def test_ending_an_instance_releases_only_its_own_values(tmp_path):
    """An address released earlier and handed to another instance stays with that one."""
    store, (first, _) = launch(tmp_path)
    with store.transaction() as tx:
        tx.release(ip_pool("zone-a"), first["private_ip"])
        tx.allocate(ip_pool("zone-a"), [first["private_ip"]], "i-000000ff")
        end_instance(tx, first, InstanceState.TERMINATED)
    with store.snapshot() as snap:
        assert snap.allocations(ip_pool("zone-a")) == {
            first["private_ip"]: "i-000000ff", "172.31.0.12": "i-00000002"}  # fmt: skip
        assert "i-00000001" not in snap.allocations(MAC_POOL).values()

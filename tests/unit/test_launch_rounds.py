"""A launch round (Instances._play_round): ONE instance_run play for every request it claimed,
each request's instances recorded on their own; requests whose requester is gone, or whose
instances were settled meanwhile, are not played (plays are synthetic here)."""

from __future__ import annotations

import subprocess

from cloudctl import launches
from cloudctl.identity import current_owner
from cloudctl.instances import PLAY_OPERATION, REQUEST_OPERATION, Instances, LaunchResult
from cloudctl.runner import PlayResult
from cloudctl.state import open_store
from tests.unit.helpers import play_result

OWNER = {"account": "admin", "user": "admin"}
IMAGE = {"role": "image", "sha256": "aa", "size": 1}


def fragment(iid: str, node: str, url: str, rules: int) -> dict:
    """The vars of a one-instance request, shaped as _run_vars makes them."""
    view = {"name": iid, "node": node}
    return {
        "cloud_nodes": {node: {"images": [{**IMAGE, "url": url}], "instances": [view]}},
        "cloud_user_data": {iid: f"#!/bin/sh\necho {iid}"},
        "cloud_instances": [view],
        "cloud_firewalls": [{"name": "i-0000000f", "node": "nc1", "generation": rules}],
    }


def test_merged_vars_carry_every_request_once():
    merged = launches.merge_vars(
        [fragment("i-00000001", "nc1", "u1", 1), fragment("i-00000002", "nc1", "u2", 2),
         fragment("i-00000003", "nc2", "u3", 3)]
    )  # fmt: skip
    nc1 = merged["cloud_nodes"]["nc1"]
    assert [i["name"] for i in nc1["instances"]] == ["i-00000001", "i-00000002"]
    assert [i["sha256"] for i in nc1["images"]] == ["aa"]  # one download per node and image
    assert [i["name"] for i in merged["cloud_nodes"]["nc2"]["instances"]] == ["i-00000003"]
    assert sorted(merged["cloud_user_data"]) == ["i-00000001", "i-00000002", "i-00000003"]
    assert len(merged["cloud_instances"]) == 3
    assert merged["cloud_firewalls"] == [{"name": "i-0000000f", "node": "nc1", "generation": 3}]


def pending(store, *iids: str) -> None:
    with store.transaction() as tx:
        for n, iid in enumerate(iids):
            tx.table("instances").insert({
                "id": iid, **owner(iid), "state": "pending", "reason": "", "node": "nc1", "cc": "cc1",
                "zone": "zone-a", "private_ip": f"172.31.0.{10 + n}", "mac": f"d0:0d:00:00:00:0{n}",
                "groups": [], "type": "m1.small", "vcpus": 1, "memory_mb": 128, "disk_gb": 2,
            })  # fmt: skip


def owner(iid: str) -> dict:
    """Instance 2 is of another account: the round records it as its owner."""
    return {"account": "demo", "user": "admin"} if iid == "i-00000002" else OWNER


def request(iid: str, requester: str) -> dict:
    return {"id": f"launch-{iid}", **owner(iid), "instances": [iid], "journal": requester,
            "vars": fragment(iid, "nc1", "u", 1), "hosts": ["cc1", "nc1"],
            "zones": {"zone-a": ["cc1"]}, "orphan": False}  # fmt: skip


def waiting(store, requester: str, pid: int) -> None:
    """A requester's journal entry, its process `pid`."""
    with store.transaction() as tx:
        tx.table("operations").insert({"id": requester, **OWNER, "operation": REQUEST_OPERATION,
                                       "state": "running", "pid": pid, "resources": []})  # fmt: skip


def test_one_play_for_the_round_each_request_recorded(tmp_path, settings, monkeypatch):
    store = open_store(settings)
    pending(store, "i-00000001", "i-00000002", "i-00000003", "i-00000004")
    gone = subprocess.Popen(["true"])
    gone.wait()
    waiting(store, "alive", pid=1)
    waiting(store, "dead", pid=gone.pid)
    with store.transaction() as tx:
        tx.table("instances").update("i-00000004", state="failed")  # settled by reconcile
    plays, recorded = [], []
    run = tmp_path / "20260101T000000Z-instance-run-0a1b2c3d"

    def run_playbook(settings, playbook, **kwargs) -> PlayResult:
        plays.append(kwargs)
        return play_result(run, [])

    def record_launch(self, records, result, event, zones):
        recorded.append(([r["id"] for r in records], event, current_owner()))
        with store.transaction() as tx:
            for r in records:
                tx.table("instances").update(r["id"], state="running", event=event)
        return LaunchResult([self.get(r["id"]) for r in records], event)

    monkeypatch.setattr(Instances, "_record_launch", record_launch)
    monkeypatch.setattr("cloudctl.instances.run_playbook", run_playbook)
    batch = [request("i-00000001", "alive"), request("i-00000002", "alive"),
             request("i-00000003", "dead"), request("i-00000004", "alive")]  # fmt: skip
    outcomes = Instances(settings, store)._play_round(batch, None)

    [play] = plays  # one play for the two live requests
    assert play["operation"] == PLAY_OPERATION and play["limit"] == "cc1,nc1"
    assert [i["name"] for i in play["extravars"]["cloud_instances"]] == ["i-00000001", "i-00000002"]
    assert recorded == [(["i-00000001"], "0a1b2c3d", ("admin", "admin")),
                        (["i-00000002"], "0a1b2c3d", ("demo", "admin"))]  # fmt: skip
    assert outcomes["launch-i-00000001"] == {"event": "0a1b2c3d", "cache": [], "error": ""}
    assert outcomes["launch-i-00000002"]["event"] == "0a1b2c3d"
    assert outcomes["launch-i-00000003"]["error"] == "its cloudctl is gone"
    assert outcomes["launch-i-00000004"] == {"event": "", "error": ""}
    states = {r["id"]: r["state"] for r in store.all("instances")}
    assert states == {"i-00000001": "running", "i-00000002": "running",
                      "i-00000003": "pending", "i-00000004": "failed"}  # fmt: skip

"""Reconcile's comparison of the state with scanned hosts (the scan is synthetic here)."""

from __future__ import annotations

from cloudctl.reconcile import _compare, _Plan
from cloudctl.state import StateStore

OWNER = {"account": "admin", "user": "admin"}
NODE = {"domains": {}, "instance_dirs": [], "firewalls": [], "cache": []}
SC = {"targets": [], "stores": []}
CC = {"reservations": {"zone-a": []}, "elastic_ips": []}


def instance(iid: str, state: str, ip: str) -> dict:
    return {"id": iid, **OWNER, "state": state, "node": "nc1", "cc": "cc1", "zone": "zone-a",
            "private_ip": ip, "mac": f"52:54:00:00:00:{ip[-2:]}"}  # fmt: skip


def seed(tmp_path) -> StateStore:
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as tx:
        for record in (instance("i-000000aa", "running", "172.31.0.10"),
                       instance("i-000000bb", "pending", "172.31.0.11"),
                       instance("i-000000cc", "running", "172.31.0.12")):  # fmt: skip
            tx.table("instances").insert(record)
            tx.allocate("ip:zone-a", [record["private_ip"]], record["id"])
        tx.allocate("ip:zone-a", ["172.31.0.99"], "i-000000ff")  # owner long gone
        tx.table("volumes").insert({"id": "vol-000000aa", **OWNER, "state": "available",
                                    "sc": "sc1", "size_gb": 1, "chap_user": "u",
                                    "chap_secret": "s"})  # fmt: skip
        tx.table("addresses").insert({"id": "eipalloc-000000aa", **OWNER, "zone": "zone-a",
                                      "public_ip": "198.51.100.16", "instance": "i-000000aa",
                                      "private_ip": "172.31.0.10", "cc": "cc1",
                                      "public_interface": "pub0"})  # fmt: skip
    return store


def scan() -> dict:
    return {
        "nc1": {"nc": {**NODE, "domains": {"i-000000aa": "running", "i-000000bb": "running",
                                           "i-000000dd": "stopped"},
                       "firewalls": ["i-000000aa", "i-000000dd"], "cache": ["ab" * 32]}},
        "sc1": {"sc": {"targets": ["vol-000000zz"], "stores": ["vol-000000aa", "vol-000000zz"]}},
        "cc1": {"cc": {"reservations": {"zone-a": ["i-000000aa", "i-000000bb", "i-000000ee"]},
                       "elastic_ips": []}},
    }  # fmt: skip


def kinds(drifts) -> set[tuple[str, str]]:
    return {(d.kind, d.resource) for d in drifts}


def test_report_names_every_drift_and_changes_nothing(tmp_path):
    store = seed(tmp_path)
    before = (tmp_path / "state.json").read_bytes()
    with store.transaction() as tx:
        drifts = _compare(tx, scan(), set(), {"cc1": "pub0"}, _Plan(), fix=False, unknown=_Plan())
    assert kinds(drifts) == {
        ("lost-instance", "i-000000cc"),  # running, no domain
        ("state-mismatch", "i-000000bb"),  # pending, domain running
        ("orphan-instance", "i-000000dd"),  # a domain the state does not know
        ("orphan-cache", "ab" * 32),
        ("orphan-volume", "vol-000000zz"),
        ("unexported-volume", "vol-000000aa"),
        ("orphan-reservation", "i-000000ee"),
        ("missing-address", "198.51.100.16"),
        ("orphan-allocation", "172.31.0.99"),
    }
    assert not any(d.fixed for d in drifts)
    assert (tmp_path / "state.json").read_bytes() == before


def test_fix_changes_the_state_and_plans_the_hosts(tmp_path):
    store = seed(tmp_path)
    plan, unknown = _Plan(), _Plan()
    with store.transaction() as tx:
        drifts = _compare(tx, scan(), set(), {"cc1": "pub0"}, plan, fix=True, unknown=unknown)
    with store.snapshot() as snap:
        assert snap.table("instances").get("i-000000cc")["state"] == "failed"
        assert snap.table("instances").get("i-000000bb")["state"] == "running"
        # The lost instance keeps its IP until the fix play removed its reservation.
        assert snap.allocations("ip:zone-a") == {"172.31.0.10": "i-000000aa",
            "172.31.0.11": "i-000000bb", "172.31.0.12": "i-000000cc"}  # fmt: skip
    assert {i["name"] for i in plan.orphan_instances} == {"i-000000cc"}
    assert {r["name"] for r in plan.orphan_reservations} == {"i-000000cc"}
    assert plan.orphan_volumes == [] and plan.orphan_cache == []
    assert [v["name"] for v in plan.unexported_volumes] == ["vol-000000aa"]
    assert [a["public_ip"] for a in plan.missing_addresses] == ["198.51.100.16"]
    assert plan.hosts() == {"nc1", "sc1", "cc1"}
    # What the state never knew (and the cache files that may be under such an instance's
    # disk) is planned apart: only --delete-orphans removes it.
    assert [i["name"] for i in unknown.orphan_instances] == ["i-000000dd"]
    assert [r["name"] for r in unknown.orphan_reservations] == ["i-000000ee"]
    assert [v["name"] for v in unknown.orphan_volumes] == ["vol-000000zz"]
    assert [c["sha256"] for c in unknown.orphan_cache] == ["ab" * 32]
    assert {d.resource for d in drifts if not d.fixed} == {
        "i-000000dd", "i-000000ee", "vol-000000zz", "ab" * 32}  # fmt: skip


def test_resources_of_operations_in_progress_are_left_alone(tmp_path):
    store = seed(tmp_path)
    busy = {"i-000000cc", "i-000000dd", "vol-000000zz", "i-000000ee"}
    with store.transaction() as tx:
        drifts = _compare(tx, scan(), busy, {"cc1": "pub0"}, _Plan(), fix=False, unknown=_Plan())
    assert not {r for _, r in kinds(drifts)} & busy


def test_unscanned_hosts_are_not_judged(tmp_path):
    store = seed(tmp_path)
    found = {h: r for h, r in scan().items() if h != "nc1"}
    with store.transaction() as tx:
        drifts = _compare(tx, found, set(), {"cc1": "pub0"}, _Plan(), fix=False, unknown=_Plan())
    assert not [d for d in drifts if d.kind in ("lost-instance", "state-mismatch")]

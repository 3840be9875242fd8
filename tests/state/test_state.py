"""The repository API, each test against both backends where it applies (the store fixture:
the TinyDB file and a real etcd cluster); what only one backend has is tested on it alone."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat
import threading
import time

import pytest

from cloudctl.errors import CloudError
from cloudctl.ids import new_id
from cloudctl.state import (
    EtcdStore,
    ForeignState,
    RecordNotFound,
    StateError,
    StateMissing,
    StateStore,
)
from tests.state.conftest import open_spec, spec_of, written

OWNER = {"account": "admin", "user": "admin"}
SPAWN = multiprocessing.get_context("spawn")


def _instance(**fields):
    return {"id": new_id("instance"), **OWNER, "state": "pending", **fields}


@pytest.fixture
def file_store(tmp_path):
    return StateStore(tmp_path / "state.json")


def test_insert_get_update_remove_search(store):
    with store.transaction() as tx:
        table = tx.table("instances")
        one = table.insert(_instance(zone="zone-a"))
        two = table.insert(_instance(zone="zone-b"))
        assert table.get(one["id"])["zone"] == "zone-a"
        assert table.get("i-00000000") is None

    assert one["created"] == one["updated"]
    assert one["created"].endswith("+00:00")
    assert store.get("instances", two["id"])["zone"] == "zone-b"

    time.sleep(0.001)
    with store.transaction() as tx:
        updated = tx.table("instances").update(one["id"], state="running", ip="172.31.0.5")
    assert updated["state"] == "running"
    assert updated["created"] == one["created"] and updated["updated"] > one["updated"]

    assert [r["id"] for r in store.search("instances", state="running")] == [one["id"]]
    assert store.search("instances", state="running", zone="zone-b") == []
    assert len(store.search("instances")) == 2
    assert store.search("instances", no_such_field=None) == []

    with store.transaction() as tx:
        removed = tx.table("instances").remove(two["id"])
        assert removed["id"] == two["id"]
        assert [r["id"] for r in tx.table("instances").all()] == [one["id"]]
    assert store.get("instances", two["id"]) is None
    assert store.all("volumes") == []


def test_refused_changes(store):
    rec = _instance()
    with store.transaction() as tx:
        t = tx.table("instances")
        t.insert(rec)
        with pytest.raises(StateError, match="duplicate id"):
            t.insert(rec)
        with pytest.raises(StateError, match="lacks account, user"):
            t.insert({"id": new_id("instance")})
        with pytest.raises(StateError, match="cannot change created, id"):
            t.update(rec["id"], id="i-00000000", created="x")
        with pytest.raises(RecordNotFound):
            t.update("i-00000000", state="running")
        with pytest.raises(RecordNotFound):
            t.remove("i-00000000")
        with pytest.raises(StateError, match="cannot be stored"):
            t.update(rec["id"], when=object())
        with pytest.raises(ValueError):
            tx.table("_allocations")
    assert isinstance(StateError("x"), CloudError)
    assert store.get("instances", rec["id"])["state"] == "pending"


def test_returned_records_are_copies(store):
    rec = _instance(tags=["a"])
    with store.transaction() as tx:
        tx.table("instances").insert(rec)
        tx.table("instances").get(rec["id"])["tags"].append("b")
    assert store.get("instances", rec["id"])["tags"] == ["a"]


def test_a_transaction_that_raises_changes_nothing(store):
    rec = _instance()
    with store.transaction() as tx:
        tx.table("instances").insert(rec)
        tx.allocate("ip", ["10.0.0.2"], rec["id"])
    before = written(store)

    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.table("instances").update(rec["id"], state="running")
        tx.table("instances").insert(_instance())
        tx.release("ip", "10.0.0.2")
        tx.allocate("ip", ["10.0.0.3"], rec["id"])
        raise RuntimeError("play failed")

    assert written(store) == before
    assert store.get("instances", rec["id"])["state"] == "pending"
    with store.snapshot() as snap:
        assert snap.allocations("ip") == {"10.0.0.2": rec["id"]}
        assert len(snap.table("instances")) == 1


def test_snapshot_is_read_only_and_nesting_is_refused(store):
    with store.snapshot() as snap:
        with pytest.raises(StateError, match="read-only"):
            snap.table("instances").insert(_instance())
        with pytest.raises(StateError, match="read-only"):
            snap.allocate("ip", ["a"], "i-1")
        with pytest.raises(StateError, match="nested"), store.transaction():
            pass
    assert not written(store)  # nothing was ever written
    with store.transaction() as tx:
        with pytest.raises(StateError, match="nested"):
            open_spec(spec_of(store)).get("instances", "i-00000000")
        tx.table("instances").insert(_instance())


def test_file_is_private_and_tinydb_shaped(file_store):
    store = file_store
    rec = _instance()
    with store.transaction() as tx:
        tx.table("instances").insert(rec)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    data = json.loads(store.path.read_text())
    assert [doc["id"] for doc in data["instances"].values()] == [rec["id"]]


def test_read_only_transaction_does_not_rewrite(file_store):
    store = file_store
    with store.transaction() as tx:
        tx.table("instances").insert(_instance())
    mtime = store.path.stat().st_mtime_ns
    inode = store.path.stat().st_ino
    with store.transaction() as tx:
        tx.table("instances").all()
    assert (store.path.stat().st_mtime_ns, store.path.stat().st_ino) == (mtime, inode)


def test_a_commit_writes_only_what_changed(store):
    with store.transaction() as tx:
        one, two = (
            tx.table("instances").insert(_instance()),
            tx.table("instances").insert(_instance()),
        )
        tx.allocate("ip", ["10.0.0.2"], one["id"])
    before = written(store)
    with store.transaction() as tx:
        tx.table("instances").all()  # read only: nothing written
    assert written(store) == before
    with store.transaction() as tx:
        tx.table("instances").update(two["id"], state="running")
    if isinstance(store, EtcdStore):  # one key per record: only that one was written
        after = written(store)
        assert {k for k in after if after[k] != before[k]} == {f"t/instances/{two['id']}"}


def test_etcd_keys_are_one_json_record_each(etcd_store):
    rec = _instance()
    etcd_store.initialize("cloud-a", "a")
    with etcd_store.transaction() as tx:
        tx.table("instances").insert(rec)
        tx.allocate("ip:zone-a", ["10.0.0.2"], rec["id"])
    answer = etcd_store.etcd.post("/kv/range", _prefix_range(etcd_store.prefix))
    keys = {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]) for kv in answer["kvs"]
    }
    p = etcd_store.prefix
    assert set(keys) == {
        f"{p}cloud",
        f"{p}t/instances/{rec['id']}",
        f"{p}a/ip:zone-a/10.0.0.2",
        f"{p}txn",
    }  # fmt: skip  (txn: the last commit's token)
    assert json.loads(keys[f"{p}t/instances/{rec['id']}"])["state"] == "pending"
    assert json.loads(keys[f"{p}a/ip:zone-a/10.0.0.2"])["owner"] == rec["id"]


def _prefix_range(prefix: str) -> dict:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return {"key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(end.encode()).decode()}  # fmt: skip


@pytest.mark.parametrize(
    "content",
    [b"garbage", b'{"instances": {"1": {"id": "i-0a1b2c3d"', b"", b"[1, 2]", b'{"t": [1]}'],
    ids=["garbage", "truncated", "empty", "list", "bad-table"],
)
def test_corrupt_file_is_a_clear_state_error(file_store, content):
    store = file_store
    store.path.write_bytes(content)
    for action in (lambda: store.all("instances"), lambda: store.transaction().__enter__()):
        with pytest.raises(StateError) as info:
            action()
        message = str(info.value)
        assert "corrupt" in message and str(store.path) in message and "\n" not in message
    assert store.path.read_bytes() == content  # never overwritten


def test_corrupt_etcd_record_is_a_clear_state_error(etcd_store):
    key = f"{etcd_store.prefix}t/instances/i-0a1b2c3d"
    etcd_store.etcd.post("/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                     "value": base64.b64encode(b"[1, 2").decode()})  # fmt: skip
    for action in (lambda: etcd_store.all("instances"), lambda: etcd_store.check()):
        with pytest.raises(StateError) as info:
            action()
        message = str(info.value)
        assert "corrupt" in message and key in message and "\n" not in message


def test_allocate_and_release(store):
    candidates = [f"10.0.0.{n}" for n in range(2, 5)]
    with store.transaction() as tx:
        assert tx.allocate("ip:zone-a", iter(candidates), "i-1") == "10.0.0.2"
        assert tx.allocate("ip:zone-a", iter(candidates), "i-2") == "10.0.0.3"
        assert tx.allocate("ip:zone-b", iter(candidates), "i-3") == "10.0.0.2"  # own pool
    with store.transaction() as tx:
        assert tx.release("ip:zone-a", "10.0.0.2") is True
        assert tx.release("ip:zone-a", "10.0.0.2") is False
        assert tx.allocate("ip:zone-a", candidates, "i-4") == "10.0.0.2"
        assert tx.allocate("ip:zone-a", candidates, "i-4") == "10.0.0.4"
        with pytest.raises(StateError, match="pool ip:zone-a exhausted"):
            tx.allocate("ip:zone-a", candidates, "i-5")
        assert tx.allocations("ip:zone-a") == {
            "10.0.0.2": "i-4",
            "10.0.0.3": "i-2",
            "10.0.0.4": "i-4",
        }
        assert sorted(tx.release_owner("ip:zone-a", "i-4")) == ["10.0.0.2", "10.0.0.4"]
    with store.snapshot() as snap:
        assert snap.allocations("ip:zone-a") == {"10.0.0.3": "i-2"}
        assert snap.tables() == set()


class _Address:
    """Stands for a netaddr.IPAddress: stored by str(), returned as the object."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def test_allocate_returns_the_candidate_object(store):
    addresses = [_Address("10.0.0.2"), _Address("10.0.0.3")]
    with store.transaction() as tx:
        assert tx.allocate("ip", addresses, "i-1") is addresses[0]
        assert tx.allocate("ip", addresses, "i-2") is addresses[1]
        assert tx.release("ip", addresses[0])


# --- crashes (real child processes) --------------------------------------------------------


def _crash_in_transaction(path, where):
    store = StateStore(path)
    if where == "before-rename":
        os.replace = lambda *a: os._exit(3)  # the temp file is complete, the rename not done
    elif where == "mid-write":
        real_fdopen = os.fdopen

        def fdopen(fd, mode):
            f = real_fdopen(fd, mode)
            f.write = lambda data: (os.write(fd, data[: len(data) // 2]), os._exit(3))
            return f

        os.fdopen = fdopen
    with store.transaction() as tx:
        table = tx.table("instances")
        for rec in table.all():
            table.update(rec["id"], state="running")
        table.insert(_instance(padding="x" * 100_000))
        if where == "in-body":
            os._exit(3)


@pytest.mark.parametrize("where", ["in-body", "mid-write", "before-rename"])
def test_a_crash_leaves_the_old_content(file_store, where):
    store = file_store
    recs = [_instance() for _ in range(3)]
    with store.transaction() as tx:
        for rec in recs:
            tx.table("instances").insert(rec)
    before = store.path.read_bytes()

    child = SPAWN.Process(target=_crash_in_transaction, args=(store.path, where))
    child.start()
    child.join(30)
    assert child.exitcode == 3

    assert store.path.read_bytes() == before
    assert {r["state"] for r in store.all("instances")} == {"pending"}
    leftovers = [p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert bool(leftovers) == (where != "in-body")
    with store.transaction() as tx:  # the lock was released by the death; temps cleaned
        tx.table("instances").insert(_instance())
    assert not [p for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(store.all("instances")) == 4


# --- concurrency (8 real processes at once) ------------------------------------------------

WORKERS = 8
ROUNDS = {"tinydb": 50, "etcd": 4}  # etcd: ~15 ms a transaction on 3 members


def _worker(spec, rounds, barrier, worker):
    store = open_spec(spec)
    barrier.wait()
    mine = []
    for n in range(rounds):
        with store.transaction() as tx:  # read-modify-write of one counter
            counter = tx.table("counters")
            value = counter.get("c-total")["value"]
            counter.update("c-total", value=value + 1)
        with store.transaction() as tx:
            rec = tx.table("instances").insert(_instance(worker=worker, n=n))
        with store.transaction() as tx:
            ip = tx.allocate("ip", (f"10.1.{i // 256}.{i % 256}" for i in range(10_000)), rec["id"])
        mine.append((rec["id"], ip))
        with store.snapshot() as snap:  # readers see whole transactions only
            assert snap.allocations("ip").get(ip) == rec["id"]


def test_concurrent_processes_lose_and_duplicate_nothing(store):
    rounds = ROUNDS["etcd" if isinstance(store, EtcdStore) else "tinydb"]
    with store.transaction() as tx:
        tx.table("counters").insert({"id": "c-total", **OWNER, "value": 0})
    barrier = SPAWN.Barrier(WORKERS)
    procs = [
        SPAWN.Process(target=_worker, args=(spec_of(store), rounds, barrier, w))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WORKERS

    total = WORKERS * rounds
    assert store.get("counters", "c-total")["value"] == total
    instances = store.all("instances")
    assert len(instances) == total
    assert len({r["id"] for r in instances}) == total
    assert {(r["worker"], r["n"]) for r in instances} == {
        (w, n) for w in range(WORKERS) for n in range(rounds)
    }
    with store.snapshot() as snap:
        allocated = snap.allocations("ip")
    assert len(allocated) == total  # no value handed out twice
    assert sorted(allocated.values()) == sorted(r["id"] for r in instances)
    assert set(allocated) == {f"10.1.{i // 256}.{i % 256}" for i in range(total)}


def test_concurrent_threads_lose_nothing(store):
    """Threads of one process (an API worker's): each its own transactions."""
    with store.transaction() as tx:
        tx.table("counters").insert({"id": "c-total", **OWNER, "value": 0})

    def increment():
        for _ in range(10):
            with store.transaction() as tx:
                counter = tx.table("counters")
                counter.update("c-total", value=counter.get("c-total")["value"] + 1)

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert store.get("counters", "c-total")["value"] == 40


def test_a_state_is_of_one_cloud(store):
    with pytest.raises(StateMissing, match="no state (at|in) "):
        store.check()
    assert not written(store)  # refusing creates nothing
    assert store.initialize("cloud-a", "a") is True
    assert store.initialize("cloud-a", "a") is False
    store.check("cloud-a")
    store.check("")  # a configuration from before cloud ids
    with pytest.raises(ForeignState, match="is of cloud cloud-a, not of this cloud cloud-b"):
        store.check("cloud-b")
    with pytest.raises(ForeignState):
        store.initialize("cloud-b", "b")
    with store.snapshot() as snap:
        assert snap.identity() == "cloud-a" and snap.tables() == set()


def test_a_state_without_a_cloud_is_refused_until_adopted(store):
    with store.transaction() as tx:  # as a journal entry of a first deploy leaves it
        tx.table("operations").insert({"id": "x", "account": "a", "user": "u"})
    with pytest.raises(ForeignState, match="records no cloud id"):
        store.check("cloud-a")
    assert store.initialize("cloud-a", "a")
    store.check("cloud-a")
    assert store.get("operations", "x")["id"] == "x"

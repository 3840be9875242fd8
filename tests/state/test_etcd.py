"""What only the etcd backend has: the lease-based lock, compares that refuse a commit, the
journal's leased operations, members failing under a writer, migrating a state file into
etcd, TLS with client certificates. A real etcd cluster (tests/state/conftest.py)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from cloudctl import journal
from cloudctl.config import EtcdState, Settings
from cloudctl.state import EtcdStore, StateError, StateStore, _records, b64, migrate, open_store
from tests.conftest import poll
from tests.integration.cloud_client import cloudctl_here
from tests.state.conftest import etcd_state

OWNER = {"account": "admin", "user": "admin"}
SPAWN = multiprocessing.get_context("spawn")
PROJECT = Path(__file__).resolve().parents[2]


def _put(store: EtcdStore, key: str, value: str) -> None:
    store.etcd.post("/kv/put", {"key": b64(store.prefix + key), "value": b64(value)})


def _lock_lease(store: EtcdStore) -> str:
    [kv] = store.etcd.post("/kv/range", {"key": b64(store.prefix + "lock")})["kvs"]
    return kv["lease"]


def test_a_transaction_that_lost_its_lock_commits_nothing(etcd_store):
    etcd_store.initialize("cloud-a", "a")
    lost = pytest.raises(StateError, match="lock .* was lost before the commit.*nothing")
    with lost, etcd_store.transaction() as tx:
        # As if the lease expired (etcd unreachable longer than its TTL): the lock key goes.
        etcd_store.etcd.post("/kv/lease/revoke", {"ID": _lock_lease(etcd_store)})
        tx.table("instances").insert({"id": "i-0a1b2c3d", **OWNER})
    assert etcd_store.get("instances", "i-0a1b2c3d") is None


def test_a_record_changed_under_a_transaction_is_never_overwritten(etcd_store):
    with etcd_store.transaction() as tx:
        tx.table("counters").insert({"id": "c-1", **OWNER, "value": 0})
    changed = pytest.raises(StateError, match="changed under a transaction.*nothing was written")
    with changed, etcd_store.transaction() as tx:
        # A writer that does not hold the lock (its own was lost) changes the record.
        record = {**tx.table("counters").get("c-1"), "value": 41}
        _put(etcd_store, "t/counters/c-1", json.dumps(record))
        tx.table("counters").update("c-1", value=1)
        tx.table("counters").insert({"id": "c-2", **OWNER, "value": 0})
    assert etcd_store.get("counters", "c-1")["value"] == 41
    assert etcd_store.get("counters", "c-2") is None  # all or nothing


def test_a_commit_whose_answer_was_lost_is_not_applied_twice(etcd_store):
    """A commit retried on another member (the first answer lost with its member) finds its
    own token as the last commit: success, not a conflict and not a second write."""
    with etcd_store._locked() as lock:
        state = etcd_store._read()
        records = {"t/counters/c-1": {"id": "c-1", **OWNER, "value": 1}}
        assert etcd_store._commit(state, records, lock.token)
        revision = etcd_store._read().records["t/counters/c-1"].mod_revision
        assert etcd_store._commit(state, records, lock.token)  # the same request again
    assert etcd_store._read().records["t/counters/c-1"].mod_revision == revision


def test_reads_see_what_other_controllers_changed(etcd_store):
    """A process reads only what changed since its last read: deletions (the record count
    at that revision tells them) and creations by others are seen all the same."""
    with etcd_store.transaction() as tx:
        for name in ("i-1", "i-2", "i-3"):
            tx.table("instances").insert({"id": name, **OWNER, "state": "pending"})
    assert len(etcd_store.all("instances")) == 3
    etcd_store.etcd.post("/kv/deleterange", {"key": b64(etcd_store.prefix + "t/instances/i-1")})
    _put(etcd_store, "t/instances/i-4", json.dumps({"id": "i-4", **OWNER}))  # as many as before
    _put(etcd_store, "t/instances/i-2", json.dumps({"id": "i-2", **OWNER, "state": "running"}))
    assert [(r["id"], r.get("state")) for r in etcd_store.all("instances")] == [
        ("i-2", "running"), ("i-3", "pending"), ("i-4", None)]  # fmt: skip
    etcd_store.etcd.post("/kv/deleterange", {"key": b64(etcd_store.prefix + "t/instances/i-3")})
    assert [r["id"] for r in etcd_store.all("instances")] == ["i-2", "i-4"]


def _hold_lock_and_die(config: EtcdState, ready) -> None:
    store = EtcdStore(config, lock_ttl=2)
    with store.transaction() as tx:
        tx.table("instances").insert({"id": "i-0a1b2c3d", **OWNER})
        ready.set()
        time.sleep(300)  # killed here, holding the lock


def test_a_killed_holders_lock_frees_itself_when_its_lease_expires(etcd_cluster):
    config = etcd_state(etcd_cluster)
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_lock_and_die, args=(config, ready))
    holder.start()
    try:
        assert ready.wait(60), "the holder never took the lock"
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        started = time.monotonic()
        with EtcdStore(config, lock_wait=15).transaction() as tx:  # waits for the lease
            tx.table("instances").insert({"id": "i-1a2b3c4d", **OWNER})
        waited = time.monotonic() - started
    finally:
        if holder.is_alive():
            holder.kill()
    assert waited < 2 + 2, f"the lock stayed {waited:.1f} s after a 2 s lease"
    store = EtcdStore(config)
    assert [r["id"] for r in store.all("instances")] == ["i-1a2b3c4d"]  # the dead one's: none


def test_a_lock_held_too_long_is_one_clear_error(etcd_store):
    errors = []
    with etcd_store.transaction():  # another thread waits for it (not a nested one)

        def wait_for_lock():
            try:
                with EtcdStore(etcd_store.config, lock_wait=0.3).transaction():
                    pass
            except StateError as exc:
                errors.append(str(exc))

        other = threading.Thread(target=wait_for_lock)
        other.start()
        other.join(30)
    [message] = errors
    assert "still held by another transaction after 0 s" in message and "\n" not in message


JOURNAL_CHILD = """
import sys, time
from pathlib import Path
import cloudctl.state
from cloudctl import journal
from cloudctl.config import EtcdState, Settings
cloudctl.state.OPERATION_TTL = 2
endpoints, prefix, home = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
settings = Settings(project_dir=Path("."), inventory=Path("inventory"), home=Path(home),
                    state_etcd=EtcdState(tuple(endpoints), prefix))
journal.begin(settings, "op-killed", "instance-run", None, {"ids": ["i-0a1b2c3d"]})
print("begun", flush=True)
time.sleep(300)
"""


def test_the_journal_sees_a_killed_operation_from_any_controller(etcd_cluster, tmp_path):
    config = etcd_state(etcd_cluster)
    settings = Settings(project_dir=PROJECT, inventory=tmp_path, home=tmp_path, state_etcd=config)
    child = subprocess.Popen(
        [sys.executable, "-c", JOURNAL_CHILD, ",".join(config.endpoints), config.prefix,
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=PROJECT,
    )  # fmt: skip
    store = EtcdStore(config)
    try:
        assert child.stdout.readline().strip() == "begun"
        with store.snapshot() as snap:  # running: its lease is alive (whatever its pid says)
            assert snap.running_operations == {"op-killed"}
            assert journal.unfinished(snap) == []
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        started = time.monotonic()

        def interrupted():
            with store.snapshot() as snap:
                return journal.unfinished(snap)

        [entry] = poll(interrupted, "the killed operation seen as interrupted", 10, 0.1)
        assert time.monotonic() - started < 2 + 2  # its lease's TTL, and a margin
    finally:
        if child.poll() is None:
            child.kill()
    assert (entry["id"], entry["resources"]) == ("op-killed", ["i-0a1b2c3d"])
    # An operation that ends drops its lease: nothing left behind.
    journal.begin(settings, "op-done", "volume-create", None, {})
    journal.finish(settings, "op-done", True)
    with store.snapshot() as snap:
        assert snap.running_operations == set()
        assert [e["id"] for e in journal.unfinished(snap)] == ["op-killed"]


def _leader(store: EtcdStore) -> int:
    """The index of the member that leads the cluster."""
    for index, client in enumerate(store.etcd.clients):
        status = client.status()
        if status["leader"] == status["header"]["member_id"]:
            return index
    raise AssertionError("no member leads")


def test_a_member_killed_under_a_writer_loses_no_acknowledged_write(etcd_cluster):
    store = EtcdStore(etcd_state(etcd_cluster))
    acknowledged: list[int] = []
    times: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            try:
                with store.transaction() as tx:
                    tx.table("writes").insert({"id": f"w-{n}", **OWNER})
                acknowledged.append(n)  # the commit returned: the write is acknowledged
                times.append(time.monotonic())
            except StateError as exc:
                failures.append(str(exc))
            n += 1

    # The writer talks to the leader: killing it costs an election and a move to another member.
    store.etcd.current = _leader(store)
    victim = etcd_cluster.members[store.etcd.current]
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        poll(lambda: len(acknowledged) >= 20, "20 writes before the fault", 30, 0.05)
        etcd_cluster.kill(victim)
        before = len(acknowledged)
        poll(lambda: len(acknowledged) >= before + 20, "20 writes after the fault", 30, 0.05)
    finally:
        stop.set()
        thread.join(30)
        etcd_cluster.start_member(victim)  # the other tests get three members again
    assert etcd_cluster.members[store.etcd.current] is not victim  # moved to another member
    stored = {r["id"] for r in store.all("writes")}
    assert {f"w-{n}" for n in acknowledged} <= stored  # nothing acknowledged was lost
    assert failures == [] or all("\n" not in f for f in failures)
    pause = max(b - a for a, b in itertools.pairwise(times))
    print(f"leader killed: {len(acknowledged)} writes acknowledged, all kept; longest pause "
          f"{pause:.2f} s; {len(failures)} failed")  # fmt: skip
    etcd_cluster.wait_healthy(victim)


def test_etcd_unreachable_names_the_endpoints_tried(tmp_path):
    from tests.state.etcd_cluster import free_port

    endpoints = tuple(f"http://127.0.0.1:{free_port()}" for _ in range(2))
    store = EtcdStore(EtcdState(endpoints, "/x/"), retry_for=0.3)
    with pytest.raises(StateError) as info:
        store.check()
    message = str(info.value)
    assert message.startswith(f"etcd unreachable (tried {endpoints[0]}, {endpoints[1]} for 0 s)")
    assert "Connection refused" in message and "\n" not in message


def test_tls_with_client_certificates(etcd_tls):
    cluster, tls = etcd_tls
    files = {"ca_file": str(tls.ca_file), "cert_file": str(tls.client_cert),
             "key_file": str(tls.client_key)}  # fmt: skip
    store = EtcdStore(etcd_state(cluster, **files))
    assert cluster.endpoints[0].startswith("https://")
    assert store.initialize("cloud-a", "a")
    with store.transaction() as tx:
        tx.table("instances").insert({"id": "i-0a1b2c3d", **OWNER})
    assert store.get("instances", "i-0a1b2c3d")["id"] == "i-0a1b2c3d"
    for without in ("cert_file", "ca_file"):  # no client certificate; the server not trusted
        config = EtcdState(store.config.endpoints, store.prefix, ca_file=files["ca_file"])
        if without == "ca_file":
            config = EtcdState(store.config.endpoints, store.prefix)
        with pytest.raises(StateError, match=r"^etcd refused TLS \(tried https://") as info:
            EtcdStore(config).check()
        assert "\n" not in str(info.value)


def test_tls_files_rewritten_under_a_process_are_one_error_and_its_session_lives_on(
    etcd_tls, tmp_path
):
    """A deploy rewrites the client certificate cloudctl uses: meanwhile a request is one
    StateError (not requests' OSError), and the thread that keeps the session's lease alive
    survives it: the running operation's key is back once the files are."""
    cluster, tls = etcd_tls
    key = tmp_path / "client.key"
    key.write_bytes(tls.client_key.read_bytes())
    config = etcd_state(cluster, ca_file=str(tls.ca_file), cert_file=str(tls.client_cert),
                        key_file=str(key))  # fmt: skip
    store = EtcdStore(config, operation_ttl=2)
    assert store.initialize("cloud-a", "a")
    store.hold_operation("op-long")
    aside = key.rename(tmp_path / "client.key.aside")
    with pytest.raises(StateError, match=r"^cannot reach etcd on /test/") as info:
        store.check()
    assert "\n" not in str(info.value)
    other = EtcdStore(dataclasses.replace(config, key_file=str(tls.client_key)))

    def running(seen):
        with other.snapshot() as snap:
            return snap.running_operations == seen

    poll(lambda: running(set()), "the lease expired while the key file was gone", 10, 0.1)
    aside.rename(key)
    poll(lambda: running({"op-long"}), "the operation's key put again by the session", 10, 0.1)
    store.drop_operation("op-long")


# --- cloudctl state migrate -----------------------------------------------------------------


def realistic_state(path: Path, cloud_id: str) -> StateStore:
    """A state file with a record in every table cloudctl keeps, and allocations."""
    store = StateStore(path)
    store.initialize(cloud_id, "demo")
    tables = {
        "accounts": {"id": "admin"}, "users": {"id": "admin/admin"},
        "access_keys": {"id": "AKIA0123456789ABCDEF", "secret": "s3cr3t"},
        "instances": {"id": "i-0a1b2c3d", "state": "running", "ip": "172.31.0.5"},
        "volumes": {"id": "vol-0a1b2c3d", "size_gb": 1}, "snapshots": {"id": "snap-0a1b2c3d"},
        "images": {"id": "emi-0a1b2c3d", "sha256": "ab" * 32}, "keypairs": {"id": "key/with slash"},
        "groups": {"id": "sg-0a1b2c3d", "rules": [{"port": 22}]},
        "addresses": {"id": "eipalloc-0a1b2c3d"}, "buckets": {"id": "b1"},
        "operations": {"id": "ev-1", "state": "succeeded"}, "quotas": {"id": "admin"},
        "usage": {"id": "u-1", "event": "run"}, "tags": {"id": "i-0a1b2c3d/Name"},
    }  # fmt: skip
    with store.transaction() as tx:
        for table, record in tables.items():
            tx.table(table).insert({**record, **OWNER})
        tx.allocate("ip:zone-a", ["172.31.0.5"], "i-0a1b2c3d")
        tx.allocate("mac", ["d0:0d:0a:1b:2c:3d"], "i-0a1b2c3d")
    return store


def _cloudctl(tmp_path: Path, *argv: str, cloud: str | None = None):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    box:\n")
    env = {"CLOUDCTL_CLOUDS": str(tmp_path / "clouds.yaml"), "CLOUDCTL_CONFIG": None}
    if cloud:
        argv = ("--cloud", cloud, *argv)
    else:
        env |= {"CLOUDCTL_INVENTORY": str(inventory), "CLOUDCTL_HOME": str(tmp_path / "home")}
    return cloudctl_here(list(argv), env | {"CLOUDCTL_STATE": None, "CLOUDCTL_CLOUD": None})


def test_migrate_copies_a_state_file_into_etcd_once(etcd_cluster, tmp_path):
    source = realistic_state(tmp_path / "home" / "state.json", "cloud-0123456789abcdef")
    records = _records(json.loads(source.path.read_text()))
    prefix = f"/test/migrate-{os.getpid()}-{time.monotonic_ns()}/"
    endpoints = ",".join(etcd_cluster.endpoints)
    proc = _cloudctl(tmp_path, "state", "migrate", "--endpoints", endpoints, "--prefix", prefix)
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)  # the doc shows it
    first, second = proc.stdout.splitlines()
    assert first.startswith(
        f"migrated the state of cloud cloud-0123456789abcdef from {source.path}"
    )
    assert "instances 1" in first and "2 allocated values" in first
    [moved] = source.path.parent.glob("state.json.migrated-*")
    assert second == f"the file is now {moved}" and not source.path.exists()
    target = EtcdStore(EtcdState(tuple(etcd_cluster.endpoints), prefix))
    assert {k: r.doc for k, r in target._read().records.items()} == records
    target.check("cloud-0123456789abcdef")
    with target.snapshot() as snap:
        assert snap.allocations("mac") == {"d0:0d:0a:1b:2c:3d": "i-0a1b2c3d"}
        assert snap.table("keypairs").get("key/with slash")["id"] == "key/with slash"

    # Again (the deploy runs it on every converge): nothing to do. This time the cloud is
    # named with its state in etcd, as cloud.yml's state: names it on a CLC.
    clouds = {"default": "demo", "clouds": {"demo": {
        "inventory": str(tmp_path / "inventory.yml"), "home": str(tmp_path / "home"),
        "state": {"backend": "etcd", "endpoints": etcd_cluster.endpoints, "prefix": prefix}}}}  # fmt: skip
    (tmp_path / "clouds.yaml").write_text(yaml.safe_dump(clouds))
    again = _cloudctl(tmp_path, "state", "migrate", cloud="demo")
    assert (again.returncode, again.stdout) == (
        0,
        f"nothing to migrate: there is no state file at {source.path}\n",
    )
    shown = _cloudctl(tmp_path, "-o", "json", "state", "show", cloud="demo")
    assert (
        json.loads(shown.stdout)[0]["path"]
        == f"etcd prefix {prefix} at {', '.join(etcd_cluster.endpoints)}"
    )

    # A state file appears again: etcd holds a state already, of this cloud or another.
    for cloud_id, says in (("cloud-0123456789abcdef", "a state of this cloud"),
                           ("cloud-fedcba9876543210", "the state of cloud cloud-0123456789abcdef, not of this cloud")):  # fmt: skip
        source.path.unlink(missing_ok=True)
        realistic_state(source.path, cloud_id)
        with source.transaction() as tx:
            tx.table("instances").update("i-0a1b2c3d", state="stopped")
        refused = _cloudctl(tmp_path, "state", "migrate", cloud="demo")
        assert refused.returncode == 1 and refused.stdout == ""
        [line] = refused.stderr.splitlines()
        assert says in line and "nothing was written" in line, line
        assert source.path.exists()
    assert {k: r.doc for k, r in target._read().records.items()} == records  # untouched


def test_a_deploy_merges_the_state_file_of_its_cloudctl_into_the_clcs_state(etcd_cluster, tmp_path):
    """A cloud operated from a controller whose CLC became a pair: the CLC's own state went
    into etcd (the clc role's migrate); the controller's file is added to it, its secrets
    encrypted again with the shared key; a file that disagrees changes nothing."""
    from cryptography.fernet import Fernet

    from cloudctl.deploy import merge_state
    from cloudctl.identity import Identity, Principal

    cloud_id = "cloud-0123456789abcdef"
    clc = realistic_state(tmp_path / "clc" / "state.json", cloud_id)  # the CLC's, in etcd
    with clc.transaction() as tx:  # an admin made there at another time, a named group
        tx.table("accounts").update("admin", number="000000000001")
        tx.table("groups").update("sg-0a1b2c3d", name="web")
    etcd = etcd_state(etcd_cluster)
    migrate(clc, EtcdStore(etcd))
    held = EtcdStore(etcd)._load_all()

    home = tmp_path / "home"
    settings = Settings(project_dir=PROJECT, inventory=tmp_path, home=home, state_etcd=etcd)
    own = StateStore(settings.state_path)
    own.initialize(cloud_id, "demo")
    with own.transaction() as tx:
        tx.table("accounts").insert({"id": "admin", "number": "111111111111", **OWNER})
        tx.table("instances").insert({"id": "i-0f0f0f0f", "state": "running", **OWNER})
        tx.table("keypairs").insert({"id": "kp-1", "name": "mine", **OWNER})
        tx.allocate("ip:zone-a", ["172.31.0.9"], "i-0f0f0f0f")
    created = Identity(own).create_key(Principal("admin", "admin"))
    key_id, secret = created["access_key_id"], created["secret_access_key"]
    shared_key = home / "state.json.identity-key.etcd"  # where fetch_config put the CLC's
    shared_key.write_bytes(Fernet.generate_key())

    # Disagreeing: a key pair of the same name in both -> refused, nothing written.
    with own.transaction() as tx:
        tx.table("keypairs").insert({"id": "key/with slash", "name": "other", **OWNER})
    with pytest.raises(
        StateError, match="cannot merge .*: keypairs key/with slash differs; nothing was written"
    ):
        merge_state(settings)
    with own.transaction() as tx:  # a group named as one of the CLC's
        tx.table("keypairs").remove("key/with slash")
        tx.table("groups").insert({"id": "sg-0f0f0f0f", "name": "web", **OWNER})
    with pytest.raises(StateError, match="groups sg-0a1b2c3d and groups sg-0f0f0f0f have one name"):
        merge_state(settings)
    assert own.path.exists() and EtcdStore(etcd)._load_all() == held
    with pytest.raises(StateError, match="holds a state that is not in etcd.*--merge"):
        open_store(settings)

    with own.transaction() as tx:
        tx.table("groups").remove("sg-0f0f0f0f")
    done = merge_state(settings)
    assert done.merged and done.tables == {"access_keys": 1, "instances": 1, "keypairs": 1}
    assert done.kept == 2 and done.allocations == 1  # etcd's admin account and user stay
    assert not own.path.exists() and done.moved_to.exists()
    assert (done.moved_to.parent / (done.moved_to.name + ".identity-key")).exists()
    assert not shared_key.exists() and (home / "state.json.identity-key").exists()
    merged = open_store(settings)
    with merged.snapshot() as snap:
        assert snap.table("instances").get("i-0f0f0f0f")["state"] == "running"
        assert snap.table("instances").get("i-0a1b2c3d") is not None  # the CLC's
        assert snap.table("accounts").get("admin")["number"] == "000000000001"
        assert snap.allocations("ip:zone-a") == {"172.31.0.5": "i-0a1b2c3d",
                                                 "172.31.0.9": "i-0f0f0f0f"}  # fmt: skip
    assert Identity(merged).authenticate(key_id)[0] == secret


def test_a_merge_adopts_a_file_that_records_no_cloud_yet(etcd_cluster, tmp_path):
    """A first deploy of a CLC pair from a controller: its journal wrote the deploy's
    operation into a new state file before the cloud had an id."""
    etcd = etcd_state(etcd_cluster)
    EtcdStore(etcd).initialize("cloud-0123456789abcdef", "demo")
    own = StateStore(tmp_path / "state.json")
    with own.transaction() as tx:
        tx.table("operations").insert({"id": "ev-1", "state": "running", **OWNER})
    done = migrate(own, EtcdStore(etcd), merge=True)
    assert done.merged and done.tables == {"operations": 1} and not own.path.exists()
    assert EtcdStore(etcd).get("operations", "ev-1")["state"] == "running"
    EtcdStore(etcd).check("cloud-0123456789abcdef")


def test_migrate_finishes_a_copy_interrupted_before_the_rename(etcd_cluster, tmp_path):
    source = realistic_state(tmp_path / "state.json", "cloud-0123456789abcdef")
    target = EtcdStore(etcd_state(etcd_cluster))
    with target.transaction() as tx:  # the copy was committed, the process died after it
        tx._storage.write(json.loads(source.path.read_text()))
    done = migrate(source, target)
    assert done.moved_to.exists() and not source.path.exists()

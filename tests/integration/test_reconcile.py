"""Crash safety and reconcile, on the shared cloud-in-a-box (tests/integration/conftest.py).

cloudctl is killed (-9) in the middle of `instance run --count 3` (as its play starts, and
as the instances start), of `volume create` and of `volume attach`; an instance's domain
disappears behind cloudctl's back while it holds an elastic IP; a stray file lands in the
image cache. After each kill no process of the killed play is left within seconds
(cloudctl/playguard.py), the state file loads and the next command warns of the interrupted
operation. `reconcile` reports every drift, `reconcile --fix` repairs them, and a second
`reconcile` finds nothing: no leaked domain, target, reservation, NAT rule or address.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cloudctl import journal, playguard
from cloudctl.instances import REQUEST_OPERATION
from cloudctl.state import StateStore
from tests.conftest import labhost, poll
from tests.integration.cloud_client import BIN, in_host

pytestmark = pytest.mark.integration
CACHE_DIR = "/var/lib/cloud/nc/cache"
STRAY_SHA = "ab" * 32
PLAY_ENDS_WITHIN = 15  # seconds after cloudctl's death by which its play must be gone


def kill_during(cloud, *args: str, task: str = "") -> dict:
    """Start a cloudctl command and kill -9 it once its play has begun (with `task`: once
    that task has started); check that no process of its play outlives it by more than
    PLAY_ENDS_WITHIN seconds. Returns the operation's journal entry."""
    env = dict(os.environ, CLOUDCTL_HOME=str(cloud.home), PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("CLOUDCTL_CONFIG", None)
    proc = subprocess.Popen(
        [str(BIN / "cloudctl"), "--inventory", str(cloud.inventory), *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    store = StateStore(cloud.home / "state.json")

    def started():
        assert proc.poll() is None, f"cloudctl {' '.join(args)} ended before it was killed"
        with store.snapshot() as snap:
            entries = [e for e in snap.table(journal.TABLE).search(state=journal.RUNNING)
                       if e["pid"] == proc.pid and _plays(e)]  # fmt: skip
        return entries and (not task or task in _tasks_started(cloud.home, entries[0]["id"]))

    try:
        poll(started, f"{task or 'the play'} of cloudctl {' '.join(args)}", 300)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with store.snapshot() as snap:  # the state file loads; the operation was interrupted
        [entry] = [e for e in journal.unfinished(snap) if e["pid"] == proc.pid and _plays(e)]
    poll(lambda: not playguard.processes(entry["id"]),
         "the end of every process of the killed play", PLAY_ENDS_WITHIN)  # fmt: skip
    print(f"{' '.join(args[:2])} killed at {task or 'the start'}: "
          f"its play was gone {time.monotonic() - killed:.1f}s later")  # fmt: skip
    # A module already running on the host runs to its end (it carries no tag): let it.
    poll(lambda: not _host_modules(cloud.host), "the end of the modules on the host", 300)
    return entry


def _plays(entry: dict) -> bool:
    """A journal entry of a play (a launch request waiting for its round has one too)."""
    return entry["operation"] != REQUEST_OPERATION


def _tasks_started(home: Path, event_id: str) -> set[str]:
    """Tasks whose start the play of an operation has recorded (its job events)."""
    names = set()
    for path in home.glob(f"runs/*-{event_id}/artifacts/{event_id}/job_events/*.json"):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):  # being written
            continue
        if event.get("event") == "playbook_on_task_start":
            names.add(event["event_data"].get("task", ""))
    return names


def _host_modules(host: str) -> list[int]:
    """Ansible modules running on a lab host: with pipelining, `/bin/sh -c PYTHON && sleep 0`
    (lab hosts share the machine's PID namespace; their processes are found by netns)."""
    found = []
    for pid in labhost.netns_pids(labhost.netns_of(host)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"/bin/sh", b"-c"] and argv[2].endswith(b" && sleep 0"):
            found.append(pid)
    return found


def drifts(cloud, *args: str) -> tuple[int, list[dict]]:
    """`cloudctl reconcile`: its exit code (0 nothing left, 1 drift left) and its rows."""
    proc = cloud.cloudctl("-o", "json", "reconcile", *args, ok=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_kill_during_instance_run_is_seen_and_reconciled(ops_cloud):
    c = ops_cloud
    launch = ["instance", "run", "--image", c.ids["emi"], "--type", "m1.small",
              "--keypair", "ops", "--count", "3"]  # fmt: skip
    entries, launched = [], []
    for task in ("", "Start the instances"):
        before = {i["id"] for i in c.json("instance", "list")}
        entries.append(kill_during(c, *launch, task=task))
        launched.append(sorted({i["id"] for i in c.json("instance", "list")} - before))
    assert [len(ids) for ids in launched] == [3, 3], launched
    assert all(set(ids) <= set(e["resources"]) for e, ids in zip(entries, launched, strict=True))
    listing = c.cloudctl("instance", "list")  # the state loads, and the next command warns
    for entry, ids in zip(entries, launched, strict=True):
        assert f"(event {entry['id']}" in listing.stderr and ids[0] in listing.stderr
    assert "run cloudctl reconcile" in listing.stderr
    c.ids["killed_instances"] = launched[0] + launched[1]

    rc, found = drifts(c)
    kinds = {(d["kind"], d["resource"]) for d in found}
    assert rc == 1 and {("interrupted-operation", e["id"]) for e in entries} <= kinds, found
    assert not [d for d in found if d["kind"] == "leftover-play"], found  # the guard ended them
    # Depending on the moment of the kill an instance's domain exists (pending -> running)
    # or not (pending -> failed).
    for iid in c.ids["killed_instances"]:
        assert kinds & {("lost-instance", iid), ("state-mismatch", iid)}, (iid, found)


def test_kill_during_volume_create_is_reconciled(ops_cloud):
    c = ops_cloud
    entry = kill_during(c, "volume", "create", "--size", "1")
    [vid] = entry["resources"]
    c.ids["killed_volume"] = vid
    _, found = drifts(c)
    assert ("unfinished-create", vid) in {(d["kind"], d["resource"]) for d in found}, found


def test_kill_during_volume_attach_is_reconciled(ops_cloud):
    c = ops_cloud
    [inst] = c.json("instance", "run", "--image", c.ids["emi"], "--type", "m1.small",
                    "--keypair", "ops")  # fmt: skip
    iid = inst["id"]
    poll(lambda: c.json("instance", "show", iid)[0]["state"] == "running", "running", 300)
    vid = c.json("volume", "create", "--size", "1")[0]["id"]
    c.ids["attach"] = (iid, vid)
    entry = kill_during(c, "volume", "attach", vid, "--instance", iid, task="Attach the volume")
    assert vid in entry["resources"]
    _, found = drifts(c)
    assert ("interrupted-operation", entry["id"]) in {(d["kind"], d["resource"]) for d in found}


def test_lost_instance_with_an_elastic_ip(ops_cloud):
    c = ops_cloud
    [inst] = c.json("instance", "run", "--image", c.ids["emi"], "--type", "m1.small",
                    "--keypair", "ops")  # fmt: skip
    iid = inst["id"]
    poll(lambda: c.json("instance", "show", iid)[0]["state"] == "running", "running", 300)
    [address] = c.json("address", "allocate")
    c.cloudctl("address", "associate", address["public_ip"], "--instance", iid)
    c.ids["lost"] = (iid, address["public_ip"])
    for command in (["destroy", iid], ["undefine", iid]):
        assert in_host(c.host, "virsh", "-c", "qemu:///system", *command).returncode == 0
    in_host(c.host, "touch", f"{CACHE_DIR}/{STRAY_SHA}")

    _, found = drifts(c)
    kinds = {(d["kind"], d["resource"]) for d in found}
    assert ("lost-instance", iid) in kinds and ("orphan-cache", STRAY_SHA) in kinds, found


def test_fix_repairs_everything_and_converges(ops_cloud):
    c = ops_cloud
    lost, public_ip = c.ids["lost"]
    rc, fixed = drifts(c, "--fix")
    assert rc == 0 and all(d["fixed"] for d in fixed), fixed
    rc, again = drifts(c)
    assert (rc, again) == (0, []), again

    lost_record = c.json("instance", "show", lost)[0]
    assert lost_record["state"] == "failed" and "no domain" in lost_record["reason"]
    [address] = [a for a in c.json("address", "list") if a["public_ip"] == public_ip]
    assert not address.get("instance")
    volume = c.json("volume", "show", c.ids["killed_volume"])[0]
    assert volume["state"] == "error" and "interrupted" in volume["reason"]
    for iid in c.ids["killed_instances"]:
        killed = c.json("instance", "show", iid)[0]
        assert killed["state"] in ("failed", "running"), killed
    iid, vid = c.ids["attach"]
    volume = c.json("volume", "show", vid)[0]
    disks = in_host(c.host, "virsh", "-c", "qemu:///system", "domblklist", iid).stdout
    if volume["state"] == "in-use":  # the attach got through before the kill
        assert volume["instance"] == iid and vid in disks, (volume, disks)
    else:
        assert volume["state"] == "available" and vid not in disks, (volume, disks)

    nat = in_host(c.host, "iptables", "-w", "-t", "nat", "-S").stdout
    assert public_ip not in nat
    assert f"cloud-i-{lost[2:]}" not in in_host(c.host, "iptables", "-w", "-S").stdout
    assert in_host(c.host, "ls", f"{CACHE_DIR}/{STRAY_SHA}").returncode != 0
    targets = in_host(c.host, "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show")
    assert c.ids["killed_volume"] not in targets.stdout
    with StateStore(c.home / "state.json").snapshot() as snap:
        assert journal.unfinished(snap) == []
        owners = {owner for pool in snap.pools() for owner in snap.allocations(pool).values()}
    assert lost not in owners
    assert "Warning" not in c.cloudctl("instance", "list").stderr

    # Clean up what this file launched, for the tests after it (one play for all).
    live = [r["id"] for r in c.json("instance", "list") if r["state"] != "terminated"]
    if live:
        c.cloudctl("instance", "terminate", *live)
    c.cloudctl("address", "release", public_ip)
    c.cloudctl("volume", "delete", c.ids["killed_volume"])
    c.cloudctl("volume", "delete", vid)

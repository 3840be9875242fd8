"""Crash safety and reconcile, on the shared cloud-in-a-box (tests/integration/conftest.py).

cloudctl is killed (-9) in the middle of `instance run` and of `volume create`; an
instance's domain disappears behind cloudctl's back while it holds an elastic IP; a stray
file lands in the image cache. After each kill the state file loads and the next command
warns of the interrupted operation. `reconcile` reports every drift, `reconcile --fix`
repairs them, and a second `reconcile` finds nothing: no leaked domain, target,
reservation, NAT rule or address.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cloudctl import journal
from cloudctl.state import StateStore
from tests.integration.cloud_client import BIN, in_host

pytestmark = pytest.mark.integration
CACHE_DIR = "/var/lib/cloud/nc/cache"
STRAY_SHA = "ab" * 32


def poll(check, what: str, deadline_s: float = 300):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)  # poll interval, not a wait for an outcome
    pytest.fail(f"{what} not within {deadline_s}s")


def kill_during(cloud, *args: str) -> dict:
    """Start a cloudctl command, kill -9 it once its play has begun; the journal entry."""
    env = dict(os.environ, CLOUDCTL_HOME=str(cloud.home), PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.Popen(
        [str(BIN / "cloudctl"), "--inventory", str(cloud.inventory), *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    store = StateStore(cloud.home / "state.json")

    def started():
        with store.snapshot() as snap:
            return [e for e in snap.table(journal.TABLE).search(state=journal.RUNNING)
                    if e["pid"] == proc.pid]  # fmt: skip

    try:
        [entry] = poll(started, f"the play of cloudctl {' '.join(args)}", 120)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # What the killed cloudctl had started may still run for a moment: let it end.
    poll(lambda: not _own_processes(cloud.home), "the end of the killed play's processes", 300)
    poll(lambda: in_host(cloud.host, "pgrep", "-f", "AnsiballZ").returncode == 1,
         "the end of the killed play's modules on the host", 300)  # fmt: skip
    return entry


def _own_processes(home: Path) -> list[int]:
    """Processes whose environment names this cloud's CLOUDCTL_HOME (ansible-playbook...)."""
    needle = f"CLOUDCTL_HOME={home}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def drifts(cloud, *args: str) -> tuple[int, list[dict]]:
    """`cloudctl reconcile`: its exit code (0 nothing left, 1 drift left) and its rows."""
    proc = cloud.cloudctl("-o", "json", "reconcile", *args, ok=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_kill_during_instance_run_is_seen_and_reconciled(ops_cloud):
    c = ops_cloud
    entry = kill_during(c, "instance", "run", "--image", c.ids["emi"], "--type", "m1.small",
                        "--keypair", "ops")  # fmt: skip
    [iid] = [r for r in entry["resources"] if r.startswith("i-")]
    listing = c.cloudctl("instance", "show", iid)  # the state loads
    assert "operation instance-run of" in listing.stderr and iid in listing.stderr
    assert "run cloudctl reconcile" in listing.stderr
    c.ids["killed_instance"] = iid

    rc, found = drifts(c)
    kinds = {(d["kind"], d["resource"]) for d in found}
    assert rc == 1 and ("interrupted-operation", entry["id"]) in kinds
    # Depending on the moment of the kill the domain exists (pending -> running) or not.
    assert kinds & {("lost-instance", iid), ("state-mismatch", iid)}, found


def test_kill_during_volume_create_is_reconciled(ops_cloud):
    c = ops_cloud
    entry = kill_during(c, "volume", "create", "--size", "1")
    [vid] = entry["resources"]
    c.ids["killed_volume"] = vid
    _, found = drifts(c)
    assert ("unfinished-create", vid) in {(d["kind"], d["resource"]) for d in found}, found


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
    killed = c.json("instance", "show", c.ids["killed_instance"])[0]
    assert killed["state"] in ("failed", "running"), killed

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

    # Clean up what this file launched, for the tests after it.
    for record in c.json("instance", "list"):
        if record["state"] not in ("terminated",):
            c.cloudctl("instance", "terminate", record["id"])
    c.cloudctl("address", "release", public_ip)
    c.cloudctl("volume", "delete", c.ids["killed_volume"])

"""Several cloudctl processes at once against the shared cloud-in-a-box (ops_cloud).

Every test starts N cloudctl processes together (subprocess.Popen, all started before any is
waited for) and checks that none of them lost or duplicated a record, that no IP, MAC,
elastic IP or iSCSI target was handed out twice, and that what the processes deleted is
gone from the state and from the host. The runs' own timestamps (summary.json of each
event) show that the plays really overlapped; launches instead share plays (requests that
arrive while a launch play runs go into the next one): the journal shows fewer plays than
requests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime

import pytest

from cloudctl.addresses import pool as eip_pool
from cloudctl.instances import MAC_POOL, PLAY_OPERATION, ip_pool
from cloudctl.state import StateStore, utc_now
from tests.integration.cloud_client import BIN, in_host
from tests.integration.conftest import OPS_POOL

pytestmark = pytest.mark.integration
VOLUMES = 8
ADDRESS_EXTRA = 3  # allocations beyond the pool's free addresses: they must fail, exit 4
LAUNCHES = (1, 1, 1, 1, 1, 2)  # --count of each concurrent `instance run`
BOOT_DEADLINE = 900  # seconds for the TCG guests to boot and take their DHCP leases
ZONE = "zone-a"


@dataclass
class Done:
    args: list[str]
    rc: int
    stdout: str
    stderr: str

    def json(self):
        assert self.rc == 0, f"cloudctl {' '.join(self.args)}: rc {self.rc}\n{self.stderr}"
        return json.loads(self.stdout)


def together(c, commands: list[list[str]], timeout: float = 1800) -> list[Done]:
    """Start every command before waiting for any; return their outcomes in order."""
    env = dict(os.environ, CLOUDCTL_HOME=str(c.home), PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("CLOUDCTL_CONFIG", None)
    procs = [
        subprocess.Popen(
            [str(BIN / "cloudctl"), "--inventory", str(c.inventory), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in commands
    ]
    deadline = time.monotonic() + timeout
    done = []
    for args, proc in zip(commands, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()  # only the processes this test started
            pytest.fail(f"cloudctl {' '.join(args)} did not end within {timeout}s")
        assert "Traceback" not in err, err
        done.append(Done(args, proc.returncode, out, err))
    return done


def state(c) -> StateStore:
    return StateStore(c.home / "state.json")


def allocations(c, pool_name: str) -> dict[str, str]:
    with state(c).snapshot() as snap:
        return snap.allocations(pool_name)


def raw_ids(c, table: str) -> list[str]:
    """The `id` of every document of a table, duplicates included (read from the file)."""
    data = json.loads((c.home / "state.json").read_text())
    return [doc["id"] for doc in data.get(table, {}).values()]


def assert_overlapped(c, events: list[str]) -> None:
    """The plays of these events ran at the same time (at least two at one moment)."""
    spans = []
    for event in events:
        (run,) = list((c.home / "runs").glob(f"*-{event}"))
        summary = json.loads((run / "summary.json").read_text())
        start = datetime.fromisoformat(summary["started"])
        spans.append((start, datetime.fromisoformat(summary["finished"])))
    points = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])
    running = most = 0
    for _, step in points:
        running += step
        most = max(most, running)
    assert most >= 2, f"the runs did not overlap: {spans}"


def targets(host: str) -> str:
    shown = in_host(host, "tgtadm", "--lld", "iscsi", "--op", "show", "--mode", "target")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_concurrent_volume_create_and_delete(ops_cloud):
    c = ops_cloud
    before = {v["id"] for v in c.json("volume", "list")}
    targets_before = targets(c.host)

    created = together(c, [["-o", "json", "volume", "create", "--size", "1"]] * VOLUMES)
    records = [d.json()[0] for d in created]
    ids = [r["id"] for r in records]
    assert len(set(ids)) == VOLUMES, ids
    assert {r["state"] for r in records} == {"available"}
    listed = [v for v in c.json("volume", "list") if v["id"] not in before]
    assert sorted(v["id"] for v in listed) == sorted(ids)  # none lost, none extra
    assert sorted(i for i in raw_ids(c, "volumes") if i not in before) == sorted(ids)
    shown = [c.json("volume", "show", vid)[0] for vid in ids]
    assert len({v["iqn"] for v in shown}) == VOLUMES
    assert_overlapped(c, [v["event"] for v in shown])
    exported = targets(c.host)
    for v in shown:  # one target per volume, each with its own tid
        assert exported.count(f"{v['iqn']}\n") == 1, exported
    tids = [line.split(":")[0] for line in exported.splitlines() if line.startswith("Target ")]
    assert len(tids) == len(set(tids)), exported

    deleted = together(c, [["-o", "json", "volume", "delete", vid] for vid in ids])
    assert {d.json()[0]["state"] for d in deleted} == {"deleted"}
    after = {v["id"]: v for v in c.json("volume", "list") if v["id"] in ids}
    assert sorted(after) == sorted(ids)  # still one record each, none duplicated
    assert {v["state"] for v in after.values()} == {"deleted"}
    assert not [v for v in c.json("volume", "list", "--state", "available") if v["id"] in ids]
    left = targets(c.host)
    assert not [vid for vid in ids if vid in left], left
    assert left == targets_before
    files = in_host(c.host, "sh", "-c", "ls -A /var/lib/cloud/sc/volumes")
    assert not [vid for vid in ids if vid in files.stdout], files.stdout


def test_concurrent_address_allocate_and_release(ops_cloud):
    c = ops_cloud
    pool_name = eip_pool(ZONE)
    pool_size = sum(1 for _ in ipaddress.ip_network(OPS_POOL).hosts())
    taken = allocations(c, pool_name)
    free = pool_size - len(taken)
    assert free >= 10, f"the pool has {free} free addresses: {taken}"

    runs = together(c, [["-o", "json", "address", "allocate"]] * (free + ADDRESS_EXTRA))
    won = [d.json()[0] for d in runs if d.rc == 0]
    lost = [d for d in runs if d.rc != 0]
    assert len(won) == free and len(lost) == ADDRESS_EXTRA, [d.stderr for d in lost]
    for d in lost:  # an exhausted pool: one line, exit 4
        assert d.rc == 4 and d.stderr.count("\n") == 1 and "Error:" in d.stderr, d.stderr
    addresses = [a["public_ip"] for a in won]
    assert len(set(addresses)) == free and len({a["id"] for a in won}) == free
    in_use = allocations(c, pool_name)
    assert len(in_use) == pool_size  # every address of the pool, each once
    assert {ip: in_use[ip] for ip in addresses} == {a["public_ip"]: a["id"] for a in won}
    listed = [a for a in c.json("address", "list") if a["id"] in {w["id"] for w in won}]
    assert sorted(a["public_ip"] for a in listed) == sorted(addresses)

    released = together(c, [["address", "release", a["id"]] for a in won])
    assert [d.rc for d in released] == [0] * free, [d.stderr for d in released]
    assert allocations(c, pool_name) == taken
    assert not {a["id"] for a in c.json("address", "list")} & {a["id"] for a in won}
    assert not set(raw_ids(c, "addresses")) & {a["id"] for a in won}


def cc_zone(host: str) -> dict:
    shown = in_host(host, "cat", "/etc/cloud/cc/cc.json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["zones"][ZONE]


def leases(host: str, lease_file: str) -> str:
    return in_host(host, "cat", lease_file).stdout


def launch_plays(c, since: str) -> list[dict]:
    """The journal's launch plays (one per launch round) begun since `since`."""
    with state(c).snapshot() as snap:
        entries = snap.table("operations").search(operation=PLAY_OPERATION)
    return [e for e in entries if e["created"] > since]


def test_concurrent_instance_run_and_terminate(ops_cloud):
    c = ops_cloud
    emi = c.ids["emi"]
    before = {i["id"] for i in c.json("instance", "list")}
    started = utc_now()
    launches = together(
        c,
        [["-o", "json", "instance", "run", "--image", emi, "--type", "m1.small",
          "--keypair", "ops", "--count", str(n)] for n in LAUNCHES],
    )  # fmt: skip
    # Every instance these launches recorded, whatever their commands said.
    ids = [i["id"] for i in c.json("instance", "list") if i["id"] not in before]
    try:
        launched = [i for d in launches for i in d.json()]
        assert sorted(i["id"] for i in launched) == sorted(ids)
        assert len(ids) == sum(LAUNCHES) and len(set(ids)) == len(ids), ids
        shown = {iid: c.json("instance", "show", iid)[0] for iid in ids}
        assert len({i["reservation"] for i in shown.values()}) == len(LAUNCHES)
        assert sorted(len(d.json()) for d in launches) == sorted(LAUNCHES)  # each its own
        assert len({i["private_ip"] for i in shown.values()}) == len(ids), shown
        assert len({i["mac"] for i in shown.values()}) == len(ids), shown
        # Launches that arrive while a play runs share the next one (cloudctl/launches.py):
        # fewer plays than requests, each play the event of the instances it started.
        plays = launch_plays(c, started)
        assert 1 <= len(plays) < len(LAUNCHES), plays
        assert {i["event"] for i in shown.values()} <= {p["id"] for p in plays}
        for play in plays:
            assert {iid for iid, i in shown.items() if i["event"] == play["id"]} <= set(
                play["resources"]
            )
        assert {p["state"] for p in plays} == {"succeeded"}

        # Running in the state, and the guests really boot: each takes its reserved address.
        zone = cc_zone(c.host)
        deadline = time.monotonic() + BOOT_DEADLINE
        while True:
            states = {i["id"]: i["state"] for i in c.json("instance", "list") if i["id"] in ids}
            held = leases(c.host, zone["lease_file"])
            booted = {iid for iid, i in shown.items() if f"{i['mac']} {i['private_ip']} " in held}
            if set(states.values()) == {"running"} and booted == set(ids):
                break
            assert "failed" not in states.values(), states
            if time.monotonic() > deadline:
                pytest.fail(f"not all running and leased in {BOOT_DEADLINE}s: {states} {held}")
            time.sleep(1)  # poll interval
        with state(c).snapshot() as snap:
            ips, macs = snap.allocations(ip_pool(ZONE)), snap.allocations(MAC_POOL)
        for iid, i in shown.items():
            assert ips[i["private_ip"]] == iid and macs[i["mac"]] == iid
            reservation = in_host(c.host, "cat", f"{zone['hosts_dir']}/{iid}")
            assert reservation.returncode == 0, reservation.stderr
            assert reservation.stdout.strip() == f"{i['mac']},{i['private_ip']},{iid}"
        domains = in_host(c.host, "virsh", "-c", "qemu:///system", "list", "--name")
        assert set(ids) <= set(domains.stdout.split()), domains.stdout
    finally:
        ended = together(c, [["-o", "json", "instance", "terminate", iid] for iid in ids])
    assert {d.json()[0]["state"] for d in ended} == {"terminated"}, [d.stderr for d in ended]
    assert_overlapped(c, sorted({c.json("instance", "show", iid)[0]["event"] for iid in ids}))

    with state(c).snapshot() as snap:
        owners = {**snap.allocations(ip_pool(ZONE)), **snap.allocations(MAC_POOL)}
    assert not set(owners.values()) & set(ids), owners
    reservations = in_host(c.host, "ls", "-A", zone["hosts_dir"]).stdout.split()
    assert not set(reservations) & set(ids), reservations
    held = leases(c.host, zone["lease_file"])
    assert not [i["mac"] for i in shown.values() if i["mac"] in held], held
    domains = in_host(c.host, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
    assert not set(domains.stdout.split()) & set(ids), domains.stdout
    rules = in_host(c.host, "iptables-save").stdout + in_host(c.host, "ebtables-save").stdout
    hexes = [iid.split("-", 1)[1] for iid in ids]
    leaked = [line for line in rules.splitlines() if any(h in line for h in hexes)]
    assert not leaked, leaked

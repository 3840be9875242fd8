"""cloudctl's own cost: `instance list` over a big state, and many cloudctl processes at once.

- `instance list` (table and -o json) with 1,000 instance records, seeded with
  cloudctl.state.StateStore in a temporary CLOUDCTL_HOME in the shape cloudctl/instances.py
  records them (with their IP and MAC allocations); and with an empty state (the start-up
  cost of cloudctl itself).
- 20 `group create` at once against the demo cloud's state (state-changing, no guest
  needed), 20 `instance list -o json` at once (reads), 20 `group delete` at once, each
  against one such command alone. Afterwards every created group must be there exactly once
  and every deleted one gone, the groups that were there before untouched.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections import Counter
from pathlib import Path

from common import Row, cloudctl, cloudctl_argv, env, median, timed

from cloudctl import instances as inst
from cloudctl.identity import current_owner
from cloudctl.ids import new_id
from cloudctl.state import StateStore

RECORDS = 1000
CONCURRENT = 20
SEED_SUBNET = "172.16.0.0/20"  # records only: nothing is started, no address is used
SEED_CLOUD = "cloud-bench0000000000"


def seed_states(work: Path, count: int = RECORDS) -> None:
    """work/home-empty: a state with no record; work/home-1000: `count` instances."""
    StateStore(work / "home-empty" / "state.json").initialize(SEED_CLOUD, "bench")
    seed_instances(work / "home-1000", count)


def seed_instances(home: Path, count: int = RECORDS) -> None:
    """`count` running instances as a launch of cloudctl records them, in one transaction."""
    owner = current_owner()
    store = StateStore(home / "state.json")
    store.initialize(SEED_CLOUD, "bench")  # cloudctl works only on a state of a cloud
    types = [("m1.small", 1, 128, 2), ("c1.medium", 1, 256, 5), ("m1.large", 2, 512, 10)]
    with store.transaction() as tx:
        table = tx.table(inst.TABLE)
        addresses = inst.ip_candidates(SEED_SUBNET, "172.16.0.1")
        for n in range(count):
            iid = new_id("instance")
            ip = tx.allocate(inst.ip_pool("zone-a"), [next(addresses)], iid)
            mac = tx.allocate(inst.MAC_POOL, inst.mac_candidates(), iid)
            name, cpus, memory_mb, disk_gb = types[n % len(types)]
            table.insert(
                {
                    "id": iid,
                    "account": owner.account,
                    "user": owner.user,
                    "reservation": f"r-{n // 4:08x}",
                    "launch_index": n % 4,
                    "image_id": "emi-0badcafe",
                    "kernel_id": "eki-0badcafe",
                    "ramdisk_id": "eri-0badcafe",
                    "type": name,
                    "vcpus": cpus,
                    "memory_mb": memory_mb,
                    "disk_gb": disk_gb,
                    "zone": "zone-a",
                    "node": f"nc{n % 8}",
                    "cc": "cc0",
                    "private_ip": str(ip),
                    "mac": mac,
                    "keypair": "demo",
                    "groups": ["sg-0badcafe"],
                    "state": "running",
                    "reason": "",
                    "event": f"{n:08x}",
                }
            )


def run_ok(argv: list[str], home: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env(home), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr}")
    return proc.stdout


def list_rows(work: Path, base: float, repeat: int) -> list[Row]:
    """`instance list` over work/home-1000 (seeded) and an empty state home."""
    big, empty = work / "home-1000", work / "home-empty"
    listed = json.loads(run_ok(cloudctl_argv("-o", "json", "instance", "list"), big))
    if len(listed) != RECORDS:
        raise SystemExit(f"instance list shows {len(listed)} of {RECORDS} seeded records")
    runs = max(repeat, 5)
    rows = []
    for name, home, args in [
        ("instance list, empty state (cloudctl start-up)", empty, ["instance", "list"]),
        (f"instance list, {RECORDS:,} instances (table)", big, ["instance", "list"]),
        (
            f"instance list, {RECORDS:,} instances (-o json)",
            big,
            ["-o", "json", "instance", "list"],
        ),
    ]:
        argv = cloudctl_argv(*args)
        seconds = median([timed(lambda argv=argv, h=home: run_ok(argv, h))[0] for _ in range(runs)])
        rows.append(Row(name, seconds, "s", [("baseline", base)]))
    return rows


def children_cpu() -> float:
    """CPU seconds (user + system) of every child process reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def alone(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one cloudctl command."""
    cpu = children_cpu()
    seconds, _ = timed(lambda: run_ok(argv))
    return seconds, children_cpu() - cpu


def at_once(argvs: list[list[str]]) -> tuple[float, float, list[str]]:
    """Wall time from starting all the commands to the last one's end, their CPU seconds
    together, their outputs."""
    cpu = children_cpu()
    start = time.perf_counter()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        for argv in argvs
    ]
    outs = []
    for argv, proc in zip(argvs, procs, strict=True):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv[1:])} failed:\n{err}")
        outs.append(out)
    return time.perf_counter() - start, children_cpu() - cpu, outs


def group_names() -> Counter:
    return Counter(g["name"] for g in cloudctl("group", "list"))


def concurrency_rows(base: float, repeat: int) -> tuple[list[Row], list[str]]:
    """Rows, and the lines of the lost/duplicated check."""
    tag = f"bench-{os.getpid()}"
    before = group_names()
    rows, checks = [], []

    solo = [f"{tag}-solo-{n}" for n in range(repeat)]
    read = ["-o", "json", "instance", "list"]
    alone_create = [alone(cloudctl_argv("group", "create", n)) for n in solo]
    alone_read = [alone(cloudctl_argv(*read)) for _ in range(repeat)]
    alone_delete = [alone(cloudctl_argv("group", "delete", n)) for n in solo]

    names = [f"{tag}-{i:02d}" for i in range(CONCURRENT)]
    create = at_once([cloudctl_argv("group", "create", n) for n in names])
    after_create = group_names()
    read_batch = at_once([cloudctl_argv(*read) for _ in range(CONCURRENT)])
    outs = read_batch[2]
    delete = at_once([cloudctl_argv("group", "delete", n) for n in names])
    after_delete = group_names()

    for label, solo_runs, (wall, cpu, _) in [
        ("group create", alone_create, create),
        ("instance list -o json", alone_read, read_batch),
        ("group delete", alone_delete, delete),
    ]:
        one = median([w for w, _ in solo_runs])
        one_cpu = median([c for _, c in solo_runs])
        rows.append(Row(f"{label}, one alone", one, "s", [("baseline", base)]))
        rows.append(
            Row(
                f"{CONCURRENT} x {label} at once (wall time of all)",
                wall,
                "s",
                [("one alone", one), ("baseline", base)],
            )
        )
        checks.append(
            f"CPU (user + system) of `{label}`: {one_cpu:.2f} s alone, "
            f"{cpu / CONCURRENT:.2f} s each in the batch; the batch kept "
            f"{cpu / wall:.2f} of the {os.cpu_count()} cores busy."
        )

    created = [n for n in names if after_create[n] == 1]
    duplicated = [n for n in names if after_create[n] > 1]
    others_changed = {n: c for n, c in after_create.items() if n not in names} != dict(before)
    left = [n for n in names if after_delete[n]]
    reads = {json.dumps(sorted(r["id"] for r in json.loads(out))) for out in outs}
    checks.append(
        f"{CONCURRENT} concurrent `group create`: {len(created)} groups recorded once, "
        f"{CONCURRENT - len(created) - len(duplicated)} lost, {len(duplicated)} duplicated; "
        f"other groups {'CHANGED' if others_changed else 'unchanged'} "
        f"(default groups: {after_create['default']})."
    )
    checks.append(
        f"{CONCURRENT} concurrent `group delete`: {CONCURRENT - len(left)} removed, "
        f"{len(left)} left; state after = state before: {after_delete == before}."
    )
    checks.append(
        f"{CONCURRENT} concurrent `instance list`: {len(reads)} distinct answer(s) "
        "(1 = all saw the same instances)."
    )
    return rows, checks

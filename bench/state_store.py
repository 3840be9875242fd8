#!/usr/bin/env python3
"""The state store's transactions per second: the TinyDB file (one CLC) against etcd (a CLC
pair: three members on loopback, tests/state/etcd_cluster.py), on the same machine.

Each transaction is a read-modify-write of one counter record, as cloudctl's own are: the
whole state is read, one record changes. Two states: one record, and the 1,000 instances
(with their IP and MAC allocations) of bench/cli.py (copied into etcd by `migrate`). One
process alone, then 4 processes at once (the lock serializes them: the figure is the sum).

    .venv/bin/python bench/state_store.py      # alone: prints the table
"""

from __future__ import annotations

import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import cli
from common import PROJECT, Row, median

from cloudctl.config import EtcdState
from cloudctl.state import EtcdStore, StateStore, Store, migrate

sys.path.insert(0, str(PROJECT))  # the test cluster helper
from tests.state.etcd_cluster import EtcdCluster

SPAWN = multiprocessing.get_context("spawn")
PROCESSES = 4
OWNER = {"account": "admin", "user": "admin"}


def open_store(spec: Path | EtcdState) -> Store:
    return EtcdStore(spec) if isinstance(spec, EtcdState) else StateStore(spec)


def increments(spec: Path | EtcdState, count: int, barrier=None) -> None:
    store = open_store(spec)
    if barrier is not None:
        barrier.wait()
    for _ in range(count):
        with store.transaction() as tx:
            counters = tx.table("counters")
            counters.update("c-bench", value=counters.get("c-bench")["value"] + 1)


def rate_alone(spec: Path | EtcdState, count: int) -> float:
    started = time.perf_counter()
    increments(spec, count)
    return count / (time.perf_counter() - started)


def rate_together(spec: Path | EtcdState, count: int) -> float:
    """Transactions per second of PROCESSES processes at once, `count` in all."""
    barrier = SPAWN.Barrier(PROCESSES + 1)
    procs = [
        SPAWN.Process(target=increments, args=(spec, count // PROCESSES, barrier))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()  # every process has imported cloudctl and opened its store
    started = time.perf_counter()
    for proc in procs:
        proc.join()
    if any(proc.exitcode for proc in procs):
        raise SystemExit("a benchmark process failed")
    return count / (time.perf_counter() - started)


def states(work: Path, cluster: EtcdCluster) -> dict[str, tuple[Path, EtcdState, int]]:
    """Each state as a file and in etcd, with the transactions to time on it."""
    made = {}
    for label, instances, count in (("1 record", 0, 200), ("1,000 instances", 1000, 40)):
        home = work / f"state-{instances}"
        if instances:
            cli.seed_instances(home, instances)
        store = StateStore(home / "state.json")
        store.initialize(cli.SEED_CLOUD, "bench")
        with store.transaction() as tx:
            tx.table("counters").insert({"id": "c-bench", **OWNER, "value": 0})
        shutil.copy(store.path, home / "copy.json")
        etcd = EtcdState(tuple(cluster.endpoints), f"/bench/{instances}/")
        migrate(StateStore(home / "copy.json"), EtcdStore(etcd))
        made[label] = (store.path, etcd, count)
    return made


def measure(work: Path, repeat: int) -> list[Row]:
    cluster = EtcdCluster(work / "etcd").start()
    rows = []
    try:
        for label, (path, etcd, count) in states(work, cluster).items():
            for how, rate in (("1 process", rate_alone), (f"{PROCESSES} processes", rate_together)):
                tinydb = median([rate(path, count) for _ in range(repeat)])
                on_etcd = median([rate(etcd, count) for _ in range(repeat)])
                ref = [(f"TinyDB ({how}, {label})", tinydb)]
                rows.append(Row(f"TinyDB file, {how}, state of {label}", tinydb, "tx/s", ref))
                rows.append(Row(f"etcd, 3 members, {how}, state of {label}", on_etcd, "tx/s", ref))
    finally:
        cluster.stop()
    return rows


if __name__ == "__main__":
    import tempfile

    from run_all import table

    work = Path(tempfile.mkdtemp(prefix="state-bench-"))
    try:
        print(table(measure(work, repeat=3)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Launch rounds (cloudctl/launches.py) and the lock they run under (Store.try_lock), against
both backends: requests of threads and processes at once share plays, none is lost or played
twice, and a runner killed mid-round leaves no request behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from cloudctl import launches
from cloudctl.state import Store
from tests.conftest import poll
from tests.state.conftest import open_spec, spec_of

SPAWN = multiprocessing.get_context("spawn")
OWNER = {"account": "admin", "user": "admin"}
TTL = 2  # s: the lease of the processes killed here (etcd)


def test_the_lock_is_held_once_and_dies_with_its_holder(store: Store):
    with store.try_lock("round") as first:
        other = []
        thread = threading.Thread(target=lambda: other.append(_try(store, "round")))
        thread.start()
        thread.join()
        assert first and other == [False]  # another thread of the same process
        assert _try(store, "another-lock")
    assert _try(store, "round")  # released
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_and_wait, args=(spec_of(store), ready))
    holder.start()
    try:
        assert ready.wait(60), "the holder never took the lock"
        assert not _try(store, "round")
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        poll(lambda: _try(store, "round"), "the lock of a killed holder to free itself", TTL + 3)
    finally:
        holder.kill()


def test_requests_at_once_share_plays_none_lost_none_twice(store: Store):
    threads, processes = 3, 3
    total = threads + processes
    results = SPAWN.Queue()
    spec = spec_of(store)
    workers = [
        SPAWN.Process(target=_request, args=(spec, total, results)) for _ in range(processes)
    ]
    workers += [threading.Thread(target=_request, args=(spec, total, results)) for _ in range(threads)]  # fmt: skip
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(30)
    plays = store.all("plays")
    played = [rid for play in plays for rid in play["requests"]]
    assert sorted(played) == sorted(o["request"] for o in outcomes)  # each once, none lost
    assert all(o["played"] == o["request"] for o in outcomes)  # its own outcome
    assert len(plays) == 2  # the first request's round, then one for all that queued meanwhile
    assert store.all(launches.TABLE) == []  # every outcome taken


def test_a_killed_runners_requests_are_played_by_a_waiting_requester(store: Store):
    spec = spec_of(store)
    mine = launches.submit(store, {"name": "mine"})
    claimed = SPAWN.Event()
    runner = SPAWN.Process(target=_run_and_hang, args=(spec, claimed))
    runner.start()
    try:
        assert claimed.wait(60), "the runner never claimed"
        os.kill(runner.pid, signal.SIGKILL)
        runner.join(10)
    finally:
        runner.kill()
    batches = []

    def play_round(batch):
        batches.append(batch)
        return {r["id"]: {"error": "", "played": r["name"]} for r in batch}

    started = time.monotonic()
    outcome = launches.await_outcome(store, mine, play_round)
    assert outcome["played"] == "mine"
    assert time.monotonic() - started < TTL + 3
    [batch] = batches  # both requests of the dead round, again, in one play
    assert sorted((r["name"], r["orphan"]) for r in batch) == [("mine", True), ("theirs", True)]
    [theirs] = store.all(launches.TABLE)  # its requester is gone: the outcome waits, unread
    assert theirs["state"] == launches.DONE and theirs["vars"] == {}


def test_an_error_of_a_round_is_each_requests_error(store: Store):
    def play_round(batch):
        raise RuntimeError("the play could not start")

    request = launches.submit(store, {"vars": {"cloud_user_data": {"i-1": "secret"}}})
    assert launches.await_outcome(store, request, play_round) == {
        "error": "the play could not start"
    }
    assert store.all(launches.TABLE) == []


def _try(store: Store, name: str) -> bool:
    with store.try_lock(name) as held:
        return held


def _hold_and_wait(spec, ready) -> None:
    store = open_spec(spec, operation_ttl=TTL)
    with store.try_lock("round") as held:
        assert held
        ready.set()
        time.sleep(600)  # until killed


def _request(spec, total: int, results) -> None:
    """One requester: its request, then its outcome (the first round waits until every
    requester has queued, so that the second round finds them all)."""
    store = open_spec(spec)

    def play_round(batch):
        if not store.all("plays"):  # the first play: a slow one
            poll(lambda: len(store.all(launches.TABLE)) == total, "every request", 60, 0.05)
        with store.transaction() as tx:
            plays = tx.table("plays")
            plays.insert({"id": f"play-{len(plays)}", **OWNER, "requests": [r["id"] for r in batch]})  # fmt: skip
        return {r["id"]: {"error": "", "played": r["id"]} for r in batch}

    request = launches.submit(store, {})
    results.put({"request": request, **launches.await_outcome(store, request, play_round)})


def _run_and_hang(spec, claimed) -> None:
    store = open_spec(spec, operation_ttl=TTL)
    request = launches.submit(store, {"name": "theirs"})

    def play_round(batch):
        claimed.set()
        time.sleep(600)  # until killed mid-round

    launches.await_outcome(store, request, play_round)


@pytest.fixture(autouse=True)
def _no_leftover_children():
    yield
    for child in multiprocessing.active_children():
        child.kill()

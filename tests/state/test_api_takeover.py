"""The API's takeover worker on a real 3-member etcd cluster (tests/state/conftest.py): two
worker processes campaign, one is elected; the elected one, which also took a request whose
play still runs, is killed with SIGKILL; the other takes over within the lease's TTL and
settles the accepted operation exactly once. Never two leaders at any sample."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from cloudctl.api import worker
from cloudctl.api.takeover import ELECTION, Takeover
from cloudctl.election import Election
from cloudctl.state import EtcdStore, StateStore
from tests.conftest import poll
from tests.state.conftest import etcd_state
from tests.state.test_etcd import OWNER, SPAWN

TTL = 2  # s: the workers' lease (the operation keys and the election key live on it)
THINGS = "things"


class _LongOperation:
    """A service with one long operation: records a thing `creating`, then its "play"
    runs until the process is killed."""

    def __init__(self, store) -> None:
        self.store = store

    def create(self, thing_id: str, on_recorded) -> None:
        with self.store.transaction() as tx:
            record = tx.table(THINGS).insert({"id": thing_id, **OWNER, "state": "creating"})
        on_recorded([record])
        time.sleep(300)  # the play, killed here


def _settle_things(store: EtcdStore):
    """What the test's settle does in the real one's place (reconcile --fix needs hosts):
    ends the operation's things and counts how often each was settled."""

    def settle(ops):
        with store.transaction() as tx:
            for op in ops:
                for thing_id in op["resources"]:
                    thing = tx.table(THINGS).get(thing_id)
                    tx.table(THINGS).update(
                        thing_id, state="available", settled=thing.get("settled", 0) + 1
                    )
        return {op["id"]: "ended" for op in ops}

    return settle


def _worker(config, accept: str, leading, rounds) -> None:
    """One API process: takeover rounds; `accept`: a thing id to create once elected."""
    store = EtcdStore(config, operation_ttl=TTL)
    takeover = Takeover(store, _settle_things(store), interval=0.2)
    while True:
        takeover.round()
        leading.value, rounds.value = takeover.leading, rounds.value + 1
        if accept and takeover.leading:
            worker.start(_LongOperation(store).create, accept)  # answered: pending
            accept = ""
        time.sleep(0.2)  # the round interval of this worker


def test_the_elected_worker_killed_the_other_settles_its_operation_once(etcd_cluster):
    config = etcd_state(etcd_cluster)
    store = EtcdStore(config)
    election = Election(store, ELECTION)
    flags = {name: (SPAWN.Value("b", 0), SPAWN.Value("i", 0)) for name in "ab"}
    first = SPAWN.Process(target=_worker, args=(config, "thing-1", *flags["a"]))
    second = SPAWN.Process(target=_worker, args=(config, "", *flags["b"]))
    samples, two_leaders = [], []
    sampling = threading.Event()

    def sample() -> None:  # every 50 ms: who believes it leads, and who holds the key
        while not sampling.is_set():
            believers = [
                name
                for name, proc in (("a", first), ("b", second))
                if proc.is_alive() and flags[name][0].value
            ]
            samples.append(election.leader())
            if len(believers) > 1:
                two_leaders.append(believers)
            sampling.wait(0.05)

    host = socket.gethostname()
    sampler = threading.Thread(target=sample)
    try:
        first.start()
        poll(lambda: election.leader() == f"{host}:{first.pid}", "worker a elected", 60, 0.1)
        second.start()
        sampler.start()
        poll(lambda: flags["b"][1].value >= 2, "worker b campaigning", 60, 0.1)
        op = poll(lambda: store.all(worker.TABLE), "the accepted operation", 30, 0.1)[0]
        assert op["state"] == worker.RUNNING and op["resources"] == ["thing-1"]
        assert store.get(THINGS, "thing-1")["state"] == "creating"
        assert election.leader() == f"{host}:{first.pid}", "b must not lead while a lives"

        os.kill(first.pid, signal.SIGKILL)
        killed = time.monotonic()
        op = poll(
            lambda: (o := store.get(worker.TABLE, op["id"]))["state"] == worker.SETTLED and o,
            "the operation settled",
            TTL + 10,
            0.05,
        )
        took = time.monotonic() - killed
        assert op["settled_by"] == f"{host}:{second.pid}" and op["detail"] == "ended"
        assert election.leader() == f"{host}:{second.pid}"
        rounds = flags["b"][1].value
        poll(lambda: flags["b"][1].value >= rounds + 3, "more rounds of b", 30, 0.1)
    finally:
        sampling.set()
        for proc in (first, second):
            if proc.is_alive():
                proc.kill()
            proc.join(10)
        if sampler.is_alive():
            sampler.join()
    assert took < TTL + 2, f"the takeover took {took:.1f} s after a {TTL} s lease"
    thing = store.get(THINGS, "thing-1")
    assert (thing["state"], thing["settled"]) == ("available", 1)  # once, never again
    assert not two_leaders, f"two workers believed they led: {two_leaders[:3]}"
    assert len(samples) > 20 and set(samples) <= {
        None, f"{host}:{first.pid}", f"{host}:{second.pid}"
    }  # fmt: skip


class _Instant(_LongOperation):
    """An operation whose play ends at once."""

    def create(self, thing_id: str, on_recorded) -> None:
        on_recorded([{"id": thing_id, **OWNER}])


def test_an_operation_that_ends_is_recorded_succeeded_and_unheld(etcd_store):
    worker.start(_Instant(etcd_store).create, "thing-1")
    op = poll(lambda: [o for o in etcd_store.all(worker.TABLE) if o["state"] != worker.RUNNING],
              "the operation's end", 10, 0.05)[0]  # fmt: skip
    assert (op["state"], op["resources"]) == (worker.SUCCEEDED, ["thing-1"])
    with etcd_store.snapshot() as view:
        assert op["id"] not in view.running_operations


def test_with_the_state_file_an_operation_records_nothing_more(tmp_path):
    store = StateStore(tmp_path / "state.json")
    assert worker.start(_Instant(store).create, "thing-1") == [{"id": "thing-1", **OWNER}]
    assert not store.path.exists()  # no api_operations record: nothing written at all

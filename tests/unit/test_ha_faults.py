"""bench/ha_faults.py's measurements, on made-up samples, attempts and processes (the faults
themselves run against the HA lab: bench/ha_faults.py)."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time

import pytest

from bench import ha_faults as hf

IP_JSON = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifname": "eth0", "addr_info": [
        {"family": "inet", "local": "10.213.0.11", "prefixlen": 24},
        {"family": "inet", "local": "10.213.0.200", "prefixlen": 24}]},
    {"ifname": "cloudbr0", "addr_info": []},
])  # fmt: skip
LAB = hf.Lab(pair=("ha1", "ha2"), vips={"clc": "10.213.0.200", "walrus": "10.213.0.201"},
             home=hf.PROJECT)  # fmt: skip


def test_addresses_of_ip_json():
    assert hf.addresses(IP_JSON) == {"127.0.0.1", "10.213.0.11", "10.213.0.200"}
    assert hf.addresses("") == set()


def test_peer():
    assert LAB.peer("ha1") == "ha2" and LAB.peer("ha2") == "ha1"


def sample(at: float, **holders: list[str]) -> hf.Sample:
    return hf.Sample(at, {"clc": [], "walrus": [], **holders})


def test_holder_counting():
    samples = [sample(0, clc=["ha1"], walrus=["ha1"]), sample(1, clc=["ha1", "ha2"]),
               sample(2, clc=["ha2"], walrus=["ha2"]), sample(3, clc=["ha1"])]  # fmt: skip
    assert hf.max_holders(samples) == 2
    assert hf.double_holders(samples) == [samples[1]]
    # From t=1 on, ha2 should hold clc: the double sample and t=3 are someone else's.
    assert hf.foreign_holders(samples, "clc", "ha2", since=1) == 2
    assert hf.foreign_holders(samples, "walrus", "ha2", since=1) == 0  # nobody is not foreign


def test_sampler_samples_every_100_ms_until_stopped():
    reads = []

    def read(lab):
        reads.append(time.monotonic())
        return {"clc": ["ha1"], "walrus": ["ha1", "ha2"] if len(reads) == 3 else ["ha1"]}

    sampler = hf.HolderSampler(LAB, read)
    sampler.start()
    hf.wait_until("five samples", lambda: len(sampler.samples) >= 5, 5)
    sampler.stop()
    assert sampler.holder("clc") == "ha1"
    assert len(hf.double_holders(sampler.samples)) == 1
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert min(gaps) >= 0.09


def attempt(kind, start, end, ok, op="write", seq=1):
    return hf.Attempt(kind, op, seq, start, end, ok)


def test_first_success_counts_only_requests_sent_after_the_fault():
    attempts = [
        attempt("s3", 9.0, 10.5, True),  # sent before the fault at 10: not a recovery
        attempt("s3", 10.2, 11.2, False),
        attempt("s3", 11.3, 13.5, True),
        attempt("s3", 13.6, 13.7, True),
        attempt("ec2", 10.1, 10.3, True),
    ]
    assert hf.first_success_s(attempts, "s3", 10.0) == 3.5
    assert hf.first_success_s(attempts, "ec2", 10.0) == 0.3
    assert hf.first_success_s(attempts, "ec2", 11.0) is None
    assert hf.failures(attempts, "s3", 10.0) == 1


def test_outage_is_the_longest_time_without_success():
    attempts = [attempt("s3", 8.9, 9.0, True), attempt("s3", 10.0, 14.0, True),
                attempt("s3", 14.0, 14.1, True)]  # fmt: skip
    # from the last success before the fault (9.0) to the next (14.0)
    assert hf.outage_s(attempts, "s3", since=10.0, until=15.0) == 5.0
    # nothing at all after the fault: the whole window
    assert hf.outage_s(attempts[:1], "s3", since=10.0, until=12.0) == 3.0


class FlakyClient(hf.Client):
    """Writes fail while `down` is set; stores what it acknowledged, may drop some."""

    kind = "fake"

    def __init__(self):
        self.down = threading.Event()
        self.stored: set[int] = set()
        self.forget: set[int] = set()

    def write(self, seq):
        if self.down.is_set():
            raise ConnectionError("down")
        self.stored.add(seq)

    def read(self, seq):
        if self.down.is_set() or seq not in self.stored:
            raise ConnectionError("down")

    def written(self):
        return self.stored - self.forget


def test_load_acknowledges_only_successful_writes_and_reads_the_latest():
    client = FlakyClient()
    load = hf.Load([client]).start()
    hf.wait_until("three writes", lambda: len(load.acked["fake"]) >= 3, 5)
    client.down.set()
    at = time.monotonic()
    hf.wait_until("a failed write", lambda: hf.failures(load.attempts, "fake", at) >= 2, 5)
    client.down.clear()
    back = time.monotonic()
    hf.wait_until("a success again", lambda: load.ok_since("fake", back), 5)
    load.stop()
    failed = {a.seq for a in load.attempts if a.op == "write" and not a.ok}
    assert failed and not failed & set(load.acked["fake"])
    assert set(load.acked["fake"]) == client.stored
    assert any(a.op == "read" and a.ok for a in load.attempts)
    reads = [a.seq for a in load.attempts if a.op == "read"]
    assert reads == sorted(reads)  # always the latest acknowledged write
    assert 0 < hf.outage_s(load.attempts, "fake", at, time.monotonic()) < 5


def test_services_are_the_processes_below_supervisord():
    table = {1: (0, "sh"), 5: (1, "sshd"), 10: (1, "supervisord"), 11: (10, "etcd"),
             12: (10, "keepalived"), 13: (12, "keepalived"), 14: (10, "python3"),
             15: (14, "python3"), 20: (5, "bash")}  # fmt: skip
    assert hf.services(table) == [11, 12, 13, 14, 15]
    with pytest.raises(RuntimeError):
        hf.services({1: (0, "sshd")})


def test_proc_table_reads_parents_and_names():
    table = hf.proc_table([os.getpid(), 999_999_999])
    assert table == {os.getpid(): (os.getppid(), table[os.getpid()][1])}


def test_service_problems():
    status = hf.parse_supervisor_status(
        "cloud-etcd                       RUNNING   pid 12, uptime 0:01:00\n"
        "cloud-dnsmasq-zone-a             STOPPED   Dec 05 08:00 AM\n"
        "cloud-walrus                     BACKOFF   Exited too quickly\n"
    )
    assert status == {"cloud-etcd": "RUNNING", "cloud-dnsmasq-zone-a": "STOPPED",
                      "cloud-walrus": "BACKOFF"}  # fmt: skip
    assert hf.service_problems(status, holds_gateway=False) == [
        "cloud-walrus BACKOFF (want RUNNING)"]  # fmt: skip
    assert hf.service_problems(status, holds_gateway=True) == [
        "cloud-dnsmasq-zone-a STOPPED (want RUNNING)",
        "cloud-walrus BACKOFF (want RUNNING)",
    ]


def result(**kw) -> hf.Result:
    base = {"fault": "kill-primary", "primary": "ha1", "target": "ha1",
                "first_success_s": {"ec2": 3.2, "s3": 4.1}, "first_write_s": {"ec2": 3.3, "s3": 4.2},
                "outage_s": {"ec2": 3.5, "s3": 4.4},
                "failed_requests": {"ec2": 2, "s3": 3}, "acked": {"ec2": 100, "s3": 90},
                "lost": {"ec2": [], "s3": []}, "max_holders": 1}  # fmt: skip
    return hf.Result(**(base | kw))


def test_problems_name_every_broken_limit():
    assert result().problems() == []
    broken = result(
        first_success_s={"ec2": None, "s3": 12.0},
        first_write_s={"ec2": 3.0, "s3": 18.5},
        lost={"ec2": [7], "s3": []},
        max_holders=2,
        double_samples=[{"t": 1.0}],
        wrong_holder_samples=3,
    )
    problems = broken.problems()
    assert len(problems) == 6
    assert "s3: first write after 18.5 s (limit 10.0)" in problems
    assert result(errors_allowed=False).problems() == [
        "failed requests {'ec2': 2, 's3': 3} (none may fail)"
    ]
    assert result(errors_allowed=False, failed_requests={"ec2": 0, "s3": 0}).problems() == []
    assert "ec2: 1 acknowledged writes lost: [7]" in problems


def test_summary_rows():
    rows = hf.summary([result(), result(first_success_s={"ec2": 1.0, "s3": 6.0},
                                        first_write_s={"ec2": None, "s3": 6.1})])  # fmt: skip
    assert rows[2].startswith(
        "| kill -9 of every service of the primary | 2 | 5.05 / 6.00 | inf / inf |"
    )
    assert rows[2].endswith("| 10 | 0 of 380 | 1 |")

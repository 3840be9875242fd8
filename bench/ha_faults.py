#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults against the HA lab (scripts/halab.sh, issue 12), measured while clients work
through the virtual addresses.

    scripts/halab.sh up                                   # the deployed HA lab first
    .venv/bin/python bench/ha_faults.py [--repeat N] [--fault NAME ...]

While a fault is injected:
- writers, one request every 100 ms: EC2 ImportKeyPair through the CLC address (the cloud
  state, in etcd) as a user of the account `faults`, and sequence-numbered S3 PUTs through
  the Walrus address (boto3, the Walrus keys of cloud.yml); a write is acknowledged when
  the call returned success;
- readers, every 100 ms: DescribeKeyPairs and GET of the latest acknowledged write;
- a sampler, every 100 ms: which pair host holds each virtual address (`ip -j addr` in each
  host's network namespace), every sample with two holders recorded.
Afterwards every acknowledged write must read back (key pairs and objects): the rest are
lost. Time to first success = from the injection to the end of the first successful request
(per client kind) sent after it; the outage is the longest time without a successful request
of the kind. The faults (FAULTS): kill -9 of every service of the primary (what its service
manager runs: etcd, weed, keepalived, the API, dnsmasq), the primary's network cut (every
frame to or from its ports on the lab switch and the instance wire dropped: a silent
partition, no link change), the primary's arbitrator targets unreachable while it still hears
its peer (halab.py cut), the secondary's services killed (no takeover may happen), and the
cut primary coming back (nopreempt: it must not take the addresses back). The primary is the
holder of the CLC address. bench/run_all.py --only ha runs it; the exit status
is 1 when a limit of issue 12 broke.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from cloudctl.cloudconfig import load_config
from cloudctl.config import parse_state
from cloudctl.walrus import REGION

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.1  # the sampler's and every client's period
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 1.0, 3.0  # the clients' (a stalled request is retried)
RECOVERY_LIMIT_S = 10.0  # issue 12: <= 10 s from the fault to the first success
WATCH_S = 5.0  # after recovery, longer than keepalived's master-down time (3.5 s)
ACCOUNT, USER = "faults", "writer"
BUCKET = "faults"
SUPERVISOR = ["supervisorctl", "-c", "/etc/supervisor/supervisord.conf"]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


halab = load("halab", PROJECT / "scripts/halab.py")  # the lab's names, cut/mend, labhost


# --- the lab -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """The deployed HA lab as the harness sees it."""

    pair: tuple[str, str]  # the lab hosts of the clc/walrus/cc pairs
    vips: dict[str, str]  # clc / walrus / cc-ZONE -> address
    home: Path  # cloudctl's home of the cloud (cloud.yml, ca.crt)
    hosts: tuple[str, ...] = ()  # every lab host whose services must be whole again

    @classmethod
    def of_halab(cls) -> Lab:
        return cls(pair=(halab.HOSTS["cloud1"], halab.HOSTS["cloud2"]), vips=dict(halab.VIPS),
                   home=halab.CLOUD_HOME, hosts=tuple(halab.HOSTS.values()))  # fmt: skip

    def peer(self, host: str) -> str:
        return self.pair[1] if host == self.pair[0] else self.pair[0]


def netns(host: str) -> str:
    return halab.labhost.netns_of(host)


def addresses(ip_json: str) -> set[str]:
    """The IPv4 addresses of `ip -j -4 addr show` output."""
    return {a["local"] for link in json.loads(ip_json or "[]")
            for a in link.get("addr_info", []) if a.get("family", "inet") == "inet"}  # fmt: skip


def holders_now(lab: Lab) -> dict[str, list[str]]:
    """Who holds each virtual address now: both hosts read at once (one `ip` each)."""
    procs = {host: subprocess.Popen(["ip", "-n", netns(host), "-j", "-4", "addr", "show"],
                                    stdout=subprocess.PIPE, text=True)
             for host in lab.pair}  # fmt: skip
    held = {host: addresses(proc.communicate()[0]) for host, proc in procs.items()}
    return {name: [h for h in lab.pair if vip in held[h]] for name, vip in lab.vips.items()}


@dataclass
class Sample:
    at: float  # time.monotonic()
    holders: dict[str, list[str]]


class HolderSampler(threading.Thread):
    """Every 100 ms, who holds each virtual address."""

    def __init__(self, lab: Lab, read: Callable[[Lab], dict[str, list[str]]] = holders_now):
        super().__init__(daemon=True)
        self.lab, self.read = lab, read
        self.samples: list[Sample] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append(Sample(time.monotonic(), self.read(self.lab)))
            self.stopping.wait(SAMPLE_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def holder(self, vip: str) -> str | None:
        """The single holder of the last sample (None: nobody or two)."""
        last = self.samples[-1].holders[vip] if self.samples else []
        return last[0] if len(last) == 1 else None


def max_holders(samples: Iterable[Sample]) -> int:
    return max((len(h) for s in samples for h in s.holders.values()), default=0)


def double_holders(samples: Iterable[Sample]) -> list[Sample]:
    return [s for s in samples if any(len(h) > 1 for h in s.holders.values())]


def foreign_holders(samples: Iterable[Sample], vip: str, host: str, since: float) -> int:
    """Samples from `since` on where someone else than `host` held `vip`."""
    return sum(1 for s in samples if s.at >= since and s.holders[vip] not in ([], [host]))


# --- the clients -------------------------------------------------------------------------


@dataclass
class Attempt:
    kind: str  # "ec2" or "s3"
    op: str  # "write" or "read"
    seq: int
    start: float
    end: float
    ok: bool
    error: str = ""


class Client:
    """One kind of client through a virtual address: write(seq), read(seq), written()."""

    kind = ""

    def __init__(self, make_client: Callable[[Any], Any]):
        self.make_client = make_client  # a boto3 client from a botocore Config
        self.local = threading.local()
        self.checker = None

    @property
    def api(self):
        """The load's boto3 client (one per thread): no retries, short timeouts."""
        if not hasattr(self.local, "api"):
            self.local.api = self.make_client(boto_config(retries=1, read_timeout=READ_TIMEOUT_S))
        return self.local.api

    @property
    def patient(self):
        """The check's, after the fault: retries and long timeouts (a slow answer is no loss)."""
        if self.checker is None:
            self.checker = self.make_client(boto_config(retries=5, read_timeout=30))
        return self.checker

    def write(self, seq: int) -> None:
        raise NotImplementedError

    def read(self, seq: int) -> None:
        raise NotImplementedError

    def written(self) -> set[int]:
        """The sequence numbers readable now."""
        raise NotImplementedError

    def clean(self) -> None:
        """Remove what the writes made."""


def boto_config(retries: int, read_timeout: float):
    from botocore.config import Config

    # The load's: no retries, every answer counts as it is; short timeouts, a request
    # stalled on a dead host is given up and the next one sent.
    return Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=read_timeout,
                  retries={"mode": "standard", "max_attempts": retries},
                  s3={"addressing_style": "path"}, signature_version="s3v4")  # fmt: skip


class Ec2KeyPairs(Client):
    """Cloud state writes: ImportKeyPair `PREFIX-SEQ` through the CLC address's EC2 API."""

    kind = "ec2"

    def __init__(self, make_client: Callable[[Any], Any], prefix: str, public_key: str):
        super().__init__(make_client)
        self.prefix, self.material = prefix, public_key.encode()

    def name(self, seq: int) -> str:
        return f"{self.prefix}-{seq:06d}"

    def write(self, seq: int) -> None:
        self.api.import_key_pair(KeyName=self.name(seq), PublicKeyMaterial=self.material)

    def read(self, seq: int) -> None:
        self.api.describe_key_pairs(KeyNames=[self.name(seq)])

    def names(self) -> list[str]:
        pairs = self.patient.describe_key_pairs()["KeyPairs"]
        return [p["KeyName"] for p in pairs if p["KeyName"].startswith(f"{self.prefix}-")]

    def written(self) -> set[int]:
        return {int(name.rsplit("-", 1)[1]) for name in self.names()}

    def clean(self) -> None:
        names = self.names()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: self.patient.delete_key_pair(KeyName=n), names))


class S3Objects(Client):
    """Sequence-numbered PUTs of `PREFIX/SEQ` (body: SEQ) through the Walrus address."""

    kind = "s3"

    def __init__(self, make_client: Callable[[Any], Any], prefix: str):
        super().__init__(make_client)
        self.prefix = prefix

    def key(self, seq: int) -> str:
        return f"{self.prefix}/{seq:06d}"

    def write(self, seq: int) -> None:
        self.api.put_object(Bucket=BUCKET, Key=self.key(seq), Body=str(seq).encode())

    def read(self, seq: int, s3=None) -> None:
        body = (s3 or self.api).get_object(Bucket=BUCKET, Key=self.key(seq))["Body"].read()
        if body != str(seq).encode():
            raise ValueError(f"{self.key(seq)} reads {body[:20]!r}")

    def keys(self) -> list[str]:
        pages = self.patient.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=f"{self.prefix}/"
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def written(self) -> set[int]:
        """Listed AND readable with the right body (each object read back)."""

        def readable(key: str) -> int | None:
            seq = int(key.rsplit("/", 1)[1])
            try:
                self.read(seq, self.patient)
            except Exception:  # noqa: BLE001 (unreadable = not written)
                return None
            return seq

        with ThreadPoolExecutor(4) as pool:
            return {seq for seq in pool.map(readable, self.keys()) if seq is not None}

    def clean(self) -> None:
        keys = self.keys()
        for start in range(0, len(keys), 1000):
            self.patient.delete_objects(
                Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]}
            )


class ElasticIpProbe(Client):
    """An instance's elastic IP from the public side (a lab netns): a TCP connection to its
    SSH port (write), the SSH server's greeting read through it (read). Nothing is stored:
    nothing can be lost."""

    kind = "eip"

    def __init__(self, public_netns: str, address: str):
        self.in_ns = ["ip", "netns", "exec", public_netns]
        self.address = address
        self.connected: set[int] = set()
        self.instance: dict[str, Any] = {}  # the instance's record (cloudctl instance show)

    def run(self, *command: str) -> None:
        proc = subprocess.run([*self.in_ns, *command], capture_output=True, check=False)
        if proc.returncode:
            raise ConnectionError(f"{command[0]} {self.address}: exit {proc.returncode}")

    def connect(self, then: str = "") -> None:
        self.run("timeout", "1", "bash", "-c", f"exec 3<>/dev/tcp/{self.address}/22{then}")

    def write(self, seq: int) -> None:
        self.connect()
        self.connected.add(seq)

    def read(self, seq: int) -> None:
        self.connect("; head -c 4 <&3 | grep -q SSH-")

    def written(self) -> set[int]:
        return set(self.connected)


class Load:
    """A writer and a reader thread per client, one request each every 100 ms."""

    def __init__(self, clients: list[Client]):
        self.clients = clients
        self.attempts: list[Attempt] = []
        self.acked: dict[str, list[int]] = {c.kind: [] for c in clients}
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=loop, args=(c,), daemon=True)
                        for c in clients for loop in (self.writer, self.reader)]  # fmt: skip

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def attempt(self, client: Client, op: str, seq: int, call: Callable[[int], None]) -> bool:
        start = time.monotonic()
        try:
            call(seq)
            ok, error = True, ""
        except Exception as exc:  # noqa: BLE001 (every failure is a measurement)
            ok, error = False, f"{type(exc).__name__}: {exc}"[:200]
        self.attempts.append(Attempt(client.kind, op, seq, start, time.monotonic(), ok, error))
        return ok

    def writer(self, client: Client) -> None:
        seq = 0
        while not self.stopping.is_set():
            seq += 1
            started = time.monotonic()
            if self.attempt(client, "write", seq, client.write):
                self.acked[client.kind].append(seq)
            self.stopping.wait(max(0.0, SAMPLE_S - (time.monotonic() - started)))

    def reader(self, client: Client) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            if self.acked[client.kind]:
                self.attempt(client, "read", self.acked[client.kind][-1], client.read)
            self.stopping.wait(max(0.0, SAMPLE_S - (time.monotonic() - started)))

    def ok_since(self, kind: str, since: float) -> bool:
        return any(a.ok and a.kind == kind and a.start >= since for a in self.attempts)


def first_success_s(
    attempts: Iterable[Attempt], kind: str, since: float, op: str | None = None
) -> float | None:
    """Seconds from `since` to the end of the first successful request (of `op` only, if
    given) sent at or after it."""
    ends = [a.end for a in attempts
            if a.kind == kind and a.ok and a.start >= since and op in (None, a.op)]  # fmt: skip
    return round(min(ends) - since, 2) if ends else None


def outage_s(attempts: Iterable[Attempt], kind: str, since: float, until: float) -> float:
    """The longest time in [since, until] between two successes of the kind (the last one
    before `since` counts as the start)."""
    ends = sorted(a.end for a in attempts if a.kind == kind and a.ok and a.end <= until)
    before = [e for e in ends if e < since]
    points = [before[-1] if before else since] + [e for e in ends if e >= since] + [until]
    return round(max(b - a for a, b in itertools.pairwise(points)), 2)


def failures(attempts: Iterable[Attempt], kind: str, since: float) -> int:
    return sum(1 for a in attempts if a.kind == kind and not a.ok and a.start >= since)


# --- the faults --------------------------------------------------------------------------


def proc_table(pids: Iterable[int]) -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of these processes (gone ones left out)."""
    table = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        table[pid] = (int(stat[stat.rindex(")") + 2 :].split()[1]), comm)
    return table


def services(table: dict[int, tuple[int, str]]) -> list[int]:
    """Every process below a supervisord: what the host's service manager runs."""
    found = [pid for pid, (_, comm) in table.items() if comm == "supervisord"]
    if not found:
        raise RuntimeError("no supervisord in the host: what are its services?")
    below: list[int] = []
    while found:
        parent = found.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        below += children
        found += children
    return sorted(below)


def kill_services(host: str) -> list[str]:
    """kill -9 of every service process of the host at once (the service manager itself
    lives and restarts them, as systemd would); their names."""
    table = proc_table(halab.labhost.netns_pids(netns(host)))
    pids = services(table)
    # All stopped first, then killed: as one instant. Killed one by one, a child outlives
    # its parent for a moment and reacts (keepalived's VRRP child, told of its parent's death,
    # starts a clean shutdown: its priority-0 advert hands the address over at once while
    # the address is still up here).
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    return sorted({table[pid][1] for pid in pids})


def cut_network(host: str, mend: bool = False) -> None:
    """Drop every frame to or from the host's port on the lab switch and on every wire it
    is on (the instance network, the public side): ebtables in those bridges' namespaces,
    the host itself untouched, its links stay up (a silent partition)."""
    wires = halab.labhost.extras("wires")
    ports = [(halab.labhost.SWITCH_NS, f"h-{host}")]
    ports += [(w["netns"], f"w-{host}") for w in wires if host in w["hosts"]]
    for ns, port in ports:
        for direction in ("-i", "-o"):
            rule = ["FORWARD", direction, port, "-j", "DROP"]
            subprocess.run(["ip", "netns", "exec", ns, "ebtables", "-D" if mend else "-I", *rule],
                           check=not mend, capture_output=True)  # fmt: skip


def cut_arbitrator(host: str, mend: bool = False) -> None:
    halab.cut(host, mend=mend)


@dataclass(frozen=True)
class Fault:
    name: str
    what: str  # one line for the docs table
    inject: Callable[[str], object]  # on the target host
    restore: Callable[[str], object]
    on_primary: bool = True  # the target: the primary, else the secondary
    takeover: bool = True  # the target's addresses must move to the other host
    prepare: Fault | None = None  # a fault injected (unmeasured) first: `inject` undoes it
    primary_of: str = "clc"  # the primary: the holder of this virtual address
    errors_allowed: bool = True  # False: no request may fail (nothing the clients use died)


NETWORK_CUT = Fault(
    "network-cut",
    "the primary's network cut (all frames dropped)",
    cut_network,
    lambda host: cut_network(host, mend=True),
)
FAULTS = {
    f.name: f
    for f in [
        Fault(
            "kill-primary",
            "kill -9 of every service of the primary",
            kill_services,
            lambda host: None,
        ),
        NETWORK_CUT,
        Fault(
            "arbitrator-cut",
            "the primary's arbitrator target unreachable, its peer heard",
            cut_arbitrator,
            lambda host: cut_arbitrator(host, mend=True),
        ),
        Fault(
            "kill-secondary",
            "kill -9 of every service of the secondary (no takeover)",
            kill_services,
            lambda host: None,
            on_primary=False,
            takeover=False,
            errors_allowed=False,
        ),
        # Cut first (that takeover is network-cut's measurement), then measured: its return.
        Fault(
            "primary-returns",
            "the cut primary back (it must not take the addresses back)",
            lambda host: cut_network(host, mend=True),
            lambda host: None,
            takeover=False,
            prepare=NETWORK_CUT,
        ),
    ]
}
# The CC pair: the holder of the zone's gateway cut off while an instance's elastic IP is
# probed from the public side (ElasticIpProbe).
CC_NETWORK_CUT = replace(NETWORK_CUT, name="cc-network-cut", primary_of="cc-zone-a",
                         what="the CC primary's network cut, an elastic IP probed")  # fmt: skip
ALL_FAULTS = {**FAULTS, CC_NETWORK_CUT.name: CC_NETWORK_CUT}


# --- running one fault -------------------------------------------------------------------


@dataclass
class Result:
    fault: str
    primary: str  # the holder of the CLC address before the fault
    target: str
    first_success_s: dict[str, float | None]  # per client kind
    first_write_s: dict[str, float | None]  # per client kind, writes only
    outage_s: dict[str, float]
    failed_requests: dict[str, int]
    acked: dict[str, int]
    lost: dict[str, list[int]]
    max_holders: int
    double_samples: list[dict] = field(default_factory=list)
    holder_after: dict[str, str | None] = field(default_factory=dict)
    wrong_holder_samples: int = 0  # no takeover expected: samples of another holder
    errors_allowed: bool = True
    killed: list[str] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0
    # every request: [kind, op, sent (s from the fault), took (s), error or ""]
    requests: list[list] = field(default_factory=list, repr=False)

    def problems(self) -> list[str]:
        """Where issue 12's limits are broken (empty: every limit held)."""
        found = []
        for what, figures in (("success", self.first_success_s), ("write", self.first_write_s)):
            found += [f"{kind}: first {what} after {seconds} s (limit {RECOVERY_LIMIT_S})"
                      for kind, seconds in figures.items()
                      if seconds is None or seconds > RECOVERY_LIMIT_S]  # fmt: skip
        found += [f"{kind}: {len(seqs)} acknowledged writes lost: {seqs[:10]}"
                  for kind, seqs in self.lost.items() if seqs]  # fmt: skip
        if self.max_holders > 1:
            found.append(f"two holders in {len(self.double_samples)} samples: "
                         f"{self.double_samples[:3]}")  # fmt: skip
        if not self.errors_allowed and any(self.failed_requests.values()):
            found.append(f"failed requests {self.failed_requests} (none may fail)")
        if self.wrong_holder_samples:
            found.append(f"an address moved (no takeover may happen) in "
                         f"{self.wrong_holder_samples} samples")  # fmt: skip
        return found


def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"ha_faults: no {what} after {timeout_s:.0f} s")
        time.sleep(SAMPLE_S / 2)
    return time.monotonic() - start


def one_holder_each(sampler: HolderSampler) -> bool:
    return all(sampler.holder(vip) for vip in sampler.lab.vips)


def watch(sampler: HolderSampler, seconds: float, expected: dict[str, str]) -> None:
    """Keep sampling for `seconds` (a late take-back or a double holder shows up then);
    ends early once one has."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        last = sampler.samples[-1].holders
        if any(held != [expected[vip]] for vip, held in last.items()):
            return
        time.sleep(SAMPLE_S / 2)


def run_fault(lab: Lab, fault: Fault, clients: list[Client], timeout_s: float = 60) -> Result:
    """Inject the fault under load, wait for recovery, watch WATCH_S more, restore the lab
    (until it is whole again), then read back every acknowledged write."""
    started = time.monotonic()
    sampler = HolderSampler(lab)
    sampler.start()
    load = Load(clients)
    target = None

    def holders_become(want: dict[str, str], what: str) -> None:
        wait_until(what, lambda: all(sampler.holder(v) == h for v, h in want.items()), timeout_s)

    try:
        wait_until("single holder of every address", lambda: one_holder_each(sampler), timeout_s)
        load.start()
        began = time.monotonic()
        wait_until("success of every client", lambda: all(
            load.ok_since(c.kind, began) for c in clients), timeout_s)  # fmt: skip
        primary = sampler.holder(fault.primary_of)
        target = primary if fault.on_primary else lab.peer(primary)
        away = {v: lab.peer(target) for v in lab.vips if sampler.holder(v) == target}
        if fault.prepare:  # and the clients served again before the measured fault
            fault.prepare.inject(target)
            holders_become(away, f"takeover by {lab.peer(target)}")
            moved = time.monotonic()
            wait_until("success of every client", lambda: all(
                load.ok_since(c.kind, moved) for c in clients), timeout_s)  # fmt: skip
        expected = {v: sampler.holder(v) for v in lab.vips}
        if fault.takeover:
            expected |= away
        at = time.monotonic()
        killed = fault.inject(target)
        try:  # past the timeout the run goes on: its first success is then None, a problem
            wait_until("first success of every client", lambda: all(
                load.ok_since(c.kind, at) for c in clients), timeout_s)  # fmt: skip
        except TimeoutError:
            pass
        holders_become(expected, f"holders {expected}")
        watch(sampler, WATCH_S, expected)
        until = time.monotonic()
        fault.restore(target)
        wait_healthy(lab, sampler, timeout_s=max(timeout_s, 120))
        whole = time.monotonic()
        wait_until("every client served after the restore", lambda: all(
            load.ok_since(c.kind, whole) for c in clients), 2 * timeout_s)  # fmt: skip
    finally:
        load.stop()
        sampler.stop()
        if target:  # whatever happened, no cut stays (mending twice does nothing)
            fault.restore(target)
            if fault.prepare:
                fault.prepare.restore(target)
    written = {c.kind: c.written() for c in clients}
    kinds = [c.kind for c in clients]
    samples = sampler.samples
    return Result(
        fault=fault.name, primary=primary, target=target,
        first_success_s={k: first_success_s(load.attempts, k, at) for k in kinds},
        first_write_s={k: first_success_s(load.attempts, k, at, "write") for k in kinds},
        outage_s={k: outage_s(load.attempts, k, at, until) for k in kinds},
        failed_requests={k: failures(load.attempts, k, at) for k in kinds},
        acked={k: len(load.acked[k]) for k in kinds},
        lost={k: sorted(set(load.acked[k]) - written[k]) for k in kinds},
        max_holders=max_holders(samples),
        double_samples=[{"t": round(s.at - at, 2), **s.holders} for s in double_holders(samples)],
        holder_after={v: sampler.holder(v) for v in lab.vips},
        wrong_holder_samples=0 if fault.takeover else sum(
            foreign_holders(samples, v, h, at) for v, h in expected.items()),
        killed=killed if isinstance(killed, list) else [], errors_allowed=fault.errors_allowed,
        samples=len(samples), seconds=round(time.monotonic() - started, 1),
        requests=[[a.kind, a.op, round(a.start - at, 2), round(a.end - a.start, 2), a.error]
                  for a in load.attempts],
    )  # fmt: skip


# --- the lab whole again -----------------------------------------------------------------


def supervisor_status(host: str) -> dict[str, str]:
    """program -> state (RUNNING, STOPPED, STARTING, BACKOFF...) on the lab host."""
    out = halab.in_host(host, *SUPERVISOR, "status").stdout
    return parse_supervisor_status(out)


def parse_supervisor_status(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if len(line.split()) > 1}


def service_problems(status: dict[str, str], holds_gateway: bool) -> list[str]:
    """What is not as it should be: every service RUNNING, a zone's dnsmasq exactly on the
    holder of the zone's gateway (a CC pair: only the holder serves DHCP)."""
    problems = []
    for program, state in status.items():
        want = "RUNNING"
        if program.startswith("cloud-dnsmasq-"):
            want = "RUNNING" if holds_gateway else "STOPPED"
            state = "STOPPED" if state == "EXITED" else state
        if state != want:
            problems.append(f"{program} {state} (want {want})")
    return problems


def lab_problems(lab: Lab, sampler: HolderSampler) -> list[str]:
    if not one_holder_each(sampler):
        return [f"holders {sampler.samples[-1].holders if sampler.samples else None}"]
    problems = []
    for host in lab.hosts:
        gateways = [v for v in lab.vips if v.startswith("cc-") and sampler.holder(v) == host]
        problems += [f"{host}: {p}" for p in service_problems(supervisor_status(host),
                                                                bool(gateways))]  # fmt: skip
    problems += etcd_problems(lab)
    return problems


def etcd_problems(lab: Lab) -> list[str]:
    """Every etcd member of the state healthy (etcdctl from here, with the client certificate
    cloudctl fetched beside cloud.yml)."""
    cloud_yml = lab.home / "cloud.yml"
    spec = yaml.safe_load(cloud_yml.read_text()).get("state") if cloud_yml.exists() else None
    state = parse_state(spec, str(cloud_yml)) if spec else None
    if state is None:
        return []
    proc = subprocess.run(
        ["etcdctl", "--endpoints", ",".join(state.endpoints), "--cacert", state.ca_file,
         "--cert", state.cert_file, "--key", state.key_file, "--command-timeout=2s",
         "endpoint", "health"],
        env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [] if proc.returncode == 0 else [f"etcd: {(proc.stdout + proc.stderr).strip()}"]


def wait_healthy(lab: Lab, sampler: HolderSampler, timeout_s: float = 120) -> None:
    """Until the lab is whole: one holder of each address, every service running (dnsmasq on
    the gateway's holder only), every etcd member healthy."""
    last: list[str] = []

    def whole() -> bool:
        nonlocal last
        last = lab_problems(lab, sampler)
        return not last

    try:
        wait_until("whole lab", whole, timeout_s)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {'; '.join(last)}") from None


# --- the clients of the lab's cloud --------------------------------------------------------


def cloudctl(*args: str) -> Any:
    env = {**os.environ, "CLOUDCTL_CLOUD": halab.CLOUD,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    proc = subprocess.run(["cloudctl", "-o", "json", *args], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"cloudctl {' '.join(args)}: {proc.stderr.strip()}")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def api_user(lab: Lab) -> dict[str, str]:
    """The access key of faults/writer (made once per lab, kept in the lab's work dir)."""
    saved = lab.home.parent / "faults-user.json"
    if saved.exists():
        return json.loads(saved.read_text())
    accounts = cloudctl("account", "list")
    if not any(a.get("name") == ACCOUNT for a in accounts):
        cloudctl("account", "create", ACCOUNT)
        cloudctl("user", "create", f"{ACCOUNT}/{USER}")
    [key] = cloudctl("user", "key", "create", f"{ACCOUNT}/{USER}")
    user = {"access_key_id": key["access_key_id"], "secret_access_key": key["secret_access_key"]}
    saved.write_text(json.dumps(user))
    saved.chmod(0o600)
    return user


def public_key() -> str:
    """An OpenSSH ed25519 public key line (any: key pairs are only records here)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return raw.decode() + " ha-faults"


def lab_clients(lab: Lab, run: str) -> list[Client]:
    """The EC2 and S3 clients of the lab's cloud, named by `run` (their records' prefix)."""
    import boto3

    config = load_config(lab.home / "cloud.yml")
    user = api_user(lab)
    ca = config.api.ca_file  # the copy fetched beside cloud.yml

    def ec2(boto_config):
        return boto3.session.Session().client(
            "ec2", endpoint_url=config.api.endpoint, region_name=config.api.region, verify=ca,
            config=boto_config, **{f"aws_{k}": v for k, v in user.items()})  # fmt: skip

    def s3(boto_config):
        return boto3.session.Session().client(
            "s3", endpoint_url=config.walrus.endpoint, region_name=REGION,
            aws_access_key_id=config.walrus.access_key,
            aws_secret_access_key=config.walrus.secret_key, config=boto_config)  # fmt: skip

    objects = S3Objects(s3, f"f{run}")
    try:
        objects.patient.head_bucket(Bucket=BUCKET)
    except objects.patient.exceptions.ClientError:  # absent: made once
        objects.patient.create_bucket(Bucket=BUCKET)
    return [Ec2KeyPairs(ec2, f"f{run}", public_key()), objects]


def measure(lab: Lab, fault: Fault, extra: list[Client] = ()) -> Result:
    """One run of the fault with fresh clients (and `extra` ones); what they wrote removed
    afterwards."""
    clients = lab_clients(lab, uuid.uuid4().hex[:8])
    try:
        return run_fault(lab, fault, [*clients, *extra])
    finally:
        for client in clients:
            client.clean()


def measure_named(lab: Lab, name: str) -> Result:
    """A fault of ALL_FAULTS; the CC pair's with an elastic IP probed from the public side."""
    extra = [elastic_ip_probe()] if name == CC_NETWORK_CUT.name else []
    return measure(lab, ALL_FAULTS[name], extra)


def elastic_ip_probe() -> ElasticIpProbe:
    """The probe of an elastic IP associated with a running instance of the lab's cloud (the
    HA lab fixture's instance, tests/integration/ha_fixtures.py; started by it if the lab
    has none)."""
    running = {i["id"]: i for i in cloudctl("instance", "list") if i["state"] == "running"}
    found = [a for a in cloudctl("address", "list") if a.get("instance") in running]
    if not found:
        sys.path.insert(0, str(PROJECT))
        from tests.integration.ha_fixtures import HaLab, run_instance

        run_instance(lab := HaLab())
        return elastic_ip_probe_of(lab.ids["eip"], lab.ids["instance"])
    return elastic_ip_probe_of(found[0]["public_ip"], running[found[0]["instance"]])


def elastic_ip_probe_of(public_ip: str, instance: dict[str, Any]) -> ElasticIpProbe:
    probe = ElasticIpProbe(netns(halab.GATEWAY), public_ip)
    probe.instance = instance
    return probe


# --- the report --------------------------------------------------------------------------


def worst(seconds: Iterable[float | None]) -> float:
    """The slowest client kind (never served: infinite)."""
    return max(float("inf") if s is None else s for s in seconds)


def summary(results: list[Result]) -> list[str]:
    """One markdown table row per fault: median/max to first success, outage, failed
    requests, lost writes, max holders."""
    rows = [
        "| fault | runs | first success, median / max (s) | first write, median / max (s) "
        + "| outage, median / max (s) | failed requests | acknowledged writes lost "
        + "| max holders of an address |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r.fault for r in results):
        runs = [r for r in results if r.fault == name]
        firsts = [worst(r.first_success_s.values()) for r in runs]
        writes = [worst(r.first_write_s.values()) for r in runs]
        outages = [max(r.outage_s.values()) for r in runs]
        failed = sum(sum(r.failed_requests.values()) for r in runs)
        lost = sum(len(v) for r in runs for v in r.lost.values())
        acked = sum(sum(r.acked.values()) for r in runs)
        rows.append(f"| {ALL_FAULTS[name].what} | {len(runs)} "
                    f"| {statistics.median(firsts):.2f} / {max(firsts):.2f} "
                    f"| {statistics.median(writes):.2f} / {max(writes):.2f} "
                    f"| {statistics.median(outages):.2f} / {max(outages):.2f} | {failed} "
                    f"| {lost} of {acked} | {max(r.max_holders for r in runs)} |")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each fault")
    parser.add_argument("--fault", choices=list(ALL_FAULTS), action="append", help="some only")
    parser.add_argument("--json", type=Path, help="every run's measurements into this file")
    args = parser.parse_args(argv)
    lab = Lab.of_halab()
    results = []
    for _ in range(args.repeat):
        for name in args.fault or ALL_FAULTS:
            print(f"ha_faults: {name}", file=sys.stderr)
            results.append(result := measure_named(lab, name))
            print(json.dumps(result.__dict__ | {"requests": len(result.requests)}),
                  file=sys.stderr)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print("\n".join(summary(results)))
    problems = [f"{r.fault}: {p}" for r in results for p in r.problems()]
    print("\n".join(problems) or "every limit of issue 12 held")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

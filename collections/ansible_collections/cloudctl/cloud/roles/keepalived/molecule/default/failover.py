# SPDX-License-Identifier: GPL-3.0-or-later
"""Faults against a keepalived pair on two lab hosts, the virtual address sampled every 100 ms.

    failover.py VIP TARGET HOST HOST

1. exactly one host holds VIP;
2. the holder's arbitrator probes fail (iptables DROP to TARGET in ITS network namespace
   only): it releases VIP (FAULT) and the peer takes it; never two holders;
3. the probes come back: the old holder turns BACKUP and does not take VIP back (nopreempt);
4. kill -9 of the holder's keepalived processes (main and VRRP: a crash that cannot release
   VIP): the peer holds VIP within 10 s, never two holders (the restarted keepalived removes
   the stale VIP before the peer's master-down time).
Prints one JSON line of measurements; exits 1 when a check fails. The hosts' notify hook
writes the instance's state to /run/keepalived-test-state (converge.yml)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

SAMPLE_S = 0.1
TAKEOVER_LIMIT_S = 10.0


def netns(host: str) -> list[str]:
    return ["ip", "netns", "exec", f"cloudlab-{host}"]


def holds(host: str, vip: str) -> bool:
    out = subprocess.run([*netns(host), "ip", "-4", "-o", "address", "show"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return f" {vip}/" in out


def state(host: str) -> str:
    """The instance's state as the notify hook wrote it (host's private /run)."""
    proc = subprocess.run([sys.executable, LABHOST, "run", host, "--", "cat", "/run/keepalived-test-state"],
                          check=False, capture_output=True, text=True)  # fmt: skip
    return proc.stdout.strip()


class Sampler(threading.Thread):
    """Who holds VIP, every 100 ms; counts the samples with two holders."""

    def __init__(self, vip: str, hosts: list[str]):
        super().__init__(daemon=True)
        self.vip, self.hosts = vip, hosts
        self.samples = 0
        self.double = 0
        self.holders: list[str] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            holders = [h for h in self.hosts if holds(h, self.vip)]
            self.holders, self.samples = holders, self.samples + 1
            self.double += len(holders) > 1
            time.sleep(SAMPLE_S)


def wait_for(what: str, predicate, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(SAMPLE_S / 2)
    raise SystemExit(f"failover: timed out after {timeout_s:.0f} s waiting for {what}")


def keepalived_pids(host: str) -> list[int]:
    pids = subprocess.run(["ip", "netns", "pids", f"cloudlab-{host}"],
                          capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "keepalived":
                    found.append(int(pid))
        except OSError:
            pass
    return found


def main(vip: str, target: str, hosts: list[str]) -> int:
    result: dict = {}
    sampler = Sampler(vip, hosts)
    sampler.start()
    wait_for("one holder", lambda: len(sampler.holders) == 1, 20)
    holder = sampler.holders[0]
    peer = next(h for h in hosts if h != holder)
    drop_target = ["OUTPUT", "-d", target, "-j", "DROP"]  # in the holder's namespace only

    # 2. The holder's probes fail: it gives the address up, the peer takes it.
    subprocess.run([*netns(holder), "iptables", "-w", "-I", *drop_target], check=True)
    try:
        result["probes_lost_takeover_s"] = round(
            wait_for(f"{peer} to take {vip}", lambda: sampler.holders == [peer], 15), 2
        )
        result["old_holder_state"] = state(holder)
    finally:
        # 3. The probes come back: BACKUP, and no take-back.
        subprocess.run([*netns(holder), "iptables", "-w", "-D", *drop_target], check=True)
    wait_for(f"{holder} to turn BACKUP", lambda: state(holder) == "BACKUP", 15)
    watch_until = time.monotonic() + 3 * 1 + 1  # longer than a master-down time (3.5 s)
    while time.monotonic() < watch_until:
        if sampler.holders != [peer]:
            result["taken_back"] = True
            break
        time.sleep(SAMPLE_S)
    result["double_holder_samples_probe_fault"] = sampler.double

    # 4. kill -9 of the holder's keepalived (main and VRRP processes).
    pids = keepalived_pids(peer)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    result["kill9_takeover_s"] = round(
        wait_for(f"{holder} to take {vip}", lambda: holder in sampler.holders, 15), 2
    )
    # A killed keepalived cannot remove its address: it goes when the restarted one starts.
    result["kill9_single_holder_s"] = round(
        result["kill9_takeover_s"]
        + wait_for(f"{peer} to drop {vip}", lambda: sampler.holders == [holder], 15),
        2,
    )
    result["double_holder_samples_kill9"] = (
        sampler.double - result["double_holder_samples_probe_fault"]
    )
    # Leave the pair whole: the service manager restarts the killed keepalived as BACKUP.
    wait_for(
        f"{peer} back as BACKUP",
        lambda: len(keepalived_pids(peer)) >= 2 and state(peer) == "BACKUP",
        20,
    )
    sampler.running = False
    sampler.join()
    result["samples"] = sampler.samples
    print(json.dumps(result))

    ok = (result["old_holder_state"] == "FAULT" and not result.get("taken_back")
          and result["double_holder_samples_probe_fault"] == 0
          and result["double_holder_samples_kill9"] == 0
          and result["probes_lost_takeover_s"] <= TAKEOVER_LIMIT_S
          and result["kill9_takeover_s"] <= TAKEOVER_LIMIT_S)  # fmt: skip
    return 0 if ok else 1


LABHOST = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "../../../../../../../../molecule/labhost.py"
)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:5]))

"""Launches at scale, on the bench's two-NC cloud (bench/two_nc.py):

- `instance run --count 16` (spread over both NCs) against `--count 1`;
- 20 separate `instance run` commands (one instance each) started at once against one
  alone: wall time from the first start to the last exit. Then the checks: every command
  succeeded, 20 distinct instances recorded once each (none lost, none duplicated), all
  running, distinct private addresses; and the plays run per request: the
  instance-run events the batch added (`cloudctl event list`), over 20. Shared plays
  (requests coalesced while a play is being prepared) make it less than 1.

Every instance made here is terminated again; the guests halt at once
(common.halting_image): 20 kernels booting under TCG would take the 2 cores from the
commands (measured 2026-12-05 with the tiny test image: 20 at once 24.8 x one alone, the
plays done in 23 s and the commands' last steps waiting for CPU until 65 s).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import two_nc
from common import Row, cloudctl, cloudctl_argv, env, halting_image, median, timed

CONCURRENT = 20
AT_ONCE_DEADLINE_S = 480  # the batch's limit: a stuck launch must not stop the bench
BIG_COUNT = 16
RUN_OPERATION = "instance-run"  # the event (journal) name of a launch play


def run(*args: str) -> list | dict | str:
    return cloudctl(*args, lab=two_nc.LAB)


def terminate(ids: list[str]) -> None:
    if ids:
        run("instance", "terminate", *ids)


def run_events() -> set[str]:
    events = run("event", "list", "--operation", RUN_OPERATION)
    return {e["id"] for e in events}


def at_once(emi: str) -> tuple[float, list[str], list[dict]]:
    """Wall time of CONCURRENT `instance run` started at once, their failures, instances.
    A command still running after AT_ONCE_DEADLINE_S is stopped and counted as failed."""
    argv = cloudctl_argv("-o", "json", "instance", "run", "--image", emi)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(lab=two_nc.LAB)
        )
        for _ in range(CONCURRENT)
    ]
    failures, instances = [], []
    for proc in procs:
        try:
            out, err = proc.communicate(
                timeout=max(1, start + AT_ONCE_DEADLINE_S - time.perf_counter())
            )
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            failures.append(f"no answer within {AT_ONCE_DEADLINE_S} s (stopped)")
            continue
        if proc.returncode != 0:
            lines = err.strip().splitlines()
            failures.append(lines[-1] if lines else f"exit {proc.returncode}")
        else:
            instances += json.loads(out)
    return time.perf_counter() - start, failures, instances


def leftovers(emi: str) -> list[str]:
    """Instances of the image that are not terminated (a stopped command's too)."""
    return [i["id"] for i in run("instance", "list")
            if i["image_id"] == emi and i["state"] != "terminated"]  # fmt: skip


def measure(work: Path, repeat: int) -> tuple[list[Row], list[str]]:
    emi = halting_image(work, lab=two_nc.LAB)
    nodes: Counter = Counter()
    one, big, alone, batch = [], [], [], []
    checks: list[str] = []
    try:
        for _ in range(repeat):
            seconds, out = timed(lambda: run("instance", "run", "--image", emi))
            one.append(seconds)
            terminate([i["id"] for i in out])
            seconds, out = timed(
                lambda: run("instance", "run", "--image", emi, "--count", str(BIG_COUNT))
            )
            big.append(seconds)
            nodes = Counter(i["node"] for i in out)
            terminate([i["id"] for i in out])
        for n in range(repeat):
            if checks and "failed" in checks[-1]:
                checks.append("later rounds skipped: a round had failed commands")
                break
            seconds, out = timed(lambda: run("instance", "run", "--image", emi))
            alone.append(seconds)
            terminate([i["id"] for i in out])
            before = run_events()
            seconds, failures, made = at_once(emi)
            batch.append(seconds)
            plays = len(run_events() - before)
            ids = [i["id"] for i in made]
            try:
                records = [r for r in run("instance", "list") if r["id"] in set(ids)]
                counts = Counter(r["id"] for r in records)
                lost = len(set(ids) - set(counts))
                duplicated = sum(c - 1 for c in counts.values())
                running = sum(r["state"] == "running" for r in records)
                ips = len({r["private_ip"] for r in records})
                checks.append(
                    f"round {n + 1}: {len(made)} of {CONCURRENT} commands made an instance"
                    f"{' (failed: ' + '; '.join(failures) + ')' if failures else ''}; "
                    f"{len(counts)} recorded, {lost} lost, {duplicated} duplicated, "
                    f"{running} running, {ips} distinct addresses; "
                    f"{plays} instance-run plays for {CONCURRENT} requests "
                    f"({plays / CONCURRENT:.2f} per request)"
                )
            finally:
                terminate(leftovers(emi))
    finally:
        terminate(leftovers(emi))
        run("image", "deregister", emi)
    spread = ", ".join(f"{count} on {node}" for node, count in sorted(nodes.items()))
    run1 = ("--count 1", median(one))
    rows = [
        Row("instance run -> running, --count 1 (two-NC cloud)", median(one), "s", [run1]),
        Row(f"instance run -> running, --count {BIG_COUNT} over two NCs ({spread})",
            median(big), "s", [run1], goal=3),
        Row("instance run, one alone (two-NC cloud)", median(alone), "s",
            [("one alone", median(alone))]),
        Row(f"{CONCURRENT} x instance run at once, one instance each (wall time of all)",
            median(batch), "s", [("one alone", median(alone))], goal=3),
    ]  # fmt: skip
    return rows, checks

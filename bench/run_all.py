#!/usr/bin/env python3
"""Run every benchmark against the demo cloud and print the tables (--write: into the docs).

--write puts them into docs/benchmarks.md, between the BENCH markers.

    .venv/bin/python bench/run_all.py --write

Reuses the demo's cloud-in-a-box (lab host `ciab`, .lab/ciab) or deploys it first with
scripts/ciab.sh; the demo cloud stays afterwards (`bash scripts/ciab.sh --destroy` removes
it). Everything the benchmarks create in it (images, instances, volumes, key pairs, groups,
a bucket) they remove again. Sections:
- runtime operations (bench/runtime.py) against a bare one-task ansible-runner play;
- cloudctl itself: `instance list` with 1,000 records, 20 commands at once (bench/cli.py);
- resident memory: cloudctl, QEMU per instance, Walrus (bench/memory.py);
- the state store: transactions/s of the TinyDB file vs etcd, 3 members on loopback
  (bench/state_store.py; needs no cloud);
- only with `--only ha`: the faults of issue 12 against the deployed HA lab
  (`scripts/halab.sh up`), each run --repeat times (bench/ha_faults.py; no demo cloud).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cli
import ha_faults
import memory
import runtime
import state_store
from common import (
    PROJECT,
    Row,
    accelerator,
    baseline_play,
    ensure_cloud,
    host_pids,
    load_average,
    machine_facts,
    median,
)

DOC = PROJECT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BENCH:BEGIN -->", "<!-- BENCH:END -->"
SECTIONS = ("runtime", "cli", "memory", "state")
OPT_IN = ("ha",)  # sections run only when named: the HA lab takes a deploy of its own
NO_CLOUD = {"state", "ha"}  # sections that need no demo cloud


def table(rows: list[Row]) -> str:
    lines = ["| measurement | value | ratio |", "|---|---:|---:|"]
    for r in rows:
        value = f"{r.value:.2f} s" if r.unit == "s" else f"{r.value:.1f} {r.unit}"
        lines.append(f"| {r.name} | {value} | {r.ratios()} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (median)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--only", choices=SECTIONS + OPT_IN, action="append", help="some sections only"
    )
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    if args.write and only != set(SECTIONS):
        raise SystemExit("--write needs every section (no --only)")

    started = time.monotonic()
    deployed = ensure_cloud() if only - NO_CLOUD else False
    facts = machine_facts()
    load_start = load_average()
    work = Path(tempfile.mkdtemp(prefix="cloud-bench-"))
    out: list[str] = []
    plays: list[float] = []
    accel = "unknown"
    if only - NO_CLOUD:
        accel = next((accelerator(pid) for pid in host_pids("qemu-system")), accel)

    def baseline(section: str) -> tuple[float, Row]:
        """The baseline of a section, measured right before it (under the same load)."""
        print(f"bench: {section}", file=sys.stderr)
        load = load_average()
        runs = [baseline_play(work) for _ in range(args.repeat)]
        plays.extend(runs)
        base = median(runs)
        spread = f"{min(runs):.2f}-{max(runs):.2f} s"
        note = f"Baseline measured right before: median of {len(runs)} plays ({spread})"
        out.extend([f"### {section}", "", f"{note}; load average {load}.", ""])
        return base, Row(
            "bare one-task ansible-runner play (baseline)", base, "s", [("baseline", base)]
        )

    try:
        if "runtime" in only:
            base, base_row = baseline("Runtime operations (`bench/runtime.py`)")
            rows = runtime.measure(work, base, args.repeat)
            out += [table([base_row, *rows]), ""]
        if "cli" in only or "memory" in only:
            cli.seed_states(work)  # shared by the cli and memory sections
        if "cli" in only:
            base, base_row = baseline("cloudctl `instance list` (`bench/cli.py`)")
            out += [table([base_row, *cli.list_rows(work, base, args.repeat)]), ""]
            base, base_row = baseline(
                f"{cli.CONCURRENT} cloudctl commands at once on the demo cloud (`bench/cli.py`)"
            )
            rows, checks = cli.concurrency_rows(base, args.repeat)
            out += [table([base_row, *rows]), "", *(f"- {line}" for line in checks), ""]
        if "memory" in only:
            print("bench: Resident memory", file=sys.stderr)
            python, rows = memory.cloudctl_rows(work, args.repeat)
            qemu, accel = memory.qemu_rows(work)
            rows += qemu + memory.walrus_rows(python)
            out += ["### Resident memory (`bench/memory.py`)", "", table(rows), ""]
        if "state" in only:
            print("bench: State store", file=sys.stderr)
            load = load_average()
            rows = state_store.measure(work, args.repeat)
            note = f"Median of {args.repeat} runs each; load average at the start {load}."
            out += ["### The state store: TinyDB file vs etcd (`bench/state_store.py`)", "",
                    note, "", table(rows), ""]  # fmt: skip
        if "ha" in only:
            print("bench: HA faults", file=sys.stderr)
            load = load_average()
            lab = ha_faults.Lab.of_halab()
            results = [ha_faults.measure_named(lab, name)
                       for _ in range(args.repeat) for name in ha_faults.ALL_FAULTS]  # fmt: skip
            note = (f"Each fault {args.repeat} times on the HA lab (`scripts/halab.sh up`), "
                    f"clients through the virtual addresses; load average at the start {load}.")  # fmt: skip
            problems = [f"- {r.fault}: {p}" for r in results for p in r.problems()]
            out += ["### HA faults (`bench/ha_faults.py`)", "", note, "",
                    *ha_faults.summary(results), "", *problems]  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)

    minutes = (time.monotonic() - started) / 60
    head = (
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/run_all.py --repeat {args.repeat}` "
        f"({minutes:.0f} min{', demo cloud deployed first' if deployed else ''}) on: "
        f"{facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM, {facts['kernel']}, "
        f"Debian {facts['debian']}, Python {facts['python']}; guests under {accel}. "
        f"Load average (1/5/15 min) at the start {load_start}, at the end {load_average()}. "
        + (
            f"All {len(plays)} baseline plays: {min(plays):.2f}-{max(plays):.2f} s."
            if plays
            else ""
        )
    )
    text = "\n".join([head, "", *out]).rstrip() + "\n"
    print(text)
    if args.write:
        doc = DOC.read_text()
        before, _, rest = doc.partition(BEGIN)
        _, _, after = rest.partition(END)
        DOC.write_text(f"{before}{BEGIN}\n{text}{END}{after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

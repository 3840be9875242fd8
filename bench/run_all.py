#!/usr/bin/env python3
"""Run every benchmark against the demo cloud and print the tables (--write: into the docs).

--write puts them into docs/benchmarks.md, between the BENCH markers.

    .venv/bin/python bench/run_all.py --write

Reuses the demo's cloud-in-a-box (lab host `ciab`, .lab/ciab) or deploys it first with
scripts/ciab.sh, and the two-NC cloud of bench/two_nc.py for the scale section; both stay
afterwards (`bash scripts/ciab.sh --destroy` and `bench/two_nc.py down` remove them).
Everything the benchmarks create in them (images, instances, volumes, key pairs, groups,
a bucket) they remove again. Every goal of issue 13 is printed beside its figure (the table's
goal column) and once more in the goals table at the top. Sections:
- runtime operations (bench/runtime.py) against a bare one-task ansible-runner play and
  each other;
- the boot floor: instance run until SSH against libvirt alone on the same NC, for the tiny
  test image and a Debian image with cloud-init (bench/boot_floor.py);
- launches at scale: --count 16 over two NCs, 20 launches at once (bench/scale.py);
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
from collections.abc import Callable
from pathlib import Path

import cli
import ha_faults
import memory
import runtime
import state_store
import two_nc
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
SECTIONS = ("runtime", "floor", "scale", "cli", "memory", "state")
OPT_IN = ("ha",)  # sections run only when named: the HA lab takes a deploy of its own
NO_CLOUD = {"state", "ha"}  # sections that need no demo cloud


def value_text(r: Row) -> str:
    return f"{r.value:.2f} {r.unit}" if r.unit != "MiB" else f"{r.value:.1f} {r.unit}"


def met_text(r: Row) -> str:
    return {None: "", True: "met", False: "**not met**"}[r.met()]


def table(rows: list[Row]) -> str:
    goals = any(r.goal is not None for r in rows)
    head = "| measurement | value | ratio |" + (" goal | |" if goals else "")
    lines = [head, "|---|---:|---:|" + ("---|---|" if goals else "")]
    for r in rows:
        line = f"| {r.name} | {value_text(r)} | {r.ratios()} |"
        lines.append(line + (f" {r.goal_text()} | {met_text(r)} |" if goals else ""))
    return "\n".join(lines)


def goals_table(rows: list[Row]) -> str:
    """Every goal of the run, its measured ratio (two decimals) and whether it is met."""
    lines = ["| goal | measured | ratio | goal | |", "|---|---:|---:|---|---|"]
    for r in rows:
        if r.goal is not None:
            lines.append(f"| {r.name} | {value_text(r)} | {r.value / r.refs[0][1]:.2f} x "
                         f"{r.refs[0][0]} | {r.goal_text()} | {met_text(r)} |")  # fmt: skip
    return "\n".join(lines)


FLOOR_TITLE = "The boot floor: libvirt alone on the same NC (`bench/boot_floor.py`)"
SCALE_TITLE = "Launches at scale (`bench/scale.py`)"


def floor_section(work: Path, repeat: int, out: list[str], goal_rows: list[Row]) -> None:
    import boot_floor  # read when the section starts (a long run's later sections)

    load = load_average()
    rows, notes = boot_floor.measure(work, repeat)
    goal_rows.extend(rows)
    out.extend([f"### {FLOOR_TITLE}", "", f"Load average at the start {load}.", "",
                table(rows), "", *(f"- {line}" for line in notes), ""])  # fmt: skip


def scale_section(work: Path, repeat: int, out: list[str], goal_rows: list[Row]) -> None:
    import scale  # read when the section starts (a long run's later sections)

    load = load_average()
    rows, checks = scale.measure(work, repeat)
    goal_rows.extend(rows)
    note = (f"On the two-NC cloud `{two_nc.NAME}` (bench/two_nc.py: two lab hosts, "
            f"{two_nc.NC_CORES} vCPUs offered per NC); load average at the start {load}.")  # fmt: skip
    out.extend([f"### {SCALE_TITLE}", "", note, "", table(rows), "",
                *(f"- {line}" for line in checks), ""])  # fmt: skip


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
    deployed = ensure_cloud() if only - NO_CLOUD - {"scale"} else False
    deployed_two = two_nc.up() if "scale" in only else False
    facts = machine_facts()
    load_start = load_average()
    work = Path(tempfile.mkdtemp(prefix="cloud-bench-"))
    out: list[str] = []
    goal_rows: list[Row] = []
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

    def show(start: int) -> None:
        """A section's lines as soon as it is done (the tables come again at the end)."""
        print("\n".join(out[start:]), file=sys.stderr, flush=True)

    def guarded(title: str, section: Callable[[], None]) -> None:
        """Run a section; when it fails, say so in its place and go on with the others."""
        mark = len(out)
        try:
            section()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 -- a long run keeps the others
            del out[mark:]
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            out.extend([f"### {title}", "", f"Not measured: the section failed ({reason}).", ""])
        show(mark)

    try:
        if "runtime" in only:
            base, base_row = baseline("Runtime operations (`bench/runtime.py`)")
            rows = runtime.measure(work, base, args.repeat)
            goal_rows += rows
            out += [table([base_row, *rows]), ""]
            show(0)
        if "floor" in only:
            print("bench: boot floor", file=sys.stderr)
            guarded(FLOOR_TITLE, lambda: floor_section(work, args.repeat, out, goal_rows))
        if "scale" in only:
            print("bench: launches at scale", file=sys.stderr)
            guarded(SCALE_TITLE, lambda: scale_section(work, args.repeat, out, goal_rows))
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
        f"({minutes:.0f} min{', demo cloud deployed first' if deployed else ''}"
        f"{', two-NC cloud deployed first' if deployed_two else ''}) on: "
        f"{facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM, {facts['kernel']}, "
        f"Debian {facts['debian']}, Python {facts['python']}; guests under {accel}. "
        f"Load average (1/5/15 min) at the start {load_start}, at the end {load_average()}. "
        + (
            f"All {len(plays)} baseline plays: {min(plays):.2f}-{max(plays):.2f} s."
            if plays
            else ""
        )
    )
    goals = ["### Issue 13's goals", "", goals_table(goal_rows), ""] if goal_rows else []
    text = "\n".join([head, "", *goals, *out]).rstrip() + "\n"
    print(text)
    if args.write:
        doc = DOC.read_text()
        before, _, rest = doc.partition(BEGIN)
        _, _, after = rest.partition(END)
        DOC.write_text(f"{before}{BEGIN}\n{text}{END}{after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

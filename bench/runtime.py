#!/usr/bin/env python3
"""Benchmarks of the runtime operations, as ratios to a bare one-task ansible-runner play.

Part of `bench/run_all.py` (which deploys the demo cloud when needed and writes
docs/benchmarks.md); alone it needs the cloud-in-a-box of the demo (`bash scripts/ciab.sh`)
and prints its table. It runs cloudctl against the demo with its inventory and home,
registers its own images, launches and removes its own instances and volumes, and leaves
the cloud as it found it.

Measured, each REPEAT times (median reported):
- baseline: ansible_runner.run() of a one-task play (ansible.builtin.ping) over SSH to the
  cloud host, the floor of every runtime operation;
- instance run -> running: 1 instance, and 4 with one --count 4;
- image cache: run of a freshly registered image (cold: the NC downloads it) vs the same
  image again (warm);
- volume attach (and detach) to a running instance;
- image register of a 256 MiB file vs a plain copy of the same file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import IMAGE_DIR, LAB, PROJECT, Row, baseline_play, cloudctl, median, timed


def terminate(ids: list[str]) -> None:
    if ids:
        cloudctl("instance", "terminate", *ids)


def measure(work: Path, base: float, repeat: int) -> list[Row]:
    """The runtime rows; `base` is the baseline play's median seconds of this run."""
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "build-test-image.py")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    rows: list[Row] = []

    def row(name: str, values: list[float]) -> None:
        rows.append(Row(name, median(values), "s", [("baseline", base)]))

    disk = work / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    files = ["--kernel", str(IMAGE_DIR / "vmlinuz"), "--ramdisk", str(IMAGE_DIR / "initrd.img")]
    reg = cloudctl("image", "register", f"bench-{os.getpid()}", "--file", str(disk), *files)
    emi = next(r["id"] for r in reg if r["kind"] == "machine")

    one, four = [], []
    for _ in range(repeat):
        seconds, out = timed(lambda: cloudctl("instance", "run", "--image", emi))
        one.append(seconds)
        terminate([i["id"] for i in out])
        seconds, out = timed(lambda: cloudctl("instance", "run", "--image", emi, "--count", "4"))
        four.append(seconds)
        terminate([i["id"] for i in out])
    row("instance run -> running, 1 instance", one)
    row("instance run -> running, --count 4 (one play)", four)

    cold, warm = [], []
    for n in range(repeat):
        fresh = work / f"cold-{n}.raw"
        with fresh.open("wb") as fh:  # distinct content: a new sha256, a cold cache
            fh.truncate(48 * 1024 * 1024)
            fh.write(os.urandom(4096))
        reg = cloudctl("image", "register", f"cold-{os.getpid()}-{n}", "--file", str(fresh), *files)
        image = next(r["id"] for r in reg if r["kind"] == "machine")
        seconds, out = timed(lambda image=image: cloudctl("instance", "run", "--image", image))
        cold.append(seconds)
        terminate([i["id"] for i in out])
        seconds, out = timed(lambda image=image: cloudctl("instance", "run", "--image", image))
        warm.append(seconds)
        terminate([i["id"] for i in out])
        cloudctl("image", "deregister", image)
        fresh.unlink()
    row("instance run, cold image cache (48 MiB image)", cold)
    row("instance run, warm image cache", warm)

    [inst] = cloudctl("instance", "run", "--image", emi)
    vol = cloudctl("volume", "create", "--size", "1")[0]["id"]
    attach, detach = [], []
    for _ in range(repeat):
        seconds, _ = timed(lambda: cloudctl("volume", "attach", vol, "--instance", inst["id"]))
        attach.append(seconds)
        seconds, _ = timed(lambda: cloudctl("volume", "detach", vol))
        detach.append(seconds)
    cloudctl("volume", "delete", vol)
    terminate([inst["id"]])
    row("volume attach", attach)
    row("volume detach", detach)

    big = work / "big.raw"
    with big.open("wb") as fh:
        for _ in range(256):
            fh.write(os.urandom(1024 * 1024))
    copy_s = median([timed(lambda: shutil.copyfile(big, work / "copy.raw"))[0]
                     for _ in range(repeat)])  # fmt: skip
    register_s = []
    for n in range(repeat):
        with big.open("r+b") as fh:  # a new checksum each time: a real upload
            fh.write(os.urandom(16))
        seconds, reg = timed(
            lambda n=n: cloudctl("image", "register", f"big-{os.getpid()}-{n}", "--file", str(big))
        )
        register_s.append(seconds)
        cloudctl("image", "deregister", reg[0]["id"])
    copy = [("copy", copy_s)]
    rows.append(Row("plain copy of a 256 MiB file (file baseline)", copy_s, "s", copy))
    rows.append(Row("image register of the same 256 MiB file", median(register_s), "s", copy))
    cloudctl("image", "deregister", emi)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not (LAB / "inventory").is_dir():
        raise SystemExit("no cloud-in-a-box: run `bash scripts/ciab.sh` first")
    work = Path(tempfile.mkdtemp(prefix="cloud-bench-"))
    try:
        base = median([baseline_play(work) for _ in range(args.repeat)])
        rows = [
            Row("bare one-task ansible-runner play (baseline)", base, "s", [("baseline", base)])
        ]
        rows += measure(work, base, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        print(f"{r.name}: {r.value:.2f} s, {r.ratios()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

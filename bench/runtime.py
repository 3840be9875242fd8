#!/usr/bin/env python3
"""Benchmarks of the runtime operations, as ratios to a bare one-task ansible-runner play.

Needs the cloud-in-a-box of the demo (`bash scripts/ciab.sh`): it runs cloudctl against it
with the demo's inventory and home, registers its own images, launches and removes its own
instances and volumes, and leaves the cloud as it found it. Prints a Markdown table and,
with --write, puts it into docs/benchmarks.md between the BENCH markers.

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
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ansible_runner

PROJECT = Path(__file__).resolve().parents[1]
LAB = PROJECT / ".lab" / "ciab"
BIN = Path(sys.executable).parent
IMAGE_DIR = PROJECT / ".cache" / "test-image"
DOC = PROJECT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BENCH:BEGIN -->", "<!-- BENCH:END -->"


def env() -> dict[str, str]:
    return dict(
        os.environ,
        CLOUDCTL_INVENTORY=str(LAB / "inventory"),
        CLOUDCTL_HOME=str(LAB / "cloudctl"),
        PATH=f"{BIN}:{os.environ['PATH']}",
    )


def cloudctl(*args: str) -> list | dict | str:
    proc = subprocess.run(
        [str(BIN / "cloudctl"), "-o", "json", *args],
        capture_output=True, text=True, env=env(), check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"cloudctl {' '.join(args)} failed:\n{proc.stderr}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return proc.stdout


def timed(func) -> tuple[float, object]:
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def baseline(workdir: Path) -> float:
    """One ansible_runner.run() of a one-task play against the cloud host."""
    play = workdir / "ping.yml"
    play.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    run_dir.mkdir()
    seconds, result = timed(
        lambda: ansible_runner.run(
            private_data_dir=str(run_dir),
            playbook=str(play),
            inventory=str(LAB / "inventory"),
            envvars={"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "PATH": env()["PATH"]},
            quiet=True,
        )
    )
    if result.status != "successful":
        raise SystemExit(f"baseline play failed: {result.status}")
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def terminate(ids: list[str]) -> None:
    if ids:
        cloudctl("instance", "terminate", *ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if not (LAB / "inventory").is_dir():
        raise SystemExit("no cloud-in-a-box: run `bash scripts/ciab.sh` first")
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "build-test-image.py")], check=True)
    work = Path(tempfile.mkdtemp(prefix="cloud-bench-"))
    rows: list[tuple[str, float]] = []
    try:
        base = median([baseline(work) for _ in range(args.repeat)])
        rows.append(("bare one-task ansible-runner play (baseline)", base))

        disk = work / "root.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
        files = ["--kernel", str(IMAGE_DIR / "vmlinuz"), "--ramdisk", str(IMAGE_DIR / "initrd.img")]
        reg = cloudctl("image", "register", f"bench-{os.getpid()}", "--file", str(disk), *files)
        emi = next(r["id"] for r in reg if r["kind"] == "machine")

        one, four = [], []
        for _ in range(args.repeat):
            seconds, out = timed(lambda: cloudctl("instance", "run", "--image", emi))
            one.append(seconds)
            terminate([i["id"] for i in out])
            seconds, out = timed(
                lambda: cloudctl("instance", "run", "--image", emi, "--count", "4")
            )
            four.append(seconds)
            terminate([i["id"] for i in out])
        rows.append(("instance run -> running, 1 instance", median(one)))
        rows.append(("instance run -> running, --count 4 (one play)", median(four)))

        cold, warm = [], []
        for n in range(args.repeat):
            fresh = work / f"cold-{n}.raw"
            with fresh.open("wb") as fh:  # distinct content: a new sha256, a cold cache
                fh.truncate(48 * 1024 * 1024)
                fh.write(os.urandom(4096))
            reg = cloudctl(
                "image", "register", f"cold-{os.getpid()}-{n}", "--file", str(fresh), *files
            )
            image = next(r["id"] for r in reg if r["kind"] == "machine")
            seconds, out = timed(lambda image=image: cloudctl("instance", "run", "--image", image))
            cold.append(seconds)
            terminate([i["id"] for i in out])
            seconds, out = timed(lambda image=image: cloudctl("instance", "run", "--image", image))
            warm.append(seconds)
            terminate([i["id"] for i in out])
            cloudctl("image", "deregister", image)
        rows.append(("instance run, cold image cache (48 MiB image)", median(cold)))
        rows.append(("instance run, warm image cache", median(warm)))

        [inst] = cloudctl("instance", "run", "--image", emi)
        vol = cloudctl("volume", "create", "--size", "1")[0]["id"]
        attach, detach = [], []
        for _ in range(args.repeat):
            seconds, _ = timed(lambda: cloudctl("volume", "attach", vol, "--instance", inst["id"]))
            attach.append(seconds)
            seconds, _ = timed(lambda: cloudctl("volume", "detach", vol))
            detach.append(seconds)
        cloudctl("volume", "delete", vol)
        terminate([inst["id"]])
        rows.append(("volume attach", median(attach)))
        rows.append(("volume detach", median(detach)))

        big = work / "big.raw"
        with big.open("wb") as fh:
            for _ in range(256):
                fh.write(os.urandom(1024 * 1024))
        copy_s = median([timed(lambda: shutil.copyfile(big, work / "copy.raw"))[0]
                         for _ in range(args.repeat)])  # fmt: skip
        register_s = []
        for n in range(args.repeat):
            with big.open("r+b") as fh:  # a new checksum each time: a real upload
                fh.write(os.urandom(16))
            seconds, reg = timed(
                lambda n=n: cloudctl(
                    "image", "register", f"big-{os.getpid()}-{n}", "--file", str(big)
                )
            )
            register_s.append(seconds)
            cloudctl("image", "deregister", reg[0]["id"])
        rows.append(("plain copy of a 256 MiB file (file baseline)", copy_s))
        rows.append(("image register of the same 256 MiB file", median(register_s)))
        cloudctl("image", "deregister", emi)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = render(rows, base, copy_s)
    print(table)
    if args.write:
        text = DOC.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return 0


def render(rows: list[tuple[str, float]], base: float, copy_s: float) -> str:
    when = time.strftime("%Y-%m-%d")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.machine())  # fmt: skip
    lines = [
        (
            f"Measured {when} on {os.cpu_count()} x {cpu}, "
            f"{platform.system()} {platform.release()}, guests under TCG. Median of the repeats."
        ),
        "",
        "| operation | seconds | ratio |",
        "|---|---:|---:|",
    ]
    for name, seconds in rows:
        ref = copy_s if "256 MiB" in name else base
        unit = "x copy" if "256 MiB" in name else "x baseline"
        lines.append(f"| {name} | {seconds:.2f} | {seconds / ref:.1f} {unit} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

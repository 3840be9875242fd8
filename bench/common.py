"""What the benchmarks share: the demo cloud, cloudctl as a subprocess, the baseline play,
the machine's facts, and resident memory of processes (of this machine or of a lab host).

A row of every table is a `Row`: a value, its unit, and the baselines it is a ratio to
(values measured in the same run). bench/run_all.py renders them into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
HOST = os.environ.get("CIAB_HOST", "ciab")  # the demo's lab host and cloud (scripts/ciab.sh)
LAB = PROJECT / ".lab" / HOST
BIN = Path(sys.executable).parent
IMAGE_DIR = PROJECT / ".cache" / "test-image"
LAB_DIR = Path(os.environ.get("CLOUDLAB_DIR", "/root/.cloudlab"))


@dataclass
class Row:
    """One figure and the baselines (same run, same unit) it is a ratio to."""

    name: str
    value: float
    unit: str  # "s", "MiB" or "MiB/s"
    refs: list[tuple[str, float]]  # (baseline name, baseline value)
    goal: float | None = None  # issue 13's limit of the ratio to the first baseline
    at_least: bool = False  # the goal is a floor (throughput), not a ceiling

    def ratios(self) -> str:
        return "; ".join(f"{ratio(self.value / ref)} x {name}" for name, ref in self.refs)

    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        return f"{'>=' if self.at_least else '<='} {self.goal} x {self.refs[0][0]}"

    def met(self) -> bool | None:
        if self.goal is None:
            return None
        value = self.value / self.refs[0][1]
        return value >= self.goal if self.at_least else value <= self.goal


def ratio(value: float) -> str:
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def env(home: Path | None = None, lab: Path = LAB) -> dict[str, str]:
    """cloudctl's environment for the demo cloud (or another state home, or another
    cloud's files in .lab/NAME)."""
    return dict(
        os.environ,
        CLOUDCTL_INVENTORY=str(lab / "inventory"),
        CLOUDCTL_HOME=str(home or lab / "cloudctl"),
        PATH=f"{BIN}:{os.environ['PATH']}",
    )


def cloudctl_argv(*args: str) -> list[str]:
    return [str(BIN / "cloudctl"), *args]


def cloudctl(*args: str, home: Path | None = None, lab: Path = LAB) -> list | dict | str:
    """Run cloudctl -o json; its parsed output (or its text); exits on failure."""
    proc = subprocess.run(
        cloudctl_argv("-o", "json", *args),
        capture_output=True, text=True, env=env(home, lab), check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"cloudctl {' '.join(args)} failed:\n{proc.stderr}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return proc.stdout


# The boot sector of a guest that halts at once: cli; hlt; jmp back to the hlt.
HALT_SECTOR = bytes([0xFA, 0xF4, 0xEB, 0xFD]).ljust(510, b"\0") + b"\x55\xaa"


def halting_image(work: Path, lab: Path = LAB) -> str:
    """Register a 1 MiB whole-disk image whose boot sector halts the CPU; its emi. Its guest
    reaches `running` like any other and then idles: the control-plane benchmarks (many
    launches and terminations at once) measure the cloud, not TCG emulating N kernel boots
    on the same 2 cores (which real nodes with KVM do elsewhere; the boot floor bench
    measures a guest's boot)."""
    disk = work / f"halt-{time.monotonic_ns()}.raw"
    disk.write_bytes(HALT_SECTOR.ljust(1 << 20, b"\0"))
    try:
        reg = cloudctl("image", "register", disk.stem, "--file", str(disk), lab=lab)
    finally:
        disk.unlink()
    return next(r["id"] for r in reg if r["kind"] == "machine")


def timed(func: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def baseline_play(workdir: Path, lab: Path = LAB) -> float:
    """Seconds of one ansible_runner.run() of a one-task play (ping) against the cloud's
    hosts (the demo's one host)."""
    import ansible_runner

    play = workdir / "ping.yml"
    play.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    run_dir.mkdir()
    seconds, result = timed(
        lambda: ansible_runner.run(
            private_data_dir=str(run_dir),
            playbook=str(play),
            inventory=str(lab / "inventory"),
            envvars={"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "PATH": env()["PATH"]},
            quiet=True,
        )
    )
    if result.status != "successful":
        raise SystemExit(f"baseline play failed: {result.status}")
    return seconds


# --- the demo cloud ---------------------------------------------------------------------


def lab_info(host: str = HOST) -> dict | None:
    path = LAB_DIR / "hosts" / host / "info.json"
    return json.loads(path.read_text()) if path.exists() else None


def ensure_cloud() -> bool:
    """Reuse the demo cloud, or deploy it with scripts/ciab.sh; True when deployed now."""
    info = lab_info()
    alive = info is not None and Path(f"/proc/{info['sshd_pid']}").exists()
    if alive and (LAB / "inventory").is_dir() and (LAB / "cloudctl" / "cloud.yml").is_file():
        return False
    print("bench: no demo cloud: deploying it with scripts/ciab.sh", file=sys.stderr)
    subprocess.run(["bash", str(PROJECT / "scripts" / "ciab.sh")], check=True)
    return True


def in_host(*command: str, host: str = HOST, secrets: dict[str, str] | None = None) -> str:
    """Output of a command run inside every namespace of a lab host (the demo's); `secrets`
    go to its environment (never its command line)."""
    info = lab_info(host)
    if info is None:
        raise SystemExit(f"no lab host {host}")
    return subprocess.run(
        ["nsenter", "-t", str(info["sshd_pid"]), "-m", "-u", "-n", "--", *command],
        capture_output=True, text=True, check=True, env=dict(os.environ, **(secrets or {})),
    ).stdout  # fmt: skip


def host_path(path: str, host: str = HOST) -> Path:
    """A path of a lab host's own mount namespace, seen from here (through its sshd's root)."""
    info = lab_info(host)
    if info is None:
        raise SystemExit(f"no lab host {host}")
    return Path(f"/proc/{info['sshd_pid']}/root") / path.lstrip("/")


def host_pids(comm_prefix: str) -> list[int]:
    """Processes of the demo's lab host (its network namespace) whose name starts so."""
    out = subprocess.run(
        ["ip", "netns", "pids", f"cloudlab-{HOST}"], capture_output=True, text=True, check=True
    ).stdout
    pids = []
    for pid in (int(p) for p in out.split()):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith(comm_prefix):
            pids.append(pid)
    return pids


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- the machine ------------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.machine(),
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    debian = Path("/etc/debian_version")
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "debian": debian.read_text().strip() if debian.exists() else "not Debian",
        "python": platform.python_version(),
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def accelerator(qemu_pid: int) -> str:
    """TCG or KVM, as the QEMU process of a running guest was started."""
    argv = cmdline(qemu_pid)
    for i, arg in enumerate(argv):
        if arg == "-accel" and i + 1 < len(argv):
            return argv[i + 1].split(",")[0].upper()
        if arg.startswith("-machine") and i + 1 < len(argv) and "accel=" in argv[i + 1]:
            return argv[i + 1].split("accel=")[1].split(",")[0].split(":")[0].upper()
    return "unknown"

"""Resident memory: the cloudctl process, QEMU per instance on the NC, and Walrus (weed).

- baseline: peak RSS of a bare `python -c pass` of the same venv (what any cloudctl
  process costs before it imports anything);
- cloudctl `instance list` with 1,000 records (and an empty state): peak RSS of the process
  (ru_maxrss, reported by GNU time: `/usr/bin/time -f %M`);
- the NC's cost per instance: VmRSS of the domain's QEMU process in the lab host, once the
  guest answers SSH, minus the guest RAM of its instance type (as QEMU was told, -m);
- Walrus: VmRSS of the lab host's weed process(es) idle, and the peak while 100 objects of
  1 MiB are uploaded with boto3 (credentials of the cloud's cloud.yml), sampled every 50 ms.
"""

from __future__ import annotations

import base64
import logging
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import (
    BIN,
    LAB,
    Row,
    accelerator,
    cloudctl,
    cloudctl_argv,
    cmdline,
    env,
    host_pids,
    lab_info,
    median,
    rss_kib,
)

from cloudctl import walrus
from cloudctl.cloudconfig import load_config
from cloudctl.hostkeys import HostKey, console_host_keys

OBJECTS = 100
OBJECT_SIZE = 1024 * 1024
SAMPLE_S = 0.05  # RSS sampling interval
SSH_DEADLINE_S = 300  # a TCG guest boots, gets its address by DHCP, starts dropbear
MiB = 1024
GNU_TIME = "/usr/bin/time"


def peak_rss_kib(argv: list[str], home: Path | None = None) -> int:
    """Peak RSS (KiB) of one child process run to its end, as GNU time reports it.

    Not wait4() of our own child: Linux counts into a child's maxrss the pages of the
    process it was forked from (here the benchmark, with boto3 and cloudctl imported); GNU
    time forks it from a process of a few hundred KiB.
    """
    if not Path(GNU_TIME).exists():
        raise SystemExit(f"{GNU_TIME} is missing: apt-get install time")
    with tempfile.NamedTemporaryFile("r", prefix="bench-rss-") as report:
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", report.name, *argv],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(home),
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr}")
        return int(report.read().split()[-1])


def cloudctl_rows(work: Path, repeat: int) -> tuple[float, list[Row]]:
    """(python -c pass peak RSS in MiB, rows); work/home-1000 holds the seeded state."""
    runs = max(repeat, 5)
    python = median([peak_rss_kib([str(BIN / "python"), "-c", "pass"]) for _ in range(runs)]) / MiB
    rows = [Row("python -c pass, same venv (memory baseline)", python, "MiB", [("python", python)])]
    for name, home, args in [
        ("cloudctl instance list, empty state", work / "home-empty", ["instance", "list"]),
        ("cloudctl instance list, 1,000 instances (table)", work / "home-1000", ["instance", "list"]),
        ("cloudctl instance list, 1,000 instances (-o json)", work / "home-1000",
         ["-o", "json", "instance", "list"]),
    ]:  # fmt: skip
        argv = cloudctl_argv(*args)
        value = median([peak_rss_kib(argv, home) for _ in range(runs)]) / MiB
        rows.append(Row(name, value, "MiB", [("python", python)]))
    return python, rows


# --- QEMU on the NC ---------------------------------------------------------------------


def guest_answers(ip: str, key: Path, host_keys: list[HostKey]) -> bool:
    """True when the guest runs a command over SSH (through the lab host as a jump host),
    checking the lab host's key (inventory's known_hosts) and the guest's (`host_keys`)."""
    import paramiko

    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # refusals while it boots
    info = lab_info()
    jump = paramiko.SSHClient()
    jump.get_host_keys().load(str(LAB / "inventory" / "known_hosts"))
    try:
        jump.connect(info["address"], username="root", key_filename=info["key"], timeout=10,
                     allow_agent=False, look_for_keys=False)  # fmt: skip
        channel = jump.get_transport().open_channel("direct-tcpip", (ip, 22), ("127.0.0.1", 0))
        guest = paramiko.SSHClient()
        for k in host_keys:
            blob = base64.b64decode(k.blob)
            guest.get_host_keys().add(ip, k.type, paramiko.PKey.from_type_string(k.type, blob))
        guest.connect(ip, username="root", pkey=paramiko.Ed25519Key.from_private_key_file(
            str(key)), sock=channel, timeout=10, banner_timeout=10, auth_timeout=10,
            allow_agent=False, look_for_keys=False)  # fmt: skip
        try:
            _, stdout, _ = guest.exec_command("true", timeout=30)
            return stdout.channel.recv_exit_status() == 0
        finally:
            guest.close()
    except (OSError, paramiko.SSHException, EOFError):
        return False
    finally:
        jump.close()


def qemu_of(instance_id: str) -> int:
    for pid in host_pids("qemu-system"):
        if any(arg.startswith(f"guest={instance_id},") for arg in cmdline(pid)):
            return pid
    raise SystemExit(f"no QEMU process of {instance_id} in the lab host")


def guest_ram_kib(pid: int) -> int:
    """The guest RAM QEMU was started with (-m, in MiB unless it has a suffix)."""
    argv = cmdline(pid)
    size = argv[argv.index("-m") + 1].split(",")[0].removeprefix("size=")
    units = {"k": 1, "m": 1024, "g": 1024 * 1024}
    if size[-1].lower() in units:
        return int(float(size[:-1]) * units[size[-1].lower()])
    return int(size) * 1024


def qemu_rows(work: Path) -> tuple[list[Row], str]:
    """Rows of one instance's QEMU, and the accelerator it ran with (TCG or KVM)."""
    name = f"bench-{os.getpid()}"
    key = work / f"{name}.pem"
    cloudctl("keypair", "create", name, "--output-file", str(key))
    instance = None
    try:
        [instance] = cloudctl("instance", "run", "--image", tiny_image(), "--keypair", name)
        deadline = time.monotonic() + SSH_DEADLINE_S
        host_keys: list[HostKey] = []  # what the guest prints on its console
        while not guest_answers(instance["private_ip"], key, host_keys):
            if time.monotonic() > deadline:
                raise SystemExit(f"{instance['id']} did not answer SSH in {SSH_DEADLINE_S} s")
            host_keys = host_keys or console_host_keys(
                str(cloudctl("instance", "console", instance["id"]))
            )
            time.sleep(2)  # poll interval
        pid = qemu_of(instance["id"])
        samples = []
        for _ in range(10):
            samples.append(rss_kib(pid))
            time.sleep(0.2)  # sampling interval
        rss = statistics.median(samples) / MiB
        guest = guest_ram_kib(pid) / MiB
        accel = accelerator(pid)
    finally:
        if instance:
            cloudctl("instance", "terminate", instance["id"])
        cloudctl("keypair", "delete", name)
    ref = [("guest RAM", guest)]
    itype = instance["type"]
    return [
        Row(f"guest RAM of the instance ({itype}, memory baseline)", guest, "MiB", ref),
        Row("QEMU resident memory, guest booted (answers SSH)", rss, "MiB", ref),
        Row("per-instance overhead on the NC (QEMU RSS - guest RAM)", rss - guest, "MiB", ref),
    ], accel


def tiny_image() -> str:
    """The demo's machine image (scripts/ciab.sh registers it as `tiny`)."""
    images = [i for i in cloudctl("image", "list") if i["name"] == "tiny"]
    if not images:
        raise SystemExit("the demo cloud has no image `tiny`: run `bash scripts/ciab.sh`")
    return images[0]["id"]


# --- Walrus -------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of some processes until stopped; keeps every sample."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(sum(rss_kib(p) for p in self.pids))
            self.stop.wait(SAMPLE_S)  # sampling interval


def walrus_rows(python: float) -> list[Row]:
    pids = host_pids("weed")
    if not pids:
        raise SystemExit("no weed process in the lab host")
    c = walrus.client(load_config(LAB / "cloudctl" / "cloud.yml").walrus)
    bucket = f"bench-{os.getpid()}"
    idle = RssSampler(pids)
    idle.start()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and len(idle.samples) < 40:
        time.sleep(SAMPLE_S)  # sampling interval
    idle.stop.set()
    idle.join()
    c.s3.create_bucket(Bucket=bucket)
    keys = []
    busy = RssSampler(pids)
    try:
        busy.start()
        for n in range(OBJECTS):
            key = f"object-{n:03d}"
            c.s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(OBJECT_SIZE))
            keys.append(key)
        busy.stop.set()
        busy.join()
    finally:
        busy.stop.set()
        for key in keys:
            c.s3.delete_object(Bucket=bucket, Key=key)
        c.s3.delete_bucket(Bucket=bucket)
    idle_mib = statistics.median(idle.samples) / MiB
    peak_mib = max(busy.samples) / MiB
    return [
        Row(f"Walrus idle ({len(pids)} weed process(es))", idle_mib, "MiB", [("python", python)]),
        Row(
            f"Walrus peak while {OBJECTS} x 1 MiB objects are uploaded",
            peak_mib,
            "MiB",
            [("Walrus idle", idle_mib), ("python", python)],
        ),
    ]

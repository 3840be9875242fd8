#!/usr/bin/env python3
"""Benchmarks of the runtime operations, as ratios to a bare one-task ansible-runner play and
to each other, with issue 13's goals.

Part of `bench/run_all.py` (which deploys the demo cloud when needed and writes
docs/benchmarks.md); alone it needs the cloud-in-a-box of the demo (`bash scripts/ciab.sh`)
and prints its table. It runs cloudctl against the demo with its inventory and home,
registers its own images, launches and removes its own instances and volumes, and leaves
the cloud as it found it.

Measured, each REPEAT times (median reported):
- baseline: ansible_runner.run() of a one-task play (ansible.builtin.ping) over SSH to the
  cloud host, the floor of every runtime operation;
- instance run -> running: 1 instance, and 4 with one --count 4; terminate of the one and of
  the four in one command (a guest that halts at once: common.halting_image);
  boot-and-delete (run + terminate of one tiny test image), beside Rally's median;
- image cache: the first run of a freshly registered 64 MiB and 1 GiB image (cold: the NC
  downloads it) and the next runs (warm); the NC's download throughput (as `instance run`
  reports it) against a plain boto3 download of the same object inside the lab host;
- volume attach (and detach) to a running instance;
- image register of a 256 MiB file vs a plain copy of the same file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    IMAGE_DIR,
    LAB,
    PROJECT,
    Row,
    baseline_play,
    cloudctl,
    cloudctl_argv,
    env,
    halting_image,
    in_host,
    median,
    timed,
)

from cloudctl.cloudconfig import load_config

MiB = 1024 * 1024
RALLY_S = 8.6  # OpenStack Rally's boot-and-delete median, KVM hardware (issue 13)
SMALL_MIB, BIG_MIB = 64, 1024
BOOT_DEADLINE_S = 300  # the tiny guest's boot under TCG, before a volume is attached
# A plain boto3 download inside the lab host (the NC's view of Walrus), with the lab host's
# own python3-boto3; the credentials come in the environment, never on the command line.
BOTO3_GET = """
import os, sys, time, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["WALRUS_ENDPOINT"], region_name="us-east-1",
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
start = time.perf_counter()
s3.download_file("images", sys.argv[1], sys.argv[2])
print(time.perf_counter() - start)
os.unlink(sys.argv[2])
"""


def terminate(ids: list[str]) -> float:
    """Seconds of one `instance terminate` of these instances."""
    return timed(lambda: cloudctl("instance", "terminate", *ids))[0] if ids else 0.0


def tiny_files() -> list[str]:
    return ["--kernel", str(IMAGE_DIR / "vmlinuz"), "--ramdisk", str(IMAGE_DIR / "initrd.img")]


def register_raw(work: Path, name: str, mib: int) -> tuple[str, str]:
    """A new raw root disk of `mib` MiB (sparse, random head: a new sha256) registered with
    the tiny kernel and ramdisk: (emi, sha256 of the disk)."""
    path = work / f"{name}.raw"
    with path.open("wb") as fh:
        fh.truncate(mib * MiB)
        fh.write(os.urandom(4096))
    try:
        reg = cloudctl("image", "register", name, "--file", str(path), *tiny_files())
        with path.open("rb") as fh:
            sha256 = hashlib.file_digest(fh, "sha256").hexdigest()  # the object's key
    finally:
        path.unlink()
    return next(r["id"] for r in reg if r["kind"] == "machine"), sha256


def boto3_get_s(sha256: str) -> float:
    """Seconds of a plain boto3 download of images/<sha256> inside the demo's lab host, into
    the NC's data directory (the disk its image cache writes to)."""
    walrus = load_config(LAB / "cloudctl" / "cloud.yml").walrus
    secrets = {"WALRUS_ENDPOINT": walrus.endpoint, "AWS_ACCESS_KEY_ID": walrus.access_key,
               "AWS_SECRET_ACCESS_KEY": walrus.secret_key}  # fmt: skip
    target = f"/var/lib/cloud-bench-get-{sha256[:12]}"
    out = in_host("/usr/bin/python3", "-c", BOTO3_GET, sha256, target, secrets=secrets)
    return float(out.split()[-1])


def launch_rows(halting: str, tiny: str, base: float, repeat: int) -> list[Row]:
    """Launch and terminate ratios with the halting image (common.halting_image: the cloud's
    own work), boot-and-delete with the tiny test image (its guest boots meanwhile)."""
    one, four, term_one, term_four, boot_delete = [], [], [], [], []
    for _ in range(repeat):
        seconds, out = timed(lambda: cloudctl("instance", "run", "--image", halting))
        one.append(seconds)
        term_one.append(terminate([i["id"] for i in out]))
        seconds, out = timed(
            lambda: cloudctl("instance", "run", "--image", halting, "--count", "4")
        )
        four.append(seconds)
        term_four.append(terminate([i["id"] for i in out]))
        seconds, out = timed(lambda: cloudctl("instance", "run", "--image", tiny))
        boot_delete.append(seconds + terminate([i["id"] for i in out]))
    b = ("baseline", base)
    run1 = ("--count 1", median(one))
    term1 = ("terminate of one", median(term_one))
    rally = ("Rally's boot-and-delete median (8.6 s, KVM hardware)", RALLY_S)
    return [
        Row("instance run -> running, 1 instance", median(one), "s", [b], goal=1.5),
        Row("instance run -> running, --count 4 (one command)", median(four), "s", [run1, b],
            goal=1.5),
        Row("instance terminate, 1 instance", median(term_one), "s", [b]),
        Row("instance terminate, 4 instances in one command", median(term_four), "s", [term1, b],
            goal=1.5),
        Row("boot-and-delete: run -> running -> terminate -> gone (tiny test image, ours "
            "under TCG)", median(boot_delete), "s", [rally, b]),
    ]  # fmt: skip


# What `instance run` says of an image its NC downloaded (cloudctl/cli/instance.py).
DOWNLOAD = re.compile(r"downloaded [\d.]+ MiB in [\d.]+ s \(([\d.]+) MiB/s\)")


def console(instance_id: str) -> bytes:
    """The instance's console log (`cloudctl instance console`)."""
    return subprocess.run(cloudctl_argv("instance", "console", instance_id),
                          capture_output=True, env=env(), check=True).stdout  # fmt: skip


def run_said(emi: str) -> tuple[list, str]:
    """`instance run` of one instance: its instances and what it said on stderr."""
    proc = subprocess.run(cloudctl_argv("-o", "json", "instance", "run", "--image", emi),
                          capture_output=True, text=True, env=env(), check=True)  # fmt: skip
    return json.loads(proc.stdout), proc.stderr


def cache_rows(work: Path, base: float, repeat: int) -> list[Row]:
    """Cold and warm image cache, 64 MiB and 1 GiB images; the NC's download throughput.
    Each image is registered once (a 1 GiB upload is slow): its first launch is the one cold
    sample, the next `repeat` are warm."""
    cold, warm = {}, {}
    boto3_mibs = []
    for mib in (SMALL_MIB, BIG_MIB):
        emi, sha = register_raw(work, f"cache-{os.getpid()}-{mib}", mib)
        try:
            runs = []
            for n in range(1 + repeat):
                seconds, (out, said) = timed(lambda emi=emi: run_said(emi))
                runs.append(seconds)
                terminate([i["id"] for i in out])
                if n == 0 and mib == BIG_MIB:  # the NC's own figure of its download
                    nc_mibs = float(DOWNLOAD.search(said).group(1))
            cold[mib], warm[mib] = runs[0], median(runs[1:])
            if mib == BIG_MIB:
                boto3_mibs = [mib / boto3_get_s(sha) for _ in range(repeat)]
        finally:
            cloudctl("image", "deregister", emi)
    b = ("baseline", base)
    warm_small = (f"warm {SMALL_MIB} MiB image", warm[SMALL_MIB])
    boto3 = ("boto3 download on the NC", median(boto3_mibs))
    return [
        Row(f"instance run, cold image cache ({SMALL_MIB} MiB image)", cold[SMALL_MIB], "s", [b]),
        Row(f"instance run, warm image cache ({SMALL_MIB} MiB image)", warm[SMALL_MIB], "s", [b]),
        Row(f"instance run, cold image cache ({BIG_MIB} MiB image)", cold[BIG_MIB], "s", [b]),
        Row(f"instance run, warm image cache ({BIG_MIB} MiB image)", warm[BIG_MIB], "s",
            [warm_small, b], goal=1.1),
        Row(f"plain boto3 download of the {BIG_MIB} MiB object inside the NC",
            boto3[1], "MiB/s", [boto3]),
        Row(f"the NC's download of the {BIG_MIB} MiB image (sha256 checked, fsync'ed), as "
            "`instance run` reports it",
            nc_mibs, "MiB/s", [boto3], goal=0.8, at_least=True),
    ]  # fmt: skip


def volume_rows(emi: str, base: float, repeat: int) -> list[Row]:
    [inst] = cloudctl("instance", "run", "--image", emi)
    vol = cloudctl("volume", "create", "--size", "1")[0]["id"]
    # A guest still booting under TCG may not answer the unplug of a detach yet.
    deadline = time.monotonic() + BOOT_DEADLINE_S
    while b"BEGIN SSH HOST KEY KEYS" not in console(inst["id"]):
        if time.monotonic() > deadline:
            raise SystemExit(f"{inst['id']} did not boot within {BOOT_DEADLINE_S} s")
        time.sleep(1)  # poll interval
    attach, detach = [], []
    for _ in range(repeat):
        seconds, _ = timed(lambda: cloudctl("volume", "attach", vol, "--instance", inst["id"]))
        attach.append(seconds)
        seconds, _ = timed(lambda: cloudctl("volume", "detach", vol))
        detach.append(seconds)
    cloudctl("volume", "delete", vol)
    terminate([inst["id"]])
    b = [("baseline", base)]
    return [
        Row("volume attach", median(attach), "s", b, goal=1.3),
        Row("volume detach", median(detach), "s", b, goal=1.2),
    ]


def register_rows(work: Path, repeat: int) -> list[Row]:
    big = work / "big.raw"
    with big.open("wb") as fh:
        for _ in range(256):
            fh.write(os.urandom(MiB))
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
    big.unlink()
    (work / "copy.raw").unlink()
    copy = [("copy", copy_s)]
    return [
        Row("plain copy of a 256 MiB file (file baseline)", copy_s, "s", copy),
        Row("image register of the same 256 MiB file", median(register_s), "s", copy),
    ]


def measure(work: Path, base: float, repeat: int) -> list[Row]:
    """The runtime rows; `base` is the baseline play's median seconds of this run."""
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "build-test-image.py")], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    disk = work / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    reg = cloudctl("image", "register", f"bench-{os.getpid()}", "--file", str(disk), *tiny_files())
    emi = next(r["id"] for r in reg if r["kind"] == "machine")
    halting = halting_image(work)
    try:
        rows = launch_rows(halting, emi, base, repeat)
        rows += cache_rows(work, base, repeat)
        rows += volume_rows(emi, base, repeat)
        rows += register_rows(work, repeat)
    finally:
        cloudctl("image", "deregister", emi)
        cloudctl("image", "deregister", halting)
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

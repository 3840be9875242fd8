"""The boot floor: `cloudctl instance run` until the guest answers SSH, against the same guest
defined and started directly with libvirt on the same NC until it answers SSH.

For each image (the tiny test image, and the whole-disk Debian image with cloud-init of
scripts/build-distro-image.py), each of REPEAT rounds:
1. ours: `cloudctl instance run` with a key pair, then poll until SSH answers;
2. the floor: our domain is stopped (`virsh destroy`, its address, DHCP reservation and
   firewall chains stay), and the same guest is started by hand on the same NC: a new
   qcow2 overlay on the same cached image (`qemu-img create`, as the NC makes it), a copy of
   the instance's seed ISO, and its domain.xml with only the name, the overlay and the
   console file changed (same MAC, tap, bridge): `virsh define` + `virsh start`, then the
   same poll. Then it is removed, and ours terminated.

"Answers SSH": a TCP connection to port 22 of the guest (from the lab host, which carries the
instance network) gives an SSH banner and a host key that the guest printed on its console
(cloud-init's "BEGIN SSH HOST KEY KEYS" block, read from the console file on the NC): the
poll checks the key, as the tests do, and never authenticates.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import HOST, LAB, PROJECT, Row, cloudctl, host_path, in_host, lab_info, median

from cloudctl.hostkeys import console_host_keys

SSH_DEADLINE_S = 900  # a Debian guest with cloud-init under TCG on a loaded machine
POLL_S = 0.5
FLOOR_DIR = "/var/lib/cloud-bench-floor"
DISTRO_TYPE = "c1.medium"  # 256 MiB: cloud-init (Python) does not fit m1.small's 128 MiB


class GuestProbe:
    """Whether a guest answers SSH with a host key it printed on its console; the guests'
    network lives in the lab host, reached through its sshd (a jump connection)."""

    def __init__(self, host: str = HOST) -> None:
        import paramiko

        logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # refusals while it boots
        info = lab_info(host)
        self.jump = paramiko.SSHClient()
        self.jump.get_host_keys().load(str(LAB / "inventory" / "known_hosts"))
        self.jump.connect(info["address"], username="root", key_filename=info["key"],
                          timeout=30, allow_agent=False, look_for_keys=False)  # fmt: skip

    def close(self) -> None:
        self.jump.close()

    def answers(self, ip: str, console: Path) -> bool:
        import paramiko

        try:
            keys = console_host_keys(console.read_text(errors="replace"))
        except OSError:
            return False
        if not keys:
            return False
        try:
            channel = self.jump.get_transport().open_channel(
                "direct-tcpip", (ip, 22), ("127.0.0.1", 0), timeout=5
            )
        except (paramiko.SSHException, OSError, EOFError):
            return False
        transport = paramiko.Transport(channel)
        try:
            transport.start_client(timeout=15)  # reads the banner, exchanges keys
            offered = transport.get_remote_server_key().asbytes()
        except (paramiko.SSHException, OSError, EOFError):
            return False
        finally:
            transport.close()
        return any(base64.b64decode(k.blob) == offered for k in keys)

    def wait(self, ip: str, console: Path, what: str) -> None:
        deadline = time.monotonic() + SSH_DEADLINE_S
        while not self.answers(ip, console):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {what} did not answer SSH in {SSH_DEADLINE_S} s")
            time.sleep(POLL_S)  # poll interval


def instances_dir() -> str:
    return json.loads(host_path("/etc/cloud/nc/node.json").read_text())["instances_dir"]


def floor_xml(xml: str, name: str, disk: str, console: str) -> str:
    """The instance's domain.xml as the floor's: another name, overlay and console file."""
    xml = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)
    xml = re.sub(r"<uuid>[^<]*</uuid>\s*", "", xml)
    xml = re.sub(r'(<source file=")[^"]*disk\.qcow2(")', rf"\g<1>{disk}\g<2>", xml)
    return re.sub(r'(<source path=")[^"]*console\.log(")', rf"\g<1>{console}\g<2>", xml)


def virsh(*args: str) -> str:
    return in_host("virsh", "-q", "-c", "qemu:///system", *args)


def floor_run(instance: dict, probe: GuestProbe) -> float:
    """Seconds from `qemu-img create` of the overlay to SSH, for the guest of `instance`
    started by hand (our domain is stopped first; the floor's is removed afterwards)."""
    iid, ip = instance["id"], instance["private_ip"]
    src = f"{instances_dir()}/{iid}"
    # -U: the running domain holds the overlay's write lock
    info = json.loads(in_host("qemu-img", "info", "-U", "--output=json", f"{src}/disk.qcow2"))
    name, work = f"floor-{iid}", f"{FLOOR_DIR}/{iid}"
    disk, console, xml_path = f"{work}/disk.qcow2", f"{work}/console.log", f"{work}/domain.xml"
    host_path(work).mkdir(parents=True, exist_ok=True)
    host_path(f"{work}/seed.iso").write_bytes(host_path(f"{src}/seed.iso").read_bytes())
    xml = floor_xml(host_path(f"{src}/domain.xml").read_text(), name, disk, console)
    xml = xml.replace(f"{src}/seed.iso", f"{work}/seed.iso")
    host_path(xml_path).write_text(xml)
    in_host("chmod", "-R", "a+rX", work)  # qemu runs as libvirt-qemu where configured
    virsh("destroy", iid)
    try:
        start = time.perf_counter()
        in_host("qemu-img", "create", "-q", "-f", "qcow2", "-F", info["backing-filename-format"],
                "-b", info["backing-filename"], disk, str(info["virtual-size"]))  # fmt: skip
        virsh("define", xml_path)
        virsh("start", name)
        probe.wait(ip, host_path(console), f"the floor guest of {iid}")
        return time.perf_counter() - start
    finally:
        subprocess.run(["nsenter", "-t", str(lab_info()["sshd_pid"]), "-m", "-u", "-n", "--",
                        "sh", "-c", (f"virsh -q -c qemu:///system destroy {name}; "
                                     f"virsh -q -c qemu:///system undefine {name}; rm -rf {work}")],
                       capture_output=True, check=False)  # fmt: skip


def ours_run(image: str, keypair: str, itype: str, probe: GuestProbe) -> tuple[float, dict]:
    """Seconds of `cloudctl instance run` until the guest answers SSH, and the instance."""
    start = time.perf_counter()
    [instance] = cloudctl("instance", "run", "--image", image, "--keypair", keypair,
                          "--type", itype)  # fmt: skip
    console = host_path(f"{instances_dir()}/{instance['id']}/console.log")
    probe.wait(instance["private_ip"], console, instance["id"])
    return time.perf_counter() - start, instance


def measure_image(image: str, keypair: str, itype: str, repeat: int) -> tuple[float, float]:
    """(median seconds of ours, median of the floor) for one image."""
    ours, floor = [], []
    probe = GuestProbe()
    try:
        for _ in range(repeat):
            seconds, instance = ours_run(image, keypair, itype, probe)
            ours.append(seconds)
            try:
                floor.append(floor_run(instance, probe))
            finally:
                cloudctl("instance", "terminate", instance["id"])
    finally:
        probe.close()
    return median(ours), median(floor)


def distro_image(work: Path) -> tuple[str, dict]:
    """Build (or reuse from .cache) and register the Debian image: (emi, manifest)."""
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "build-distro-image.py")],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    out = PROJECT / ".cache" / "distro-image"
    manifest = json.loads((out / "manifest.json").read_text())
    reg = cloudctl("image", "register", f"bench-debian-{os.getpid()}",
                   "--file", str(out / "disk.qcow2"))  # fmt: skip
    return reg[0]["id"], manifest


def measure(work: Path, repeat: int) -> tuple[list[Row], list[str]]:
    """Rows (ours against the floor, per image) and notes (the Debian image's build)."""
    from memory import tiny_image

    keypair = f"bench-floor-{os.getpid()}"
    cloudctl("keypair", "create", keypair, "--output-file", str(work / f"{keypair}.pem"))
    images = [("tiny test image (kernel + initramfs, m1.small)", tiny_image(), "m1.small")]
    notes, debian = [], None
    try:
        debian, manifest = distro_image(work)
        label = f"Debian {manifest['suite']} whole-disk image with cloud-init ({DISTRO_TYPE})"
        images.append((label, debian, DISTRO_TYPE))
        notes.append(
            f"The Debian image (scripts/build-distro-image.py): {manifest['size'] / 2**20:.0f} "
            f"MiB qcow2, {manifest['virtual_size'] / 2**30:.0f} GiB disk; its last build took "
            f"{manifest['build_seconds']:.0f} s (debootstrap from the apt mirror, cached in "
            ".cache/)."
        )
    except (subprocess.CalledProcessError, SystemExit) as exc:
        notes.append(f"The Debian image was not measured: its build failed ({exc}).")
    rows = []
    try:
        for label, image, itype in images:
            ours, floor = measure_image(image, keypair, itype, repeat)
            ref = [("the floor", floor)]
            rows.append(Row(f"the floor: libvirt alone -> SSH, {label}", floor, "s", ref))
            rows.append(Row(f"instance run -> SSH, {label}", ours, "s", ref, goal=1.2))
    finally:
        if debian:
            cloudctl("image", "deregister", debian)
        cloudctl("keypair", "delete", keypair)
    return rows, notes

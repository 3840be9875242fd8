#!/usr/bin/env python3
"""Build a whole-disk Debian image with cloud-init, from Debian packages (root only).

Output (default: <project>/.cache/distro-image/):
  disk.qcow2     an MBR disk with one ext4 partition holding Debian bookworm (debootstrap,
                 minbase): linux-image-amd64, cloud-init, openssh-server, ifupdown; extlinux
                 boots it from its own disk (no kernel or ramdisk given to the hypervisor),
                 with the console on the first serial port
  manifest.json  the cache key, package versions, size, sha256 and the build's seconds

cloud-init reads only the NoCloud datasource (the NC's seed ISO, label cidata): the
instance's key pair goes to root, DHCP on the first NIC, new SSH host keys printed on the
console ("BEGIN SSH HOST KEY KEYS"), as the tiny test image does
(scripts/build-test-image.py). The bench compares cloudctl's launch of it with libvirt's.

The build is cached: when the cache key (this script + the candidate versions of the main
packages) matches the manifest and the disk exists, nothing is rebuilt. Needs debootstrap, fdisk,
extlinux and syslinux-common (scripts/setup.sh), a loop device (for extlinux) and the apt
mirror (DEBIAN_MIRROR, default deb.debian.org).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = PROJECT / ".cache" / "distro-image"
SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = [
    "linux-image-amd64", "initramfs-tools", "systemd-sysv", "udev", "kmod",
    "cloud-init", "openssh-server", "ifupdown", "isc-dhcp-client", "iproute2", "netbase",
    # python3-cryptography needs the virtual python3-cffi-backend-api-max, which debootstrap's
    # resolver does not follow: name its provider
    "python3-cffi-backend",
]  # fmt: skip
KEYED = ["linux-image-amd64", "cloud-init", "openssh-server", "systemd"]  # in the cache key
DISK_MIB = 2048
PART_OFFSET = 1024 * 1024  # the partition starts at 1 MiB
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")

CLOUD_CFG = """\
# cloudctl's NCs give a NoCloud seed ISO only: never probe other datasources (EC2's metadata
# address would be waited for).
datasource_list: [NoCloud, None]
# The key pair of the launch goes to root, as in the tiny test image.
disable_root: false
ssh_pwauth: false
"""
INTERFACES = """\
auto lo
iface lo inet loopback
source /etc/network/interfaces.d/*
"""


def run(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def candidates(pkgs: list[str]) -> dict[str, str]:
    """Candidate versions of packages, as apt-cache policy names them."""
    versions, pkg = {}, None
    for line in run(["apt-cache", "policy", *pkgs]).splitlines():
        if line and not line.startswith(" "):
            pkg = line.rstrip(":")
        elif pkg and line.strip().startswith("Candidate:"):
            versions[pkg] = line.split(":", 1)[1].strip()
    return versions


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def configure(root: Path, root_uuid: str) -> None:
    """The guest's files: fstab, extlinux.conf, cloud-init's config, the network."""
    (root / "etc/fstab").write_text(f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n")
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/cloud/cloud.cfg.d/90-cloudctl.cfg").write_text(CLOUD_CFG)
    (root / "etc/network/interfaces").write_text(INTERFACES)
    (root / "etc/network/interfaces.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/machine-id").write_text("")  # systemd makes one per instance at boot
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # cloud-init makes the instance's own
    [kernel] = (root / "boot").glob("vmlinuz-*")  # linux-image-amd64 installs one
    version = kernel.name.removeprefix("vmlinuz-")
    boot = root / "boot/extlinux"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "extlinux.conf").write_text(
        "DEFAULT debian\nTIMEOUT 0\nPROMPT 0\nLABEL debian\n"
        f"  LINUX /boot/vmlinuz-{version}\n  INITRD /boot/initrd.img-{version}\n"
        f"  APPEND root=UUID={root_uuid} ro console=ttyS0 net.ifnames=0\n"
    )


def make_disk(root: Path, disk: Path, root_uuid: str) -> None:
    """An MBR disk: one bootable ext4 partition from `root`, extlinux in it, mbr.bin."""
    with disk.open("wb") as f:
        f.truncate(DISK_MIB * 1024 * 1024)
    run(["sfdisk", "-q", str(disk)], input=f"start={PART_OFFSET // 512}, type=83, bootable\n")
    part_bytes = DISK_MIB * 1024 * 1024 - PART_OFFSET
    # No 64bit feature: extlinux reads ext4 without it; -d copies the tree into the new fs.
    run(["mkfs.ext4", "-q", "-F", "-O", "^64bit", "-L", "root", "-U", root_uuid,
         "-E", f"offset={PART_OFFSET}", "-d", str(root), str(disk), f"{part_bytes // 1024}k"])  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="distro-mnt-") as mnt:
        run(["mount", "-o", f"loop,offset={PART_OFFSET}", str(disk), mnt])
        try:
            run(["extlinux", "--install", f"{mnt}/boot/extlinux"])
        finally:
            run(["umount", mnt])
    with disk.open("r+b") as f:
        f.write(MBR_CODE.read_bytes()[:440])  # boot code only: keep the partition table


def build(out: Path, force: bool = False) -> tuple[dict, bool]:
    versions = candidates(KEYED)
    key = hashlib.sha256(
        Path(__file__).read_bytes() + json.dumps(versions, sort_keys=True).encode()
    ).hexdigest()
    manifest_path, image = out / "manifest.json", out / "disk.qcow2"
    if not force and manifest_path.exists() and image.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("cache_key") == key:
            return old, True
    started = time.monotonic()
    debs = out / "debs"  # debootstrap's package cache: a rebuild downloads nothing
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="distro-image-", dir=out) as tmp:
        root, disk = Path(tmp) / "root", Path(tmp) / "disk.raw"
        log = out / "debootstrap.log"
        with log.open("w") as fh:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 f"--cache-dir={debs}", SUITE, str(root), MIRROR],
                stdout=fh, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if proc.returncode:
            tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
            details = root / "debootstrap" / "debootstrap.log"
            if details.exists():
                tail += "".join(details.read_text().splitlines(keepends=True)[-20:])
            raise SystemExit(f"debootstrap failed (exit {proc.returncode}), see {log}:\n{tail}")
        root_uuid = str(uuid.uuid4())
        configure(root, root_uuid)
        (root / "var/cache/apt/archives").mkdir(exist_ok=True)
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        make_disk(root, disk, root_uuid)
        run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(out / "disk.qcow2.tmp")])
    os.replace(out / "disk.qcow2.tmp", image)
    manifest = {
        "cache_key": key,
        "suite": SUITE,
        "packages": PACKAGES,
        "versions": versions,
        "virtual_size": DISK_MIB * 1024 * 1024,
        "size": image.stat().st_size,
        "sha256": sha256(image),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:  # builds started at once take turns
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest, cached = build(out, args.force)
    state = "cached" if cached else f"built in {manifest['build_seconds']} s"
    print(f"{state}: {out / 'disk.qcow2'} ({manifest['size'] / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

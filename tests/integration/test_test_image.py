"""Boot the tiny test image (scripts/build-test-image.py) under QEMU/TCG with a NoCloud seed.

No guest networking: QEMU runs with `-nic none`. DHCP and SSH are left to the end-to-end
tests of the runtime (they need a bridge + dnsmasq inside a test network namespace).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cloudctl.hostkeys import console_host_keys

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT / "scripts" / "build-test-image.py"
DEADLINE = 180  # seconds for the whole boot + checks

PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbq1TzEN5dvR9M2qR2M7qkY2cQ7vZ9v0bq2l4mZk0aB test@cloud"
)

USER_DATA = """#!/bin/sh
echo "USERDATA-MARKER hostname=$(hostname)"
hostname > /run/hostname-from-user-data
echo "USERDATA-HOSTNAME $(cat /run/hostname-from-user-data)"
echo "USERDATA-AUTHKEYS $(cut -d' ' -f1,3 /root/.ssh/authorized_keys)"
# wait for the hot-plugged volume, write to it by its stable name, then power off
i=0
while [ ! -e /dev/disk/by-id/virtio-vol-0000hot ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
echo "written-by-guest-$(hostname)" | dd of=/dev/disk/by-id/virtio-vol-0000hot conv=fsync 2>/dev/null
echo "USERDATA-WROTE $?"
sync
poweroff -f
"""


def stop_process(proc: subprocess.Popen | None) -> None:
    """Stop a QEMU this test started, by its PID: TERM, then KILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def build_image():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=150,
    ).stdout
    return json.loads(out)


class QMP:
    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, cmd, **args):
        self.f.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg or "error" in msg:
                assert "error" not in msg, msg
                return msg["return"]

    def hmp(self, line):
        return self.execute("human-monitor-command", **{"command-line": line})

    def close(self):
        self.sock.close()


def wait_for(serial, text, proc, deadline):
    while time.monotonic() < deadline:
        log = serial.read_text(errors="replace") if serial.exists() else ""
        if text in log:
            return log
        if proc.poll() is not None and text not in log:
            break
        time.sleep(0.2)
    log = serial.read_text(errors="replace") if serial.exists() else ""
    if text in log:
        return log
    pytest.fail(f"{text!r} not on the serial console (qemu rc={proc.poll()}):\n{log}")


def test_test_image_boots_reads_seed_and_names_volumes(tmp_path):
    start = time.monotonic()
    deadline = start + DEADLINE
    manifest = build_image()
    img = Path(manifest["out"])
    built = time.monotonic()

    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "meta-data").write_text(
        f"instance-id: i-0000test\nlocal-hostname: testhost\npublic-keys:\n  - {PUBKEY}\n"
    )
    (seed / "user-data").write_text(USER_DATA)
    iso = tmp_path / "seed.iso"
    subprocess.run(
        [
            "genisoimage",
            "-quiet",
            "-o",
            str(iso),
            "-V",
            "cidata",
            "-J",
            "-r",
            str(seed / "meta-data"),
            str(seed / "user-data"),
        ],
        check=True,
    )
    vol = tmp_path / "vol.img"
    hot = tmp_path / "hot.img"
    for p in (vol, hot):
        with open(p, "wb") as f:
            f.truncate(8 << 20)
    serial = tmp_path / "serial.log"
    sockdir = tempfile.mkdtemp(prefix="tiq-", dir="/tmp")  # short path for the unix socket
    qmp_path = os.path.join(sockdir, "qmp.sock")

    cmd = [
        "qemu-system-x86_64",
        "-machine",
        "pc,accel=tcg",
        "-m",
        "256",
        "-display",
        "none",
        "-nic",
        "none",
        "-no-reboot",
        "-kernel",
        str(img / "vmlinuz"),
        "-initrd",
        str(img / "initrd.img"),
        "-append",
        "console=ttyS0 quiet",
        "-drive",
        f"file={iso},if=virtio,format=raw,readonly=on",
        "-drive",
        f"file={vol},if=none,id=vol0,format=raw",
        "-device",
        "virtio-blk-pci,drive=vol0,serial=vol-0000test",
        "-serial",
        f"file:{serial}",
        "-monitor",
        "none",
        "-qmp",
        f"unix:{qmp_path},server=on,wait=off",
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    qmp = None
    try:
        log = wait_for(serial, "CLOUD-TEST: ready", proc, deadline)
        ready = time.monotonic()
        assert "CLOUD-TEST: seed instance-id i-0000test" in log
        assert "CLOUD-TEST: hostname testhost" in log
        assert "CLOUD-TEST: ssh keys installed: 1" in log
        assert "CLOUD-TEST: dropbear listening on port 22" in log
        assert "CLOUD-TEST: volume /dev/disk/by-id/virtio-vol-0000test -> ../../vd" in log
        assert "CLOUD-TEST: no eth0" in log
        for m in ("virtio_pci", "virtio_blk", "virtio_net", "isofs", "sr_mod"):
            assert f" {m}" in log.split("modules loaded:")[1].splitlines()[0]

        log = wait_for(serial, "USERDATA-MARKER hostname=testhost", proc, deadline)
        wait_for(serial, "USERDATA-HOSTNAME testhost", proc, deadline)
        wait_for(serial, "USERDATA-AUTHKEYS ssh-ed25519 test@cloud", proc, deadline)

        # hot-plug a second volume: the guest's uevent helper makes its by-id link
        qmp = QMP(qmp_path, deadline)
        qmp.hmp(f"drive_add 0 if=none,id=hot0,file={hot},format=raw")
        qmp.execute(
            "device_add", driver="virtio-blk-pci", drive="hot0", id="hotdev", serial="vol-0000hot"
        )
        wait_for(serial, "CLOUD-TEST: volume /dev/disk/by-id/virtio-vol-0000hot ->", proc, deadline)
        log = wait_for(serial, "USERDATA-WROTE 0", proc, deadline)

        # user-data powers the guest off: QEMU must exit by itself
        proc.wait(timeout=max(1, deadline - time.monotonic()))
        assert proc.returncode == 0, proc.stderr.read().decode()
        assert hot.read_bytes().startswith(b"written-by-guest-testhost\n")
        print(
            f"\nimage: vmlinuz {manifest['sizes']['vmlinuz']} B, initrd "
            f"{manifest['sizes']['initrd.img']} B, cached={manifest['cached']}; "
            f"build {built - start:.1f}s, boot to ready {ready - built:.1f}s, "
            f"total {time.monotonic() - start:.1f}s"
        )
    finally:
        if qmp:
            qmp.close()
        stop_process(proc)
        shutil.rmtree(sockdir, ignore_errors=True)


def test_test_image_dhcp_and_ssh_in_a_private_namespace(tmp_path):
    """DHCP from dnsmasq + SSH with the seed's key, all inside a namespace this test creates."""
    deadline = time.monotonic() + DEADLINE
    img = Path(build_image()["out"])
    key = tmp_path / "key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t@x", "-f", str(key)], check=True
    )
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "meta-data").write_text("instance-id: i-0000net\nlocal-hostname: nethost\n")
    (seed / "user-data").write_text(
        f"#cloud-config\nssh_authorized_keys:\n  - {key.with_suffix('.pub').read_text()}"
    )
    iso = tmp_path / "seed.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-o", str(iso), "-V", "cidata", "-J", "-r"]
        + [str(seed / "meta-data"), str(seed / "user-data")],
        check=True,
    )
    ns = f"tti-{os.getpid()}"
    nse = ["ip", "netns", "exec", ns]
    serial = tmp_path / "serial.log"
    pidfile = tmp_path / "dnsmasq.pid"
    proc = None
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for c in (
            "ip link set lo up",
            "ip link add br0 type bridge",
            "ip addr add 10.99.0.1/24 dev br0",
            "ip link set br0 up",
            "ip tuntap add tap0 mode tap",
            "ip link set tap0 master br0 up",
        ):
            subprocess.run(nse + c.split(), check=True)
        subprocess.run(
            nse
            + [
                "dnsmasq",
                f"--pid-file={pidfile}",
                "--interface=br0",
                "--bind-interfaces",
                "--port=0",
                "--dhcp-range=10.99.0.50,10.99.0.60,255.255.255.0",
                "--dhcp-host=52:54:00:00:00:55,10.99.0.55",
                f"--dhcp-leasefile={tmp_path / 'leases'}",
            ],
            check=True,
        )
        proc = subprocess.Popen(
            nse
            + ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "256"]
            + ["-display", "none", "-monitor", "none", "-no-reboot"]
            + ["-kernel", str(img / "vmlinuz"), "-initrd", str(img / "initrd.img")]
            + ["-append", "console=ttyS0 quiet", "-cdrom", str(iso)]
            + ["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"]
            + ["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:55"]
            + ["-serial", f"file:{serial}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        log = wait_for(serial, "CLOUD-TEST: ready", proc, deadline)
        assert "CLOUD-TEST: got address 10.99.0.55 on eth0 (router 10.99.0.1)" in log
        assert "CLOUD-TEST: seed found on /dev/sr0" in log
        # The guest prints its host keys on the console (as cloud-init does): ssh checks them.
        host_keys = console_host_keys(log)
        assert sorted(k.type for k in host_keys) == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
        for k in host_keys:  # the fingerprints dropbear printed are those of these keys
            assert f"CLOUD-TEST: host key {k.fingerprint}" in log
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("".join(f"10.99.0.55 {k.type} {k.blob}\n" for k in host_keys))
        out = subprocess.run(
            nse
            + ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=yes"]
            + ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=30"]
            + ["-o", "BatchMode=yes", "root@10.99.0.55", "hostname; ip route"],
            check=False,
            capture_output=True,
            text=True,
            timeout=max(1, deadline - time.monotonic()),
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == "nethost"
        assert "default via 10.99.0.1" in out.stdout
    finally:
        stop_process(proc)
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().split()[0]), 15)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], check=False)

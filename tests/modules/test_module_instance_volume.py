"""The instance_volume module against real libvirtd, QEMU (TCG) and tgtd.

The tests make a network namespace ``ivt-<random>`` and, inside it, a private mount namespace
(held by one ``sleep``) with tmpfs over /run, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt and a private copy of /etc/libvirt (domains and secrets defined here vanish
with it). There they run virtlogd, libvirtd and tgtd with one target: a file-backed LUN with
a CHAP account, as the Storage Controller exports a volume. The guest is the project's test
image (scripts/build-test-image.py): it reports hot-plugged disks on its serial console as
``CLOUD-TEST: volume /dev/disk/by-id/virtio-<serial> -> ../../vdX`` and runs user-data
scripts from its NoCloud seed. The module runs through ansible-playbook inside the namespaces.
"""

from __future__ import annotations

import grp
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from modhelpers import run_module, tiny_image_dir

pytestmark = pytest.mark.integration

VOL = "vol-0a1b2c3d"
IQN = f"iqn.2026-01.cloud.test:{VOL}"
CHAP_USER = "vol-0a1b2c3d"
CHAP_SECRET = "s3cret-Chap-0a1b"
MARKER = f"written-by-guest-to-{VOL}"
BOOT_DEADLINE = 180  # seconds for the guest to boot under TCG
HOLDER_SCRIPT = """set -e
for d in /run /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
  mount -t tmpfs -o mode=0755 tmpfs "$d"
done
mkdir -p /run/lock /run/etc-libvirt
cp -a /etc/libvirt/. /run/etc-libvirt/
mount --bind /run/etc-libvirt /etc/libvirt
rm -f /etc/libvirt/qemu/networks/autostart/*.xml
ip link set lo up
touch "$READY"
exec sleep infinity
"""
USER_DATA = f"""#!/bin/sh
# wait for the hot-plugged volume, write to it by its stable name
i=0
while [ ! -e /dev/disk/by-id/virtio-{VOL} ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done
echo "{MARKER}" | dd of=/dev/disk/by-id/virtio-{VOL} conv=fsync 2>/dev/null
echo "USERDATA-WROTE $?"
"""


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


class Lab:
    """libvirtd + tgtd inside namespaces of the test's own."""

    def __init__(self, workdir: Path) -> None:
        self.ns = f"ivt-{secrets.token_hex(3)}"
        # The QEMU user must reach the kernel, the seed and the console file: not below
        # pytest's 0700 directories.
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.ns}-", dir="/var/tmp"))
        self.dir.chmod(0o755)
        self.workdir = workdir
        self.holder: subprocess.Popen | None = None
        self.tgtd: subprocess.Popen | None = None
        self.lun = self.dir / "vol.img"

    @property
    def wrapper(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--"]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            self.wrapper + list(cmd), capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("virsh", "-c", "qemu:///system", *args, check=check)

    def tgtadm(self, *args: str) -> None:
        self.run("tgtadm", "--lld", "iscsi", *args)

    def start(self) -> None:
        fix_kvm_device()
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        ready = self.dir / "ready"
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private"]
            + ["/bin/sh", "-c", HOLDER_SCRIPT],
            env={**os.environ, "READY": str(ready)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: ready.exists() or self.holder.poll() is not None, 30, "the holder")
        assert self.holder.poll() is None, "the namespace holder failed"
        self.run("virtlogd", "-d")
        self.run("libvirtd", "-d")
        wait_until(lambda: self.virsh("version", check=False).returncode == 0, 60, "libvirtd")
        # The Storage Controller's side: tgtd with one volume behind CHAP (loopback of the ns).
        with open(self.lun, "wb") as f:
            f.truncate(16 << 20)
        self.tgtd = subprocess.Popen(
            self.wrapper + ["tgtd", "-f", "--iscsi", "portal=127.0.0.1:3260"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: (
                self.run("tgtadm", "--op", "show", "--mode", "system", check=False).returncode == 0
            ),
            30,
            "tgtd",
        )
        self.tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", IQN)
        self.tgtadm(
            "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", str(self.lun)
        )
        self.tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        self.tgtadm(
            "--op", "new", "--mode", "account", "--user", CHAP_USER, "--password", CHAP_SECRET
        )
        self.tgtadm("--op", "bind", "--mode", "account", "--tid", "1", "--user", CHAP_USER)

    def stop(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            for dom in self.virsh("list", "--name", check=False).stdout.split():
                self.virsh("destroy", dom, check=False)
            if self.tgtd is not None and self.tgtd.poll() is None:
                # tgtd ignores SIGTERM while it has targets; this is how its tools stop it.
                self.run("tgtadm", "--op", "delete", "--mode", "system", check=False)
        if self.tgtd is not None:
            try:
                self.tgtd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.tgtd.kill()
                self.tgtd.wait()
        # Everything left in the namespace was started by this lab (libvirtd, virtlogd...).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in netns_pids(self.ns):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                wait_until(lambda: not netns_pids(self.ns), 15, "the lab's processes to end")
                break
            except AssertionError:
                continue
        subprocess.run(["ip", "netns", "del", self.ns], check=False)
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what the tests look at ------------------------------------------------------------
    def module(self, tmp_path: Path, check: bool = False, **args) -> dict:
        return run_module(
            tmp_path, "instance_volume", args, check=check, diff=True, wrapper=self.wrapper
        )

    def domain_xml(self, name: str, inactive: bool = False) -> ET.Element:
        args = ["dumpxml", "--inactive", name] if inactive else ["dumpxml", name]
        return ET.fromstring(self.virsh(*args).stdout)

    def disk(self, name: str, serial: str, inactive: bool = False) -> ET.Element | None:
        for disk in self.domain_xml(name, inactive).findall("./devices/disk"):
            if disk.findtext("serial") == serial:
                return disk
        return None

    def secrets(self) -> str:
        return self.virsh("secret-list").stdout

    def define(self, name: str, seed: Path | None = None, start: bool = False) -> Path:
        """Define (and start) a domain of the test image; return its console file."""
        img = tiny_image_dir()
        kernel, initrd = self.dir / "vmlinuz", self.dir / "initrd.img"
        if not kernel.exists():
            shutil.copy(img / "vmlinuz", kernel)
            shutil.copy(img / "initrd.img", initrd)
        console = self.dir / f"{name}.console"
        console.touch()
        seed_disk = ""
        if seed is not None:
            seed_disk = (
                "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                f"<source file='{seed}'/><target dev='vda' bus='virtio'/><readonly/></disk>"
            )
        xml = f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {seed_disk}
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
  </devices>
</domain>"""
        xml_file = self.dir / f"{name}.xml"
        xml_file.write_text(xml)
        self.virsh("define", str(xml_file))
        if start:
            self.virsh("start", name)
        return console


def fix_kvm_device() -> None:
    """Give /dev/kvm udev's root:kvm 0660 (what the nc role's kvm_probe does): otherwise
    libvirtd re-probes QEMU at every domain start, 48 s each (ENVIRONMENT.md)."""
    try:
        st = os.stat("/dev/kvm")
    except FileNotFoundError:
        return
    kvm_gid = grp.getgrnam("kvm").gr_gid
    if st.st_gid != kvm_gid or stat.S_IMODE(st.st_mode) & 0o060 != 0o060:
        os.chown("/dev/kvm", 0, kvm_gid)
        os.chmod("/dev/kvm", stat.S_IMODE(st.st_mode) | 0o660)


def make_seed(directory: Path, instance: str) -> Path:
    seed = directory / f"{instance}-seed"
    seed.mkdir()
    (seed / "meta-data").write_text(f"instance-id: {instance}\nlocal-hostname: {instance}\n")
    (seed / "user-data").write_text(USER_DATA)
    iso = directory / f"{instance}-seed.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-o", str(iso), "-V", "cidata", "-J", "-r"]
        + [str(seed / "meta-data"), str(seed / "user-data")],
        check=True,
    )
    iso.chmod(0o644)
    return iso


def wait_console(console: Path, text: str, timeout: float = BOOT_DEADLINE) -> str:
    try:
        return wait_until(
            lambda: (log := console.read_text(errors="replace")) and text in log and log,
            timeout,
            repr(text),
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc} on the console:\n{console.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("libvirtd", "virtlogd", "tgtd", "tgtadm", "qemu-system-x86_64", "genisoimage"):
        assert shutil.which(tool), f"{tool} is missing (scripts/setup.sh installs it)"
    lab = Lab(tmp_path_factory.mktemp("ivt"))
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result


def attach_args(**over) -> dict:
    return {
        "instance": "i-0a1b2c3d",
        "volume": VOL,
        "portal_address": "127.0.0.1",
        "iqn": IQN,
        "lun": 1,
        "chap_user": CHAP_USER,
        "chap_secret": CHAP_SECRET,
        **over,
    }


def test_hot_plug_write_and_detach_in_a_running_guest(lab, tmp_path):
    name = "i-0a1b2c3d"
    start = time.monotonic()
    console = lab.define(name, seed=make_seed(lab.dir, name), start=True)
    wait_console(console, "CLOUD-TEST: ready")
    booted = time.monotonic()

    # check mode: reports the disk it would add, adds nothing, defines no secret
    res = ok(lab.module(tmp_path, check=True, **attach_args()))
    assert res["changed"] is True and res["attached"] is True
    assert res["device"] == "vdb" and res["serial"] == VOL
    assert f"<serial>{VOL}</serial>" in res["diff"]["after"] and res["diff"]["before"] == ""
    assert lab.disk(name, VOL) is None
    assert VOL not in lab.secrets()

    t0 = time.monotonic()
    res = ok(lab.module(tmp_path, **attach_args()))
    attach_s = time.monotonic() - t0
    assert res["changed"] is True and res["device"] == "vdb" and res["attached"] is True
    assert CHAP_SECRET not in res["_stdout"]
    for inactive in (False, True):  # live, and in the definition (survives stop/start)
        disk = lab.disk(name, VOL, inactive=inactive)
        assert disk is not None, f"inactive={inactive}"
        assert disk.get("type") == "network"
        assert disk.find("source").get("protocol") == "iscsi"
        assert disk.find("source").get("name") == f"{IQN}/1"
        assert disk.find("source/host").get("name") == "127.0.0.1"
        assert disk.find("source/auth").get("username") == CHAP_USER
        assert disk.find("source/auth/secret").get("usage") == VOL
        assert disk.find("target").get("dev") == "vdb"
    assert VOL in lab.secrets()
    # private: libvirt does not hand the value out
    uuid = next(line.split()[0] for line in lab.secrets().splitlines() if VOL in line)
    assert lab.virsh("secret-get-value", uuid, check=False).returncode != 0

    # the guest sees it by its serial and writes to it; the write lands in the backing file
    wait_console(console, f"CLOUD-TEST: volume /dev/disk/by-id/virtio-{VOL} ->", 60)
    seen_s = time.monotonic() - t0
    wait_console(console, "USERDATA-WROTE 0", 60)
    wait_until(
        lambda: lab.lun.read_bytes()[: len(MARKER) + 1] == f"{MARKER}\n".encode(),
        30,
        "the guest's write in the LUN's backing file",
    )

    # idempotent, in check mode too
    res = ok(lab.module(tmp_path, **attach_args(device="vdd")))
    assert res["changed"] is False and res["device"] == "vdb"
    assert ok(lab.module(tmp_path, check=True, **attach_args()))["changed"] is False

    # detach: check mode first
    detach = {"instance": name, "volume": VOL, "state": "detached"}
    res = ok(lab.module(tmp_path, check=True, **detach))
    assert res["changed"] is True and res["attached"] is False
    assert f"<serial>{VOL}</serial>" in res["diff"]["before"] and res["diff"]["after"] == ""
    assert lab.disk(name, VOL) is not None and VOL in lab.secrets()

    t0 = time.monotonic()
    res = ok(lab.module(tmp_path, **detach))
    detach_s = time.monotonic() - t0
    assert res["changed"] is True and res["attached"] is False and res["device"] is None
    assert lab.disk(name, VOL) is None and lab.disk(name, VOL, inactive=True) is None
    assert VOL not in lab.secrets()
    wait_console(console, f"CLOUD-TEST: volume /dev/disk/by-id/virtio-{VOL} removed", 30)
    res = ok(lab.module(tmp_path, **detach))
    assert res["changed"] is False

    # a wrong CHAP secret: a clear failure, nothing attached, no secret left
    res = lab.module(tmp_path, **attach_args(chap_secret="wrong-secret-000"))
    assert res.get("failed") is True
    assert (
        f"attaching volume {VOL} ({IQN}/1 at 127.0.0.1:3260) to instance {name} failed"
        in (res["msg"])
    )
    assert "(wrong CHAP user or secret?)" in res["msg"] and "Authentication failure" in res["msg"]
    assert "wrong-secret-000" not in res["_stdout"]
    assert lab.disk(name, VOL) is None and lab.disk(name, VOL, inactive=True) is None
    assert VOL not in lab.secrets()

    # the right one works again afterwards, and the volume survives a stop/start of the
    # instance (persistent definition + persistent CHAP secret)
    res = ok(lab.module(tmp_path, **attach_args()))
    assert res["changed"] is True and lab.disk(name, VOL) is not None
    lab.virsh("destroy", name)
    console.write_text("")
    lab.virsh("start", name)
    log = wait_console(console, "CLOUD-TEST: ready")
    assert f"CLOUD-TEST: volume /dev/disk/by-id/virtio-{VOL} -> ../../vd" in log
    wait_console(console, "USERDATA-WROTE 0", 60)
    ok(lab.module(tmp_path, **detach))
    assert lab.disk(name, VOL) is None and VOL not in lab.secrets()
    print(
        f"\nboot {booted - start:.1f}s; attach {attach_s:.1f}s (module run), guest saw it "
        f"{seen_s:.1f}s after the attach started; detach {detach_s:.1f}s (module run)"
    )


def test_shut_off_domain_gets_the_disk_in_its_definition_only(lab, tmp_path):
    name = "i-0ff0ff00"
    lab.define(name)
    try:
        args = {
            "instance": name,
            "volume": "vol-0000cafe",
            "portal_address": "127.0.0.1",
            "iqn": IQN,
            "device": "vdc",
        }
        res = ok(lab.module(tmp_path, **args))
        assert res["changed"] is True and res["device"] == "vdc"
        disk = lab.disk(name, "vol-0000cafe", inactive=True)
        assert disk is not None and disk.find("source/auth") is None  # no CHAP asked for
        assert "vol-0000cafe" not in lab.secrets()
        assert ok(lab.module(tmp_path, **args))["changed"] is False

        # the next free name when the hint is taken
        res = ok(lab.module(tmp_path, **{**args, "volume": "vol-0000beef"}))
        assert res["changed"] is True and res["device"] == "vdb"

        for vol in ("vol-0000cafe", "vol-0000beef"):
            res = ok(lab.module(tmp_path, instance=name, volume=vol, state="detached"))
            assert res["changed"] is True
            assert lab.disk(name, vol, inactive=True) is None
    finally:
        lab.virsh("undefine", name, check=False)


def test_attach_to_a_missing_instance_fails_and_detach_is_a_no_op(lab, tmp_path):
    res = lab.module(tmp_path, **attach_args(instance="i-00000000"))
    assert res.get("failed") is True
    assert res["msg"] == (
        f"cannot attach volume {VOL}: instance i-00000000 does not exist on qemu:///system"
    )
    assert VOL not in lab.secrets()
    res = ok(lab.module(tmp_path, instance="i-00000000", volume=VOL, state="detached"))
    assert res["changed"] is False and res["attached"] is False


def test_bad_device_hint_fails_clearly(lab, tmp_path):
    res = lab.module(tmp_path, **attach_args(device="sda"))
    assert res.get("failed") is True
    assert res["msg"] == "device: 'sda' is not a device name vdb .. vdz"


def test_two_domains_with_one_volume_the_scan_and_the_secret(lab, tmp_path):
    """cloud_resources reports each domain's iSCSI disks by volume id (what reconcile compares
    with the state's attachments); unplugging the disk from one of two domains that have it
    keeps the CHAP secret the other one still needs."""
    names = ("i-0000a001", "i-0000a002")
    node_json = tmp_path / "node.json"
    node_json.write_text("{}")
    absent = str(tmp_path / "absent.json")
    try:
        for name in names:
            lab.define(name)
            ok(lab.module(tmp_path, **attach_args(instance=name, device="vdc")))
        scan = ok(run_module(tmp_path, "cloud_resources", {"node_config": str(node_json),
                             "sc_config": absent, "cc_config": absent}, wrapper=lab.wrapper))  # fmt: skip
        assert scan["changed"] is False
        # (the lab's running guest of the other tests is there too)
        assert {n: scan["nc"]["domains"].get(n) for n in names} == dict.fromkeys(names, "stopped")
        assert {n: scan["nc"]["volumes"].get(n) for n in names} == {
            key: {VOL: "vdc"} for key in names
        }

        ok(lab.module(tmp_path, instance=names[1], volume=VOL, state="detached"))
        assert lab.disk(names[1], VOL, inactive=True) is None
        assert VOL in lab.secrets()  # names[0] still has the disk
        ok(lab.module(tmp_path, instance=names[0], volume=VOL, state="detached"))
        assert VOL not in lab.secrets()
    finally:
        for name in names:
            lab.virsh("undefine", name, check=False)

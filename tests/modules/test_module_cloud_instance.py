"""modules/cloud_instance.py against a real libvirtd, booting the tiny test image under TCG.

The lab (nc_lab.NcLab) is a network + mount namespace of this test with virtlogd, libvirtd,
an instance bridge and dnsmasq; the module runs inside it through ansible-playbook. The test
image (scripts/build-test-image.py: kernel + initramfs) and a small raw disk image sit in the
lab's image cache under their sha256, as image_cache leaves them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import modhelpers
import pytest
from nc_lab import NcLab

pytestmark = [modhelpers.needs_root, pytest.mark.integration]

BOOT_TIMEOUT = 180
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbq1TzEN5dvR9M2qR2M7qkY2cQ7vZ9v0bq2l4mZk0aB t@nc"
NAME = "i-0c1d2e3f"
MAC = "d0:0d:0c:1d:2e:3f"
ADDRESS = "10.97.0.10"


@pytest.fixture(scope="module")
def lab():
    image_dir = modhelpers.tiny_image_dir()
    started = time.monotonic()
    with NcLab() as lab:
        print(f"\nlab {lab.name} up in {time.monotonic() - started:.1f} s")
        lab.cache_test_image(image_dir)
        yield lab


def run(tmp_path, lab, check=False, **args):
    args = {"node_config": lab.node_config, **args}
    return modhelpers.run_module(
        tmp_path, "cloud_instance", args, check=check, wrapper=lab.wrapper, timeout=240
    )


def launch_args(lab: NcLab, **extra) -> dict:
    return {
        "name": NAME,
        "vcpus": 1,
        "memory_mb": 256,
        "mac": MAC,
        "hostname": "web-1",
        "image": str(lab.disk),
        "image_format": "raw",
        "disk_gb": 1,
        "kernel": str(lab.kernel),
        "ramdisk": str(lab.ramdisk),
        "cmdline": "console=ttyS0 quiet",
        "public_keys": [PUBKEY],
        "user_data": "#!/bin/sh\necho USERDATA-RAN $(hostname)\n",
        "shutdown_timeout": 5,
        **extra,
    }


def wait_console(path: Path, text: str, count: int = 1) -> str:
    """Poll the console file until ``text`` appears ``count`` times."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    log = ""
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace") if path.exists() else ""
        if log.count(text) >= count:
            return log
        time.sleep(0.5)
    pytest.fail(f"{text!r} x{count} not on the console after {BOOT_TIMEOUT} s:\n{log[-3000:]}")


def test_lifecycle_boots_the_test_image(tmp_path, lab):
    lab.reserve(MAC, ADDRESS)
    inst_dir = lab.instances_dir / NAME
    args = launch_args(lab)

    # check mode: predicts the domain, makes nothing
    res = run(tmp_path, lab, check=True, **args)
    assert not res["failed"], res.get("msg")
    assert res["changed"] and res["state"] == "running"
    assert res["diff"]["before"] == {"state": "absent", "files": []}
    assert '<target dev="vn-0c1d2e3f" />' in res["diff"]["after"]["domain_xml"]
    assert "USERDATA" not in json.dumps(res["diff"])
    assert lab.domain_state(NAME) is None and not inst_dir.exists()

    started = time.monotonic()
    res = run(tmp_path, lab, **args)
    launch_s = time.monotonic() - started
    assert not res["failed"], res.get("msg")
    assert res["changed"] and res["state"] == "running"
    assert res["tap"] == "vn-0c1d2e3f" and res["mac"] == MAC and res["domain_type"] == "qemu"
    console = Path(res["console_log"])
    assert console == inst_dir / "console.log"
    assert lab.domain_state(NAME) == "running"
    st = inst_dir.stat()
    assert oct(st.st_mode & 0o777) == "0o750" and st.st_gid == lab.instances_dir.stat().st_gid
    assert {"disk.qcow2", "seed.iso", "instance.json", "domain.xml"} <= {
        p.name for p in inst_dir.iterdir()
    }
    meta = json.loads((inst_dir / "instance.json").read_text())
    assert meta["images"] == [lab.disk.name, lab.kernel.name, lab.ramdisk.name]
    assert meta["mac"] == MAC

    xml = lab.virsh("dumpxml", "--inactive", NAME).stdout
    for part in (
        "type='qemu'",
        "machine='pc",
        "<acpi/>",
        f"<mac address='{MAC}'/>",
        "<source bridge='cloudbr0'/>",
        "<target dev='vn-0c1d2e3f'/>",
        "<model type='virtio'/>",
        "<target dev='hdc' bus='ide'/>",
        f"<kernel>{lab.kernel}</kernel>",
    ):
        assert part in xml, part
    info = json.loads(
        lab.run(["qemu-img", "info", "-U", "--output=json", str(inst_dir / "disk.qcow2")]).stdout
    )
    assert info["virtual-size"] == 1 << 30
    assert info["backing-filename"] == str(lab.disk)
    tap = json.loads(lab.run(["ip", "-j", "link", "show", "vn-0c1d2e3f"]).stdout)[0]
    assert tap["master"] == "cloudbr0"

    log = wait_console(console, "CLOUD-TEST: ready")
    ready_s = time.monotonic() - started
    assert f"CLOUD-TEST: seed instance-id {NAME}" in log
    assert "CLOUD-TEST: hostname web-1" in log
    assert "CLOUD-TEST: seed found on /dev/sr0" in log
    assert "CLOUD-TEST: ssh keys installed: 1" in log
    assert f"CLOUD-TEST: got address {ADDRESS} on eth0" in log
    wait_console(console, "USERDATA-RAN web-1")

    # idempotent
    res = run(tmp_path, lab, **args)
    assert not res["failed"] and not res["changed"], res.get("msg")

    # persistent: the domain (still running) and its definition survive a libvirtd restart
    lab.restart_libvirtd()
    assert lab.domain_state(NAME) == "running"
    res = run(tmp_path, lab, **args)
    assert not res["failed"] and not res["changed"], res.get("msg")

    # the image cache refuses to drop an image this instance uses
    res = modhelpers.run_module(
        tmp_path,
        "image_cache",
        {"sha256": lab.kernel.name, "state": "absent", "node_config": lab.node_config},
    )
    assert res["failed"] and NAME in res["msg"]

    # check mode of stop and absent changes nothing
    for state in ("stopped", "absent"):
        res = run(tmp_path, lab, check=True, name=NAME, state=state)
        assert res["changed"] and res["diff"]["after"]["state"] == state
    assert lab.domain_state(NAME) == "running" and inst_dir.exists()

    # stop: the test image ignores ACPI, so the module destroys it after shutdown_timeout
    started = time.monotonic()
    res = run(tmp_path, lab, name=NAME, state="stopped", shutdown_timeout=5)
    stop_s = time.monotonic() - started
    assert not res["failed"] and res["changed"] and res["state"] == "stopped", res.get("msg")
    assert isinstance(res["forced"], bool)
    forced = res["forced"]
    assert lab.domain_state(NAME) == "shut off"
    res = run(tmp_path, lab, name=NAME, state="stopped")
    assert not res["changed"]

    # start again (persistent definition, same files; the console is appended to)
    res = run(tmp_path, lab, name=NAME)
    assert res["changed"] and res["state"] == "running"
    wait_console(console, "CLOUD-TEST: ready", 2)

    # reboot = hard reset, always a change
    res = run(tmp_path, lab, name=NAME, state="rebooted")
    assert not res["failed"] and res["changed"] and res["state"] == "running"
    wait_console(console, "CLOUD-TEST: init started", 3)
    wait_console(console, "CLOUD-TEST: ready", 3)

    # absent: no domain, no files, no tap
    res = run(tmp_path, lab, name=NAME, state="absent")
    assert not res["failed"] and res["changed"] and res["state"] == "absent"
    assert lab.domain_state(NAME) is None
    assert not inst_dir.exists()
    assert lab.run(["ip", "link", "show", "vn-0c1d2e3f"], check=False).returncode != 0
    res = run(tmp_path, lab, name=NAME, state="absent")
    assert not res["failed"] and not res["changed"]
    print(
        f"\nmodule run (define+start) {launch_s:.1f} s, console ready {ready_s:.1f} s after the "
        f"run began, stop (shutdown_timeout 5 s, forced={forced}) {stop_s:.1f} s"
    )


def test_failure_half_way_leaves_nothing(tmp_path, lab):
    name = "i-0000fa11"
    inst_dir = lab.instances_dir / name
    # caught before anything is made
    res = run(tmp_path, lab, **launch_args(lab, name=name, kernel=str(lab.dir / "no-kernel")))
    assert res["failed"] and "kernel" in res["msg"] and "does not exist" in res["msg"]
    assert not inst_dir.exists() and lab.domain_state(name) is None

    # libvirt fails to start it (the bridge does not exist): files and definition are undone
    bad = json.loads(Path(lab.node_config).read_text())
    bad["bridge"] = "nobr0"
    bad_config = lab.dir / "bad-node.json"
    bad_config.write_text(json.dumps(bad))
    res = run(tmp_path, lab, **launch_args(lab, name=name, node_config=str(bad_config)))
    assert res["failed"]
    assert "starting the domain (libvirt) failed" in res["msg"] and "nobr0" in res["msg"], res[
        "msg"
    ]
    assert not inst_dir.exists()
    assert lab.domain_state(name) is None


def test_unknown_instances(tmp_path, lab):
    for state in ("stopped", "rebooted"):
        res = run(tmp_path, lab, name="i-0000dead", state=state)
        assert res["failed"] and "not defined on this node" in res["msg"]
    res = run(tmp_path, lab, name="i-0000dead", state="absent")
    assert not res["failed"] and not res["changed"]
    res = run(tmp_path, lab, name="i-0000dead")
    assert res["failed"] and "vcpus, memory_mb, mac, image or kernel" in res["msg"]
    res = run(tmp_path, lab, name="web-1", state="absent")
    assert res["failed"] and "not an instance id" in res["msg"]

"""modules/node_instances.py against a real libvirtd and iptables: a node's whole part of a
launch, a power change and a termination, each in ONE module run, the instances at once.

The lab (nc_lab.NcLab) is a network + mount namespace of this test with virtlogd, libvirtd
and an instance bridge; the module runs inside it through ansible-playbook. The test image's
kernel and initramfs and a small raw disk sit in the lab's image cache under their sha256
(test_module_cloud_instance boots them; here the domains only need to start).
"""

from __future__ import annotations

import json
import time

import modhelpers
import pytest
from nc_lab import NcLab

pytestmark = [modhelpers.needs_root, pytest.mark.integration]

GOOD = ["i-0e1e2e01", "i-0e1e2e02"]
BAD = "i-0e1e2e03"  # its disk image is not cached and has no URL: it fails, the others start
MISSING_SHA = "0" * 64
SSH = {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0"}


@pytest.fixture(scope="module")
def lab():
    image_dir = modhelpers.tiny_image_dir()
    with NcLab(dhcp=False) as lab:
        lab.cache_test_image(image_dir)
        yield lab


def run(tmp_path, lab, check=False, **args):
    args = {"node_config": lab.node_config, "shutdown_timeout": 3, **args}
    return modhelpers.run_module(
        tmp_path, "node_instances", args, check=check, wrapper=lab.wrapper, timeout=240
    )


def instance(lab: NcLab, name: str, **extra) -> dict:
    """An instance as cloudctl gives it (with keys of its own that the module ignores)."""
    return {
        "name": name,
        "hostname": name,
        "node": "nc1",
        "zone": "zone-a",
        "vcpus": 1,
        "memory_mb": 64,
        "mac": "d0:0d:" + ":".join(name[2 + i : 4 + i] for i in (0, 2, 4, 6)),
        "disk_gb": 1,
        "image_sha256": lab.disk.name,
        "image_format": "raw",
        "kernel_sha256": lab.kernel.name,
        "ramdisk_sha256": lab.ramdisk.name,
        "public_keys": [],
        **extra,
    }


def firewall(name: str, index: int) -> dict:
    return {"name": name, "node": "nc1", "tap": "vn-" + name[2:], "ip": f"10.97.0.{20 + index}",
            "rules": [SSH], "generation": 1}  # fmt: skip


def chains(lab: NcLab) -> str:
    return lab.run(["iptables-save", "-t", "filter"]).stdout


def launch_args(lab: NcLab, names: list[str], bad: bool) -> dict:
    instances = [instance(lab, n) for n in names]
    if bad:
        instances.append(instance(lab, BAD, image_sha256=MISSING_SHA))
    images = [{"sha256": s.name, "size": s.stat().st_size} for s in (lab.disk, lab.kernel)]
    images.append({"sha256": lab.ramdisk.name, "role": "ramdisk"})  # extra keys are ignored
    if bad:
        images.append({"sha256": MISSING_SHA})
    return {
        "state": "running",
        "images": images,
        "firewalls": [firewall(n, i) for i, n in enumerate(names)],
        "instances": instances,
        "user_data": {GOOD[0]: "#!/bin/sh\necho SECRET-USERDATA\n"},
    }


def test_a_node_launches_powers_and_removes_its_instances_at_once(tmp_path, lab):
    args = launch_args(lab, GOOD, bad=True)

    # check mode: predicts all of it, makes nothing
    res = run(tmp_path, lab, check=True, **args)
    assert res["changed"] and res["failed"]  # the bad instance's image is missing
    assert [i["name"] for i in res["instances"]] == [*GOOD, BAD]
    assert [i.get("failed", False) for i in res["instances"]] == [False, False, True]
    assert [image.get("hit", False) for image in res["images"]] == [True, True, True, False]
    assert "not cached on this node and no url" in res["images"][-1]["msg"]
    assert "SECRET-USERDATA" not in json.dumps(res)
    assert {d["before_header"] for d in res["diff"]} >= {f"instance {n}" for n in GOOD}
    assert not list(lab.instances_dir.iterdir()) and "cloud-i-" not in chains(lab)

    # the launch: the two good ones start, the bad one fails, named, and leaves nothing
    res = run(tmp_path, lab, **args)
    assert res["failed"] and BAD in res["msg"] and GOOD[0] not in res["msg"], res["msg"]
    by_name = {i["name"]: i for i in res["instances"]}
    assert "not cached on this node" in by_name[BAD]["msg"], by_name[BAD]
    assert all(by_name[n]["state"] == "running" and by_name[n]["changed"] for n in GOOD)
    assert [lab.domain_state(n) for n in [*GOOD, BAD]] == ["running", "running", None]
    assert sorted(p.name for p in lab.instances_dir.iterdir()) == GOOD
    saved = chains(lab)
    assert all(f":cloud-i-{n[2:]}" in saved for n in GOOD), saved
    assert set(res["seconds"]) == {"images", "firewalls", "instances"}
    assert "SECRET-USERDATA" not in json.dumps(res)

    # idempotence: the same launch again changes nothing
    res = run(tmp_path, lab, **launch_args(lab, GOOD, bad=False))
    assert not res["failed"] and not res["changed"], res

    # power: both stopped, then both started, in one run each
    started = time.monotonic()
    res = run(tmp_path, lab, state="stopped", instances=[{"name": n} for n in GOOD])
    assert not res["failed"] and res["changed"], res.get("msg")
    assert [lab.domain_state(n) for n in GOOD] == ["shut off", "shut off"]
    print(f"\ntwo instances stopped in one run: {time.monotonic() - started:.1f} s")
    res = run(tmp_path, lab, state="running", instances=[{"name": n} for n in GOOD])
    assert not res["failed"] and [lab.domain_state(n) for n in GOOD] == ["running", "running"]

    # termination: check mode first, then both removed with their firewalls
    gone = [{"name": n, "generation": 2, "volumes": []} for n in GOOD]
    res = run(tmp_path, lab, check=True, state="absent", instances=gone)
    assert res["changed"] and [lab.domain_state(n) for n in GOOD] == ["running", "running"]
    res = run(tmp_path, lab, state="absent", instances=gone)
    assert not res["failed"] and res["changed"], res.get("msg")
    assert [lab.domain_state(n) for n in GOOD] == [None, None]
    assert not list(lab.instances_dir.iterdir()) and "cloud-i-" not in chains(lab)
    res = run(tmp_path, lab, state="absent", instances=gone)
    assert not res["failed"] and not res["changed"], res

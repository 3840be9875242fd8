"""The HA lab the HA tests share (issue 12): scripts/halab.py's lab (inventory/ha on lab hosts
ha1, ha2, ha-wit, ha-node, the wires ha-wire and ha-pub, the lab gateway ha-gw), deployed as
the cloud halab, with the test image, a key pair and one running instance that answers on an
elastic IP. It is deployed as an operator would turn a running cloud into HA: first ha1 alone
in clc, walrus and cc (`halab.sh up --single`), where the image is registered and the
instance launched, then the whole inventory/ha over it (`halab.sh up`); `ids["single"]` keeps
what the single cloud had (tests/integration/test_ha.py compares). Built once per session for
the tests that use it, which run one after the other
(tests/integration/test_ha*.py), and removed by netns and PID (labhost.destroy) as soon as the
next test does not use it (release_ha_lab), so the idle lab never slows the tests after them.
It replaces a lab left by `halab.sh up`.

The cloud is operated from this machine as an operator's controller would: cloudctl with the
lab's inventory and home, on the state in etcd (the client certificate fetched with cloud.yml).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.background import job, uses
from tests.conftest import PROJECT, load_file
from tests.integration.cloud_client import CloudClient, PublicSideClient, in_host

WEB_GROUP = "ha-web"


halab = load_file("halab", PROJECT / "scripts/halab.py")


class HaLab(PublicSideClient, CloudClient):
    """cloudctl on the lab's cloud, the lab's parts, and its instance and elastic IP (ids)."""

    def __init__(self) -> None:
        super().__init__(halab.WORK, "ha")
        self.inventory, self.home = halab.INVENTORY, halab.CLOUD_HOME
        self.client_known_hosts = halab.WORK / "client_known_hosts"

    def holders(self) -> dict[str, list[str]]:
        """Which lab hosts hold each virtual address (clc, walrus, cc-zone-a)."""
        return halab.holders()

    def cc_holder(self) -> str:
        [host] = self.holders()["cc-zone-a"]
        return host

    def from_client(self, *command: str) -> subprocess.CompletedProcess:
        """A command on the public side: in the lab gateway's netns (198.51.100.1)."""
        return halab.in_netns(halab.GATEWAY, *command)


def run_instance(lab: HaLab) -> None:
    """The test image, a key pair, an instance with an elastic IP that allows SSH (ids)."""
    subprocess.run([sys.executable, str(PROJECT / "scripts/build-test-image.py")], check=True)
    images = PROJECT / ".cache/test-image"
    root = lab.workdir / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "64M"], check=True)
    lab.cloudctl("keypair", "create", "ha", "--output-file", str(lab.key))
    rows = lab.json("image", "register", "tiny", "--file", str(root),
                    "--kernel", str(images / "vmlinuz"), "--ramdisk", str(images / "initrd.img"))  # fmt: skip
    lab.ids["emi"] = next(row["id"] for row in rows if row["kind"] == "machine")
    lab.json("group", "create", WEB_GROUP, "--description", "SSH from the public side")
    lab.json("group", "authorize", WEB_GROUP, "--protocol", "tcp", "--port", "22",
             "--cidr", "0.0.0.0/0")  # fmt: skip
    [instance] = lab.json("instance", "run", "--image", lab.ids["emi"], "--type", "m1.small",
                          "--keypair", "ha", "--group", WEB_GROUP)  # fmt: skip
    lab.ids["instance"] = instance
    [address] = lab.json("address", "allocate")
    lab.json("address", "associate", address["public_ip"], "--instance", instance["id"])
    lab.ids["eip"] = address["public_ip"]


@job("ha_lab", wanted=uses("ha_lab"), order=1, cleanup=lambda: halab.down())
def build_ha_lab(tmp_path_factory) -> HaLab:
    """The deployed HA lab with a running instance on an elastic IP (in the background from
    the session's start, tests/background.py)."""
    halab.down()
    started = time.monotonic()
    halab.up(deploy=True, single=True)
    lab = HaLab()
    run_instance(lab)
    lab.ids["single"] = single_cloud_facts(lab)
    converted = time.monotonic()
    halab.up(deploy=True)
    lab.ids["deploy_s"] = time.monotonic() - started
    lab.ids["conversion_s"] = time.monotonic() - converted
    return lab


def single_cloud_facts(lab: HaLab) -> dict:
    """What the conversion must keep: the records of the state, the instance's QEMU process
    on ha-node (a restart would change it), the image's object in Walrus."""
    [image] = lab.json("image", "show", lab.ids["emi"])
    return {
        "records": {kind: sorted(r.get("id") or r["name"] for r in lab.json(kind, "list"))
                    for kind in ("instance", "image", "address", "group", "keypair")},
        "qemu_pid": qemu_pid(lab.ids["instance"]["id"]),
        "image_sha256": image["sha256"],
    }  # fmt: skip


def qemu_pid(instance_id: str) -> int:
    """The PID of the instance's QEMU process on ha-node (from libvirt's pid file)."""
    pid_file = f"/run/libvirt/qemu/{instance_id}.pid"
    return int(in_host(halab.HOSTS["node1"], "cat", pid_file).stdout.strip())


@pytest.fixture(scope="session")
def ha_lab(background):
    """The deployed HA lab with a running instance on an elastic IP (HaLab)."""
    if os.geteuid() != 0:
        pytest.fail("the HA lab needs root (lab hosts are network namespaces)")
    try:
        yield background.result("ha_lab")
    except SystemExit as exc:  # halab reports a failed step so
        pytest.fail(str(exc))
    finally:
        halab.down()


def release_ha_lab(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last of the consecutive tests that use the lab: remove it (the session
    fixture's own teardown then finds nothing left)."""
    if "ha_lab" in item.fixturenames and (
        nextitem is None or "ha_lab" not in nextitem.fixturenames
    ):
        halab.down()


__all__ = ["HaLab", "ha_lab", "halab", "in_host", "release_ha_lab"]

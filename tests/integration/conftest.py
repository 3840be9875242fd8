"""The cloud-in-a-box that the robustness tests share (faults, concurrency, crash, secrets).

One lab host, deployed once per test session, with the test image registered and a key
pair. OPS_CLOUD_HOST names the lab host (default ops-ciab), so that two runs on one machine
can keep apart. Tests that break something on the host (a stopped daemon) restore it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT, labhost
from tests.integration.cloud_client import CloudClient


@pytest.fixture(scope="session")
def ops_cloud(tmp_path_factory):
    host = os.environ.get("OPS_CLOUD_HOST", "ops-ciab")
    labhost.destroy(host)
    labhost.create(host)
    c = CloudClient(tmp_path_factory.mktemp("ops"), "ops")
    c.host = host
    labhost.write_inventory([host], PROJECT / "inventory" / "ciab", c.inventory)
    hosts_file = c.inventory / "hosts.yml"
    hosts_file.write_text(hosts_file.read_text().replace("ciab:", f"{host}:"))
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "build-test-image.py")], check=True)
    image_dir = PROJECT / ".cache" / "test-image"
    root = c.workdir / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "64M"], check=True)
    try:
        c.cloudctl("deploy")
        c.cloudctl("keypair", "create", "ops", "--output-file", str(c.key))
        rows = c.json("image", "register", "tiny", "--file", str(root),
                      "--kernel", str(image_dir / "vmlinuz"),
                      "--ramdisk", str(image_dir / "initrd.img"))  # fmt: skip
        c.ids["emi"] = next(row["id"] for row in rows if row["kind"] == "machine")
        yield c
    finally:
        labhost.destroy(host)

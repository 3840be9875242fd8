"""The cloud-in-a-box that the robustness tests share (faults, concurrency, crash, secrets).

One lab host, deployed once per test session (in the background from the session's start,
tests/background.py), with the test image registered, a key pair,
and an elastic IP pool (198.51.100.16/28) on a public interface (a veth pair) inside the lab
host. OPS_CLOUD_HOST names the lab host (default ops-ciab), so that two runs on one machine
can keep apart. Tests that break something on the host (a stopped daemon) restore it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.background import job, uses
from tests.conftest import PROJECT, labhost
from tests.integration.api_fixtures import ops_api  # noqa: F401 (a fixture)
from tests.integration.cloud_client import CloudClient, in_host
from tests.integration.ha_fixtures import ha_lab, release_ha_lab  # noqa: F401 (a fixture)

OPS_POOL = "198.51.100.16/28"


def pytest_runtest_teardown(item, nextitem):
    release_ha_lab(item, nextitem)  # the HA lab goes after the last test that uses it


def ops_host() -> str:
    return os.environ.get("OPS_CLOUD_HOST", "ops-ciab")


@job("ops_cloud", wanted=uses("ops_cloud"), order=0, cleanup=lambda: labhost.destroy(ops_host()))
def build_ops_cloud(tmp_path_factory) -> CloudClient:
    host = ops_host()
    labhost.destroy(host)
    labhost.create(host)
    c = CloudClient(tmp_path_factory.mktemp("ops"), "ops")
    c.host = host
    labhost.write_inventory([host], PROJECT / "inventory" / "ciab", c.inventory)
    hosts_file = c.inventory / "hosts.yml"
    hosts_file.write_text(hosts_file.read_text().replace("ciab:", f"{host}:"))
    group_vars = c.inventory / "group_vars" / "all.yml"
    settings = yaml.safe_load(group_vars.read_text())
    settings["cloud_clusters"]["zone-a"].update(public_interface="pub0", public_ips=OPS_POOL)
    group_vars.write_text(yaml.safe_dump(settings))
    # A veth pair, not a dummy interface: the lab machines' kernel has no dummy module.
    for command in (["ip", "link", "add", "pub0", "type", "veth", "peer", "name", "pub0-peer"],
                    ["ip", "addr", "add", "198.51.100.1/24", "dev", "pub0"],
                    ["ip", "link", "set", "pub0-peer", "up"],
                    ["ip", "link", "set", "pub0", "up"]):  # fmt: skip
        assert in_host(host, *command).returncode == 0, command
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "build-test-image.py")], check=True)
    image_dir = PROJECT / ".cache" / "test-image"
    root = c.workdir / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "64M"], check=True)
    c.cloudctl("deploy")
    c.cloudctl("keypair", "create", "ops", "--output-file", str(c.key))
    rows = c.json("image", "register", "tiny", "--file", str(root),
                  "--kernel", str(image_dir / "vmlinuz"),
                  "--ramdisk", str(image_dir / "initrd.img"))  # fmt: skip
    c.ids["emi"] = next(row["id"] for row in rows if row["kind"] == "machine")
    return c


@pytest.fixture(scope="session")
def ops_cloud(background):
    """The deployed cloud (built in the background from the session's start)."""
    try:
        yield background.result("ops_cloud")
    finally:
        labhost.destroy(ops_host())

"""End to end: the runtime of a cloud-in-a-box on a namespaced lab host, with real guests.

Deploy, register the tiny test image (kernel + ramdisk + a blank root disk), create a key
pair, launch 2 instances in one `--count 2` command, reach both over SSH (paramiko, through
the lab host as a jump host: the instance network lives inside the lab host's namespace),
move a volume with a marker between them, snapshot it and restore it, then terminate and
delete everything and check that nothing leaked on the host or in the state.
The tests of this file run in order and share the cloud.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT, labhost
from tests.integration.cloud_client import CloudClient, in_host

pytestmark = pytest.mark.integration
HOST = "rt-ciab"
MARKER = "cloud-marker-7f3a"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    labhost.destroy(HOST)
    labhost.create(HOST)
    c = CloudClient(tmp_path_factory.mktemp("runtime"), "k1")
    labhost.write_inventory([HOST], PROJECT / "inventory" / "ciab", c.inventory)
    hosts_file = c.inventory / "hosts.yml"
    hosts_file.write_text(hosts_file.read_text().replace("ciab:", f"{HOST}:"))
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "build-test-image.py")], check=True)
    image_dir = PROJECT / ".cache" / "test-image"
    c.kernel, c.ramdisk = image_dir / "vmlinuz", image_dir / "initrd.img"
    for name, fmt, size in (("root.qcow2", "qcow2", "64M"), ("root2.raw", "raw", "32M")):
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(c.workdir / name), size],
                       check=True)  # fmt: skip
    try:
        yield c
    finally:
        labhost.destroy(HOST)


def test_deploy_and_register(cloud):
    cloud.cloudctl("deploy")
    cloud.cloudctl("keypair", "create", "k1", "--output-file", str(cloud.key))
    rows = cloud.json("image", "register", "tiny", "--file", str(cloud.workdir / "root.qcow2"),
                      "--kernel", str(cloud.kernel), "--ramdisk", str(cloud.ramdisk))  # fmt: skip
    kinds = {row["kind"]: row for row in rows}
    assert set(kinds) == {"machine", "kernel", "ramdisk"}
    emi = cloud.json("image", "show", kinds["machine"]["id"])[0]
    assert emi["id"].startswith("emi-") and emi["kernel_id"] == kinds["kernel"]["id"]
    cloud.ids["emi"] = emi["id"]


def test_check_mode_shows_the_changes_and_records_nothing(cloud):
    state = cloud.home / "state.json"
    before = state.read_bytes()
    out = cloud.cloudctl("instance", "run", "--image", cloud.ids["emi"], "--count", "2", "--check")
    assert "Start the instances" in out.stdout and HOST in out.stdout
    assert "Check mode: nothing was changed" in out.stderr
    assert state.read_bytes() == before
    domains = in_host(HOST, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
    assert not domains.stdout.strip()


def test_run_two_instances_in_one_command_and_ssh(cloud):
    instances = cloud.json("instance", "run", "--image", cloud.ids["emi"], "--count", "2",
                           "--keypair", "k1")  # fmt: skip
    assert len(instances) == 2
    assert {i["state"] for i in instances} == {"running"}
    shown = [cloud.json("instance", "show", i["id"])[0] for i in instances]
    assert len({i["reservation"] for i in shown}) == 1  # one launch
    runs = [e for e in cloud.json("event", "list") if e["operation"] == "instance-run"]
    assert len(runs) == 1  # ONE play for both
    cloud.ids["instances"] = [(i["id"], i["private_ip"]) for i in instances]
    for iid, ip in cloud.ids["instances"]:
        out = cloud.guest(HOST, ip, "hostname; ip -4 -o addr show eth0")
        hostname, addr = out.splitlines()[0], out
        assert hostname == iid
        assert f"inet {ip}/" in addr  # the reserved address, by DHCP


def test_volume_moves_between_instances_with_its_data(cloud):
    (i1, ip1), (i2, ip2) = cloud.ids["instances"]
    state = cloud.home / "state.json"
    before = state.read_bytes()
    dry = cloud.cloudctl("volume", "create", "--size", "1", "--check")
    assert "Export the volume" in dry.stdout and HOST in dry.stdout
    assert state.read_bytes() == before
    assert not in_host(HOST, "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show").stdout

    vol = cloud.json("volume", "create", "--size", "1")[0]
    assert vol["state"] == "available"
    vid = vol["id"]
    cloud.ids["volumes"] = [vid]
    link = f"/dev/disk/by-id/virtio-{vid}"
    wait_link = f"i=0; while [ ! -e {link} ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; "

    attached = cloud.json("volume", "attach", vid, "--instance", i1)[0]
    assert attached["state"] == "in-use" and attached["instance"] == i1
    cloud.guest(HOST, ip1, wait_link + f"printf '{MARKER}\\n' > {link} && sync")
    cloud.json("volume", "detach", vid)
    before = state.read_bytes()
    dry = cloud.cloudctl("volume", "attach", vid, "--instance", i2, "--check")
    assert "Attach the volume" in dry.stdout and state.read_bytes() == before
    cloud.json("volume", "attach", vid, "--instance", i2)
    assert cloud.guest(HOST, ip2, wait_link + f"head -c {len(MARKER)} {link}") == MARKER

    # Deleting an attached volume is refused and changes nothing.
    refused = cloud.cloudctl("volume", "delete", vid, ok=False)
    assert refused.returncode != 0 and "attached" in refused.stderr
    assert cloud.json("volume", "show", vid)[0]["state"] == "in-use"


def test_snapshot_restores_the_marker(cloud):
    (_, _), (i2, ip2) = cloud.ids["instances"]
    vid = cloud.ids["volumes"][0]
    snap = cloud.json("snapshot", "create", vid)[0]
    assert snap["state"] == "completed"
    cloud.ids["snapshot"] = snap["id"]
    restored = cloud.json("volume", "create", "--snapshot", snap["id"])[0]
    assert restored["state"] == "available" and restored["size_gb"] == 1
    cloud.ids["volumes"].append(restored["id"])
    cloud.json("volume", "attach", restored["id"], "--instance", i2)
    link = f"/dev/disk/by-id/virtio-{restored['id']}"
    wait_link = f"i=0; while [ ! -e {link} ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; "
    assert cloud.guest(HOST, ip2, wait_link + f"head -c {len(MARKER)} {link}") == MARKER


def test_second_image_is_downloaded_once(cloud):
    rows = cloud.json("image", "register", "tiny2", "--file", str(cloud.workdir / "root2.raw"),
                      "--kernel", str(cloud.kernel), "--ramdisk", str(cloud.ramdisk))  # fmt: skip
    machine = next(row for row in rows if row["kind"] == "machine")
    assert {row["record"] for row in rows if row["kind"] != "machine"} == {"reused"}
    record = cloud.json("image", "show", machine["id"])[0]
    sha12 = record["sha256"][:12]
    first = cloud.cloudctl("instance", "run", "--image", record["id"])
    assert f"image {sha12} on {HOST}: downloaded" in first.stderr
    second = cloud.cloudctl("instance", "run", "--image", record["id"])
    assert f"image {sha12} on {HOST}: cache hit" in second.stderr


def test_terminate_and_delete_everything_leaves_nothing(cloud):
    for vid in cloud.ids["volumes"]:
        if cloud.json("volume", "show", vid)[0]["state"] == "in-use":
            cloud.json("volume", "detach", vid)
        cloud.json("volume", "delete", vid)
    cloud.cloudctl("snapshot", "delete", cloud.ids["snapshot"])
    live = [i["id"] for i in cloud.json("instance", "list") if i["state"] != "terminated"]
    terminated = cloud.json("instance", "terminate", *live)
    assert {i["state"] for i in terminated} == {"terminated"}

    domains = in_host(HOST, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
    assert domains.returncode == 0 and not domains.stdout.strip(), domains.stdout
    targets = in_host(HOST, "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show")
    assert targets.returncode == 0 and not targets.stdout.strip(), targets.stdout
    secrets = in_host(HOST, "virsh", "-c", "qemu:///system", "secret-list")
    assert "vol-" not in secrets.stdout
    reservations = in_host(HOST, "sh", "-c", "ls -A /etc/cloud/cc/*/hosts")
    assert reservations.returncode == 0 and not reservations.stdout.strip(), reservations.stdout
    overlays = in_host(HOST, "sh", "-c", "ls -A /var/lib/cloud/nc/instances")
    assert not overlays.stdout.strip(), overlays.stdout
    volumes = in_host(HOST, "sh", "-c", "ls -A /var/lib/cloud/sc/volumes")
    assert not volumes.stdout.strip(), volumes.stdout

    state = json.loads((cloud.home / "state.json").read_text())
    allocations = [a for a in state.get("_allocations", {}).values()]
    assert allocations == [], allocations

"""End to end: the runtime of a cloud-in-a-box on a namespaced lab host, with real guests.

On the shared cloud-in-a-box (ops_cloud; its deploy and test_deploy's cover the deploy):
register the tiny test image again (kernel + ramdisk + a blank root disk), launch 2 instances
in one `--count 2` command, reach both over SSH with the shared key pair (paramiko, through
the lab host as a jump host: the instance network lives inside the lab host's namespace),
move a volume with a marker between them, snapshot it and restore it, then terminate and
delete everything this file made and check that none of it is left on the host or in the
state. The tests of this file run in order.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from cloudctl.state import StateStore
from tests.conftest import PROJECT
from tests.integration.cloud_client import in_host

pytestmark = pytest.mark.integration
MARKER = "cloud-marker-7f3a"


@pytest.fixture(scope="module")
def cloud(ops_cloud):
    return ops_cloud


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """This file's image files, and the ids of what it made on the shared cloud."""
    work = tmp_path_factory.mktemp("runtime")
    image_dir = PROJECT / ".cache" / "test-image"
    files = {"kernel": image_dir / "vmlinuz", "ramdisk": image_dir / "initrd.img",
             "root": work / "root.qcow2", "root2": work / "root2.raw"}  # fmt: skip
    for name, fmt, size in (("root", "qcow2", "64M"), ("root2", "raw", "32M")):
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(files[name]), size],
                       check=True)  # fmt: skip
    return {**files, "images": [], "instances": [], "volumes": []}


def domains(host: str) -> list[str]:
    listed = in_host(host, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


def targets(host: str) -> str:
    shown = in_host(host, "tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_register(cloud, made):
    rows = cloud.json("image", "register", "rt-tiny", "--file", str(made["root"]),
                      "--kernel", str(made["kernel"]), "--ramdisk", str(made["ramdisk"]))  # fmt: skip
    kinds = {row["kind"]: row for row in rows}
    assert set(kinds) == {"machine", "kernel", "ramdisk"}
    emi = cloud.json("image", "show", kinds["machine"]["id"])[0]
    assert emi["id"].startswith("emi-") and emi["kernel_id"] == kinds["kernel"]["id"]
    made["emi"] = emi["id"]
    made["images"].append(emi["id"])


def test_check_mode_shows_the_changes_and_records_nothing(cloud, made):
    state = cloud.home / "state.json"
    before, domains_before = state.read_bytes(), domains(cloud.host)
    out = cloud.cloudctl("instance", "run", "--image", made["emi"], "--count", "2", "--check")
    assert "Start the instances" in out.stdout and cloud.host in out.stdout
    assert "Check mode: nothing was changed" in out.stderr
    assert state.read_bytes() == before
    assert domains(cloud.host) == domains_before


def test_run_two_instances_in_one_command_and_ssh(cloud, made):
    instances = cloud.json("instance", "run", "--image", made["emi"], "--count", "2",
                           "--keypair", "ops")  # fmt: skip
    made["instances"] += [i["id"] for i in instances]
    assert len(instances) == 2
    assert {i["state"] for i in instances} == {"running"}
    shown = [cloud.json("instance", "show", i["id"])[0] for i in instances]
    assert len({i["reservation"] for i in shown}) == 1  # one launch
    [event] = {i["event"] for i in shown}  # ONE play for both
    assert cloud.json("event", "show", event)[0]["operation"] == "instance-run"
    made["pair"] = [(i["id"], i["private_ip"]) for i in instances]
    for iid, ip in made["pair"]:
        out = cloud.guest(cloud.host, ip, "hostname; ip -4 -o addr show eth0")
        hostname, addr = out.splitlines()[0], out
        assert hostname == iid
        assert f"inet {ip}/" in addr  # the reserved address, by DHCP


def wait_for_disk(link: str) -> str:
    """Shell that waits (up to 60 s, in the guest) for a hot-plugged disk's link."""
    return f"i=0; while [ ! -e {link} ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; "


def test_volume_moves_between_instances_with_its_data(cloud, made):
    (i1, ip1), (i2, ip2) = made["pair"]
    host, state = cloud.host, cloud.home / "state.json"
    before, targets_before = state.read_bytes(), targets(host)
    dry = cloud.cloudctl("volume", "create", "--size", "1", "--check")
    assert "Export the volume" in dry.stdout and host in dry.stdout
    assert state.read_bytes() == before
    assert targets(host) == targets_before

    vol = cloud.json("volume", "create", "--size", "1")[0]
    assert vol["state"] == "available"
    vid = vol["id"]
    made["volumes"].append(vid)
    link = f"/dev/disk/by-id/virtio-{vid}"

    attached = cloud.json("volume", "attach", vid, "--instance", i1)[0]
    assert attached["state"] == "in-use" and attached["instance"] == i1
    cloud.guest(host, ip1, wait_for_disk(link) + f"printf '{MARKER}\\n' > {link} && sync")
    cloud.json("volume", "detach", vid)
    before = state.read_bytes()
    dry = cloud.cloudctl("volume", "attach", vid, "--instance", i2, "--check")
    assert "Attach the volume" in dry.stdout and state.read_bytes() == before
    cloud.json("volume", "attach", vid, "--instance", i2)
    assert cloud.guest(host, ip2, wait_for_disk(link) + f"head -c {len(MARKER)} {link}") == MARKER

    # Deleting an attached volume is refused and changes nothing.
    refused = cloud.cloudctl("volume", "delete", vid, ok=False)
    assert refused.returncode != 0 and "attached" in refused.stderr
    assert cloud.json("volume", "show", vid)[0]["state"] == "in-use"


def test_snapshot_restores_the_marker(cloud, made):
    (_, _), (i2, ip2) = made["pair"]
    snap = cloud.json("snapshot", "create", made["volumes"][0])[0]
    assert snap["state"] == "completed"
    made["snapshot"] = snap["id"]
    restored = cloud.json("volume", "create", "--snapshot", snap["id"])[0]
    assert restored["state"] == "available" and restored["size_gb"] == 1
    made["volumes"].append(restored["id"])
    cloud.json("volume", "attach", restored["id"], "--instance", i2)
    link = f"/dev/disk/by-id/virtio-{restored['id']}"
    assert cloud.guest(cloud.host, ip2,
                       wait_for_disk(link) + f"head -c {len(MARKER)} {link}") == MARKER  # fmt: skip


def test_second_image_is_downloaded_once(cloud, made):
    rows = cloud.json("image", "register", "rt-tiny2", "--file", str(made["root2"]),
                      "--kernel", str(made["kernel"]), "--ramdisk", str(made["ramdisk"]))  # fmt: skip
    machine = next(row for row in rows if row["kind"] == "machine")
    made["images"].append(machine["id"])
    assert {row["record"] for row in rows if row["kind"] != "machine"} == {"reused"}
    record = cloud.json("image", "show", machine["id"])[0]
    sha12 = record["sha256"][:12]
    for outcome in ("downloaded", "cache hit"):
        run = cloud.cloudctl("-o", "json", "instance", "run", "--image", record["id"])
        made["instances"] += [i["id"] for i in json.loads(run.stdout)]
        assert f"image {sha12} on {cloud.host}: {outcome}" in run.stderr


def test_terminate_and_delete_everything_leaves_nothing(cloud, made):
    for vid in made["volumes"]:
        if cloud.json("volume", "show", vid)[0]["state"] == "in-use":
            cloud.json("volume", "detach", vid)
        cloud.json("volume", "delete", vid)
    cloud.cloudctl("snapshot", "delete", made["snapshot"])
    terminated = cloud.json("instance", "terminate", *made["instances"])
    assert {i["state"] for i in terminated} == {"terminated"}
    cached = set()
    for image in made["images"]:
        cached.add(cloud.json("image", "show", image)[0]["sha256"])
        cloud.cloudctl("image", "deregister", image)
    # The deregistered images' files stay in the NC's cache (an LRU cache, not a record) until
    # reconcile removes them; the shared cloud's later tests expect no drift.
    fixed = {d["resource"]: d for d in cloud.json("reconcile", "--fix")
             if d["kind"] == "orphan-cache"}  # fmt: skip
    assert set(fixed) <= cached and all(d["fixed"] for d in fixed.values()), fixed
    assert fixed, "the downloaded image was not in the cache"

    # Nothing this file made is left on the host (the shared cloud may hold other tests').
    host, ids = cloud.host, made["instances"] + made["volumes"]
    assert not set(domains(host)) & set(made["instances"])
    exported = targets(host)
    assert not [vid for vid in made["volumes"] if vid in exported], exported
    secrets = in_host(host, "virsh", "-c", "qemu:///system", "secret-list")
    assert secrets.returncode == 0 and not [v for v in made["volumes"] if v in secrets.stdout]
    for where in ("/etc/cloud/cc/*/hosts", "/var/lib/cloud/nc/instances",
                  "/var/lib/cloud/sc/volumes"):  # fmt: skip
        listed = in_host(host, "sh", "-c", f"ls -A {where}")
        assert listed.returncode == 0, listed.stderr
        assert not [i for i in ids if i in listed.stdout], (where, listed.stdout)

    with StateStore(cloud.home / "state.json").snapshot() as snap:
        owners = {owner for pool in snap.pools() for owner in snap.allocations(pool).values()}
    assert not owners & set(ids), owners

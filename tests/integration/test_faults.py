"""Faults on the shared cloud-in-a-box (ops_cloud): a daemon of the lab host down, or the
host unreachable, while cloudctl works.

Each fault test stops one daemon through the lab host's service manager (supervisor where
PID 1 is not systemd, as the common role sets it up), runs one command, and restarts the
daemon in a `finally`, waiting until it answers again. The command must fail with one line
that names the host (or the Walrus endpoint), and leave no half-done resource: the record in
a state that says so, with the reason, and whatever it had allocated released, on the host
and in the state, or, where cloudctl cannot know what the host did (a failed launch whose
clean-up failed too, a hot-plug whose answer was lost), kept until `cloudctl reconcile --fix`
settles it. The last test proves the cloud still works after every fault.
The tests of this file run in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from cloudctl import walrus
from cloudctl.cloudconfig import load_config
from cloudctl.instances import MAC_POOL, ip_pool
from cloudctl.state import StateStore
from tests.integration.cloud_client import in_host

pytestmark = pytest.mark.integration
ZONE = "zone-a"
SUPERVISOR_CONFIG = "/etc/supervisor/supervisord.conf"  # modules/cloud_service.py's default
RESTART_DEADLINE = 120  # seconds for a restarted daemon to answer
BOOT_DEADLINE = 600  # seconds for a TCG guest to boot and take its DHCP lease


def until(check: Callable[[], bool], deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {deadline_s}s")
        time.sleep(1)  # poll interval


def service(host: str, action: str, name: str) -> None:
    """stop/start a daemon of the lab host with the service manager it runs under."""
    systemd = in_host(host, "test", "-d", "/run/systemd/system").returncode == 0
    if systemd:
        command = ["systemctl", action, name]
    else:
        command = ["supervisorctl", "-c", SUPERVISOR_CONFIG, action, name]
    done = in_host(host, *command)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stdout} {done.stderr}"


def answers(host: str, *command: str) -> Callable[[], bool]:
    return lambda: in_host(host, *command).returncode == 0


@contextlib.contextmanager
def stopped(host: str, name: str, ready: Callable[[], bool]) -> Iterator[None]:
    """The daemon `name` is down for the block, and answers again after it."""
    service(host, "stop", name)
    try:
        assert not ready(), f"{name} still answers after it was stopped"
        yield
    finally:
        service(host, "start", name)
        until(ready, RESTART_DEADLINE, f"{name} answering again")


def libvirt_answers(host: str) -> Callable[[], bool]:
    return answers(host, "virsh", "-c", "qemu:///system", "version")


def tgtd_answers(host: str) -> Callable[[], bool]:
    return answers(host, "tgtadm", "--lld", "iscsi", "--op", "show", "--mode", "sys")


def one_error_line(proc, *words: str) -> str:
    """A failed command printed exactly one line, `Error: ...`, holding every word."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def owned(c, *ids: str) -> dict[str, str]:
    """IP and MAC allocations held by these instances."""
    with StateStore(c.home / "state.json").snapshot() as snap:
        pools = {**snap.allocations(ip_pool(ZONE)), **snap.allocations(MAC_POOL)}
    return {value: owner for value, owner in pools.items() if owner in ids}


def cc_zone(host: str) -> dict:
    shown = in_host(host, "cat", "/etc/cloud/cc/cc.json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["zones"][ZONE]


def new_instances(c, before: set[str]) -> list[dict]:
    return [i for i in c.json("instance", "list") if i["id"] not in before]


def assert_nothing_left_of(c, iid: str) -> None:
    """No allocation, reservation, domain, disk or firewall of instance iid remains."""
    host = c.host
    assert owned(c, iid) == {}
    hosts_dir = cc_zone(host)["hosts_dir"]
    assert iid not in in_host(host, "ls", "-A", hosts_dir).stdout.split()
    domains = in_host(host, "virsh", "-c", "qemu:///system", "list", "--all", "--name")
    assert domains.returncode == 0 and iid not in domains.stdout.split(), domains.stdout
    assert in_host(host, "test", "-e", f"/var/lib/cloud/nc/instances/{iid}").returncode != 0
    suffix = iid.split("-", 1)[1]
    assert suffix not in in_host(host, "iptables-save").stdout


def run_instance(c) -> dict:
    (instance,) = c.json("instance", "run", "--image", c.ids["emi"], "--keypair", "ops")
    assert instance["state"] == "running"
    return c.json("instance", "show", instance["id"])[0]


def wait_for_lease(c, instance: dict) -> None:
    """The guest booted and took its reserved address from the CC's DHCP."""
    lease_file = cc_zone(c.host)["lease_file"]
    wanted = f"{instance['mac']} {instance['private_ip']} "
    until(
        lambda: wanted in in_host(c.host, "cat", lease_file).stdout,
        BOOT_DEADLINE,
        f"{instance['id']} leasing {instance['private_ip']}",
    )


def test_libvirtd_down_during_instance_run(ops_cloud):
    c = ops_cloud
    before = {i["id"] for i in c.json("instance", "list")}
    with stopped(c.host, "cloud-libvirtd", libvirt_answers(c.host)):
        run = c.cloudctl("instance", "run", "--image", c.ids["emi"], "--keypair", "ops", ok=False)
        one_error_line(run, c.host, "libvirt")
        (failed,) = new_instances(c, before)
        shown = c.json("instance", "show", failed["id"])[0]
        assert shown["state"] == "failed"
        assert c.host in shown["reason"] and "libvirt" in shown["reason"], shown["reason"]
        # The clean-up could not remove the domain (libvirtd is down): the IP and MAC stay.
        assert "clean-up failed" in shown["reason"], shown["reason"]
        assert sorted(owned(c, failed["id"])) == sorted([shown["private_ip"], shown["mac"]])
        hosts_dir = cc_zone(c.host)["hosts_dir"]
        assert failed["id"] not in in_host(c.host, "ls", "-A", hosts_dir).stdout.split()
    reconciled(c, failed["id"])
    assert_nothing_left_of(c, failed["id"])


def test_tgtd_down_during_volume_attach(ops_cloud):
    c = ops_cloud
    instance = run_instance(c)
    iid = instance["id"]
    c.ids["fault_instances"] = [iid]
    vid = c.json("volume", "create", "--size", "1")[0]["id"]
    c.ids["fault_volume"] = vid
    with stopped(c.host, "cloud-tgtd", tgtd_answers(c.host)):
        attach = c.cloudctl("volume", "attach", vid, "--instance", iid, ok=False)
        one_error_line(attach, c.host)
        volume = c.json("volume", "show", vid)[0]
        assert volume["state"] == "available" and volume["instance"] is None, volume
        assert c.host in volume["reason"], volume
        for flags in ([], ["--inactive"]):  # neither the live domain nor its definition
            xml = in_host(c.host, "virsh", "-c", "qemu:///system", "dumpxml", *flags, iid)
            assert xml.returncode == 0 and vid not in xml.stdout, xml.stdout
        secrets = in_host(c.host, "virsh", "-c", "qemu:///system", "secret-list")
        assert vid not in secrets.stdout
    # tgtd lost its targets with the restart: attaching exports the volume again.
    attached = c.json("volume", "attach", vid, "--instance", iid)[0]
    assert attached["state"] == "in-use" and attached["instance"] == iid
    disks = in_host(c.host, "virsh", "-c", "qemu:///system", "dumpxml", iid)
    assert f"<serial>{vid}</serial>" in disks.stdout
    assert c.json("volume", "detach", vid)[0]["state"] == "available"


def walrus_client(c) -> walrus.Client:
    return walrus.client(load_config(c.home / "cloud.yml").walrus, connect_timeout=2)


def test_walrus_down_during_image_register(ops_cloud, tmp_path):
    c = ops_cloud
    disk = tmp_path / "fault.raw"
    disk.write_bytes(os.urandom(1 << 20))  # a file Walrus has never seen
    sha = hashlib.sha256(disk.read_bytes()).hexdigest()
    images = c.json("image", "list")
    s3 = walrus_client(c)
    emi_sha = c.json("image", "show", c.ids["emi"])[0]["sha256"]

    def walrus_answers() -> bool:
        try:
            return walrus.object_exists(s3, walrus.IMAGES, emi_sha)
        except walrus.WalrusError:
            return False

    with stopped(c.host, "cloud-walrus", walrus_answers):
        register = c.cloudctl("image", "register", "fault", "--file", str(disk), ok=False)
        line = one_error_line(
            register, "Walrus at", load_config(c.home / "cloud.yml").walrus.endpoint
        )
        assert "does not answer" in line, line
        assert c.json("image", "list") == images
    assert c.json("image", "list") == images
    assert walrus.head_object(s3, walrus.IMAGES, sha) is None  # no partial object
    uploads = s3.s3.list_multipart_uploads(Bucket=walrus.IMAGES).get("Uploads") or []
    assert not [u for u in uploads if u["Key"] == sha], uploads
    # Walrus is back: the same register works, and deregister removes its object again.
    (machine,) = c.json("image", "register", "fault", "--file", str(disk))
    assert machine["object"] == "uploaded"
    c.cloudctl("image", "deregister", machine["id"])
    assert walrus.head_object(s3, walrus.IMAGES, sha) is None


def inventory_with(c, tmp_path, line: str) -> str:
    """A copy of the cloud's inventory with one more host variable (a YAML line)."""
    inventory = tmp_path / "inventory"
    shutil.copytree(c.inventory, inventory)
    host_vars = inventory / "host_vars" / f"{c.host}.yml"
    host_vars.write_text(host_vars.read_text() + line + "\n")
    return str(inventory)


def unreachable_inventory(c, tmp_path) -> str:
    """A copy of the cloud's inventory whose only host has a port nothing listens on."""
    return inventory_with(c, tmp_path, "ansible_port: 1")


def reconcile(c, *args: str) -> list[dict]:
    """The rows of `cloudctl reconcile` (exit 1 while some drift is left)."""
    proc = c.cloudctl("-o", "json", "reconcile", *args, ok=False)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def reconciled(c, iid: str) -> None:
    """`reconcile --fix` finishes a failed launch whose clean-up failed: its allocations go."""
    mine = [d for d in reconcile(c, "--fix") if iid == d["resource"] or iid in d["detail"]]
    assert mine and all(d["fixed"] for d in mine), mine


def test_unreachable_host(ops_cloud, tmp_path):
    c = ops_cloud
    bad = unreachable_inventory(c, tmp_path)
    volumes = {v["id"] for v in c.json("volume", "list")}
    create = c.cloudctl("--inventory", bad, "volume", "create", "--size", "1", ok=False)
    one_error_line(create, c.host, "unreachable", "port 1")
    (volume,) = [v for v in c.json("volume", "list") if v["id"] not in volumes]
    shown = c.json("volume", "show", volume["id"])[0]
    assert shown["state"] == "error", shown
    assert c.host in shown["reason"] and "unreachable" in shown["reason"], shown
    c.json("volume", "delete", volume["id"])  # the host is back (good inventory): clean up

    before = {i["id"] for i in c.json("instance", "list")}
    run = c.cloudctl("--inventory", bad, "instance", "run", "--image", c.ids["emi"], ok=False)
    one_error_line(run, c.host, "unreachable")
    (failed,) = new_instances(c, before)
    shown = c.json("instance", "show", failed["id"])[0]
    assert shown["state"] == "failed" and c.host in shown["reason"], shown
    assert "unreachable" in shown["reason"] and "clean-up failed" in shown["reason"], shown
    assert sorted(owned(c, failed["id"])) == sorted([shown["private_ip"], shown["mac"]])
    reconciled(c, failed["id"])  # the host is back (good inventory)
    assert_nothing_left_of(c, failed["id"])


# The lab host's Python for modules, except that the answer of a hot-plug that worked is
# lost, as when the SSH connection drops right after the module ran (ssh exits 255).
LOSE_ATTACH_ANSWER = """#!/bin/sh
out=$(/usr/bin/python3 "$@")
rc=$?
case $out in *'"attached": true'*) exit 255 ;; esac
printf '%s\\n' "$out"
exit $rc
"""


def test_attach_whose_answer_is_lost_is_settled_by_reconcile(ops_cloud, tmp_path):
    c = ops_cloud
    iid, vid = c.ids["fault_instances"][0], c.ids["fault_volume"]
    python = "/tmp/cloudtest-lose-attach-answer"  # in the lab host's private /tmp
    put = in_host(c.host, "sh", "-c", 'printf "%s" "$1" > "$2" && chmod 755 "$2"', "sh",
                  LOSE_ATTACH_ANSWER, python)  # fmt: skip
    assert put.returncode == 0, put.stderr
    lossy = inventory_with(c, tmp_path, f"ansible_python_interpreter: {python}")
    attach = c.cloudctl("--inventory", lossy, "volume", "attach", vid, "--instance", iid, ok=False)
    one_error_line(attach, c.host, "unreachable")
    shown = c.json("volume", "show", vid)[0]
    assert (shown["state"], shown["attach_state"], shown["instance"]) == (
        "in-use", "attaching", iid), shown  # fmt: skip
    assert "outcome unknown" in shown["reason"], shown
    xml = in_host(c.host, "virsh", "-c", "qemu:///system", "dumpxml", iid)
    assert f"<serial>{vid}</serial>" in xml.stdout  # the node did attach it
    # No second writer: the volume cannot be attached again while the outcome is unknown.
    one_error_line(c.cloudctl("volume", "attach", vid, "--instance", iid, ok=False), vid,
                   f"attaching to {iid}")  # fmt: skip

    assert [d["kind"] for d in reconcile(c) if d["resource"] == vid] == ["unfinished-attach"]
    [fixed] = [d for d in reconcile(c, "--fix") if d["resource"] == vid]
    assert fixed["fixed"], fixed
    shown = c.json("volume", "show", vid)[0]
    assert (shown["state"], shown["attach_state"], shown["reason"]) == ("in-use", "attached", "")
    assert [d for d in reconcile(c) if d["resource"] == vid] == []
    # From here on it is an ordinary attachment: it detaches once the guest answers.
    wait_for_lease(c, c.json("instance", "show", iid)[0])
    assert c.json("volume", "detach", vid)[0]["state"] == "available"


def test_the_cloud_works_after_the_faults(ops_cloud):
    c = ops_cloud
    for daemon in ("cloud-libvirtd", "cloud-tgtd", "cloud-walrus"):
        service(c.host, "status", daemon)  # running (the status command fails otherwise)
    health = c.json("service", "status")
    assert {row["status"] for row in health} == {"healthy"}, health
    instance = run_instance(c)
    c.ids["fault_instances"].append(instance["id"])
    vid = c.ids["fault_volume"]
    assert c.json("volume", "attach", vid, "--instance", instance["id"])[0]["state"] == "in-use"
    wait_for_lease(c, instance)
    c.json("volume", "detach", vid)
    c.json("volume", "delete", vid)
    ended = c.json("instance", "terminate", *c.ids["fault_instances"])
    assert {i["state"] for i in ended} == {"terminated"}
    for iid in c.ids["fault_instances"]:
        assert_nothing_left_of(c, iid)

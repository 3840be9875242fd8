"""A missing or foreign state is an error, never an empty cloud (shared cloud-in-a-box).

With a running instance and an attached volume on the cloud: cloudctl with an empty home
refuses every command; a state started empty (`state init`) lets `reconcile --fix` report
the instance and the volume but remove nothing that holds data; a state of another cloud is
refused; a host that says it belongs to another cloud is not judged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from cloudctl.state import StateStore
from tests.integration.cloud_client import BIN, in_host

pytestmark = pytest.mark.integration
CLOUD_ID_FILE = "/var/lib/cloud/cloud-id"


def cloudctl(cloud, home, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLOUDCTL_HOME=str(home), PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.run(
        [str(BIN / "cloudctl"), "--inventory", str(cloud.inventory), *args],
        capture_output=True, text=True, env=env, timeout=600, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def busy_cloud(ops_cloud):
    """The shared cloud with an instance and a volume attached to it."""
    c = ops_cloud
    [instance] = c.json("instance", "run", "--image", c.ids["emi"], "--keypair", "ops")
    [volume] = c.json("volume", "create", "--size", "1")
    c.cloudctl("volume", "attach", volume["id"], "--instance", instance["id"])
    yield c, instance["id"], volume["id"]
    c.cloudctl("volume", "detach", volume["id"])
    c.cloudctl("volume", "delete", volume["id"])
    c.cloudctl("instance", "terminate", instance["id"])


def on_host(c, *command: str) -> str:
    proc = in_host(c.host, *command)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_empty_home_is_refused_and_an_empty_state_deletes_nothing(busy_cloud, tmp_path):
    c, iid, vid = busy_cloud
    home = tmp_path / "forgot-the-export"
    for args in (["instance", "list"], ["reconcile", "--fix"], ["volume", "delete", vid]):
        proc = cloudctl(c, home, *args)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr == (
            f"Error: no state at {home}/state.json: `cloudctl deploy` creates it; "
            "`cloudctl state init` starts an empty one for a deployed cloud whose state is lost\n"
        )
    assert not (home / "state.json").exists()

    proc = cloudctl(c, home, "state", "init")
    assert proc.returncode == 0, proc.stderr
    cloud_id = on_host(c, "cat", CLOUD_ID_FILE).strip()
    assert proc.stdout == f"state {home}/state.json now records cloud {cloud_id} (ciab)\n"

    proc = cloudctl(c, home, "reconcile", "--fix", "--delete-orphans")
    assert proc.returncode == 2 and proc.stderr == (
        "Error: --delete-orphans asks before it deletes: give --yes when no one can answer\n"
    )
    proc = cloudctl(c, home, "-o", "json", "reconcile", "--fix")
    assert proc.returncode == 1, proc.stderr
    drifts = {(d["kind"], d["resource"]): d for d in json.loads(proc.stdout)}
    for key in (("orphan-instance", iid), ("orphan-volume", vid)):
        assert not drifts[key]["fixed"]
        assert drifts[key]["fix"].endswith("(unknown to the state: only with --delete-orphans)")
    assert not [d for d in drifts.values() if d["fixed"] and d["kind"] != "orphan-allocation"]

    # The real state finds the cloud as it was: the domain, the disk, the volume, attached.
    assert iid in on_host(c, "virsh", "-c", "qemu:///system", "list", "--name")
    proc = c.cloudctl("reconcile", ok=False)
    assert proc.returncode == 0, proc.stdout
    assert c.json("volume", "show", vid)[0]["state"] == "in-use"


def test_a_state_of_another_cloud_is_refused(busy_cloud, tmp_path):
    c, iid, _ = busy_cloud
    home = tmp_path / "other"
    home.mkdir()
    shutil.copy(c.home / "cloud.yml", home / "cloud.yml")  # this cloud's configuration
    StateStore(home / "state.json").initialize("cloud-ffffffffffffffff", "other")
    cloud_id = on_host(c, "cat", CLOUD_ID_FILE).strip()
    for args in (["instance", "list"], ["instance", "terminate", iid], ["reconcile", "--fix"]):
        proc = cloudctl(c, home, *args)
        assert proc.returncode == 1 and proc.stderr == (
            f"Error: the state {home}/state.json is of cloud cloud-ffffffffffffffff, "
            f"not of this cloud {cloud_id}\n"
        ), args
    assert c.json("instance", "show", iid)[0]["state"] == "running"


def test_a_host_of_another_cloud_is_not_judged(busy_cloud):
    c = busy_cloud[0]
    real = on_host(c, "cat", CLOUD_ID_FILE)
    on_host(c, "sh", "-c", f"echo cloud-eeeeeeeeeeeeeeee > {CLOUD_ID_FILE}")
    try:
        proc = c.cloudctl("-o", "json", "reconcile", "--fix", ok=False)
    finally:
        on_host(c, "sh", "-c", f"printf %s '{real}' > {CLOUD_ID_FILE}")
    assert proc.returncode == 1
    [drift] = json.loads(proc.stdout)
    assert (drift["kind"], drift["resource"], drift["fixed"]) == ("foreign-host", c.host, False)
    assert drift["detail"] == f"belongs to cloud cloud-eeeeeeeeeeeeeeee, not {real.strip()}"
    assert c.cloudctl("reconcile", ok=False).returncode == 0

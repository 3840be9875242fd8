"""The HA cloud of inventory/ha, deployed on the HA lab (issue 12): the state in etcd on three
members, one holder of each virtual address, an instance that runs and answers on its private
address and on its elastic IP. The lab (tests/integration/ha_fixtures.py) is built once for
this module: tests of faults on it belong here too."""

from __future__ import annotations

import hashlib
import json
import subprocess

import boto3
import pytest

from cloudctl.cloudconfig import load_config
from cloudctl.walrus import IMAGES, REGION
from tests.conftest import poll
from tests.integration.ha_fixtures import HaLab, halab, qemu_pid

pytestmark = pytest.mark.integration


def etcdctl(lab: HaLab, *args: str) -> subprocess.CompletedProcess:
    """etcdctl from this machine with the client certificate cloudctl fetched (its state:)."""
    [state] = lab.json("state", "show")
    endpoints = state["path"].split(" at ", 1)[1].replace(" ", "")
    tls = lab.home / "etcd"
    return subprocess.run(
        ["etcdctl", f"--endpoints={endpoints}", f"--cacert={tls}/ca.crt",
         f"--cert={tls}/client.crt", f"--key={tls}/client.key", "-w", "json", *args],
        capture_output=True, text=True, check=False, env={"ETCDCTL_API": "3"},
    )  # fmt: skip


def test_the_state_is_in_etcd_on_three_members(ha_lab):
    [state] = ha_lab.json("state", "show")
    assert state["path"].startswith(f"etcd prefix /cloudctl/{state['cloud_id']}/ at https://")
    assert state["instances"] == 1
    members = json.loads(etcdctl(ha_lab, "member", "list").stdout)["members"]
    assert sorted(m["name"] for m in members) == ["ha-wit", "ha1", "ha2"]
    health = etcdctl(ha_lab, "endpoint", "health", "--cluster")
    assert health.returncode == 0, health.stdout + health.stderr
    assert [h["health"] for h in json.loads(health.stdout)] == [True] * 3


def test_each_virtual_address_has_one_holder(ha_lab):
    holders = ha_lab.holders()
    assert set(holders) == {"clc", "walrus", "cc-zone-a"}
    assert all(len(hosts) == 1 for hosts in holders.values()), holders


def test_the_instance_answers_on_its_private_address_and_its_elastic_ip(ha_lab):
    instance = ha_lab.ids["instance"]
    [row] = [i for i in ha_lab.json("instance", "list") if i["id"] == instance["id"]]
    assert row["state"] == "running"
    # Through the holder of the zone's gateway (the instance network lives in the lab hosts).
    holder = ha_lab.cc_holder()
    assert ha_lab.guest(holder, instance["private_ip"], "hostname").strip() == instance["id"]
    eip = ha_lab.ids["eip"]
    ha_lab.client_trusts(eip, instance["private_ip"])
    poll(lambda: ha_lab.client_ssh(eip).stdout.strip() == instance["id"],
         f"SSH from the public side to {eip}", 60, 1)  # fmt: skip


def test_the_single_cloud_turned_into_ha_kept_its_state_instance_and_objects(ha_lab):
    """The lab was a single-host cloud with the instance running before `halab.sh up` added
    ha2 and the witness (ha_fixtures.build_ha_lab): nothing of it may be lost or restarted."""
    single = ha_lab.ids["single"]
    now = {
        kind: sorted(r.get("id") or r["name"] for r in ha_lab.json(kind, "list"))
        for kind in single["records"]
    }
    assert now == single["records"]
    assert qemu_pid(ha_lab.ids["instance"]["id"]) == single["qemu_pid"]  # never restarted
    assert list(ha_lab.home.glob("state.json.migrated-*")), "the controller's state was merged"
    # The image's object, through the Walrus pair's address: the single Walrus's data moved.
    config = load_config(ha_lab.home / "cloud.yml")
    assert config.walrus.endpoint.startswith(f"http://{halab.VIPS['walrus']}:")
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=config.walrus.endpoint, region_name=REGION,
        aws_access_key_id=config.walrus.access_key, aws_secret_access_key=config.walrus.secret_key,
    )  # fmt: skip
    body = s3.get_object(Bucket=IMAGES, Key=single["image_sha256"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == single["image_sha256"]
    # ha2 joined the zone's CC pair with the instance's reservation and elastic-IP rule.
    drifts = json.loads(ha_lab.cloudctl("-o", "json", "reconcile", ok=False).stdout)
    assert [d for d in drifts if d["kind"].startswith("missing-")] == [], drifts

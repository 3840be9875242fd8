"""The HA cloud of inventory/ha, deployed on the HA lab (issue 12): the state in etcd on three
members, one holder of each virtual address, an instance that runs and answers on its private
address and on its elastic IP. The lab (tests/integration/ha_fixtures.py) is built once for
this module: tests of faults on it belong here too."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import poll
from tests.integration.ha_fixtures import HaLab

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

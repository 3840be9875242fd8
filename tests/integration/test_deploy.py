"""End to end: deploy a cloud-in-a-box onto a namespaced lab host with cloudctl.

Bad inventories fail in precheck and change nothing (on a bare lab host of their own). The
deploy from scratch is the shared cloud's (ops_cloud, the ciab inventory deployed by
`cloudctl deploy`): every component is healthy in `cloudctl service status`, the API
answers over TLS with the CA the deploy fetched, a second deploy changes nothing even after
the tests before it used the cloud, and a deploy with one component's tag runs only that
component (and common, its dependency). reset.yml is tested on the two-zone cloud
(test_network.py), which it may destroy last.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import boto3
import pytest
import yaml

from tests.conftest import PROJECT, labhost
from tests.integration.cloud_client import CloudClient, in_host

pytestmark = pytest.mark.integration
HOST = os.environ.get("E2E_CIAB_HOST", "e2e-ciab")  # two runs on one machine keep apart


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A bare lab host for the inventories that must fail in precheck."""
    labhost.destroy(HOST)
    labhost.create(HOST)
    workdir = tmp_path_factory.mktemp("ciab")
    yield workdir
    labhost.destroy(HOST)


def make_inventory(workdir: Path, name: str, edit=None) -> Path:
    """The ciab inventory pointed at the lab host, optionally edited (hosts, group_vars)."""
    inventory = labhost.write_inventory([HOST], PROJECT / "inventory" / "ciab", workdir / name)
    hosts_file = inventory / "hosts.yml"
    text = hosts_file.read_text().replace("ciab:", f"{HOST}:")
    hosts_file.write_text(text)
    if edit:
        hosts = yaml.safe_load(hosts_file.read_text())
        group_vars = yaml.safe_load((inventory / "group_vars" / "all.yml").read_text())
        edit(hosts, group_vars)
        hosts_file.write_text(yaml.safe_dump(hosts))
        (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars))
    return inventory


def drop_cluster(hosts, group_vars):
    del hosts["all"]["hosts"][HOST]["cloud_cluster"]


def bad_cidr(hosts, group_vars):
    group_vars["cloud_clusters"]["zone-a"]["subnet"] = "172.31.0.0/33"


def overlapping(hosts, group_vars):
    group_vars["cloud_clusters"]["zone-b"] = {"subnet": "172.31.0.128/25", "bridge": "cloudbr1"}


def no_walrus(hosts, group_vars):
    hosts["all"]["children"]["cloud"]["children"]["walrus"] = {"hosts": {}}


@pytest.mark.parametrize(
    "edit, words",
    [
        (drop_cluster, [HOST, "cloud_cluster"]),
        (bad_cidr, ["zone-a", "subnet", "172.31.0.0/33"]),
        (overlapping, ["zone-a", "zone-b", "subnet"]),
        (no_walrus, ["walrus"]),
    ],
    ids=["nc-without-cluster", "invalid-cidr", "overlapping-subnets", "no-walrus-host"],
)
def test_bad_inventory_fails_in_precheck_and_changes_nothing(lab, edit, words):
    inventory = make_inventory(lab, f"bad-{edit.__name__}", edit)
    c = CloudClient(lab, "bad")
    c.inventory, c.home = inventory, lab / f"home-{edit.__name__}"
    result = c.cloudctl("deploy", ok=False, timeout=600)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert error_lines, result.stdout
    message = error_lines[-1]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    # Nothing on the host changed: no cloud directory, no service manager config.
    assert in_host(HOST, "test", "-e", "/etc/cloud").returncode != 0
    assert in_host(HOST, "test", "-e", "/etc/supervisor/conf.d/cloud-tgtd.conf").returncode != 0


def test_deploy_brings_up_every_component(ops_cloud):
    status = ops_cloud.cloudctl("-o", "json", "service", "status", timeout=300)
    rows = json.loads(status.stdout)
    components = {row["component"]: row for row in rows}
    assert set(components) == {"clc", "api", "walrus", "cc", "sc", "nc"}
    for row in rows:
        assert row["status"] == "healthy", row


def clc_cloudctl(host: str, arguments: str) -> str:
    """The output of the CLC's own cloudctl (in the lab host, as its operator's login)."""
    env = ("env", "-i", "HOME=/root", "PATH=/usr/bin:/bin")
    done = in_host(host, *env, "bash", "-lc", f"cloudctl {arguments}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_api_over_tls_verified_with_the_fetched_ca(ops_cloud):
    """DescribeRegions through boto3 from the controller, TLS verified with the CA the deploy
    fetched beside cloud.yml. The API serves the CLC's own state (/var/lib/cloud/clc/state),
    not the state of the cloudctl that deployed from here: the key is made by the CLC's
    cloudctl, inside the lab host."""
    home = ops_cloud.home
    api = yaml.safe_load((home / "cloud.yml").read_text())["api"]
    address = labhost.load_info(ops_cloud.host)["address"]
    assert api == {"endpoint": f"https://{address}:8773/", "region": "eucalyptus",
                   "ca_file": str(home / "ca.crt")}  # fmt: skip
    [key] = json.loads(clc_cloudctl(ops_cloud.host, "-o json user key create admin/admin"))
    ec2 = boto3.client("ec2", endpoint_url=api["endpoint"], region_name=api["region"],
                       verify=api["ca_file"], aws_access_key_id=key["access_key_id"],
                       aws_secret_access_key=key["secret_access_key"])  # fmt: skip
    [region] = ec2.describe_regions()["Regions"]
    assert region["RegionName"] == "eucalyptus" and region["Endpoint"] == api["endpoint"]
    clc_cloudctl(ops_cloud.host, f"user key delete {key['access_key_id']}")


def test_second_deploy_changes_nothing(ops_cloud):
    result = ops_cloud.cloudctl("-o", "json", "deploy")
    summary = json.loads(result.stdout)
    assert summary, result.stdout
    for host in summary:
        assert host["changed"] == 0, host
        assert host["failed"] == 0 and host["unreachable"] == 0, host


def newest_deploy_events(home: Path) -> list[dict]:
    """The per-host task results of the newest deploy cloudctl ran from this home."""
    runs = home / "runs"
    [*_, run] = sorted(p for p in runs.iterdir() if re.fullmatch(r"\w+-deploy-[0-9a-f]+", p.name))
    events = [json.loads(p.read_text()) for p in run.glob("artifacts/*/job_events/*.json")]
    return [e["event_data"] for e in events if e["event"].startswith("runner_on_")]


def test_deploy_by_tag_runs_only_that_component(ops_cloud):
    result = ops_cloud.cloudctl("-o", "json", "deploy", "--tags", "nc")
    [host] = json.loads(result.stdout)
    assert (host["changed"], host["failed"]) == (0, 0), host
    # The argument validations are tagged always by Ansible: they run in every play.
    ran = [e for e in newest_deploy_events(ops_cloud.home)
           if e["task_action"] != "ansible.builtin.validate_argument_spec"]  # fmt: skip
    plays = {e["play"] for e in ran}
    assert plays == {"Precheck the cloud description", "Deploy the Node Controllers"}, plays
    roles = {e.get("role") for e in ran if e["play"] == "Deploy the Node Controllers"}
    assert roles == {"common", "nc"}, roles
    assert {"Run virtlogd", "Run libvirtd"} <= {e["task"] for e in ran}

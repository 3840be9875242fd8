"""End to end: deploy a cloud-in-a-box onto a namespaced lab host with cloudctl.

In order: bad inventories fail in precheck and change nothing; the deploy brings up all five
components and `cloudctl service status` sees them healthy; a second deploy changes nothing;
a deploy with one component's tag runs only that component (and common, its dependency);
reset.yml leaves no bridge, daemon or config behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from tests.conftest import PROJECT, labhost

pytestmark = pytest.mark.integration
HOST = os.environ.get("E2E_CIAB_HOST", "e2e-ciab")  # two runs on one machine keep apart


def cloudctl(inventory: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLOUDCTL_HOME=str(inventory.parent / "cloudctl-home"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run(
        [str(Path(sys.executable).parent / "cloudctl"), "--inventory", str(inventory), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def in_host(*command: str) -> subprocess.CompletedProcess:
    info = labhost.load_info(HOST)
    return subprocess.run(
        ["nsenter", "-t", str(info["sshd_pid"]), "-m", "-u", "-n", "--", *command],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
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
    result = cloudctl(inventory, "deploy", timeout=600)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert error_lines, result.stdout
    message = error_lines[-1]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "Traceback" not in result.stderr
    # Nothing on the host changed: no cloud directory, no service manager config.
    assert in_host("test", "-e", "/etc/cloud").returncode != 0
    assert in_host("test", "-e", "/etc/supervisor/conf.d/cloud-tgtd.conf").returncode != 0


def test_deploy_brings_up_every_component(lab):
    inventory = make_inventory(lab, "good")
    result = cloudctl(inventory, "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    status = cloudctl(inventory, "-o", "json", "service", "status", timeout=300)
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    components = {row["component"]: row for row in rows}
    assert set(components) == {"clc", "api", "walrus", "cc", "sc", "nc"}
    for row in rows:
        assert row["status"] == "healthy", row


def test_api_over_tls_verified_with_the_fetched_ca(lab):
    """DescribeRegions through boto3 from the controller, TLS verified with the CA the deploy
    fetched beside cloud.yml. The API serves the CLC's own state (/var/lib/cloud/clc/state),
    not the state of the cloudctl that deployed from here: the key is made by the CLC's
    cloudctl, inside the lab host."""
    home = lab / "cloudctl-home"
    api = yaml.safe_load((home / "cloud.yml").read_text())["api"]
    address = labhost.load_info(HOST)["address"]
    assert api == {"endpoint": f"https://{address}:8773/", "region": "eucalyptus",
                   "ca_file": str(home / "ca.crt")}  # fmt: skip
    made = in_host("env", "-i", "HOME=/root", "PATH=/usr/bin:/bin", "bash", "-lc",
                   "cloudctl -o json user key create admin/admin")  # fmt: skip
    assert made.returncode == 0, made.stderr
    [key] = json.loads(made.stdout)
    ec2 = boto3.client("ec2", endpoint_url=api["endpoint"], region_name=api["region"],
                       verify=api["ca_file"], aws_access_key_id=key["access_key_id"],
                       aws_secret_access_key=key["secret_access_key"])  # fmt: skip
    [region] = ec2.describe_regions()["Regions"]
    assert region["RegionName"] == "eucalyptus" and region["Endpoint"] == api["endpoint"]


def test_second_deploy_changes_nothing(lab):
    inventory = lab / "good"
    result = cloudctl(inventory, "-o", "json", "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary, result.stdout
    for host in summary:
        assert host["changed"] == 0, host
        assert host["failed"] == 0 and host["unreachable"] == 0, host


def newest_deploy_events(inventory: Path) -> list[dict]:
    """The per-host task results of the newest deploy cloudctl ran on this inventory."""
    runs = inventory.parent / "cloudctl-home" / "runs"
    [*_, run] = sorted(p for p in runs.iterdir() if re.fullmatch(r"\w+-deploy-[0-9a-f]+", p.name))
    events = [json.loads(p.read_text()) for p in run.glob("artifacts/*/job_events/*.json")]
    return [e["event_data"] for e in events if e["event"].startswith("runner_on_")]


def test_deploy_by_tag_runs_only_that_component(lab):
    inventory = lab / "good"
    result = cloudctl(inventory, "-o", "json", "deploy", "--tags", "nc")
    assert result.returncode == 0, result.stdout + result.stderr
    [host] = json.loads(result.stdout)
    assert (host["changed"], host["failed"]) == (0, 0), host
    # The argument validations are tagged always by Ansible: they run in every play.
    ran = [e for e in newest_deploy_events(inventory)
           if e["task_action"] != "ansible.builtin.validate_argument_spec"]  # fmt: skip
    plays = {e["play"] for e in ran}
    assert plays == {"Precheck the cloud description", "Deploy the Node Controllers"}, plays
    roles = {e.get("role") for e in ran if e["play"] == "Deploy the Node Controllers"}
    assert roles == {"common", "nc"}, roles
    assert {"Run virtlogd", "Run libvirtd"} <= {e["task"] for e in ran}


def test_reset_leaves_nothing_behind(lab):
    inventory = lab / "good"
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            "cloudctl.cloud.reset",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    links = json.loads(in_host("ip", "-j", "link", "show", "type", "bridge").stdout or "[]")
    assert links == [], links
    # The lab host shares the machine's PID namespace: look only at its network namespace.
    processes = [
        Path(f"/proc/{pid}/comm").read_text().strip()
        for pid in labhost.netns_pids(labhost.netns_of(HOST))
    ]
    for daemon in ("libvirtd", "virtlogd", "tgtd", "dnsmasq", "weed", "supervisord"):
        assert daemon not in processes, processes
    for path in ("/etc/cloud", "/etc/supervisor/conf.d/cloud-tgtd.conf", "/opt/cloud"):
        assert in_host("test", "-e", path).returncode != 0, path
    leftovers = in_host("sh", "-c", "ls /etc/supervisor/conf.d /etc/systemd/system | grep cloud-")
    assert leftovers.stdout.strip() == "", leftovers.stdout

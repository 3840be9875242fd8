"""The roles and playbooks as Ansible users drive them, with no host: a component tag selects
that component only, the precheck stops an inventory without the group cloud, ansible-doc
renders every role's argument spec, and a wrong-typed role variable fails at argument
validation before any host is contacted. About 20 s.

The hosts of the bad inventories sit at 127.0.0.1 port 1 (connections refused at once): a
test that reached a host would show it UNREACHABLE.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT

BIN = Path(sys.executable).parent
COLLECTION = PROJECT / "collections/ansible_collections/cloudctl/cloud"
COMPONENTS = ["walrus", "sc", "cc", "nc", "clc"]
ROLES = ["common", *COMPONENTS]
VALIDATION = "Validating arguments against arg spec"
NOWHERE = {"ansible_host": "127.0.0.1", "ansible_port": 1}
ZONES = {"zone-a": {"subnet": "172.31.0.0/24", "bridge": "cloudbr0", "public_interface": ""}}


def ansible(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(BIN / tool), *args], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def listed_tasks(playbook: str, *args: str) -> dict[str, list[str]]:
    """`ansible-playbook --list-tasks` on the ciab inventory: play hosts -> the tasks it runs."""
    proc = ansible("ansible-playbook", "-i", "inventory/ciab", playbook, "--list-tasks", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plays: dict[str, list[str]] = {}
    tasks: list[str] = []
    for line in proc.stdout.splitlines():
        if play := re.match(r"  play #\d+ \((.*?)\): ", line):
            tasks = plays.setdefault(play[1], [])
        elif line.startswith("      "):
            tasks.append(line.strip().split("\t")[0])
    return plays


def work(tasks: list[str]) -> list[str]:
    """The tasks beyond the argument validations (Ansible tags those `always`)."""
    return [t for t in tasks if VALIDATION not in t]


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_component_tag_runs_the_precheck_and_that_component(component):
    plays = listed_tasks("cloudctl.cloud.site", "--tags", component)
    precheck = plays.pop("cloud:clc:walrus:cc:sc:nc")
    assert "Check every component host is in the group cloud" in precheck
    assert {hosts for hosts, tasks in plays.items() if work(tasks)} == {component}
    assert work(plays[component]) == [
        "cloudctl.cloud.common : Prepare the cloud host",  # its dependency, once per run
        next(t for t in plays[component] if t.startswith(f"cloudctl.cloud.{component} : Run ")),
    ]


def test_the_common_tag_runs_only_common():
    plays = listed_tasks("cloudctl.cloud.site", "--tags", "common")
    plays.pop("cloud:clc:walrus:cc:sc:nc")
    assert work(plays["cloud"]) == ["cloudctl.cloud.common : Prepare the cloud host"]
    for tasks in plays.values():
        assert all(t.startswith("cloudctl.cloud.common : ") for t in work(tasks)), tasks


def test_the_precheck_tag_runs_only_the_precheck():
    plays = listed_tasks("cloudctl.cloud.site", "--tags", "precheck")
    assert work(plays.pop("cloud:clc:walrus:cc:sc:nc"))
    # common, the five components; etcd and keepalived (HA) match no host of the ciab
    # inventory (their plays are both listed as clc:!clc)
    assert set(plays) == {"cloud", "walrus", "sc", "cc", "nc", "clc", "clc:!clc"}
    assert not any(work(tasks) for tasks in plays.values())


def test_a_reset_by_component_tag():
    plays = listed_tasks("cloudctl.cloud.reset", "--tags", "nc")
    assert {hosts for hosts, tasks in plays.items() if work(tasks)} == {"nc"}


def run_site(
    tmp_path: Path, inventory: dict, *args: str
) -> tuple[subprocess.CompletedProcess, str]:
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    proc = ansible("ansible-playbook", "-i", str(path), "cloudctl.cloud.site", *args)
    return proc, proc.stdout + proc.stderr


def components(hosts: dict[str, list[str]]) -> dict:
    """Component groups from host -> its components."""
    return {g: {"hosts": {h: None for h, of in hosts.items() if g in of}} for g in COMPONENTS}


def test_an_inventory_without_the_group_cloud_stops_at_the_precheck(tmp_path):
    inventory = {"all": {
        "vars": {**NOWHERE, "cloud_clusters": ZONES},
        "hosts": {"box": {"cloud_cluster": "zone-a"}},
        "children": components({"box": COMPONENTS}),
    }}  # fmt: skip
    proc, output = run_site(tmp_path, inventory)
    assert proc.returncode != 0
    assert "msg: 'the inventory has no group cloud: the plays run on it; make clc, walrus" in output
    assert "UNREACHABLE" not in output and "ok=0" in output


def test_a_component_host_outside_the_group_cloud_stops_at_the_precheck(tmp_path):
    groups = components({"box": ["clc", "walrus", "cc", "sc"], "node1": ["nc"]})
    inventory = {"all": {
        "vars": {**NOWHERE, "cloud_clusters": ZONES},
        "hosts": {"box": {"cloud_cluster": "zone-a"}, "node1": {"cloud_cluster": "zone-a"}},
        # nc is not a child of cloud: node1 is left out
        "children": {"cloud": {"children": {g: v for g, v in groups.items() if g != "nc"}},
                     "nc": groups["nc"]},
    }}  # fmt: skip
    proc, output = run_site(tmp_path, inventory)
    assert proc.returncode != 0
    assert "msg: 'hosts not in group cloud: node1 (in nc); the plays run on cloud" in output
    assert "UNREACHABLE" not in output


def test_a_wrong_typed_role_variable_fails_at_argument_validation(tmp_path):
    groups = components({"box": ["clc", "walrus", "cc", "sc"], "node1": ["nc"]})
    inventory = {"all": {
        "vars": {**NOWHERE, "cloud_clusters": ZONES},
        "hosts": {"box": {"cloud_cluster": "zone-a"},
                  "node1": {"cloud_cluster": "zone-a", "nc_max_cores": "many"}},
        "children": {"cloud": {"children": groups}},
    }}  # fmt: skip
    proc, output = run_site(tmp_path, inventory, "--limit", "node1")
    assert proc.returncode != 0
    failed_task = output[output.rindex("TASK [", 0, output.index("fatal: [node1]")) :]
    assert failed_task.startswith("TASK [cloudctl.cloud.nc : Validating arguments"), output
    assert "argument 'nc_max_cores' is of type str and we were unable to convert to int" in output
    assert "UNREACHABLE" not in output  # the precheck play's first tasks on the host never ran


@pytest.fixture(scope="module")
def role_docs() -> dict:
    """Every role's argument specs, as ansible-doc reads them."""
    proc = ansible("ansible-doc", "-t", "role", "--json", *(f"cloudctl.cloud.{r}" for r in ROLES))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_ansible_doc_renders_every_role():
    for role in ROLES:
        proc = ansible("ansible-doc", "-t", "role", f"cloudctl.cloud.{role}")
        assert proc.returncode == 0, proc.stderr
        assert re.search(r"ENTRY POINT: \W*main\W* - ", proc.stdout), proc.stdout
        assert re.search(r"ENTRY POINT: \W*precheck\W* - ", proc.stdout), proc.stdout


@pytest.mark.parametrize("role", ROLES)
def test_every_role_variable_is_documented_with_a_type(role, role_docs):
    entry_points = role_docs[f"cloudctl.cloud.{role}"]["entry_points"]
    options = entry_points["main"]["options"]
    defaults = yaml.safe_load((COLLECTION / "roles" / role / "defaults/main.yml").read_text())
    assert set(defaults) - set(options) == set()
    for name, spec in options.items():
        assert spec.get("type") and spec.get("description"), name
        if "default" in spec and name in defaults:  # the docs follow defaults/main.yml
            assert spec["default"] == defaults[name], name
    assert entry_points["precheck"]["options"] == options


def test_every_tasks_from_the_collection_uses_has_an_entry_point(role_docs):
    used = set()
    for path in COLLECTION.glob("**/*.yml"):
        text = path.read_text()
        for role, entry in re.findall(r"name: (cloudctl\.cloud\.\w+)\n\s+tasks_from: (\w+)", text):
            used.add((role, entry))
    assert ("cloudctl.cloud.common", "pip_wheels") in used
    for role, entry in sorted(used):
        assert entry in role_docs[role]["entry_points"], f"{role} has no argument spec for {entry}"

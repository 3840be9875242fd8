"""The inventory plugin cloudctl.cloud.instances, run by ansible-inventory (as a user runs it)
on a real state file made with the state API: groups, host variables (the jump through the
zone's CC), the constructed options, states and host names, and the errors (a missing or
foreign state, no cloudctl package)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloudctl import addresses, groups, hostkeys, images, instances
from cloudctl.ids import new_id
from cloudctl.state import StateStore
from tests.unit.helpers import init_state

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CANARY = "{{ lookup('pipe', 'touch /tmp/inventory-canary-evaluated') }}"
OWNER = {"account": "admin", "user": "admin"}
KEY_FILE = "/keys/cloud key"  # a space: the ProxyCommand must quote it


class Cloud:
    """A named cloud (clouds file) with an inventory (CC `cc1` over SSH for zone-a, `box`
    local for zone-b), a state, and ansible-inventory run on an instances.yml."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.inventory = tmp_path / "inventory"
        (self.inventory / "group_vars").mkdir(parents=True)
        hosts = {
            "cc1": {"ansible_host": "192.0.2.10", "ansible_port": 2222, "ansible_user": "root",
                    "ansible_ssh_private_key_file": KEY_FILE},
            "box": {"ansible_connection": "local"},
        }  # fmt: skip
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
        (self.inventory / "group_vars" / "all.yml").write_text(
            yaml.safe_dump({"ansible_ssh_common_args": hostkeys.SSH_ARGS})
        )
        self.home = tmp_path / "home"
        self.state = init_state(self.home / "state.json")
        self.clouds = tmp_path / "clouds.yaml"
        self.clouds.write_text(yaml.safe_dump({"default": "test", "clouds": {
            "test": {"inventory": str(self.inventory), "home": str(self.home)}}}))  # fmt: skip
        self.ids = self._records()

    def _records(self) -> dict[str, str]:
        ids = {name: new_id("instance") for name in ("web", "db", "old")}
        emi, web_group = new_id("image"), new_id("group")
        with StateStore(self.state).transaction() as tx:
            tx.table(images.TABLE).insert({"id": emi, "name": "tiny", "kind": "machine", **OWNER})
            tx.table(groups.TABLE).insert({"id": "sg-00000001", "name": "default", **OWNER})
            tx.table(groups.TABLE).insert({"id": web_group, "name": "web servers", **OWNER})
            for index, (name, zone, node, cc, state) in enumerate((
                ("web", "zone-a", "nc1", "cc1", "running"),
                ("db", "zone-b", "box", "box", "running"),
                ("old", "zone-a", "nc1", "cc1", "stopped"),
            )):  # fmt: skip
                tx.table(instances.TABLE).insert({
                    "id": ids[name], **OWNER, "reservation": "r-0000000a", "launch_index": index,
                    "image_id": emi, "kernel_id": None, "ramdisk_id": None, "type": "m1.small",
                    "zone": zone, "node": node, "cc": cc, "private_ip": f"172.31.0.{index + 2}",
                    "mac": f"d0:0d:00:00:00:0{index}", "keypair": "k1" if name == "web" else None,
                    "groups": ["sg-00000001", web_group] if name == "web" else ["sg-00000001"],
                    "state": state, "reason": "",
                    **({"tags": {"Name": "web1", "role": CANARY}} if name == "web" else {}),
                })  # fmt: skip
            tx.table(addresses.TABLE).insert({
                "id": new_id("address"), **OWNER, "public_ip": "198.51.100.5", "zone": "zone-a",
                "cc": "cc1", "public_interface": "pub0", "instance": ids["web"],
                "private_ip": "172.31.0.2"})  # fmt: skip
        ids["emi"] = emi
        return ids

    def inventory_run(
        self, config: dict, env: dict | None = None, *args: str
    ) -> subprocess.CompletedProcess:
        """ansible-inventory --list on an instances.yml holding `config` (+ the plugin)."""
        source = self.dir / "test.instances.yml"
        source.write_text(yaml.safe_dump({"plugin": "cloudctl.cloud.instances", **config}))
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDCTL_", "ANSIBLE_"))}
        return subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", str(source), "--list", *args],
            capture_output=True, text=True, check=False, cwd=self.dir,
            env={**clean, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
                 "CLOUDCTL_CLOUDS": str(self.clouds), **(env or {})},
        )  # fmt: skip

    def listing(self, config: dict) -> dict:
        """The --list output, with the values Ansible marks as data (never templated:
        {"__ansible_unsafe": value}) unwrapped, and that marking checked for every string."""
        proc = self.inventory_run(config)
        assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr
        hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
        for host, variables in hostvars.items():
            for name, value in variables.items():
                assert not isinstance(value, str), f"{host} {name}: {value!r} may be templated"
        return json.loads(proc.stdout, object_hook=unwrap)


def unwrap(value: dict):
    return value["__ansible_unsafe"] if value.keys() == {"__ansible_unsafe"} else value


@pytest.fixture
def cloud(tmp_path) -> Cloud:
    return Cloud(tmp_path)


def members(data: dict, group: str) -> set[str]:
    return set(data.get(group, {}).get("hosts", []))


def test_groups_hostvars_and_the_jump_through_the_cc(cloud):
    guest_keys = cloud.dir / "guest_known_hosts"
    data = cloud.listing({
        "known_hosts_file": str(guest_keys),
        "keyed_groups": [{"key": "instance_tags.Name | default('')", "prefix": "name"}],
        "groups": {"zone_a_only": "zone == 'zone-a'"},
        "compose": {"ansible_user": "'root'", "role": "instance_tags.role | default('none')"},
    })  # fmt: skip
    web, db, emi = cloud.ids["web"], cloud.ids["db"], cloud.ids["emi"]
    assert members(data, "instances") == {web, db}  # running only: not the stopped one
    expected = {
        "zone_zone_a": {web}, "zone_zone_b": {db}, "node_nc1": {web}, "node_box": {db},
        f"image_{emi.replace('-', '_')}": {web, db}, "instance_type_m1_small": {web, db},
        "instance_state_running": {web, db}, "keypair_k1": {web},
        "security_group_default": {web, db}, "security_group_web_servers": {web},
        "tag_Name_web1": {web}, "name_web1": {web}, "zone_a_only": {web},
    }  # fmt: skip
    assert {group: members(data, group) for group in expected} == expected

    hostvars = data["_meta"]["hostvars"]
    web_vars = hostvars[web]
    assert {k: web_vars[k] for k in ("instance_id", "instance_state", "zone", "node", "cc",
            "image_id", "image_name", "instance_type", "key_name", "security_groups",
            "private_ip", "public_ip", "ansible_host", "ansible_user")} == {
        "instance_id": web, "instance_state": "running", "zone": "zone-a", "node": "nc1",
        "cc": "cc1", "image_id": emi, "image_name": "tiny", "instance_type": "m1.small",
        "key_name": "k1", "security_groups": ["default", "web servers"],
        "private_ip": "172.31.0.2", "public_ip": "198.51.100.5", "ansible_host": "172.31.0.2",
        "ansible_user": "root"}  # fmt: skip
    assert web_vars["role"] == CANARY and not Path("/tmp/inventory-canary-evaluated").exists()
    assert hostvars[db]["public_ip"] == "" and hostvars[db]["key_name"] == ""

    # zone-a's CC is reached over SSH: a ProxyCommand through it, both host keys checked.
    guest_args = ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={guest_keys}"]
    args = shlex.split(web_vars["ansible_ssh_common_args"])
    assert args[:2] == ["-o", args[1]] and args[2:] == guest_args
    option, _, proxy = args[1].partition("=")
    assert option == "ProxyCommand"
    assert shlex.split(proxy) == [
        "ssh", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={cloud.inventory / 'known_hosts'}",
        "-i", KEY_FILE, "-l", "root", "-p", "2222", "-W", "%h:%p", "192.0.2.10"]  # fmt: skip
    # zone-b's CC is this machine (connection local): no jump.
    assert shlex.split(hostvars[db]["ansible_ssh_common_args"]) == guest_args


def test_states_and_hostnames(cloud):
    data = cloud.listing({
        "cloud": "test",
        "instance_states": ["running", "stopped"],
        "hostnames": ["tag:Name", "ip-address", "private-ip-address"],
    })  # fmt: skip
    assert members(data, "instances") == {"web1", "172.31.0.3", "172.31.0.4"}
    assert members(data, "instance_state_stopped") == {"172.31.0.4"}
    assert data["_meta"]["hostvars"]["172.31.0.4"]["instance_id"] == cloud.ids["old"]
    # No guest known_hosts given: ssh's own, still checked.
    assert data["_meta"]["hostvars"]["172.31.0.3"]["ansible_ssh_common_args"] == (
        "-o StrictHostKeyChecking=yes"
    )


@pytest.mark.parametrize("case", ["missing", "foreign"])
def test_a_missing_or_foreign_state_is_an_error(cloud, case):
    if case == "missing":
        cloud.state.unlink()
        reason = f"no state at {cloud.state}"
    else:
        (cloud.home / "cloud.yml").write_text(yaml.safe_dump({
            "cloud_id": "cloud-fedcba9876543210", "clusters": {},
            "walrus": {"endpoint": "http://127.0.0.1:1", "access_key": "a", "secret_key": "s"},
        }))  # fmt: skip
        reason = "is of cloud cloud-0123456789abcdef, not of this cloud cloud-fedcba9876543210"
    proc = cloud.inventory_run({}, env={"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true"})
    assert proc.returncode != 0 and reason in proc.stderr, proc.stderr
    assert "instances" not in proc.stdout


def test_without_cloudctl_the_plugin_says_so(cloud, tmp_path):
    # A cloudctl package that cannot be imported, first on the path.
    (tmp_path / "fake" / "cloudctl").mkdir(parents=True)
    (tmp_path / "fake" / "cloudctl" / "__init__.py").write_text("raise ImportError('hidden')\n")
    proc = cloud.inventory_run(
        {},
        env={"PYTHONPATH": str(tmp_path / "fake"), "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"},
    )
    assert proc.returncode != 0, proc.stdout
    assert "needs the cloudctl Python package in the Python that runs Ansible" in proc.stderr


def test_cache_serves_until_flushed(cloud):
    config = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile",
              "cache_connection": str(cloud.dir / "cache")}  # fmt: skip
    assert members(cloud.listing(config), "instances") == {cloud.ids["web"], cloud.ids["db"]}
    cloud.state.unlink()
    assert members(cloud.listing(config), "instances") == {cloud.ids["web"], cloud.ids["db"]}
    failed = {"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true"}
    proc = cloud.inventory_run(config, failed, "--flush-cache")  # the state is read again
    assert proc.returncode != 0 and "no state at" in proc.stderr, proc.stderr


def test_documentation_renders():
    done = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "inventory", "cloudctl.cloud.instances"],
        capture_output=True, text=True, check=False, cwd=PROJECT,
        env={**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
    for text in ("> INVENTORY cloudctl.cloud.instances (", "known_hosts_file", "instance_states",
                 "keyed_groups", "EXAMPLES:", "plugin: cloudctl.cloud.instances"):  # fmt: skip
        assert text in done.stdout, text

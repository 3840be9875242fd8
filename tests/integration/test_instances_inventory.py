"""End to end: a play through the inventory plugin cloudctl.cloud.instances reaches a real guest
of the shared cloud-in-a-box (ops_cloud) over SSH, through the zone's CC as the jump host,
with both host keys checked: the CC's from the cloud's known_hosts, the guest's from the keys
it printed on its console."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import yaml

from tests.conftest import PROJECT
from tests.integration.cloud_client import BIN

pytestmark = pytest.mark.integration

PLAY = """
- name: Read the guest's host name over SSH (the test image has no Python)
  hosts: instances
  gather_facts: false
  tasks:
    - name: Read the host name
      ansible.builtin.raw: cat /proc/sys/kernel/hostname
      register: guest_hostname
      changed_when: false
    - name: The guest is the instance the inventory named
      ansible.builtin.assert:
        that: guest_hostname.stdout | trim == instance_id
    - name: Show it
      ansible.builtin.debug:
        msg: "{{ inventory_hostname }} ({{ ansible_host }}, {{ zone }}) is {{ guest_hostname.stdout
          | trim }}"
"""


def test_a_play_through_the_inventory_reaches_the_guest(ops_cloud, tmp_path):
    c = ops_cloud
    started = time.monotonic()
    [instance] = c.json("instance", "run", "--image", c.ids["emi"], "--keypair", "ops")
    iid, ip = instance["id"], instance["private_ip"]
    try:
        c.guest(c.host, ip, "true")  # booted, its host keys read from its console
        known_hosts = tmp_path / "guest_known_hosts"
        clouds = tmp_path / "clouds.yaml"
        clouds.write_text(yaml.safe_dump({"clouds": {
            "ops": {"inventory": str(c.inventory), "home": str(c.home)}}}))  # fmt: skip
        source = tmp_path / "ops.instances.yml"
        source.write_text(yaml.safe_dump({
            "plugin": "cloudctl.cloud.instances", "cloud": "ops", "clouds_file": str(clouds),
            "known_hosts_file": str(known_hosts), "compose": {"ansible_user": "'root'"},
        }))  # fmt: skip
        (tmp_path / "play.yml").write_text(PLAY)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDCTL_", "ANSIBLE_"))}
        env.update(ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true")  # fmt: skip

        def ansible(tool: str, *args: str, ok: bool = True) -> str:
            proc = subprocess.run([str(BIN / tool), "-i", str(source), *args], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, check=False)  # fmt: skip
            assert (proc.returncode == 0) == ok, (
                f"{tool} {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
            )
            print(f"$ {tool} -i {source.name} {' '.join(args)}\n{proc.stdout}")  # for the docs
            return proc.stdout

        graph = ansible("ansible-inventory", "--graph")
        assert f"@instances:\n  |  |--{iid}" in graph and f"@zone_zone_a:\n  |  |--{iid}" in graph
        play = ["--private-key", str(c.key), "--limit", iid, "play.yml"]
        known_hosts.write_text("")  # the guest's key unknown: refused
        out = ansible("ansible-playbook", *play, ok=False)
        assert "Host key verification failed" in out and recap(out, iid) == (0, 1, 0)
        known_hosts.write_text("".join(f"{ip} {k.type} {k.blob}\n" for k in c.host_keys[ip]))
        out = ansible("ansible-playbook", *play)
        assert f"msg: {iid} ({ip}, zone-a) is {iid}" in out
        assert recap(out, iid) == (3, 0, 0)
        print(f"instance run to play done: {time.monotonic() - started:.1f}s")
    finally:
        c.cloudctl("instance", "terminate", iid)
        c.host_keys.pop(ip, None)  # the address goes to the next instance


def recap(out: str, host: str) -> tuple[int, int, int]:
    """(ok, unreachable, failed) of a host in a play's recap."""
    found = re.search(
        rf"^{host}\s+: ok=(\d+) .*unreachable=(\d+)\s+failed=(\d+)", out, re.MULTILINE
    )
    assert found, out
    return int(found[1]), int(found[2]), int(found[3])

#!/usr/bin/env python3
"""The bench's second cloud: one zone with two Node Controllers on two lab hosts.

    .venv/bin/python bench/two_nc.py up      create the lab hosts and the wire, deploy
    .venv/bin/python bench/two_nc.py down    reset and remove them

Host NAMEa runs every component (CLC, Walrus, the zone's CC and SC, an NC); host NAMEb is the
second NC. The wire NAMEw links their eth1: NAMEa's CC enslaves it to the zone's bridge, NAMEb's
NC too (inventory/multihost's layout). NAME is $BENCH_TWO_NC, default `<demo host>2`; the cloud
and its files (.lab/NAME) carry the same name. Each NC offers 12 vCPUs to the tiny, mostly
idle test guests: `--count 16` must use both, 20 launches at once fit.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import yaml
from common import BIN, HOST, PROJECT, env, lab_info

NAME = os.environ.get("BENCH_TWO_NC", f"{HOST}2")
HOSTS = (f"{NAME}a", f"{NAME}b")
WIRE = f"{NAME}w"
LAB = PROJECT / ".lab" / NAME
NC_CORES = 12


def labhost():
    spec = importlib.util.spec_from_file_location("labhost", PROJECT / "molecule/labhost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inventory() -> tuple[dict, dict]:
    """(hosts.yml, group_vars/all.yml) of the two-NC cloud."""
    a, b = HOSTS
    hosts = {"all": {
        "hosts": {a: {"cloud_cluster": "zone-a"},
                  b: {"cloud_cluster": "zone-a", "nc_bridge_interface": "eth1"}},
        "children": {"cloud": {"children": {
            "clc": {"hosts": {a: None}}, "walrus": {"hosts": {a: None}},
            "cc": {"hosts": {a: None}, "vars": {"cc_bridge_interfaces": {"zone-a": "eth1"}}},
            "sc": {"hosts": {a: None}}, "nc": {"hosts": {a: None, b: None}},
        }}},
    }}  # fmt: skip
    group_vars = {
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": "-o UserKnownHostsFile={{ inventory_dir }}/known_hosts",
        "cloud_name": NAME,
        "cloud_service_manager": "auto",
        "nc_max_cores": NC_CORES,
        "cloud_clusters": {
            "zone-a": {"subnet": "172.31.8.0/24", "bridge": "cloudbr0", "public_interface": ""}
        },
    }
    return hosts, group_vars


def alive() -> bool:
    infos = [lab_info(h) for h in HOSTS]
    return (
        all(i and os.path.exists(f"/proc/{i['sshd_pid']}") for i in infos)
        and (LAB / "cloudctl" / "cloud.yml").is_file()
    )


def up() -> bool:
    """Reuse the two-NC cloud or make it; True when deployed now."""
    if alive():
        return False
    print(f"bench: deploying the two-NC cloud {NAME} ({', '.join(HOSTS)})", file=sys.stderr)
    lab = labhost()
    down(quiet=True)
    for host in HOSTS:
        lab.create(host)
    lab.wire(WIRE, list(HOSTS))
    src = LAB / "inventory-src"
    (src / "group_vars").mkdir(parents=True, exist_ok=True)
    hosts, group_vars = inventory()
    (src / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    (src / "group_vars" / "all.yml").write_text(yaml.safe_dump(group_vars, sort_keys=False))
    lab.write_inventory(list(HOSTS), src, LAB / "inventory")
    subprocess.run([str(BIN / "cloudctl"), "deploy"], env=env(lab=LAB), check=True)
    return True


def down(quiet: bool = False) -> None:
    """Reset the cloud (best effort) and remove its lab hosts, wire and files."""
    if (LAB / "inventory").is_dir() and all(lab_info(h) for h in HOSTS):
        subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(LAB / "inventory"), "cloudctl.cloud.reset"],
            env=dict(env(lab=LAB), ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg")),
            stdout=subprocess.DEVNULL if quiet else None, check=False,
        )  # fmt: skip
    lab = labhost()
    for name in (*HOSTS, WIRE):
        lab.destroy(name)
    subprocess.run(["rm", "-rf", str(LAB)], check=True)


def main() -> int:
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action == "up":
        up()
    elif action == "down":
        down()
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

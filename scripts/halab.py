#!/usr/bin/env python3
"""The HA lab on one machine (issue 12): inventory/ha deployed onto namespaced lab hosts.

    halab.py up [--no-deploy]   build the lab (again: what exists is kept) and deploy it
    halab.py up --single        the same with ha1 alone in clc, walrus and cc (no pairs): a
                                single-host cloud that a later `up` turns into HA
    halab.py status             the lab's parts, who holds each virtual address, the gateway
    halab.py cut HOST           make the lab gateway unreachable from HOST only (its
                                arbitrator then fails); `halab.py mend HOST` undoes it
    halab.py down               remove the lab: hosts, wire, gateway, work dir, cloud entry

Lab hosts (molecule/labhost.py, each its own network, /run, /etc, /var/lib... and sshd) stand
in for inventory/ha's servers: ha1 and ha2 for cloud1 and cloud2 (clc + walrus + cc of
zone-a), ha-wit for witness1, ha-node for node1 (sc + nc). The wire ha-wire links the eth1 of
ha1, ha2 and ha-node (the zone's instance network); ha-gw is the lab gateway, a bare address
on the lab switch that the arbitrators probe; the wire ha-pub links pub0 of ha1, ha2 and ha-gw
(zone-a's public side: elastic IPs 198.51.100.16/28, the client at 198.51.100.1 in ha-gw).
The inventory is written to .lab/ha/inventory
(with the hosts' keys in known_hosts) and deployed with cloudctl as the named cloud halab.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
WORK = PROJECT / ".lab" / "ha"
INVENTORY = WORK / "inventory"
CLOUD_HOME = WORK / "cloudctl"
CLOUD = "halab"
# inventory/ha's hosts -> the lab hosts that stand in for them
HOSTS = {"cloud1": "ha1", "cloud2": "ha2", "witness1": "ha-wit", "node1": "ha-node"}
WIRE, WIRED = "ha-wire", ["ha1", "ha2", "ha-node"]
GATEWAY, GATEWAY_ADDRESS = "ha-gw", "10.213.0.254"
# The public side of zone-a: a wire linking pub0 of both CCs and of the lab gateway (the
# router elastic-IP clients are behind; its pub0 address is the client tests use).
PUBLIC_WIRE, PUBLIC_INTERFACE = "ha-pub", "pub0"
PUBLIC_ADDRESSES = {GATEWAY: "198.51.100.1/24", "ha1": "198.51.100.2/24", "ha2": "198.51.100.3/24"}
PUBLIC_IPS = "198.51.100.16/28"  # zone-a's elastic IPs
# The lab's values for inventory/ha's example addresses (all on the lab switch 10.213.0.0/24).
LAB_VARS = {
    "cloud_name": CLOUD,
    "cloud_clc_vip_address": "10.213.0.200",
    "cloud_walrus_vip_address": "10.213.0.201",
    "cloud_arbitrator_targets": [f"icmp:{GATEWAY_ADDRESS}"],
    "nc_max_cores": 8,  # tiny, mostly idle test guests (as the ciab demo)
}


def load_labhost():
    spec = importlib.util.spec_from_file_location("labhost", PROJECT / "molecule/labhost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


labhost = load_labhost()


def renamed(node, names: dict[str, str]):
    """The inventory tree with every host key renamed (hosts: and children's hosts:)."""
    if not isinstance(node, dict):
        return node
    return {names.get(k, k): renamed(v, names) for k, v in node.items()}


def write_inventory(single: bool = False) -> Path:
    """inventory/ha pointed at the lab hosts, with the lab's addresses. `single`: ha1 alone
    in clc, walrus and cc, no witness (a single-host cloud that a later `up` makes HA)."""
    WORK.mkdir(parents=True, exist_ok=True)
    labhost.write_inventory(list(HOSTS.values()), PROJECT / "inventory/ha", INVENTORY)
    hosts_file = INVENTORY / "hosts.yml"
    hosts = renamed(yaml.safe_load(hosts_file.read_text()), HOSTS)
    for host in hosts["all"]["hosts"].values():
        (host or {}).pop("ansible_host", None)  # host_vars/<lab host>.yml has the lab address
    if single:
        groups = hosts["all"]["children"]["cloud"]["children"]
        for group in ("clc", "walrus", "cc"):
            groups[group]["hosts"].pop(HOSTS["cloud2"])
        groups.pop("witness")
    hosts_file.write_text("# inventory/ha on the HA lab's hosts (scripts/halab.py)\n"
                          + yaml.safe_dump(hosts, sort_keys=False))  # fmt: skip
    all_file = INVENTORY / "group_vars/all.yml"
    group_vars = yaml.safe_load(all_file.read_text()) | LAB_VARS
    group_vars["cloud_clusters"]["zone-a"].update(
        public_interface=PUBLIC_INTERFACE, public_ips=PUBLIC_IPS
    )
    all_file.write_text("# inventory/ha's group_vars/all.yml with the HA lab's addresses\n"
                        + yaml.safe_dump(group_vars, sort_keys=False))  # fmt: skip
    return INVENTORY


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def cloudctl(*args: str, check: bool = True) -> int:
    env = {**os.environ, "CLOUDCTL_CLOUD": CLOUD}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    proc = subprocess.run(["cloudctl", *args], env=env, check=False)
    if check and proc.returncode:
        raise SystemExit(f"halab: cloudctl {' '.join(args)} failed (exit {proc.returncode})")
    return proc.returncode


def up(deploy: bool, single: bool = False) -> None:
    existing = {info["name"] for info in labhost.all_hosts()}
    for name in HOSTS.values():
        if name not in existing:
            info = labhost.create(name)
            print(f"lab host {name} {info['address']}")
    if labhost.netns_of(WIRE) not in namespaces():
        labhost.wire(WIRE, WIRED)
        print(f"wire {WIRE}: eth1 of {' '.join(WIRED)}")
    if labhost.netns_of(GATEWAY) not in namespaces():
        labhost.stub(GATEWAY, GATEWAY_ADDRESS)
        print(f"lab gateway {GATEWAY} {GATEWAY_ADDRESS}")
    if labhost.netns_of(PUBLIC_WIRE) not in namespaces():
        labhost.wire(PUBLIC_WIRE, list(PUBLIC_ADDRESSES), ifname=PUBLIC_INTERFACE)
        print(f"public side {PUBLIC_WIRE}: {PUBLIC_INTERFACE} of {' '.join(PUBLIC_ADDRESSES)}")
    for name, address in PUBLIC_ADDRESSES.items():
        in_netns(name, "ip", "addr", "replace", address, "dev", PUBLIC_INTERFACE, check=True)
    inventory = write_inventory(single)
    print(f"inventory {inventory}")
    cloudctl("cloud", "add", CLOUD, "--inventory", str(inventory), "--home", str(CLOUD_HOME))
    if deploy:
        cloudctl("deploy")
        cloudctl("service", "status", check=False)


def in_host(name: str, *command: str) -> subprocess.CompletedProcess:
    pid = labhost.load_info(name)["sshd_pid"]
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-n", "--", *command],
                          capture_output=True, text=True, check=False)  # fmt: skip


def in_netns(name: str, *command: str, check: bool = False) -> subprocess.CompletedProcess:
    """COMMAND in the network namespace of lab host, wire or stub NAME (ip, ping...)."""
    proc = subprocess.run(["ip", "netns", "exec", labhost.netns_of(name), *command],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if check and proc.returncode:
        raise SystemExit(f"halab: {' '.join(command)} in {name}: {proc.stderr.strip()}")
    return proc


# The virtual addresses of the lab's pairs: what `status` and the tests look for.
VIPS = {
    "clc": LAB_VARS["cloud_clc_vip_address"],
    "walrus": LAB_VARS["cloud_walrus_vip_address"],
    "cc-zone-a": "10.20.0.1",  # zone-a's gateway (the first address of its subnet)
}


def holders() -> dict[str, list[str]]:
    """Which lab hosts hold each virtual address (VIPS): one each when the lab is healthy."""
    found: dict[str, list[str]] = {name: [] for name in VIPS}
    for host in HOSTS.values():
        if not labhost.load_info(host):
            continue
        addresses = in_host(host, "ip", "-o", "-4", "addr", "show").stdout
        for name, vip in VIPS.items():
            if f" {vip}/" in addresses:
                found[name].append(host)
    return found


def status() -> int:
    lab = {info["name"]: info for info in labhost.all_hosts()}
    missing = [name for name in HOSTS.values() if name not in lab]
    held = holders()
    for name in HOSTS.values():
        if name in missing:
            print(f"{name:8} missing")
            continue
        vips = [f"{what} {VIPS[what]}" for what, hosts in held.items() if name in hosts]
        gateway = in_host(name, "ping", "-c", "1", "-W", "1", GATEWAY_ADDRESS).returncode == 0
        print(f"{name:8} {lab[name]['address']:13} gateway {'ok' if gateway else 'UNREACHABLE'}"
              + (f"  holds {', '.join(vips)}" if vips else ""))  # fmt: skip
    for what, hosts in held.items():
        if len(hosts) > 1:
            print(f"SPLIT    {what} {VIPS[what]} is held by {' and '.join(hosts)}")
    for kind, name in (("wire", WIRE), ("public", PUBLIC_WIRE)):
        print(f"{kind:8} {name}: {'up' if labhost.netns_of(name) in namespaces() else 'missing'}")
    print(f"gateway  {GATEWAY_ADDRESS}: "
          f"{'up' if labhost.netns_of(GATEWAY) in namespaces() else 'missing'}")  # fmt: skip
    if missing or not INVENTORY.exists() or any(len(h) > 1 for h in held.values()):
        return 1
    return cloudctl("service", "status", check=False)


def cut(name: str, mend: bool) -> None:
    """A blackhole route to the gateway inside HOST: its probes time out, the others' pass."""
    verb = "del" if mend else "replace"
    proc = in_host(name, "ip", "route", verb, "blackhole", GATEWAY_ADDRESS)
    if proc.returncode and not mend:
        raise SystemExit(f"halab: {proc.stderr.strip()}")


def down() -> None:
    for name in [WIRE, PUBLIC_WIRE, GATEWAY, *HOSTS.values()]:
        labhost.destroy(name)
    shutil.rmtree(WORK, ignore_errors=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    listed = subprocess.run(["cloudctl", "cloud", "list", "-o", "json"], env=env,
                            capture_output=True, text=True, check=False)  # fmt: skip
    if f'"name": "{CLOUD}"' in listed.stdout:
        cloudctl("cloud", "remove", CLOUD)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    up_parser = sub.add_parser("up")
    up_parser.add_argument("--no-deploy", action="store_true")
    up_parser.add_argument("--single", action="store_true",
                           help="ha1 alone in clc, walrus and cc (a later up makes the pairs)")  # fmt: skip
    sub.add_parser("status")
    sub.add_parser("down")
    for verb in ("cut", "mend"):
        sub.add_parser(verb).add_argument("host", choices=list(HOSTS.values()))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("halab: must run as root (lab hosts are network namespaces)")
    if args.verb == "up":
        up(deploy=not args.no_deploy, single=args.single)
    elif args.verb == "status":
        return status()
    elif args.verb in ("cut", "mend"):
        cut(args.host, mend=args.verb == "mend")
    elif args.verb == "down":
        down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

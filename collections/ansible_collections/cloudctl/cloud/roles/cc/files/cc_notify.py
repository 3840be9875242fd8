# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""keepalived's notify script for a zone served by a CC pair (the cc role installs it as
cc_notify_script, /usr/local/sbin/cloud-cc-notify, with a #!/usr/bin/python3 line).

keepalived runs it on every state change of the zone's VRRP instance `cc-<zone>`, which moves
the zone's gateway address:

    cloud-cc-notify [--config CC_JSON] INSTANCE cc-<zone> MASTER|BACKUP|FAULT|STOP [PRIORITY]

The host that holds the gateway serves the zone: it holds the public addresses of the zone's
elastic IPs (the DNAT rules of CLOUD-EIP-PRE whose address lies in the zone's pool; both CCs
keep the rules), announced by gratuitous ARP, and runs the zone's dnsmasq. The other host
holds none of them and runs no dnsmasq.

It acts on what the host holds, not on the state word: keepalived adds the gateway before
it runs the MASTER notify and removes it before BACKUP/FAULT/STOP, but it forks one notify per
change, and two quick changes may run in either order. Under the elastic_ip module's lock
the last run sees the final state, and the module never adds an address between the check
and the change. What it did goes to the log named in cc.json (notify_log).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable

CONFIG = "/etc/cloud/cc/cc.json"
LOCK_FILE = "/run/cloud-elastic-ip.lock"  # the elastic_ip module's lock
DNAT = re.compile(r"^-A CLOUD-EIP-PRE -d (?P<public>[0-9.]+)/32 .*-j DNAT")


def run(*cmd: str, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def addresses(interface: str) -> dict[str, int]:
    """The interface's IPv4 addresses -> prefix length ({} when it does not exist)."""
    out = run("ip", "-j", "-4", "addr", "show", "dev", interface, check=False)
    links = json.loads(out or "[]")
    return {a["local"]: a["prefixlen"] for link in links for a in link.get("addr_info", [])}


def in_pool(pool: str) -> Callable[[str], bool]:
    """A test for addresses of an elastic IP pool: a CIDR or a range A-B ("" = none)."""
    if not pool:
        return lambda address: False
    if "-" in pool:
        first, last = (ipaddress.IPv4Address(p.strip()) for p in pool.split("-", 1))
        return lambda address: first <= ipaddress.IPv4Address(address) <= last
    network = ipaddress.IPv4Network(pool, strict=False)
    return lambda address: ipaddress.IPv4Address(address) in network


def elastic_ips(zone: dict) -> list[str]:
    """The public addresses the rules associate in this zone."""
    belongs = in_pool(zone.get("public_ips") or "")
    nat = run("iptables", "-w", "-t", "nat", "-S", "CLOUD-EIP-PRE", check=False)
    found = (m.group("public") for m in map(DNAT.match, nat.splitlines()) if m)
    return sorted({a for a in found if belongs(a)})


def announce(interface: str, address: str) -> None:
    """Gratuitous ARP (a request for the address from the address itself): neighbours that
    knew the other CC's MAC for it switch at once."""
    [link] = json.loads(run("ip", "-j", "link", "show", "dev", interface))
    mac = bytes.fromhex(link["address"].replace(":", ""))
    ip = socket.inet_aton(address)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\0" * 6 + ip
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((interface, 0))
        for _copy in range(2):  # one may be lost
            s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)


def service(config: dict, zone: dict, action: str) -> None:
    """Start or stop the zone's dnsmasq through the host's service manager."""
    manager = config.get("service_manager") or "auto"
    if manager == "auto":
        manager = "systemd" if os.path.isdir("/run/systemd/system") else "supervisor"
    if manager == "systemd":
        run("systemctl", action, zone["service"])
        return
    conf = config.get("supervisor_config") or "/etc/supervisor/supervisord.conf"
    out = run("supervisorctl", "-c", conf, action, zone["service"], check=False)
    # one call (a failover waits for it): "already started" / "not running" are fine
    if "ERROR" in out and "already started" not in out and "not running" not in out:
        raise RuntimeError(f"supervisorctl {action} {zone['service']}: {out.strip()}")


def serve(config: dict, zone: dict) -> list[str]:
    """Make the host serve the zone, or not, as its holding the gateway says; what it did."""
    holder = zone["gateway"] in addresses(zone["bridge"])
    done = [f"holder: {holder}"]
    interface = zone.get("public_interface") or ""
    if interface:
        held = {a for a, prefix in addresses(interface).items() if prefix == 32}
        if holder:
            for address in elastic_ips(zone):
                if address not in held:
                    run("ip", "addr", "add", f"{address}/32", "dev", interface)
                    done.append(f"added {address}")
                announce(interface, address)
        else:
            belongs = in_pool(zone.get("public_ips") or "")
            for address in sorted(a for a in held if belongs(a)):
                run("ip", "addr", "del", f"{address}/32", "dev", interface)
                done.append(f"removed {address}")
    service(config, zone, "start" if holder else "stop")
    done.append(f"{zone['service']} {'started' if holder else 'stopped'}")
    return done


def main(argv: list[str]) -> int:
    config_path = CONFIG
    if argv[:1] == ["--config"]:
        config_path, argv = argv[1], argv[2:]
    if len(argv) < 3 or not argv[1].startswith("cc-"):
        print(
            f"usage: {sys.argv[0]} [--config CC_JSON] INSTANCE cc-<zone> STATE [PRIORITY]",
            file=sys.stderr,
        )
        return 2
    name, state = argv[1], argv[2]
    with open(config_path) as f:
        config = json.load(f)
    zone = config["zones"][name.removeprefix("cc-")]
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done, status = serve(config, zone), 0
        except (OSError, RuntimeError, ValueError) as exc:
            done, status = [f"failed: {exc}"], 1
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {name} {state}: {'; '.join(done)}"
    print(line)
    try:
        if config.get("notify_log"):
            with open(config["notify_log"], "a") as log:
                log.write(line + "\n")
    except OSError:
        pass  # keepalived shows no output: the work above is what counts
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

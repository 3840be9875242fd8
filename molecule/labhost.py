#!/usr/bin/env python3
"""Namespaced test hosts: a lab of "servers" on one machine, reached by Ansible over SSH.

Each lab host is a network namespace plus a private mount and UTS namespace (tmpfs over /run
and /tmp, overlays over /etc, /var/lib, /var/log, /var/cache, /opt, /srv and /usr/local) with its own
sshd. Every host has one interface, eth0, on a lab switch (a bridge in the namespace
`cloudlab-sw`); the root namespace reaches the switch through the veth `cloudlab0`
(10.213.0.1/24), so Ansible and cloudctl run from the normal shell. Nothing touches the
machine's real interfaces.

    labhost.py create NAME     make host NAME, print its address
    labhost.py destroy NAME    stop everything that runs in it and remove it
    labhost.py destroy --all   remove every lab host and the switch
    labhost.py list            hosts with address and sshd pid
    labhost.py inventory NAME [NAME...] --groups-from DIR --out DIR
                               write an inventory reaching these hosts over SSH, with
                               their host keys in DIR/known_hosts
    labhost.py run NAME -- CMD run a command inside the host (all its namespaces)
    labhost.py wire NAME HOST [HOST...] [--ifname eth1]
                               an L2 link between hosts: a bridge in netns cloudlab-NAME
                               with a veth into each host (as --ifname, up, no address)
    labhost.py stub NAME ADDRESS
                               a bare address on the lab switch (netns cloudlab-NAME, no
                               sshd): a gateway or any target for the hosts to probe

`destroy NAME` removes a host, a wire or a stub of that name. Only root can run it. State lives in /root/.cloudlab (0700: sshd refuses keys below
world-writable directories). /root/.cloudlab/known_hosts holds the host key of every lab host
(molecule's ssh checks them there); ssh never has to accept an unknown key.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LAB_DIR = Path(os.environ.get("CLOUDLAB_DIR", "/root/.cloudlab"))
SWITCH_NS = "cloudlab-sw"
SWITCH_BRIDGE = "labsw0"
ROOT_VETH = "cloudlab0"
LAB_NET = ipaddress.ip_network("10.213.0.0/24")
ROOT_ADDR = "10.213.0.1"
FIRST_HOST_OFFSET = 10
KNOWN_HOSTS = LAB_DIR / "known_hosts"
# /usr/local too: roles install scripts there (the cc role's keepalived notify script); shared,
# one host's reset removed another's (the HA lab's CC pair lost its notify script).
OVERLAID_DIRS = ["/etc", "/var/lib", "/var/log", "/var/cache", "/opt", "/srv", "/usr/local"]
SHELL_DOTFILES = [".bashrc", ".profile"]
TMPFS_DIRS = ["/run", "/tmp"]


def sh(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, text=True, capture_output=capture)


def netns_of(name: str) -> str:
    return f"cloudlab-{name}"


def host_dir(name: str) -> Path:
    return LAB_DIR / "hosts" / name


def extra_path(kind: str, name: str) -> Path:
    """The record of a wire or a stub (netns without sshd): LAB_DIR/{wires,stubs}/NAME.json."""
    return LAB_DIR / kind / f"{name}.json"


def extras(kind: str) -> list[dict]:
    folder = LAB_DIR / kind
    return (
        [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if folder.exists()
        else []
    )


def load_info(name: str) -> dict | None:
    path = host_dir(name) / "info.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_extra(kind: str, name: str) -> dict | None:
    """The record of the wire or stub NAME (kind wires or stubs), None when there is none."""
    path = extra_path(kind, name)
    return json.loads(path.read_text()) if path.exists() else None


def all_hosts() -> list[dict]:
    hosts_dir = LAB_DIR / "hosts"
    if not hosts_dir.exists():
        return []
    return [info for p in sorted(hosts_dir.iterdir()) if (info := load_info(p.name))]


def host_key(info: dict) -> str:
    """The host's SSH public key ("ssh-ed25519 AAAA..."), as known_hosts records it."""
    key_type, blob = (Path(info["dir"]) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{key_type} {blob}"


def write_known_hosts(path: Path, hosts: list[dict]) -> None:
    """A known_hosts file with the keys of these lab hosts, replaced in one rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text("".join(f"{info['address']} {host_key(info)}\n" for info in hosts))
    tmp.chmod(0o644)
    os.replace(tmp, path)


class LabLock:
    """Serialise create/destroy so two test runs never pick the same address."""

    def __enter__(self):
        LAB_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fd = os.open(LAB_DIR / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def ensure_lab_key() -> Path:
    key = LAB_DIR / "id_ed25519"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cloudlab", "-f", str(key))
    authorized = LAB_DIR / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    authorized.chmod(0o600)
    return key


def ensure_switch() -> None:
    existing = sh("ip", "netns", "list", capture=True).stdout.split()
    if SWITCH_NS in existing:
        return
    sh("ip", "netns", "add", SWITCH_NS)
    in_switch = ["ip", "netns", "exec", SWITCH_NS]
    sh(*in_switch, "ip", "link", "set", "lo", "up")
    sh(*in_switch, "ip", "link", "add", SWITCH_BRIDGE, "type", "bridge")
    sh(*in_switch, "ip", "link", "set", SWITCH_BRIDGE, "up")
    sh("ip", "link", "add", ROOT_VETH, "type", "veth", "peer", "name", "root", "netns", SWITCH_NS)
    sh(*in_switch, "ip", "link", "set", "root", "master", SWITCH_BRIDGE, "up")
    sh("ip", "addr", "add", f"{ROOT_ADDR}/{LAB_NET.prefixlen}", "dev", ROOT_VETH)
    sh("ip", "link", "set", ROOT_VETH, "up")


def remove_switch() -> None:
    sh("ip", "link", "del", ROOT_VETH, check=False, capture=True)
    sh("ip", "netns", "del", SWITCH_NS, check=False, capture=True)


def free_address() -> str:
    used = {info["address"] for info in all_hosts() + extras("stubs")}
    for offset in range(FIRST_HOST_OFFSET, LAB_NET.num_addresses - 1):
        candidate = str(LAB_NET[offset])
        if candidate not in used:
            return candidate
    raise SystemExit("labhost: no free address left in the lab network")


def wait_for_port(address: str, port: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"labhost: sshd at {address}:{port} did not answer in {deadline_s:.0f} s")


def inner_script(name: str, hdir: Path, sshd_config: Path) -> str:
    """Shell run inside the new namespaces: private mounts, hostname, then sshd."""
    lines = ["set -e", "mount --make-rprivate /", f"hostname {name}"]
    for d in TMPFS_DIRS:
        lines.append(
            f"mount -t tmpfs -o mode=1777 tmpfs {d}"
            if d == "/tmp"
            else f"mount -t tmpfs -o mode=0755 tmpfs {d}"
        )
    for d in OVERLAID_DIRS:
        key = d.strip("/").replace("/", "_")
        upper, work = hdir / "overlay" / key / "upper", hdir / "overlay" / key / "work"
        lines.append(f"mkdir -p {upper} {work}")
        lines.append(
            f"mount -t overlay overlay -o lowerdir={d},upperdir={upper},workdir={work} {d}"
        )
    # root's shell start-up files as on a fresh Debian host: this machine's own (a pyenv
    # init in .bashrc, which bash runs for every SSH command) cost seconds per module call.
    for dotfile in SHELL_DOTFILES:
        skel, home = f"/etc/skel/{dotfile}", f"/root/{dotfile}"
        lines.append(f"if [ -e {skel} ] && [ -e {home} ]; then mount --bind {skel} {home}; fi")
    lines += [
        "mkdir -p /run/sshd /run/lock",
        f"echo {name} > /etc/hostname",
        f"printf '127.0.1.1 {name}\\n' >> /etc/hosts",
        f"exec /usr/sbin/sshd -D -f {sshd_config} -E {hdir}/sshd.log",
    ]
    return "\n".join(lines)


def create(name: str) -> dict:
    if len(name) > 12 or not name.replace("-", "").isalnum():
        raise SystemExit(f"labhost: bad host name {name!r} (letters, digits, '-', <= 12 chars)")
    with LabLock():
        if load_info(name):
            raise SystemExit(f"labhost: host {name} exists; destroy it first")
        key = ensure_lab_key()
        ensure_switch()
        address = free_address()
        hdir = host_dir(name)
        if hdir.exists():
            shutil.rmtree(hdir)
        hdir.mkdir(mode=0o700, parents=True)
        ns = netns_of(name)
        sh("ip", "netns", "add", ns)
        in_ns = ["ip", "netns", "exec", ns]
        sh(*in_ns, "ip", "link", "set", "lo", "up")
        link(SWITCH_NS, SWITCH_BRIDGE, f"h-{name}", ns, "eth0")
        sh(*in_ns, "ip", "addr", "add", f"{address}/{LAB_NET.prefixlen}", "dev", "eth0")

        host_key = hdir / "ssh_host_ed25519_key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        sshd_config = hdir / "sshd_config"
        sshd_config.write_text(
            f"ListenAddress {address}\nHostKey {host_key}\nPidFile /run/sshd.pid\n"
            f"AuthorizedKeysFile {LAB_DIR}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes yes\nSubsystem sftp internal-sftp\nAcceptEnv LANG LC_*\n"
            "MaxSessions 50\nMaxStartups 50:30:100\n"
        )
        script = inner_script(name, hdir, sshd_config)
        with open(hdir / "namespace.log", "w") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [
                    *in_ns,
                    "unshare",
                    "--mount",
                    "--uts",
                    "--propagation",
                    "private",
                    "/bin/sh",
                    "-c",
                    script,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        info = {
            "name": name,
            "address": address,
            "netns": ns,
            "sshd_pid": proc.pid,
            "key": str(key),
            "dir": str(hdir),
        }
        (hdir / "info.json").write_text(json.dumps(info, indent=2))
        write_known_hosts(KNOWN_HOSTS, all_hosts())
    # A host destroyed a moment ago may have left its MAC for this address in the root
    # namespace's neighbour cache: forget it, or packets go to the old MAC for ~30 s.
    sh("ip", "neigh", "flush", "to", address, "dev", ROOT_VETH, check=False, capture=True)
    try:
        wait_for_port(address, 22, 60)
    except SystemExit:
        destroy(name)
        raise
    return info


def netns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False, capture=True).stdout
    return [int(p) for p in out.split()]


def stop_pids(ns: str, deadline_s: float = 10.0) -> None:
    """Stop every process living in the host's network namespace: all started in this lab."""
    pids = netns_pids(ns)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + deadline_s
    while netns_pids(ns) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in netns_pids(ns):  # tgtd ignores SIGTERM while it holds targets
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while netns_pids(ns) and time.monotonic() < deadline + 5:
        time.sleep(0.2)


def destroy(name: str) -> None:
    """Remove the host, wire or stub NAME (its netns, by PID first); nothing if absent."""
    with LabLock():
        info = load_info(name)
        ns = netns_of(name)
        if ns in sh("ip", "netns", "list", capture=True).stdout.split():
            stop_pids(ns)
            sh("ip", "netns", "del", ns)
        sh("ip", "-n", SWITCH_NS, "link", "del", f"h-{name}", check=False, capture=True)
        if info or host_dir(name).exists():
            shutil.rmtree(host_dir(name), ignore_errors=True)
        for kind in ("wires", "stubs"):
            extra_path(kind, name).unlink(missing_ok=True)
        if KNOWN_HOSTS.exists():  # an address is given to the next host created
            write_known_hosts(KNOWN_HOSTS, all_hosts())
        if not all_hosts() and not extras("stubs"):
            remove_switch()


def link(bridge_ns: str, bridge: str, port: str, ns: str, ifname: str) -> None:
    """A veth from BRIDGE (in netns BRIDGE_NS, as PORT) into netns NS (as IFNAME), both ends
    up: how hosts and stubs join the switch and how wires reach hosts."""
    sh("ip", "-n", bridge_ns, "link", "add", port, "type", "veth", "peer", "name", ifname,
       "netns", ns)  # fmt: skip
    sh("ip", "-n", bridge_ns, "link", "set", port, "master", bridge, "up")
    sh("ip", "-n", ns, "link", "set", ifname, "up")


def new_netns(name: str) -> str:
    """The empty netns cloudlab-NAME of a wire or stub (refused if NAME is taken)."""
    if len(name) > 12 or not name.replace("-", "").isalnum():
        raise SystemExit(f"labhost: bad name {name!r} (letters, digits, '-', <= 12 chars)")
    ns = netns_of(name)
    if load_info(name) or ns in sh("ip", "netns", "list", capture=True).stdout.split():
        raise SystemExit(f"labhost: {name} exists; destroy it first")
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    return ns


def wire(name: str, hosts: list[str], ifname: str = "eth1") -> dict:
    """An L2 link between lab hosts (say, an instance network between a CC and its NCs): a
    bridge in its own netns, a veth from it into each host, named IFNAME there, up and without
    an address (the roles enslave it to their bridges). A stub may be linked too (say, a
    router on a public side)."""
    with LabLock():
        infos = [load_info(host) or load_extra("stubs", host) for host in hosts]
        if missing := [h for h, info in zip(hosts, infos) if not info]:
            raise SystemExit(f"labhost: no lab host {', '.join(missing)}")
        ns = new_netns(name)
        sh("ip", "-n", ns, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        sh("ip", "-n", ns, "link", "set", "br0", "up")
        for info in infos:
            link(ns, "br0", f"w-{info['name']}", info["netns"], ifname)
        record = {"name": name, "netns": ns, "hosts": hosts, "ifname": ifname}
        extra_path("wires", name).parent.mkdir(mode=0o700, exist_ok=True)
        extra_path("wires", name).write_text(json.dumps(record, indent=2))
    return record


def stub(name: str, address: str) -> dict:
    """A bare address on the lab switch: a netns with one veth port and no processes, that
    answers ping (the kernel does) and nothing else. Hosts probe it as their gateway; a test
    cuts it off from one host only inside that host (e.g. `ip route add prohibit ADDRESS`)."""
    if ipaddress.ip_address(address) not in LAB_NET or address == ROOT_ADDR:
        raise SystemExit(f"labhost: {address} is not a free address of the lab network {LAB_NET}")
    with LabLock():
        if address in {info["address"] for info in all_hosts() + extras("stubs")}:
            raise SystemExit(f"labhost: {address} is taken")
        ensure_switch()
        ns = new_netns(name)
        link(SWITCH_NS, SWITCH_BRIDGE, f"h-{name}", ns, "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{address}/{LAB_NET.prefixlen}", "dev", "eth0")
        record = {"name": name, "netns": ns, "address": address}
        extra_path("stubs", name).parent.mkdir(mode=0o700, exist_ok=True)
        extra_path("stubs", name).write_text(json.dumps(record, indent=2))
    return record


def write_inventory(names: list[str], groups_from: Path, out: Path) -> Path:
    """Copy an inventory (hosts.yml + group_vars/host_vars) and point its hosts at lab hosts.

    Hosts are matched by name: lab host NAME stands in for inventory host NAME. The lab
    hosts' keys go to known_hosts next to hosts.yml, where the example inventories' ssh
    checks them (ansible_ssh_common_args in group_vars/all.yml).
    """
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(groups_from, out)
    lab, infos = {}, []
    for name in names:
        info = load_info(name)
        if not info:
            raise SystemExit(f"labhost: no lab host {name}")
        infos.append(info)
        lab[name] = {
            "ansible_host": info["address"],
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": info["key"],
        }
    host_vars = out / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for name, conn in lab.items():
        lines = ["# written by molecule/labhost.py: this host is a namespaced lab host"]
        lines += [f"{k}: {v}" for k, v in conn.items()]
        (host_vars / f"{name}.yml").write_text("\n".join(lines) + "\n")
    write_known_hosts(out / "known_hosts", infos)
    return out


def run_in(name: str, command: list[str]) -> int:
    info = load_info(name)
    if not info:
        raise SystemExit(f"labhost: no lab host {name}")
    # unshare and sh exec sshd, so the sshd pid holds the mount and UTS namespaces.
    pid = info["sshd_pid"]
    return subprocess.call(["nsenter", "-t", str(pid), "-m", "-u", "-n", "--", *command])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("create")
    p.add_argument("names", nargs="+")
    p = sub.add_parser("destroy")
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true")
    sub.add_parser("list")
    p = sub.add_parser("inventory")
    p.add_argument("names", nargs="+")
    p.add_argument("--groups-from", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("run")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("wire")
    p.add_argument("name")
    p.add_argument("hosts", nargs="+")
    p.add_argument("--ifname", default="eth1")
    p = sub.add_parser("stub")
    p.add_argument("name")
    p.add_argument("address")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("labhost: must run as root")

    if args.verb == "create":
        for name in args.names:
            info = create(name)
            print(f"{name} {info['address']}")
    elif args.verb == "destroy":
        names = args.names
        if args.all:
            names = [x["name"] for x in extras("wires") + extras("stubs") + all_hosts()]
        for name in names:
            destroy(name)
        if args.all:
            with LabLock():
                remove_switch()
    elif args.verb == "list":
        for info in all_hosts():
            print(f"{info['name']} {info['address']} sshd_pid={info['sshd_pid']}")
        for record in extras("stubs"):
            print(f"{record['name']} {record['address']} stub")
        for record in extras("wires"):
            print(f"{record['name']} wire {record['ifname']}: {' '.join(record['hosts'])}")
    elif args.verb == "inventory":
        print(write_inventory(args.names, args.groups_from, args.out))
    elif args.verb == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return run_in(args.name, command)
    elif args.verb == "wire":
        record = wire(args.name, args.hosts, args.ifname)
        print(f"{args.name} wire {record['ifname']}: {' '.join(args.hosts)}")
    elif args.verb == "stub":
        print(f"{args.name} {stub(args.name, args.address)['address']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

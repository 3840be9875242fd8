# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The DHCP reservation of one instance in a dnsmasq dhcp-hostsdir (the code of
dhcp_reservation, also run per instance by cc_instances)."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import time

from ansible.module_utils.basic import AnsibleModule

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
RELEASE_WAIT = 5.0  # seconds for dnsmasq to drop released leases from its lease file


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def parse_reservation(content: str | None) -> tuple[str, str] | None:
    """(mac, ip) of a reservation file's first line, None when it holds none."""
    if not content:
        return None
    fields = content.strip().splitlines()[0].split(",") if content.strip() else []
    if len(fields) < 2:
        return None
    return fields[0].strip().lower(), fields[1].strip()


def read_leases(path: str | None) -> list[tuple[str, str]]:
    """(mac, ip) of each lease of a dnsmasq lease file: EXPIRY MAC IP HOSTNAME CLIENTID."""
    leases = []
    for line in (read_text(path) or "").splitlines() if path else []:
        fields = line.split()
        if len(fields) >= 3 and "." in fields[2]:
            leases.append((fields[1].lower(), fields[2]))
    return leases


def stale_leases(
    leases: list[tuple[str, str]] | None,
    old: tuple[str, str] | None,
    new: tuple[str, str] | None,
) -> list[tuple[str, str]]:
    """Leases dnsmasq must forget: those of the old reservation, and those holding the new
    reservation's address with another MAC. ``leases`` None: the lease file is unknown, so
    only the old reservation's own lease."""
    if leases is None:
        return [old] if old and old != new else []
    out = []
    for mac, ip in leases:
        if (mac, ip) == new:
            continue
        if (old and (mac == old[0] or ip == old[1])) or (new and ip == new[1]):
            out.append((mac, ip))
    return out


def dnsmasq_pid(pid_file: str) -> int | None:
    """The pid of the running dnsmasq named by ``pid_file``, None when it does not run."""
    try:
        pid = int((read_text(pid_file) or "").split()[0])
        with open(f"/proc/{pid}/comm") as f:
            return pid if f.read().strip() == "dnsmasq" else None
    except (IndexError, ValueError, OSError):
        return None


def write_reservation(path: str, content: str) -> None:
    """Write under a dot name with mode 0644 from the start, then rename into place."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fchmod(fd, 0o644)  # the umask may have taken bits away
        os.write(fd, content.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def drop_lease_lines(path: str, stale: list[tuple[str, str]]) -> None:
    """Remove leases from the lease file of a dnsmasq that does not run (it reads it at start)."""
    content = read_text(path)
    if content is None:
        return
    kept = []
    for line in content.splitlines(keepends=True):
        fields = line.split()
        if len(fields) >= 3 and (fields[1].lower(), fields[2]) in stale:
            continue
        kept.append(line)
    st = os.stat(path)
    tmp = f"{path}.cloud-tmp"
    with open(tmp, "w") as f:
        f.write("".join(kept))
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.rename(tmp, path)


class Dnsmasq:
    """The running dnsmasq (or its absence) and how to make it forget."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.pid = dnsmasq_pid(self.params["pid_file"])

    def reload(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGHUP)
            except ProcessLookupError:
                self.pid = None

    def release(self, stale: list[tuple[str, str]]) -> None:
        lease_file = self.params["lease_file"]
        if self.pid is None:
            if lease_file:
                drop_lease_lines(lease_file, stale)
            return
        binary = self.module.get_bin_path("dhcp_release", required=True)
        for mac, ip in stale:
            rc, out, err = self.module.run_command([binary, self.params["interface"], ip, mac])
            if rc != 0:
                self.module.fail_json(
                    msg=f"dhcp_release {self.params['interface']} {ip} {mac} failed "
                    f"(rc {rc}): {(err or out).strip()}"
                )
        if lease_file:
            deadline = time.monotonic() + RELEASE_WAIT
            while set(read_leases(lease_file)) & set(stale):
                if time.monotonic() > deadline:
                    left = sorted(set(read_leases(lease_file)) & set(stale))
                    self.module.fail_json(
                        msg=f"dnsmasq (pid {self.pid}) kept the leases {left} in {lease_file} "
                        f"{RELEASE_WAIT:.0f} s after dhcp_release on {self.params['interface']}"
                    )
                time.sleep(0.1)


def validate(module: AnsibleModule) -> tuple[str, str | None]:
    """Check the options; return the file path and the wanted content (None: absent)."""
    p = module.params
    if not NAME.match(p["name"]):
        module.fail_json(
            msg=f"name: {p['name']!r} cannot be a reservation file name "
            "(letters, digits, '_', '.', '-'; no leading dot)"
        )
    if not os.path.isdir(p["hosts_dir"]):
        module.fail_json(
            msg=f"hosts_dir: {p['hosts_dir']} is not a directory (is the cc role deployed?)"
        )
    path = os.path.join(p["hosts_dir"], p["name"])
    if p["state"] == "absent":
        return path, None
    mac = p["mac"].strip().lower()
    if not MAC.match(mac):
        module.fail_json(msg=f"mac: {p['mac']!r} is not a MAC address like 52:54:00:12:34:56")
    try:
        ip = str(ipaddress.IPv4Address(p["ip"].strip()))
    except ValueError:
        module.fail_json(msg=f"ip: {p['ip']!r} is not an IPv4 address")
    hostname = p["hostname"] or p["name"]
    if not HOSTNAME.match(hostname):
        module.fail_json(
            msg=f"hostname: {hostname!r} is not a host name (letters, digits and '-', "
            "at most 63 characters)"
        )
    return path, f"{mac},{ip},{hostname}\n"


def core(module: AnsibleModule) -> dict:
    p = module.params
    path, wanted = validate(module)
    before = read_text(path)
    mode_ok = before is None or (os.stat(path).st_mode & 0o777) == 0o644
    old = parse_reservation(before)
    new = parse_reservation(wanted)

    write = wanted is not None and (before != wanted or not mode_ok)
    remove = wanted is None and before is not None
    # dnsmasq never drops what it read from the directory by itself.
    reload = before is not None and before != wanted
    leases = read_leases(p["lease_file"]) if p["lease_file"] else None
    stale = stale_leases(leases, old if before != wanted else None, new)

    dnsmasq = Dnsmasq(module)
    if not module.check_mode:
        if write:
            write_reservation(path, wanted)
        if remove:
            os.unlink(path)
        if reload:
            dnsmasq.reload()
        if stale:
            dnsmasq.release(stale)

    res = {
        "changed": bool(write or remove or stale),
        "path": path,
        "reservation": dict(zip(("mac", "ip", "hostname"), wanted.strip().split(",")))
        if wanted
        else None,
        "released": [f"{mac} {ip}" for mac, ip in stale],
        "reloaded": bool(reload and dnsmasq.pid is not None),
    }
    if module._diff:
        res["diff"] = {
            "before": before or "",
            "after": wanted or "",
            "before_header": path,
            "after_header": path,
        }
    return res


ARGUMENT_SPEC = {
    "hosts_dir": {"type": "path", "required": True},
    "pid_file": {"type": "path", "required": True},
    "interface": {"type": "str", "required": True},
    "lease_file": {"type": "path"},
    "name": {"type": "str", "required": True},
    "mac": {"type": "str"},
    "ip": {"type": "str"},
    "hostname": {"type": "str"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
}
REQUIRED_IF = [("state", "present", ("mac", "ip"))]

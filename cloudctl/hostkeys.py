"""SSH host keys of the cloud's hosts: the inventory's known_hosts file.

Every inventory keeps the keys of its hosts in `known_hosts` next to hosts.yml. Its
group_vars/all.yml makes ssh read that file (ansible_ssh_common_args
"-o UserKnownHostsFile={{ inventory_dir }}/known_hosts") and ansible.cfg makes ssh refuse a
host whose key is not in it (StrictHostKeyChecking=yes): the deploy, every cloudctl play and
every ansible-playbook run talk only to hosts that show the recorded key.

`trust` fills the file on the operator's request (first contact) and prints what it recorded;
it never replaces a recorded key that differs unless told to. `refusal` turns ssh's refusal of
a host key into one line for the operator.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudctl.config import Settings, inventory_hosts
from cloudctl.errors import (
    CloudError,
    ConfigError,
    HostFailed,
    HostKeyError,
    HostUnreachable,
    InputError,
    PlaybookError,
)

KNOWN_HOSTS = "known_hosts"
SSH_ARGS = "-o UserKnownHostsFile={{ inventory_dir }}/known_hosts"  # group_vars/all.yml
SSH_CONNECTIONS = ("ssh", "smart", "ansible.builtin.ssh")  # connections that check host keys
SCAN_TIMEOUT = 10  # seconds ssh-keyscan waits for each host
# Why a host was unreachable when no_log hid ssh's message (the runner's HostUnreachable).
HIDDEN = "its error is hidden (no_log)"

ADDED, UNCHANGED, REPLACED = "added", "unchanged", "replaced"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class HostKey:
    type: str  # ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa...
    blob: str  # the key, base64 (as known_hosts and authorized_keys hold it)

    @property
    def fingerprint(self) -> str:
        """SHA256:..., as `ssh-keygen -l` and ssh print it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class SshHost:
    name: str  # inventory host name
    address: str  # what ssh connects to (ansible_host)
    port: int
    user: str = ""  # ansible_user ("": ssh's default)
    key_file: str = ""  # ansible_ssh_private_key_file ("": ssh's default)

    @property
    def known_as(self) -> str:
        """The name ssh looks the host up by in known_hosts."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def ssh_command(self, known_hosts: Path, *options: str) -> list[str]:
        """ssh to this host as the cloud's plays reach it, its key checked against known_hosts,
        with more options (e.g. "-W", "%h:%p" for a jump)."""
        for what, value in (("ansible_user", self.user), ("key file", self.key_file)):
            if "{" in value or value.startswith("-"):
                raise ConfigError(f"host {self.name}: {what} {value!r} is not a literal value")
        command = ["ssh", "-o", "StrictHostKeyChecking=yes"]
        command += ["-o", f"UserKnownHostsFile={known_hosts}"]
        command += ["-i", self.key_file] if self.key_file else []
        command += ["-l", self.user] if self.user else []
        command += ["-p", str(self.port)] if self.port != 22 else []
        return [*command, *options, self.address]


@dataclass(frozen=True)
class KeyRow:
    """A line of `cloudctl host list` / `host trust`."""

    host: str
    address: str
    type: str
    fingerprint: str
    status: str = ""


def parse_key(key_type: str, blob: str) -> HostKey | None:
    """A public key from its two known_hosts fields; None unless the blob is base64 of a key
    of that type (its first field names the type)."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    size = int.from_bytes(raw[:4], "big")
    if raw[4 : 4 + size] != key_type.encode():
        return None
    return HostKey(key_type, blob)


def _key_at(fields: Sequence[str], at: int) -> HostKey | None:
    """The key in fields[at] (type) and fields[at + 1] (base64) of a line, if they hold one."""
    return parse_key(fields[at], fields[at + 1]) if len(fields) > at + 1 else None


def console_host_keys(console: str) -> list[HostKey]:
    """The host keys a guest printed on its console, as cloud-init prints them
    ("-----BEGIN SSH HOST KEY KEYS-----" ... "-----END SSH HOST KEY KEYS-----"): the last
    block, since every boot prints its own."""
    keys: list[HostKey] = []
    block: list[HostKey] | None = None
    for line in console.splitlines():
        line = line.strip()
        if line.endswith("-----BEGIN SSH HOST KEY KEYS-----"):
            block = []
        elif line.endswith("-----END SSH HOST KEY KEYS-----") and block is not None:
            keys, block = block, None
        elif block is not None and (key := _key_at(line.split(), 0)):
            block.append(key)
    return keys


def _matches(names: str, name: str) -> bool:
    """Whether the hosts field of a known_hosts line names `name` (plain or hashed)."""
    if names.startswith("|1|"):
        try:
            salt, digest = names[3:].split("|", 1)
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(base64.b64encode(mac).decode(), digest)
    return name in names.split(",")


class KnownHosts:
    """A known_hosts file: read, add and remove a host's keys, save atomically.

    Lines it does not understand (comments, @cert-authority/@revoked, wildcard patterns) are
    kept as they are and never read as a host's key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            self.lines = []
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None

    def _entries(self) -> list[tuple[int, str, HostKey]]:
        entries = []
        for index, line in enumerate(self.lines):
            fields = line.split()
            if fields and not fields[0].startswith(("#", "@")) and (key := _key_at(fields, 1)):
                entries.append((index, fields[0], key))
        return entries

    def keys(self, name: str) -> list[HostKey]:
        return [key for _, names, key in self._entries() if _matches(names, name)]

    def add(self, name: str, keys: Sequence[HostKey]) -> None:
        self.lines += [f"{name} {key.type} {key.blob}" for key in keys]

    def remove(self, name: str) -> None:
        """Forget every key of `name`; a line that also names other hosts keeps them."""
        for index, names, _ in reversed(self._entries()):
            if not _matches(names, name):
                continue
            others = [n for n in names.split(",") if n != name and not names.startswith("|")]
            if others:
                self.lines[index] = " ".join([",".join(others), *self.lines[index].split()[1:]])
            else:
                del self.lines[index]

    def save(self) -> None:
        """Write the file (0644: public keys) through a temporary file and a rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("".join(f"{line}\n" for line in self.lines))
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def known_hosts_path(settings: Settings) -> Path:
    """<inventory dir>/known_hosts: what {{ inventory_dir }}/known_hosts renders to."""
    inventory = settings.inventory
    return (inventory if inventory.is_dir() else inventory.parent) / KNOWN_HOSTS


def ssh_hosts(settings: Settings, names: Sequence[str] = ()) -> list[SshHost]:
    """The inventory's hosts reached over SSH (all, or those named), with their address.

    Hosts with another connection (local) have no host key and are left out; naming one is
    an error, as is a host whose ssh would not read the inventory's known_hosts.
    """
    hostvars = inventory_hosts(settings)
    for name in names:
        if name not in hostvars:
            raise InputError(f"no host {name!r} in inventory {settings.inventory}")
    path = known_hosts_path(settings)
    hosts = []
    for name in dict.fromkeys(names) or sorted(hostvars):
        host = _ssh_host(name, hostvars[name], path)
        if host is None and names:
            raise InputError(f"host {name} is not reached over SSH: it has no host key to trust")
        if host is not None:
            hosts.append(host)
    return hosts


def _ssh_host(name: str, hostvars: Mapping[str, Any], path: Path) -> SshHost | None:
    if str(hostvars.get("ansible_connection") or "ssh") not in SSH_CONNECTIONS:
        return None
    args = str(hostvars.get("ansible_ssh_common_args") or "")
    if SSH_ARGS not in args and f"UserKnownHostsFile={path}" not in args:
        raise ConfigError(
            f"host {name}: ssh would not read {path}: set ansible_ssh_common_args: "
            f'"{SSH_ARGS}" (group_vars/all.yml of the inventory)'
        )
    address = str(hostvars.get("ansible_host") or hostvars.get("ansible_ssh_host") or name)
    port = hostvars.get("ansible_port") or hostvars.get("ansible_ssh_port") or 22
    if "{" in address or address.startswith("-") or not address.strip():
        raise ConfigError(f"host {name}: ansible_host {address!r} is not a literal address")
    user = str(hostvars.get("ansible_user") or hostvars.get("ansible_ssh_user") or "")
    key_file = str(
        hostvars.get("ansible_ssh_private_key_file")
        or hostvars.get("ansible_private_key_file")
        or ""
    )
    try:
        return SshHost(name, address, int(port), user, key_file)
    except (TypeError, ValueError):
        raise ConfigError(f"host {name}: ansible_port {port!r} is not a number") from None


Scanner = Callable[[Sequence[SshHost]], Mapping[str, list[HostKey]]]


def keyscan(hosts: Sequence[SshHost], timeout: int = SCAN_TIMEOUT) -> dict[str, list[HostKey]]:
    """The keys each host offers now (ssh-keyscan, all key types), by known_hosts name.

    An ssh-keyscan per port, each asking all its hosts at once.
    """
    found: dict[str, list[HostKey]] = {}
    for port in sorted({h.port for h in hosts}):
        addresses = sorted({h.address for h in hosts if h.port == port})
        command = ["ssh-keyscan", "-T", str(timeout), "-p", str(port), "--", *addresses]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise ConfigError(f"cannot run ssh-keyscan: {exc.strerror}") from None
        for line in proc.stdout.splitlines():
            if not line.startswith("#") and (key := _key_at(fields := line.split(), 1)):
                found.setdefault(fields[0], []).append(key)
    return found


def known(settings: Settings) -> list[KeyRow]:
    """Each SSH host of the inventory with its recorded keys, or one row "unknown"."""
    recorded = KnownHosts(known_hosts_path(settings))
    rows = []
    for host in ssh_hosts(settings):
        keys = recorded.keys(host.known_as)
        rows += [KeyRow(host.name, host.known_as, k.type, k.fingerprint) for k in keys] or [
            KeyRow(host.name, host.known_as, "", UNKNOWN)
        ]
    return rows


def trust(
    settings: Settings,
    names: Sequence[str] = (),
    *,
    replace: bool = False,
    scan: Scanner = keyscan,
) -> list[KeyRow]:
    """Record the keys the hosts offer now in the inventory's known_hosts (first contact).

    A host with recorded keys that the offered ones match stays as it is. A host whose
    recorded keys differ is refused, one line naming the host and both fingerprints, unless
    `replace`: then its old keys go. Nothing is written unless every host can be trusted.
    """
    hosts = ssh_hosts(settings, names)
    file = KnownHosts(known_hosts_path(settings))
    offered = scan(hosts) if hosts else {}
    rows: list[KeyRow] = []
    refused: list[HostKeyError] = []
    for host in hosts:
        keys = offered.get(host.known_as) or []
        if not keys:
            raise HostKeyError(
                host.name,
                f"no SSH host key from {host.name} at {host.address} port {host.port} "
                f"(no answer within {SCAN_TIMEOUT} s)",
            )
        old = file.keys(host.known_as)
        status = _compare(old, keys)
        if status == REPLACED and not replace:
            refused.append(HostKeyError(host.name, _changed(host, old, keys)))
            continue
        if status != UNCHANGED:
            file.remove(host.known_as)
            file.add(host.known_as, keys)
        shown = keys if status != UNCHANGED else [k for k in keys if k in old]
        rows += [KeyRow(host.name, host.known_as, k.type, k.fingerprint, status) for k in shown]
    if len(refused) == 1:
        raise refused[0]
    if refused:
        raise PlaybookError(f"{len(refused)} host keys changed", failures=list(refused))
    if any(row.status != UNCHANGED for row in rows):
        file.save()
    return rows


def _compare(old: Sequence[HostKey], offered: Sequence[HostKey]) -> str:
    """added: nothing recorded; unchanged: every offered key of a recorded type is recorded;
    replaced: the host shows other keys than the recorded ones."""
    if not old:
        return ADDED
    recorded_types = {k.type for k in old}
    common = [k for k in offered if k.type in recorded_types]
    if common and all(k in old for k in common):
        return UNCHANGED
    return REPLACED


def _changed(host: SshHost, old: Sequence[HostKey], offered: Sequence[HostKey]) -> str:
    types = {k.type for k in old} & {k.type for k in offered}
    before = ", ".join(k.fingerprint for k in old if not types or k.type in types)
    after = ", ".join(k.fingerprint for k in offered if not types or k.type in types)
    return (
        f"host key of {host.name} ({host.known_as}) changed: known {before}, offered {after}; "
        f"check it, then cloudctl host trust --replace {host.name}"
    )


_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_UNKNOWN = re.compile(r"No \S+ host key is known for|Host key verification failed")
_KNOWN_HOSTS_FILE = re.compile(r"Add correct host key in (\S+) to get rid of this message")


def refusal(host: str, ssh_output: str) -> str:
    """One line that says why ssh refused a host's key, from ssh's output; "" when it did
    not refuse one."""
    if _CHANGED in ssh_output:
        match = _KNOWN_HOSTS_FILE.search(ssh_output)
        return _mismatch(host, match.group(1) if match else "the known hosts file")
    if _UNKNOWN.search(ssh_output):
        return _unknown(host)
    return ""


def _mismatch(host: str, where: str | Path) -> str:
    return (
        f"host key of {host} does not match {where} "
        f"(cloudctl host trust --replace {host} after checking it)"
    )


def _unknown(host: str) -> str:
    return f"host key of {host} is unknown (cloudctl host trust {host})"


def explain(
    settings: Settings, failures: Sequence[HostFailed | HostUnreachable]
) -> list[HostFailed | HostUnreachable]:
    """The failures of a play, where a host whose ssh error no_log hid is unreachable because
    of its host key: then a HostKeyError that says so (found out by looking at the key)."""
    return [
        _explained(settings, f) if type(f) is HostUnreachable and f.message == HIDDEN else f
        for f in failures
    ]


def _explained(settings: Settings, failure: HostUnreachable) -> HostUnreachable:
    try:
        [host] = ssh_hosts(settings, [failure.host])
        path = known_hosts_path(settings)
        recorded = KnownHosts(path).keys(host.known_as)
        if not recorded:
            return HostKeyError(failure.host, _unknown(failure.host), task=failure.task)
        offered = keyscan([host], timeout=3).get(host.known_as)
    except CloudError:  # not a host of ours that checks keys: nothing to add
        return failure
    if offered and _compare(recorded, offered) == REPLACED:
        return HostKeyError(failure.host, _mismatch(failure.host, path), task=failure.task)
    return failure

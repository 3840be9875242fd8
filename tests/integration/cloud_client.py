"""What the end-to-end tests share: cloudctl as a subprocess, commands inside lab hosts, and
SSH into guests through a lab host as the jump host (the instance networks live inside the
lab hosts' namespaces).

SSH checks host keys, as an EC2 user does: the jump host's key is in the inventory's
known_hosts (molecule/labhost.py writes it), the guest's is the one it printed on its console
(`cloudctl instance console`, cloud-init's "BEGIN SSH HOST KEY KEYS" block)."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner

from cloudctl.cli.main import cli
from cloudctl.hostkeys import HostKey, console_host_keys
from tests.conftest import labhost

BIN = Path(sys.executable).parent
SSH_DEADLINE = 300  # seconds for a TCG guest to boot, DHCP and start dropbear


class CloudClient:
    """cloudctl against one test cloud: its inventory, home (state, runs) and key pair."""

    def __init__(self, workdir: Path, key_name: str) -> None:
        self.workdir = workdir
        self.inventory = workdir / "inventory"
        self.home = workdir / "cloudctl-home"
        self.key = workdir / f"{key_name}.pem"
        self.ids: dict = {}
        self.host_keys: dict[str, list[HostKey]] = {}  # guest address -> keys from its console

    def cloudctl(self, *args: str, ok: bool = True, timeout: int = 1800, here: bool = False):
        """cloudctl as a new process (`here`: in this one, see cloudctl_here)."""
        if here:
            proc = cloudctl_here(["--inventory", str(self.inventory), *args],
                                 {"CLOUDCTL_HOME": str(self.home), "CLOUDCTL_CONFIG": None})  # fmt: skip
        else:
            env = dict(os.environ, CLOUDCTL_HOME=str(self.home), PATH=f"{BIN}:{os.environ['PATH']}")
            env.pop("CLOUDCTL_CONFIG", None)
            proc = subprocess.run(
                [str(BIN / "cloudctl"), "--inventory", str(self.inventory), *args],
                capture_output=True, text=True, env=env, timeout=timeout, check=False,
            )  # fmt: skip
        if ok:
            assert proc.returncode == 0, f"cloudctl {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        return proc

    def json(self, *args: str):
        # A show or a list only reads the state: in this process (a new interpreter for
        # each of the suite's hundreds of looks would cost minutes); operations run the
        # console script.
        here = len(args) > 1 and args[1] in ("show", "list")
        return json.loads(self.cloudctl("-o", "json", *args, here=here).stdout)

    def guest(self, host: str, ip: str, command: str, deadline_s: float = SSH_DEADLINE) -> str:
        """Run a command in a guest with the key pair; retry while it boots."""
        deadline = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < deadline:
            keys = self.host_keys.get(ip, [])
            try:
                return guest_ssh(self.inventory, host, ip, keys, self.key, command)
            except UnknownHostKey as exc:
                # Its SSH server answers, so its keys are on the console (printed before).
                last = exc
                if self.console_host_keys(ip) != keys:
                    continue
            except paramiko.BadHostKeyException as exc:
                self.host_keys.pop(ip, None)  # another guest has the address now
                last = exc
            except (OSError, paramiko.SSHException, EOFError) as exc:
                last = exc
            time.sleep(2)  # poll interval, not a wait for an outcome
        pytest.fail(f"no SSH to {ip} via {host} within {deadline_s}s: {last!r}")

    def console_host_keys(self, ip: str) -> list[HostKey]:
        """The host keys the running instance with this address printed on its console."""
        [instance] = [i for i in self.json("instance", "list", "--state", "running")
                      if i["private_ip"] == ip]  # fmt: skip
        keys = console_host_keys(self.cloudctl("instance", "console", instance["id"]).stdout)
        self.host_keys[ip] = keys
        return keys


def cloudctl_here(argv: list[str], env: dict[str, str | None]) -> subprocess.CompletedProcess:
    """cloudctl in this process, as a new process would run it: the environment with `env`
    (None unsets) and the venv first on PATH, no standard input, its own stdout and stderr,
    a root logger without handlers (cloudctl's basicConfig binds one to this run's stderr).
    A new interpreter costs 0.3-2 s of imports per command, which adds up where a test runs
    a hundred quick ones; the plays still go through ansible-playbook to the hosts."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        result = CliRunner().invoke(
            cli, argv, env={"PATH": f"{BIN}:{os.environ['PATH']}", **env}, prog_name="cloudctl"
        )
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = handlers, level
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["cloudctl", *argv], result.exit_code, result.stdout,
                                       result.stderr)  # fmt: skip


def in_host(host: str, *command: str, input: str | None = None) -> subprocess.CompletedProcess:
    """A command inside all the namespaces of a lab host (`input`: its standard input)."""
    info = labhost.load_info(host)
    return subprocess.run(
        ["nsenter", "-t", str(info["sshd_pid"]), "-m", "-u", "-n", "--", *command],
        capture_output=True, text=True, check=False, input=input,
    )  # fmt: skip


class PublicSideClient:
    """A CloudClient whose cloud has a public side with a client on it (elastic IPs): the
    class provides from_client(*command) (a command run by that client) and
    client_known_hosts (the client's known_hosts file)."""

    def client_trusts(self, public_ip: str, private_ip: str) -> None:
        """The client knows the host keys of the instance (from its console) at public_ip."""
        keys = self.host_keys.get(private_ip) or self.console_host_keys(private_ip)
        assert keys, f"no host keys on the console of {private_ip}"
        self.client_known_hosts.write_text(
            "".join(f"{public_ip} {k.type} {k.blob}\n" for k in keys)
        )

    def client_ssh(self, ip: str, command: str = "hostname") -> subprocess.CompletedProcess:
        return self.from_client(
            "ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.client_known_hosts}", "-o", "ConnectTimeout=4",
            "-o", "BatchMode=yes", f"root@{ip}", command,
        )  # fmt: skip


class UnknownHostKey(paramiko.SSHException):
    """The server offered a key of a type we know no key of: it is refused."""


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(f"{hostname} offered an unknown {key.get_name()} host key")


def pinned_client(host: str, keys: list[HostKey]) -> paramiko.SSHClient:
    """A client that accepts only these host keys for `host`: another key of a known type
    raises BadHostKeyException, a key of another type UnknownHostKey."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_Refuse())
    for key in keys:
        client.get_host_keys().add(host, key.type, paramiko.PKey.from_type_string(
            key.type, base64.b64decode(key.blob)))  # fmt: skip
    return client


def guest_ssh(inventory: Path, host: str, ip: str, keys: list[HostKey], key: Path,
              command: str) -> str:  # fmt: skip
    """Run a command in a guest over SSH through lab host `host`, checking both host keys:
    the lab host's from the inventory's known_hosts, the guest's from `keys`."""
    info = labhost.load_info(host)
    jump = paramiko.SSHClient()
    jump.get_host_keys().load(str(inventory / "known_hosts"))
    jump.connect(info["address"], username="root", key_filename=info["key"], timeout=20,
                 allow_agent=False, look_for_keys=False)  # fmt: skip
    try:
        channel = jump.get_transport().open_channel("direct-tcpip", (ip, 22), ("127.0.0.1", 0))
        guest = pinned_client(ip, keys)
        guest.connect(ip, username="root", pkey=paramiko.Ed25519Key.from_private_key_file(
            str(key)), sock=channel, timeout=20, banner_timeout=20, auth_timeout=20,
            allow_agent=False, look_for_keys=False)  # fmt: skip
        try:
            _, stdout, stderr = guest.exec_command(command, timeout=60)
            out = stdout.read().decode()
            if stdout.channel.recv_exit_status() != 0:
                raise paramiko.SSHException(f"{command!r} failed: {stderr.read().decode()}")
            return out
        finally:
            guest.close()
    finally:
        jump.close()

"""What the end-to-end tests share: cloudctl as a subprocess, commands inside lab hosts, and
SSH into guests through a lab host as the jump host (the instance networks live inside the
lab hosts' namespaces)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

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

    def cloudctl(self, *args: str, ok: bool = True, timeout: int = 1800):
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
        return json.loads(self.cloudctl("-o", "json", *args).stdout)

    def guest(self, host: str, ip: str, command: str, deadline_s: float = SSH_DEADLINE) -> str:
        """Run a command in a guest with the key pair; retry while it boots."""
        deadline = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < deadline:
            try:
                return guest_ssh(labhost.load_info(host), ip, self.key, command)
            except (OSError, paramiko.SSHException, EOFError) as exc:
                last = exc
                time.sleep(2)  # poll interval, not a wait for an outcome
        pytest.fail(f"no SSH to {ip} via {host} within {deadline_s}s: {last!r}")


def in_host(host: str, *command: str) -> subprocess.CompletedProcess:
    """A command inside all the namespaces of a lab host."""
    info = labhost.load_info(host)
    return subprocess.run(
        ["nsenter", "-t", str(info["sshd_pid"]), "-m", "-u", "-n", "--", *command],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def guest_ssh(info: dict, ip: str, key: Path, command: str) -> str:
    jump = paramiko.SSHClient()
    jump.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    jump.connect(info["address"], username="root", key_filename=info["key"], timeout=20,
                 allow_agent=False, look_for_keys=False)  # fmt: skip
    try:
        channel = jump.get_transport().open_channel("direct-tcpip", (ip, 22), ("127.0.0.1", 0))
        guest = paramiko.SSHClient()
        guest.set_missing_host_key_policy(paramiko.AutoAddPolicy())
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

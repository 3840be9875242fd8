"""A real etcd cluster of N members on 127.0.0.1 (free ports, data in a temp dir), started
and stopped by PID; optionally TLS for clients with client certificates (a test CA made
with `cryptography`)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# What the etcd role configures too: a migrated state and a big launch are one transaction.
LIMITS = ["--max-txn-ops", "10000", "--max-request-bytes", str(10 * 1024 * 1024)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Tls:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (PEM files)."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> Tls:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test etcd CA")])
        ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, is_ca=True)
        files = {"ca_file": _write(directory / "ca.crt", ca)}
        # etcd's own gateway connects to the member with the server certificate: client
        # use too.
        server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
        for role, usage in (("server", [server, client]), ("client", [client])):
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"etcd {role}")])
            cert = _certificate(name, ca_name, key.public_key(), ca_key, usage=usage)
            files[f"{role}_cert"] = _write(directory / f"{role}.crt", cert)
            files[f"{role}_key"] = _write(directory / f"{role}.key", key)
        return cls(**files)


def _certificate(subject, issuer, public_key, signing_key, is_ca=False, usage=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write(path: Path, item) -> Path:
    if isinstance(item, x509.Certificate):
        path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
    return path


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen | None = None


class EtcdCluster:
    def __init__(self, root: Path, size: int = 3, tls: Tls | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.members = [
            Member(f"m{n}", free_port(), free_port(), root / f"m{n}", root / f"m{n}.log")
            for n in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [f"{self.scheme}://127.0.0.1:{m.client_port}" for m in self.members]

    def start(self) -> EtcdCluster:
        for member in self.members:
            self.start_member(member)
        for member in self.members:
            self.wait_healthy(member)
        return self

    def start_member(self, member: Member) -> None:
        peers = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        client_url = f"{self.scheme}://127.0.0.1:{member.client_port}"
        command = [
            "etcd", "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.root.name, *LIMITS,
        ]  # fmt: skip
        if self.tls:
            command += [
                "--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca_file), "--client-cert-auth",
            ]  # fmt: skip
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_healthy(self, member: Member, deadline_s: float = 30) -> None:
        url = f"{self.scheme}://127.0.0.1:{member.client_port}/health"
        kwargs = {}
        if self.tls:
            kwargs = {"verify": str(self.tls.ca_file),
                      "cert": (str(self.tls.client_cert), str(self.tls.client_key))}  # fmt: skip
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            assert member.process.poll() is None, member.log.read_text()[-2000:]
            try:
                if requests.get(url, timeout=1, **kwargs).json().get("health") == "true":
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)  # poll interval
        raise AssertionError(f"etcd member {member.name} not healthy within {deadline_s} s")

    def kill(self, member: Member) -> None:
        os.kill(member.process.pid, signal.SIGKILL)
        member.process.wait(timeout=10)

    def stop(self) -> None:
        """Kill every member (test data: nothing to shut down cleanly)."""
        for member in self.members:
            if member.process and member.process.poll() is None:
                self.kill(member)

"""Host keys on the shared cloud: the lab host's key is known (labhost.py wrote it), a changed
key fails a play with one line naming the host, `host trust` refuses it and `--replace`
fixes it; a forgotten key is unknown until `host trust` records it, printing its fingerprint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import labhost

pytestmark = pytest.mark.integration


def fingerprint(pub: Path) -> str:
    """SHA256:... of a public key file, as ssh-keygen -l prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return out.stdout.split()[1]


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    """What cloudctl said on stderr, but warnings about other operations."""
    return [line for line in proc.stderr.splitlines() if line and not line.startswith("Warning:")]


def test_a_changed_or_unknown_host_key_stops_plays_until_trusted(ops_cloud, tmp_path, monkeypatch):
    c = ops_cloud
    info = labhost.load_info(c.host)
    address = info["address"]
    lab_key = Path(info["dir"]) / "ssh_host_ed25519_key.pub"
    lab_fp = fingerprint(lab_key)
    known = c.inventory / "known_hosts"
    good = known.read_text()
    assert c.json("host", "list") == [
        {"host": c.host, "address": address, "type": "ssh-ed25519", "fingerprint": lab_fp}
    ]

    def new_connections(name: str) -> None:
        """ssh makes new connections: a master connection kept open (ControlPersist) from an
        earlier play would not look at the key again."""
        (tmp_path / name).mkdir()
        monkeypatch.setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", str(tmp_path / name))

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key_type, blob = other.with_suffix(".pub").read_text().split()[:2]
    try:
        known.write_text(f"{address} {key_type} {blob}\n")
        changed = known.read_text()
        new_connections("changed")
        status = c.cloudctl("service", "status", ok=False)
        assert status.returncode == 1 and status.stdout == ""
        mismatch = (
            f"Error: host key of {c.host} does not match {known} "
            f"(cloudctl host trust --replace {c.host} after checking it)"
        )
        assert errors(status) == [mismatch]

        refused = c.cloudctl("host", "trust", ok=False)
        assert refused.returncode == 1 and known.read_text() == changed
        both = (
            f"Error: host key of {c.host} ({address}) changed: known "
            f"{fingerprint(other.with_suffix('.pub'))}, offered {lab_fp}; check it, then "
            f"cloudctl host trust --replace {c.host}"
        )
        assert errors(refused) == [both]

        replaced = c.cloudctl("-o", "json", "host", "trust", "--replace", c.host)
        assert [(r["fingerprint"], r["status"]) for r in json.loads(replaced.stdout)] == [
            (lab_fp, "replaced")
        ]
        assert known.read_text() == good
        c.cloudctl("service", "status")

        known.unlink()
        new_connections("unknown")
        status = c.cloudctl("service", "status", ok=False)
        assert errors(status) == [
            f"Error: host key of {c.host} is unknown (cloudctl host trust {c.host})"
        ]
        trusted = c.cloudctl("host", "trust")
        assert trusted.stdout.splitlines()[1].split() == [
            c.host, address, "ssh-ed25519", lab_fp, "added"
        ]  # fmt: skip
        assert errors(trusted) == [f"Host keys: {known}"]
        assert known.read_text() == good
        c.cloudctl("service", "status")
    finally:
        known.write_text(good)

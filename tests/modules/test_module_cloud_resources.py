"""The cloud_resources module (read only) in a network namespace of the test's own: the
elastic IP rules and firewall chains it finds there, reservations and backing stores from
the role files it is given; nothing for a role that is not deployed."""

from __future__ import annotations

import json
import subprocess

import pytest
from modhelpers import run_module

pytestmark = pytest.mark.integration


def test_finds_what_the_cloud_made(tmp_path, netns):
    def in_ns(*command: str) -> None:
        subprocess.run(["ip", "netns", "exec", netns, *command], check=True)

    in_ns("iptables", "-w", "-t", "nat", "-N", "CLOUD-EIP-PRE")
    in_ns("iptables", "-w", "-t", "nat", "-A", "CLOUD-EIP-PRE", "-d", "198.51.100.16/32",
          "-m", "comment", "--comment", "cloud-eip 198.51.100.16 i-0a1b2c3d",
          "-j", "DNAT", "--to-destination", "172.31.0.5")  # fmt: skip
    in_ns("iptables", "-w", "-N", "cloud-i-0a1b2c3d")
    hosts_dir, volume_dir = tmp_path / "hosts", tmp_path / "volumes"
    hosts_dir.mkdir()
    volume_dir.mkdir()
    (hosts_dir / "i-0a1b2c3d").write_text("52:54:00:aa:00:01,172.31.0.5,i-0a1b2c3d\n")
    (hosts_dir / "notes.txt").write_text("not a reservation\n")
    (volume_dir / "vol-0a1b2c3d.img").write_bytes(b"")
    cc, sc = tmp_path / "cc.json", tmp_path / "sc.json"
    cc.write_text(json.dumps({"zones": {"zone-a": {"hosts_dir": str(hosts_dir)}}}))
    sc.write_text(json.dumps({"iqn_prefix": "iqn.2026-11.test", "volume_dir": str(volume_dir)}))
    args = {"node_config": str(tmp_path / "absent.json"), "cc_config": str(cc),
            "sc_config": str(sc)}  # fmt: skip

    for check in (False, True):
        result = run_module(tmp_path, "cloud_resources", args, check=check,
                            wrapper=["ip", "netns", "exec", netns])  # fmt: skip
        assert not result.get("failed"), result
        assert result["changed"] is False and result["nc"] is None
        assert result["cc"] == {
            "reservations": {"zone-a": ["i-0a1b2c3d"]},
            "elastic_ips": [{"public_ip": "198.51.100.16", "private_ip": "172.31.0.5",
                             "instance": "i-0a1b2c3d"}],
        }  # fmt: skip
        assert result["sc"]["stores"] == ["vol-0a1b2c3d"]

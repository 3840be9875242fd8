"""The keepalived role's filters (the HA pairs of an inventory) and the arbitrator's rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_file

COLLECTION = Path(__file__).resolve().parents[2] / "collections/ansible_collections/cloudctl/cloud"


vrrp = load_file("vrrp_filters", COLLECTION / "plugins/filter/vrrp.py")
arbitrator = load_file("arbitrator", COLLECTION / "roles/keepalived/files/arbitrator.py")

GROUPS = {"clc": ["ha1", "ha2"], "walrus": ["ha1", "ha2"], "cc": ["ha1", "ha2", "cc3"],
          "witness": ["wit"]}  # fmt: skip
HOSTS = {"ha1": {"cloud_cluster": "zone-a"}, "ha2": {"cloud_cluster": "zone-a"},
         "cc3": {"cloud_cluster": "zone-b"}}  # fmt: skip
CLUSTERS = {"zone-a": {"subnet": "172.31.7.0/24", "bridge": "cloudbr0"},
            "zone-b": {"subnet": "172.31.8.0/24", "bridge": "cloudbr1"}}  # fmt: skip
ADDRESSES = {"ha1": "10.213.0.11", "ha2": "10.213.0.12", "cc3": "10.213.0.13"}


def test_pairs_from_the_inventory():
    pairs = vrrp.vrrp_pairs(GROUPS, HOSTS, CLUSTERS, "10.213.0.100", "10.213.0.101")
    assert pairs == [
        {"name": "clc", "hosts": ["ha1", "ha2"], "vip": "10.213.0.100", "prefix": None,
         "interface": "", "router_id": 51},
        {"name": "walrus", "hosts": ["ha1", "ha2"], "vip": "10.213.0.101", "prefix": None,
         "interface": "", "router_id": 52},
        # zone-b has one CC: no pair, no address moves.
        {"name": "cc-zone-a", "hosts": ["ha1", "ha2"], "vip": "172.31.7.1", "prefix": 24,
         "interface": "cloudbr0", "router_id": 60},
    ]  # fmt: skip


def test_single_hosts_and_missing_addresses_make_no_pair():
    groups = {"clc": ["a"], "walrus": ["a", "b"], "cc": ["a"]}
    assert (
        vrrp.vrrp_pairs(groups, {"a": {"cloud_cluster": "zone-a"}}, CLUSTERS, "10.0.0.9", "") == []
    )


def test_instances_of_each_host_with_peer_and_priority():
    pairs = vrrp.vrrp_pairs(GROUPS, HOSTS, CLUSTERS, "10.213.0.100", "")
    first = vrrp.vrrp_instances("ha1", pairs, ADDRESSES)
    second = vrrp.vrrp_instances("ha2", pairs, ADDRESSES)
    assert [(i["name"], i["peers"], i["priority"]) for i in first] == [
        ("clc", ["10.213.0.12"], 150), ("cc-zone-a", ["10.213.0.12"], 150)]  # fmt: skip
    assert [(i["name"], i["peers"], i["priority"]) for i in second] == [
        ("clc", ["10.213.0.11"], 100), ("cc-zone-a", ["10.213.0.11"], 100)]  # fmt: skip
    assert vrrp.vrrp_instances("cc3", pairs, ADDRESSES) == []


def test_a_bad_subnet_names_the_zone():
    with pytest.raises(Exception, match="cloud_clusters.zone-a.subnet"):
        vrrp.vrrp_pairs(GROUPS, HOSTS, {"zone-a": {"subnet": "172.31.7.5/24"}})


@pytest.mark.parametrize(("results", "verdict", "code"), [
    ({"icmp:a": True, "tcp:b:1": True}, "ok", 0),
    ({"icmp:a": True, "tcp:b:1": False}, "some-failed", 0),
    ({"icmp:a": False, "tcp:b:1": False}, "all-failed", 1),
])  # fmt: skip
def test_arbitrator_gives_up_only_when_every_probe_fails(
    tmp_path, monkeypatch, results, verdict, code
):
    config = tmp_path / "arbitrator.json"
    config.write_text(json.dumps({"targets": list(results), "status_file": str(tmp_path / "status.json"),
                                  "log_file": str(tmp_path / "arbitrator.log")}))  # fmt: skip
    monkeypatch.setattr(arbitrator, "probe", lambda target, timeout: results[target])
    assert arbitrator.main(str(config)) == code
    assert json.loads((tmp_path / "status.json").read_text())["verdict"] == verdict
    arbitrator.main(str(config))  # the same result again: no second log line
    assert len((tmp_path / "arbitrator.log").read_text().splitlines()) == 1


def test_arbitrator_probes_for_real(tmp_path):
    """A TCP probe to a listening loopback port answers; to a closed one it fails; ICMP to
    loopback answers (ping is Debian's iputils-ping)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert arbitrator.probe(f"tcp:127.0.0.1:{port}")
    assert not arbitrator.probe(f"tcp:127.0.0.1:{port}")
    assert arbitrator.probe("icmp:127.0.0.1")
    assert not arbitrator.probe("udp:127.0.0.1:53")


def test_arbitrator_service_keeps_keepalived_track_file(tmp_path, monkeypatch):
    """fall 1: the first check of all probes failing writes 1; rise 2: two good ones write 0."""
    track = tmp_path / "run/arbitrator.track"
    config = tmp_path / "arbitrator.json"
    config.write_text(json.dumps({"track_file": str(track), "status_file": str(track.parent / "s"),
                                  "interval": 0, "fall": 1, "rise": 2}))  # fmt: skip
    verdicts = iter(["ok", "all-failed", "some-failed", "ok", "ok", "all-failed"])
    monkeypatch.setattr(arbitrator, "check", lambda config: {"verdict": next(verdicts)})
    written = []
    monkeypatch.setattr(arbitrator.time, "sleep", lambda s: written.append(track.read_text()))
    with pytest.raises(StopIteration):  # the checks above, then the loop ends
        arbitrator.watch(str(config))
    assert [w.strip() for w in written] == ["0", "1", "1", "0", "0", "1"]

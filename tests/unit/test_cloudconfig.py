"""The cloud configuration cloudctl reads (cloudctl/cloudconfig.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloudctl.cloudconfig import (
    ETCD_COPIES,
    Api,
    config_path,
    load_config,
    point_at_copies,
    public_ip_candidates,
)
from cloudctl.config import EtcdState, Settings, fetched_state, with_fetched_state
from cloudctl.errors import ConfigError, InputError

CONFIG = {
    "cloud_name": "test",
    "clusters": {
        "zone-b": {"subnet": "10.1.0.0/24", "bridge": "br1", "gateway": "10.1.0.1",
                   "cc": "cc2", "sc": ["sc2"], "nc": [], "nodes": {}},
        "zone-a": {"subnet": "10.0.0.0/24", "bridge": "br0", "gateway": "10.0.0.1",
                   "cc": "cc1", "sc": ["sc1"], "nc": ["n1"],
                   "nodes": {"n1": {"vcpus": 8, "memory_mb": 4096}}},
    },
    "instance_types": [{"name": "m1.small", "cpus": 1, "memory_mb": 128, "disk_gb": 2}],
    "walrus": {"endpoint": "http://127.0.0.1:8773", "access_key": "AK", "secret_key": "SK"},
}  # fmt: skip


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "cloud.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_load(tmp_path):
    config = load_config(write(tmp_path, CONFIG))
    assert config.zone_or_default(None) == "zone-a"
    assert config.cluster("zone-a").nodes[0].vcpus == 8
    assert config.instance_type("m1.small").memory_mb == 128
    assert config.scheduling_policy == "roundrobin"
    assert "SK" not in repr(config.walrus)


@pytest.mark.parametrize("edit, words", [
    (lambda c: c.pop("walrus"), "walrus"),
    (lambda c: c["clusters"]["zone-a"].pop("subnet"), "subnet"),
    (lambda c: c.update(scheduling_policy="random"), "scheduling_policy"),
])  # fmt: skip
def test_malformed_config_is_one_clear_line(tmp_path, edit, words):
    data = yaml.safe_load(yaml.safe_dump(CONFIG))
    edit(data)
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, data))


def test_unknown_zone_and_type_name_the_known_ones(tmp_path):
    config = load_config(write(tmp_path, CONFIG))
    with pytest.raises(InputError, match="zone-a, zone-b"):
        config.cluster("zone-c")
    with pytest.raises(InputError, match="m1.small"):
        config.instance_type("m9.huge")


def test_config_path_order(tmp_path):
    settings = Settings(project_dir=tmp_path, inventory=tmp_path, home=tmp_path / "home")
    assert config_path(settings, {"CLOUDCTL_CONFIG": "/x/cloud.yml"}) == Path("/x/cloud.yml")
    if not Path("/etc/cloud/cloud.yml").exists():
        assert config_path(settings, {}) is None  # must be fetched from the CLC
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "cloud.yml").write_text("{}")
        assert config_path(settings, {}) == tmp_path / "home" / "cloud.yml"


def test_cluster_public_side_defaults_when_absent(tmp_path):
    """Files written before elastic IPs existed still load: no pool, no public interface."""
    cluster = load_config(write(tmp_path, CONFIG)).cluster("zone-a")
    assert cluster.public_ips == ""
    assert cluster.public_interface == ""
    assert list(public_ip_candidates(cluster.public_ips)) == []


def test_cluster_public_ips_and_interface(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(CONFIG))
    data["clusters"]["zone-a"].update(public_ips="198.51.100.0/29", public_interface="eth1")
    cluster = load_config(write(tmp_path, data)).cluster("zone-a")
    assert cluster.public_ips == "198.51.100.0/29"
    assert cluster.public_interface == "eth1"


@pytest.mark.parametrize("pool, expected", [
    ("198.51.100.0/30", ["198.51.100.1", "198.51.100.2"]),
    ("198.51.100.0/28", [f"198.51.100.{i}" for i in range(1, 15)]),
    ("198.51.100.7/32", ["198.51.100.7"]),
    ("198.51.100.250-198.51.101.2", ["198.51.100.250", "198.51.100.251", "198.51.100.252",
                                     "198.51.100.253", "198.51.100.254", "198.51.100.255",
                                     "198.51.101.0", "198.51.101.1", "198.51.101.2"]),
    (" 203.0.113.9 - 203.0.113.9 ", ["203.0.113.9"]),
    ("", []),
])  # fmt: skip
def test_public_ip_candidates(pool, expected):
    assert list(public_ip_candidates(pool)) == expected


@pytest.mark.parametrize("pool", [
    "198.51.100.1/28",  # host bits set
    "198.51.100.9-198.51.100.3",  # ends before it starts
    "198.51.100.0/33",
    "2001:db8::/64",
    "not-an-address",
    "198.51.100.1",  # neither a CIDR nor a range: a single address is "A/32"
])  # fmt: skip
def test_public_ip_candidates_rejects(pool):
    with pytest.raises(ValueError):
        list(public_ip_candidates(pool))


def test_malformed_pool_is_one_clear_line(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(CONFIG))
    data["clusters"]["zone-b"]["public_ips"] = "198.51.100.9-198.51.100.3"
    with pytest.raises(
        ConfigError, match=r"clusters.zone-b.public_ips '198.51.100.9-198.51.100.3'"
    ):
        load_config(write(tmp_path, data))


def test_the_fetched_copy_names_the_fetched_ca(tmp_path):
    api = {"endpoint": "https://10.0.0.5:8773/", "region": "eucalyptus",
           "ca_file": "/etc/cloud/clc/tls/ca.crt"}  # fmt: skip
    copy = write(tmp_path, {**CONFIG, "api": api})
    (tmp_path / "ca.crt").write_text("CA")
    point_at_copies(copy, tmp_path / "ca.crt", tmp_path / "etcd")
    config = load_config(copy)
    assert config.api == Api("https://10.0.0.5:8773/", "eucalyptus", str(tmp_path / "ca.crt"))
    assert config.walrus.secret_key == "SK"
    assert copy.stat().st_mode & 0o777 == 0o600


def test_the_fetched_copy_names_the_fetched_etcd_client_files(tmp_path):
    """A CLC pair: cloudctl away from the CLCs works on the state in etcd with the copies of
    the CA, client certificate and key fetched beside cloud.yml (0600)."""
    state = {"backend": "etcd", "endpoints": ["https://10.0.0.5:2379"], "prefix": "/cloudctl/c/",
             "ca_file": "/etc/cloud/etcd/tls/ca.crt", "cert_file": "/etc/cloud/etcd/tls/etcd.crt",
             "key_file": "/etc/cloud/etcd/tls/etcd.key"}  # fmt: skip
    copy = write(tmp_path, {**CONFIG, "cloud_id": "c", "state": state})
    etcd_dir = tmp_path / "etcd"
    etcd_dir.mkdir()
    for name in ETCD_COPIES.values():
        (etcd_dir / name).write_text(name)
    point_at_copies(copy, tmp_path / "ca.crt", etcd_dir)
    etcd = fetched_state(tmp_path)
    assert etcd == EtcdState(("https://10.0.0.5:2379",), "/cloudctl/c/",
                             str(etcd_dir / "ca.crt"), str(etcd_dir / "client.crt"),
                             str(etcd_dir / "client.key"))  # fmt: skip
    assert (etcd_dir / "client.key").stat().st_mode & 0o777 == 0o600
    home_settings = Settings(project_dir=tmp_path, inventory=tmp_path, home=tmp_path)
    assert with_fetched_state(home_settings).state_etcd == etcd
    chosen = Settings(project_dir=tmp_path, inventory=tmp_path, home=tmp_path,
                      state_path=tmp_path / "other.json")  # fmt: skip
    assert with_fetched_state(chosen).state_etcd is None  # $CLOUDCTL_STATE wins

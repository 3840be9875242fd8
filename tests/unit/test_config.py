from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from cloudctl.config import (
    EtcdState,
    NamedCloud,
    add_cloud,
    clc_state,
    load_clouds,
    parse_state,
    remove_cloud,
    resolve_settings,
)
from cloudctl.errors import ConfigError, InputError
from cloudctl.state import EtcdStore, StateStore, open_store

PROJECT = Path(__file__).resolve().parents[2]


def test_project_found_from_the_package(tmp_path):
    inventory = tmp_path / "inv.yml"
    inventory.write_text("all: {}\n")
    env = {"CLOUDCTL_HOME": str(tmp_path / "home"), "CLOUDCTL_INVENTORY": str(inventory)}
    settings = resolve_settings(env=env)
    assert settings.project_dir == PROJECT
    assert settings.inventory == inventory
    assert settings.home == tmp_path / "home"
    assert settings.state_path == tmp_path / "home" / "state.json"
    assert settings.ansible_cfg == PROJECT / "ansible.cfg"


def test_no_cloud_chosen_is_one_clear_line(tmp_path):
    """No named cloud, no inventory: never a default inventory and an empty state."""
    env = {"CLOUDCTL_CLOUDS": str(tmp_path / "clouds.yaml")}
    with pytest.raises(ConfigError, match=r"no cloud chosen: add one with `cloudctl cloud add"):
        resolve_settings(env=env)


def test_named_clouds(tmp_path):
    clouds = tmp_path / "cfg" / "clouds.yaml"
    env = {"CLOUDCTL_CLOUDS": str(clouds)}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        assert add_cloud(clouds, NamedCloud(name, tmp_path / name, tmp_path / f"home-{name}"))
    assert stat.S_IMODE(clouds.stat().st_mode) == 0o600
    # The first cloud named is the default; the same entry again changes nothing.
    assert not add_cloud(clouds, NamedCloud("a", tmp_path / "a", tmp_path / "home-a"))
    settings = resolve_settings(env=env)
    assert (settings.cloud, settings.inventory, settings.home) == (
        "a",
        tmp_path / "a",
        tmp_path / "home-a",
    )
    assert settings.state_path == tmp_path / "home-a" / "state.json"
    assert resolve_settings(env=env, cloud="b").inventory == tmp_path / "b"
    assert resolve_settings(env={**env, "CLOUDCTL_CLOUD": "b"}).home == tmp_path / "home-b"
    # An explicit state or home beats the named cloud's.
    state = tmp_path / "elsewhere.json"
    assert resolve_settings(env={**env, "CLOUDCTL_STATE": str(state)}).state_path == state
    with pytest.raises(ConfigError, match=r"no cloud named 'c' in .*clouds.yaml \(clouds: a, b\)"):
        resolve_settings(env=env, cloud="c")
    with pytest.raises(InputError, match="already named"):
        add_cloud(clouds, NamedCloud("a", tmp_path / "b", tmp_path / "home-a"))
    with pytest.raises(InputError, match="cloud name"):
        add_cloud(clouds, NamedCloud("{{ x }}", tmp_path / "b", tmp_path / "home-x"))
    assert add_cloud(
        clouds, NamedCloud("b", tmp_path / "b", tmp_path / "home-b"), make_default=True
    )
    assert resolve_settings(env=env).cloud == "b"
    remove_cloud(clouds, "b")
    assert load_clouds(clouds) == ("", {"a": NamedCloud("a", tmp_path / "a", tmp_path / "home-a")})


def test_option_beats_environment(tmp_path):
    (tmp_path / "a.yml").write_text("all: {}\n")
    (tmp_path / "b.yml").write_text("all: {}\n")
    env = {"CLOUDCTL_INVENTORY": str(tmp_path / "b.yml")}
    assert resolve_settings(tmp_path / "a.yml", env=env).inventory == tmp_path / "a.yml"
    assert resolve_settings(env=env).inventory == tmp_path / "b.yml"


def test_missing_inventory_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match=r"inventory .*nope does not exist") as info:
        resolve_settings(tmp_path / "nope", env={})
    assert "\n" not in str(info.value)


def test_project_from_environment_must_be_a_project(tmp_path):
    with pytest.raises(ConfigError, match="CLOUDCTL_PROJECT"):
        resolve_settings(env={"CLOUDCTL_PROJECT": str(tmp_path)})
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    (tmp_path / "collections/ansible_collections/cloudctl/cloud").mkdir(parents=True)
    (tmp_path / "inv").mkdir()
    settings = resolve_settings(
        env={"CLOUDCTL_PROJECT": str(tmp_path), "CLOUDCTL_INVENTORY": str(tmp_path / "inv")}
    )
    assert settings.project_dir == tmp_path


def test_home_and_runs_are_private(tmp_path):
    settings = resolve_settings(
        env={"CLOUDCTL_HOME": str(tmp_path / "h"), "CLOUDCTL_INVENTORY": str(tmp_path)}
    )
    runs = settings.ensure_home()
    assert runs == tmp_path / "h" / "runs"
    for path in (tmp_path / "h", runs):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


# --- where the state is: the TinyDB file or etcd (cloud.yml's or the clouds file's state:) --

ETCD = {"backend": "etcd", "endpoints": ["https://10.0.0.1:2379/", "https://10.0.0.2:2379"],
        "ca_file": "/etc/cloud/ca.crt", "cert_file": "/c.crt", "key_file": "/c.key"}  # fmt: skip


def test_parse_state():
    assert parse_state(None, "x") is None
    assert parse_state({"backend": "tinydb"}, "x") is None
    etcd = parse_state(ETCD, "x", cloud_id="cloud-0123")
    assert etcd == EtcdState(("https://10.0.0.1:2379", "https://10.0.0.2:2379"),
                             "/cloudctl/cloud-0123/", "/etc/cloud/ca.crt", "/c.crt", "/c.key")  # fmt: skip
    assert parse_state(etcd.mapping(), "x") == etcd  # what the clouds file keeps reads back
    assert str(etcd) == (
        "etcd prefix /cloudctl/cloud-0123/ at https://10.0.0.1:2379, https://10.0.0.2:2379"
    )
    plain = parse_state(
        {"backend": "etcd", "endpoints": "http://a:1,http://b:2", "prefix": "/p/"}, "x"
    )
    assert plain.endpoints == ("http://a:1", "http://b:2") and plain.ca_file is None
    for bad, says in (
        ({"backend": "zookeeper"}, "backend tinydb or etcd"),
        ({"backend": "etcd", "endpoints": ["10.0.0.1:2379"], "prefix": "/p/"}, "client URLs"),
        ({"backend": "etcd", "endpoints": ["http://a:1"]}, "prefix must start and end"),
        ({**ETCD, "prefix": "p"}, "prefix must start and end"),
        ({**ETCD, "prefix": "/p/", "key_file": None}, "go together"),
        ("etcd", "must be a mapping"),
    ):
        with pytest.raises(ConfigError, match=says):
            parse_state(bad, "cloud.yml")


def test_a_named_cloud_with_its_state_in_etcd(tmp_path):
    clouds = tmp_path / "clouds.yaml"
    (tmp_path / "inv").mkdir()
    etcd = parse_state({**ETCD, "prefix": "/cloudctl/c/"}, "x")
    add_cloud(clouds, NamedCloud("pair", tmp_path / "inv", tmp_path / "home", etcd))
    assert load_clouds(clouds)[1]["pair"].state == etcd
    settings = resolve_settings(env={"CLOUDCTL_CLOUDS": str(clouds)})
    assert settings.state_etcd == etcd
    assert settings.state_path == tmp_path / "home" / "state.json"  # what migrate copies
    assert settings.state_location == str(etcd)
    assert isinstance(open_store(settings), EtcdStore)
    # $CLOUDCTL_STATE names a file: the TinyDB file, whatever the clouds file says.
    env = {"CLOUDCTL_CLOUDS": str(clouds), "CLOUDCTL_STATE": str(tmp_path / "s.json")}
    settings = resolve_settings(env=env)
    assert settings.state_etcd is None and isinstance(open_store(settings), StateStore)


def test_a_clc_pair_reads_its_state_from_cloud_yml(tmp_path, monkeypatch):
    config = tmp_path / "cloud.yml"
    monkeypatch.setattr("cloudctl.config.CLC_CONFIG", config)
    config.write_text(yaml.safe_dump({"cloud_id": "cloud-0123", "state_dir": "/var/lib/c"}))
    assert clc_state() == (Path("/var/lib/c/state.json"), None)  # one CLC: the file
    config.write_text(yaml.safe_dump({"cloud_id": "cloud-0123", "state_dir": "/var/lib/c",
                                      "state": ETCD}))  # fmt: skip
    path, etcd = clc_state()
    assert path == Path("/var/lib/c/state.json") and etcd.prefix == "/cloudctl/cloud-0123/"

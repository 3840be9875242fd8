from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cloudctl.config import resolve_settings
from cloudctl.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[2]


def test_project_found_from_the_package_and_default_inventory(tmp_path):
    settings = resolve_settings(env={"CLOUDCTL_HOME": str(tmp_path / "home")})
    assert settings.project_dir == PROJECT
    assert settings.inventory == PROJECT / "inventory" / "ciab"
    assert settings.home == tmp_path / "home"
    assert settings.ansible_cfg == PROJECT / "ansible.cfg"


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
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "inventory" / "ciab").mkdir(parents=True)
    settings = resolve_settings(env={"CLOUDCTL_PROJECT": str(tmp_path)})
    assert settings.project_dir == tmp_path
    assert settings.inventory == tmp_path / "inventory" / "ciab"


def test_home_and_runs_are_private(tmp_path):
    settings = resolve_settings(env={"CLOUDCTL_HOME": str(tmp_path / "h")})
    runs = settings.ensure_home()
    assert runs == tmp_path / "h" / "runs"
    for path in (tmp_path / "h", runs):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700

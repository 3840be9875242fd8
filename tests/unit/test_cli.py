"""CLI parsing, rendering and error mapping (a fake runner), and service status for real."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import cloudctl.deploy
from cloudctl.cli.main import cli
from cloudctl.deploy import parse_extravars
from cloudctl.errors import HostFailed, HostUnreachable, InputError
from cloudctl.runner import HostStats, PlayResult


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    a:\n    b:\n")  # the hosts of fake_result
    monkeypatch.setenv("CLOUDCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDCTL_INVENTORY", str(inventory))
    monkeypatch.delenv("CLOUDCTL_PROJECT", raising=False)
    return {"inventory": str(inventory)}


def fake_result(tmp_path: Path, failures=()) -> PlayResult:
    return PlayResult(
        status="failed" if failures else "successful",
        rc=2 if failures else 0,
        run_dir=tmp_path,
        artifact_dir=tmp_path,
        stats={
            "a": HostStats("a", ok=5, changed=2),
            "b": HostStats("b", ok=1, failed=int(bool(failures))),
        },
        failures=list(failures),
    )


@pytest.fixture
def calls(monkeypatch, tmp_path) -> list[dict]:
    """Replace run_playbook behind `cloudctl deploy`; record its arguments."""
    seen: list[dict] = []

    def fake_run(settings, playbook, **kwargs):
        seen.append({"playbook": playbook, **kwargs})
        return fake_result(tmp_path, kwargs["extravars"].get("fail_with", []))

    monkeypatch.setattr(cloudctl.deploy, "run_playbook", fake_run)
    monkeypatch.setattr(cloudctl.deploy, "record_cloud", lambda settings: (settings, False, None))
    return seen


def test_parse_extravars():
    assert parse_extravars(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in ("novalue", "=x", "bad key=1"):
        with pytest.raises(InputError, match="is not KEY=VALUE"):
            parse_extravars([bad])


def test_deploy_passes_options_and_prints_a_summary(env, calls):
    result = CliRunner().invoke(
        cli, ["deploy", "--check", "--limit", "nc", "--tags", "net", "-e", "a=1", "-e", "b=2"]
    )
    assert result.exit_code == 0, result.output
    [call] = calls
    assert call["playbook"] == "cloudctl.cloud.site"
    assert call["check"] is True and call["operation"] == "deploy-check"
    assert (call["limit"], call["tags"]) == ("nc", "net")
    assert call["extravars"] == {"a": "1", "b": "2"}
    assert call["progress"] is None  # stdout is not a terminal
    assert result.stdout.splitlines() == [
        "HOST  OK  CHANGED  FAILED  UNREACHABLE",
        "a     5   2        0       0",
        "b     1   0        0       0",
    ]
    assert "Check mode" in result.stderr


@pytest.mark.parametrize("args", [["-o", "json", "deploy"], ["deploy", "-o", "json"]])
def test_output_option_global_or_on_the_command(env, calls, args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0] == {
        "host": "a",
        "ok": 5,
        "changed": 2,
        "failed": 0,
        "unreachable": 0,
    }


def test_deploy_failure_one_line_per_failed_host(env, monkeypatch, tmp_path):
    failures = [HostFailed("b", "Start tgtd", "unit failed"), HostUnreachable("c", "no route")]
    monkeypatch.setattr(
        cloudctl.deploy, "run_playbook", lambda *a, **k: fake_result(tmp_path, failures)
    )
    result = CliRunner().invoke(cli, ["-o", "yaml", "deploy"])
    assert result.exit_code == 1
    assert yaml.safe_load(result.stdout)[1]["failed"] == 1
    assert result.stderr.splitlines() == [
        "Error: b: task 'Start tgtd' failed: unit failed",
        "Error: c: unreachable: no route",
    ]


def test_errors_are_one_line_and_mapped_to_exit_codes(env, calls, tmp_path):
    result = CliRunner().invoke(cli, ["deploy", "-e", "oops"])
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: extra variable 'oops' is not KEY=VALUE\n",
    )
    result = CliRunner().invoke(cli, ["--inventory", str(tmp_path / "none"), "deploy"])
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: inventory ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(env, tmp_path):
    result = CliRunner().invoke(cli, ["--debug", "--inventory", str(tmp_path / "none"), "deploy"])
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_usage_errors_and_version():
    assert CliRunner().invoke(cli, ["-o", "xml", "deploy"]).exit_code == 2
    assert CliRunner().invoke(cli, ["nosuch"]).exit_code == 2
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("cloudctl, version ")


def test_service_status_for_real(tmp_path, monkeypatch):
    """The runtime play and cloud_health on localhost: a CLC whose venv is this one."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "cloud.yml").write_text("cloud_name: test\n")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "box": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "clc_venv": str(Path(sys.executable).parent.parent),
                            "cloud_config_dir": str(config_dir),
                            "clc_api_enabled": False,  # no API service to ask
                        }
                    },
                    "children": {"cloud": {"children": {"clc": {"hosts": {"box": None}}}}},
                }
            }
        )
    )
    monkeypatch.setenv("CLOUDCTL_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    result = runner.invoke(cli, ["--inventory", str(inventory), "-o", "json", "service", "status"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert (row["host"], row["component"], row["status"]) == ("box", "clc", "healthy")
    assert "cloudctl, version" in row["detail"]

    (config_dir / "cloud.yml").unlink()
    result = runner.invoke(cli, ["--inventory", str(inventory), "service", "status"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["HOST", "COMPONENT", "STATUS", "DETAIL"]
    assert lines[1].split()[:3] == ["box", "clc", "unhealthy"] and "is missing" in lines[1]
    assert result.stderr == "Error: 1 of 1 components are not healthy\n"

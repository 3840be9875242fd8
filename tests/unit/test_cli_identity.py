"""cloudctl account / user / user key / quota / tag / --as on a real state file (no cloud:
these commands change the state only)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cloudctl.cli.main import cli
from tests.unit.helpers import init_state


@pytest.fixture
def run(tmp_path, monkeypatch):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    a:\n")
    home = tmp_path / "home"
    init_state(home / "state.json")
    monkeypatch.setenv("CLOUDCTL_HOME", str(home))
    monkeypatch.setenv("CLOUDCTL_INVENTORY", str(inventory))
    monkeypatch.delenv("CLOUDCTL_PROJECT", raising=False)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result

    invoke.state = home / "state.json"
    return invoke


def test_accounts_users_keys(run):
    run("account", "create", "dev")
    run("user", "create", "dev/alice")
    created = json.loads(run("user", "key", "create", "dev/alice", "-o", "json").stdout)[0]
    assert created["access_key_id"].startswith("AKI") and len(created["secret_access_key"]) == 40
    assert created["secret_access_key"] not in run.state.read_text()
    listed = json.loads(run("user", "key", "list", "dev/alice", "-o", "json").stdout)
    assert [k["access_key_id"] for k in listed] == [created["access_key_id"]]
    assert "secret" not in run("user", "key", "list", "-o", "json").stdout
    run("user", "key", "deactivate", created["access_key_id"])
    assert json.loads(run("user", "key", "list", "-o", "json").stdout)[0]["status"] == "Inactive"
    names = [a["name"] for a in json.loads(run("account", "list", "-o", "json").stdout)]
    assert names == ["admin", "dev"]
    bad = run("account", "create", "Dev_1", ok=False)
    assert bad.output.startswith("Error: bad account name") and bad.output.count("\n") == 1
    assert run("user", "create", "nope/bob", ok=False).output == (
        "Error: account nope does not exist\n"
    )


def test_as_user_scopes_and_quotas_refuse_in_one_line(run):
    run("account", "create", "dev")
    run("account", "create", "ops")
    run("user", "create", "dev/alice")
    run("quota", "set", "dev", "ec2:quota-securitygroupnumber", "1")
    run("--as", "dev/alice", "group", "create", "web")
    before = run.state.read_bytes()
    refused = run("--as", "dev/alice", "group", "create", "db", ok=False)
    assert refused.exit_code == 5
    assert refused.output == (
        "Error: quota ec2:quota-securitygroupnumber of account dev is 1: 1 in use, 1 more asked\n"
    )
    assert run.state.read_bytes() == before  # nothing half-created
    run("--as", "ops", "group", "create", "web")  # names are per account
    mine = json.loads(run("--as", "dev/alice", "group", "list", "-o", "json").stdout)
    assert {(g["name"], g["account"]) for g in mine} == {("default", "dev"), ("web", "dev")}
    everything = json.loads(run("group", "list", "-o", "json").stdout)  # the admin sees all
    assert {g["account"] for g in everything} == {"admin", "dev", "ops"}
    ops_web = next(g["id"] for g in everything if g["account"] == "ops" and g["name"] == "web")
    assert run("--as", "dev/alice", "group", "show", ops_web, ok=False).output == (
        f"Error: security group '{ops_web}' does not exist\n"
    )
    assert run("--as", "dev/nobody", "group", "list", ok=False).output == (
        "Error: user dev/nobody does not exist (--as)\n"
    )
    shown = {r["key"]: r for r in json.loads(run("quota", "show", "dev", "-o", "json").stdout)}
    assert shown["ec2:quota-securitygroupnumber"] == {
        "key": "ec2:quota-securitygroupnumber", "limit": 1, "used": 1}  # fmt: skip
    run("quota", "set", "dev", "ec2:quota-securitygroupnumber", "none")
    run("--as", "dev/alice", "group", "create", "db")


def test_tags(run):
    run("account", "create", "dev")
    run("--as", "dev", "group", "create", "web")
    group = json.loads(run("--as", "dev", "group", "show", "web", "-o", "json").stdout)[0]["id"]
    run("--as", "dev", "tag", "set", group, "role=web server", "env=")
    rows = json.loads(run("--as", "dev", "tag", "list", "-o", "json").stdout)
    assert [(r["key"], r["value"]) for r in rows] == [("env", ""), ("role", "web server")]
    assert run("--as", "ops-none", "tag", "list", ok=False).exit_code != 0
    run("--as", "dev", "tag", "unset", group, "role=other", "env")  # role: value differs
    rows = json.loads(run("tag", "list", "-o", "json").stdout)
    assert [(r["resource_id"], r["key"]) for r in rows] == [(group, "role")]
    assert run("tag", "set", group, "aws:x=1", ok=False).output.startswith(
        "Error: tag key 'aws:x': keys starting with aws: are reserved"
    )
    assert run("tag", "set", "i-0000dead", "a=b", ok=False).output == (
        "Error: instance i-0000dead does not exist\n"
    )

"""Events: real one-host plays run through cloudctl.runner into a temp home, read back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudctl.cli.main import cli
from cloudctl.config import Settings
from cloudctl.errors import InputError
from cloudctl.events import REDACTED, list_events, redact, show_event
from cloudctl.runner import run_playbook
from tests.unit.helpers import init_state

PROJECT = Path(__file__).resolve().parents[2]

PLAY_OK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.command: echo hello
    - name: Handle a secret
      ansible.builtin.debug:
        msg: "secret_key: hunter2"
      no_log: true
    - name: Report a password
      ansible.builtin.debug:
        msg: "password=hunter3 for db"
"""
PLAY_FAIL = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: Break
      ansible.builtin.command: sh -c 'echo broken pipe >&2; exit 3'
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Settings, dict[str, str]]:
    """Three real runs: deploy (ok), then test (failed), then deploy (ok)."""
    tmp = tmp_path_factory.mktemp("events")
    inventory = tmp / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n    box:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    settings = Settings(project_dir=PROJECT, inventory=inventory, home=tmp / "home")
    ids = {}
    for name, text, operation in (
        ("first", PLAY_OK, "deploy"),
        ("failed", PLAY_FAIL, "test"),
        ("last", PLAY_OK, "deploy"),
    ):
        play = tmp / f"{name}.yml"
        play.write_text(text)
        ids[name] = run_playbook(settings, play, operation=operation).event_id
    return settings, ids


def test_list_newest_first_with_filter_and_limit(runs):
    settings, ids = runs
    events = list_events(settings)
    assert [e["id"] for e in events] == [ids["last"], ids["failed"], ids["first"]]
    last, failed = events[0], events[1]
    assert (last["operation"], last["status"], last["hosts_failed"]) == ("deploy", "successful", [])
    assert (failed["operation"], failed["status"], failed["hosts_failed"]) == (
        "test",
        "failed",
        ["box"],
    )
    assert 0 < last["seconds"] < 120 and last["started"] >= failed["started"]
    assert [e["id"] for e in list_events(settings, operation="deploy")] == [
        ids["last"],
        ids["first"],
    ]
    assert [e["id"] for e in list_events(settings, limit=1)] == [ids["last"]]
    assert list_events(settings, operation="nope") == []


def test_show_results_per_task_and_host_without_secrets(runs):
    settings, ids = runs
    event = show_event(settings, ids["first"].upper())
    assert (event["id"], event["operation"], event["tasks"]) == (ids["first"], "deploy", 3)
    assert event["playbook"].endswith("first.yml") and event["rc"] == 0
    assert [(r["task"], r["host"], r["status"]) for r in event["results"]] == [
        ("Say hello", "box", "changed"),
        ("Handle a secret", "box", "ok"),
        ("Report a password", "box", "ok"),
    ]
    messages = [r["message"] for r in event["results"]]
    assert messages[0] == "hello"
    assert messages[1] == "output hidden (no_log)"
    assert messages[2] == f"password={REDACTED} for db"
    assert "hunter" not in json.dumps(event)

    failed = show_event(settings, ids["failed"])
    [result] = failed["results"]
    assert (result["status"], result["host"]) == ("failed", "box")
    assert "broken pipe" in result["message"] and "\n" not in result["message"]
    assert failed["failures"][0]["task"] == "Break"


def test_unknown_or_bad_ids(runs):
    settings, _ = runs
    with pytest.raises(InputError, match="event 0badc0de does not exist"):
        show_event(settings, "0badc0de")
    for bad in ("../../etc", "", "xyz"):
        with pytest.raises(InputError, match="bad event id"):
            show_event(settings, bad)


def test_an_interrupted_run_is_incomplete(tmp_path):
    settings = Settings(project_dir=PROJECT, inventory=tmp_path, home=tmp_path / "home")
    (settings.runs_dir / "20261122T010203Z-deploy-0123abcd" / "artifacts").mkdir(parents=True)
    [event] = list_events(settings)
    assert event == {
        "id": "0123abcd",
        "operation": "deploy",
        "started": "2026-11-22T01:02:03+00:00",
        "seconds": None,
        "status": "incomplete",
        "hosts_failed": [],
    }
    assert show_event(settings, "0123abcd")["results"] == []


def test_redact():
    record = {
        "key": "images/abc",
        "key_name": "mykey",
        "secret_key": "s1",
        "access_key": "AK",
        "nested": [{"db_password": "p", "token": "", "name": "x"}],
        "msg": 'walrus {"secret_key": "s2"} and api_token=t3, fine=ok',
    }
    assert redact(record) == {
        "key": "images/abc",
        "key_name": "mykey",
        "secret_key": REDACTED,
        "access_key": REDACTED,
        "nested": [{"db_password": REDACTED, "token": "", "name": "x"}],
        "msg": f'walrus {{"secret_key": {REDACTED}}} and api_token={REDACTED}, fine=ok',
    }


def test_cli(runs, monkeypatch):
    settings, ids = runs
    init_state(settings.state_path)
    monkeypatch.setenv("CLOUDCTL_HOME", str(settings.home))
    monkeypatch.setenv("CLOUDCTL_INVENTORY", str(settings.inventory))
    monkeypatch.delenv("CLOUDCTL_PROJECT", raising=False)

    def run(*args: str):
        return CliRunner().invoke(cli, list(args), prog_name="cloudctl")

    result = run("event", "list", "--limit", "2")
    assert result.exit_code == 0, result.output
    header, *body = result.stdout.splitlines()
    assert header.split() == ["ID", "OPERATION", "STARTED", "SECONDS", "STATUS", "HOSTS_FAILED"]
    assert [line.split()[0] for line in body] == [ids["last"], ids["failed"]]
    assert body[1].split()[-2:] == ["failed", "box"]

    result = run("-o", "json", "event", "list", "--operation", "test")
    assert [e["id"] for e in json.loads(result.stdout)] == [ids["failed"]]

    result = run("event", "show", ids["failed"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID", "OPERATION", "STARTED", "SECONDS", "STATUS", "TASKS", "HOSTS_FAILED",
    ]  # fmt: skip
    assert lines[3].split() == ["TASK", "HOST", "STATUS", "MESSAGE"]
    assert lines[4].split()[:3] == ["Break", "box", "failed"] and "broken pipe" in lines[4]

    [shown] = json.loads(run("event", "show", ids["first"], "-o", "json").stdout)
    assert shown["id"] == ids["first"] and len(shown["results"]) == 3

    result = run("event", "show", "0badc0de")
    assert result.exit_code == 2
    assert result.stderr == "Error: event 0badc0de does not exist (see `cloudctl event list`)\n"
    assert run("event", "list", "--limit", "0").exit_code == 2

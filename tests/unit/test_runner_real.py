"""run_playbook for real: one-task plays on localhost (connection local)."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import pytest

from cloudctl.errors import ConfigError, HostFailed
from cloudctl.runner import (
    PlayEvent,
    control_path_dir,
    previous_task_count,
    run_operation,
    run_playbook,
)


def write_play(tmp_path: Path, task: str) -> Path:
    path = tmp_path / "play.yml"
    path.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n{task}")
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_one_task_play(settings, tmp_path):
    play = write_play(
        tmp_path, ("    - name: Say hello\n      ansible.builtin.command: echo hello {{ who }}\n")
    )
    events: list[PlayEvent] = []
    result = run_playbook(
        settings, play, extravars={"who": "cloud"}, progress=events.append, operation="test"
    )
    assert result.ok, result
    assert (result.status, result.rc, result.tasks) == ("successful", 0, 1)
    stats = result.stats["box"]
    assert (stats.ok, stats.changed, stats.failed, stats.unreachable) == (1, 1, 0, 0)
    assert PlayEvent("task", "Say hello") in events
    assert PlayEvent("host", "Say hello", "box", "changed") in events
    [hello] = result.task_results("Say hello")
    assert hello.host == "box" and hello.res["stdout"] == "hello cloud"

    # The run is kept, private: <home>/runs/<stamp>-test-<id> (0700), secrets 0600.
    assert result.run_dir.parent == settings.runs_dir
    assert result.run_dir.name.split("-")[1] == "test"
    assert mode(result.run_dir) == 0o700
    assert not (result.run_dir / "env" / "extravars").exists()  # see test_runner_secrets.py
    assert mode(result.run_dir / "extravars.json") == 0o600
    assert json.loads((result.run_dir / "extravars.json").read_text()) == {"who": "cloud"}
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert mode(result.run_dir / "summary.json") == 0o600
    assert summary["status"] == "successful" and summary["tasks"] == 1
    assert previous_task_count(settings, "test") == 1
    assert previous_task_count(settings, "other") is None
    assert run_operation(result.run_dir) == "test"
    assert (result.artifact_dir / "job_events").is_dir()


def test_failed_task_names_host_task_and_message(settings, tmp_path):
    play = write_play(
        tmp_path,
        (
            "    - name: Break\n"
            "      ansible.builtin.command: sh -c 'echo broken pipe >&2; exit 3'\n"
        ),
    )
    result = run_playbook(settings, play, operation="test")
    assert result.status == "failed" and not result.ok
    assert result.stats["box"].failed == 1
    with pytest.raises(HostFailed) as info:
        result.raise_for_failures()
    assert (info.value.host, info.value.task) == ("box", "Break")
    assert "broken pipe" in info.value.message


def test_check_mode_changes_nothing(settings, tmp_path):
    target = tmp_path / "made-by-play"
    play = write_play(
        tmp_path,
        (
            "    - name: Make a file\n"
            f"      ansible.builtin.file: {{path: {target}, state: touch, mode: '0600'}}\n"
        ),
    )
    result = run_playbook(settings, play, check=True, operation="test")
    assert result.ok and result.stats["box"].changed == 1
    assert not target.exists()


def test_missing_playbook(settings):
    with pytest.raises(ConfigError, match="does not exist"):
        run_playbook(settings, "cloudctl.cloud.runtime.nope")


def test_a_limited_host_that_no_play_targets_fails(settings, tmp_path):
    """Ansible skips a --limit host outside the play's hosts and succeeds; cloudctl does not."""
    play = tmp_path / "play.yml"
    play.write_text("- hosts: nc\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    result = run_playbook(settings, play, limit="box", operation="test")
    assert not result.ok
    [failure] = result.failures
    assert failure.host == "box" and "in no group" in str(failure)


def test_no_extra_var_is_ever_templated(settings, tmp_path):
    """Every string of the extra vars, at any depth and as a key, reaches the module as the
    same bytes and is never evaluated: a template that would create a file creates none."""
    marker = tmp_path / "evaluated"
    canary = (
        f"{{{{ lookup('pipe', 'touch {marker}') }}}}{{% if true %}}x{{% endif %}}"
        "{# c #} ## template: jinja\n\ttab \r\n 'q' \"dq\" \\ $(id) `id` ; ü \u2028 !unsafe "
    )
    out = tmp_path / "out.json"
    play = write_play(
        tmp_path,
        (
            "    - name: Write what arrived\n"
            "      ansible.builtin.copy:\n"
            f"        dest: {out}\n"
            '        content: \'{{ {"top": top, "items": items, "keys": keyed | list,'
            ' "looped": looped} | to_json }}\'\n'
            "      vars:\n"
            "        looped: \"{{ items | map(attribute='text') | list }}\"\n"
        ),
    )
    extravars = {
        "top": canary,
        "items": [{"text": canary}, {"text": [canary]}],
        "keyed": {canary: 1},
    }
    result = run_playbook(settings, play, extravars=extravars, operation="test")
    assert result.ok, result.failures
    assert not marker.exists()
    arrived = json.loads(out.read_text())
    assert arrived == {
        "top": canary,
        "items": extravars["items"],
        "keys": [canary],
        "looped": [canary, [canary]],
    }


def test_ssh_checks_host_keys_and_keeps_each_clouds_connections(settings, tmp_path):
    """ansible-runner would turn host key checking off (and ansible would then add
    StrictHostKeyChecking=no to ssh); the ssh connections of a cloud's plays live in one
    stable directory of its own, so the next run reuses them (ControlPersist)."""
    option = "lookup('ansible.builtin.config', '{}', plugin_type='connection', plugin_name='ssh')"
    play = write_play(
        tmp_path,
        (
            "    - name: Show the ssh options\n"
            "      ansible.builtin.debug:\n"
            f'        msg: "{{{{ {option.format("host_key_checking")} }}}}'
            f' {{{{ {option.format("control_path_dir")} }}}}"\n'
        ),
    )
    result = run_playbook(settings, play, operation="test")
    assert result.ok, result.failures
    [shown] = result.task_results("Show the ssh options")
    checking, control_dir = shown.res["msg"].split()
    assert checking == "True"
    assert control_dir == str(control_path_dir(settings))
    other = control_path_dir(dataclasses.replace(settings, home=tmp_path / "other"))
    assert other != control_path_dir(settings) and other.parent == Path(control_dir).parent
    # new keys in known_hosts: new connections, which check the key again
    (settings.inventory.parent / "known_hosts").write_text("box ssh-ed25519 AAAA\n")
    assert str(control_path_dir(settings)) != control_dir
    # ssh's socket path (dir/10-hex-digit name, plus ssh's temporary suffix) stays short
    assert len(control_dir) < 60

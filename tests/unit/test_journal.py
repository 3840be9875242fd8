"""The operation journal with real plays (connection local): intent before, outcome after,
and an operation whose cloudctl was killed (-9) in the middle is seen by the next command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cloudctl import journal
from cloudctl.config import Settings
from cloudctl.runner import run_playbook
from cloudctl.state import StateStore
from tests.unit.helpers import init_state

BIN = Path(sys.executable).parent


def write_play(tmp_path: Path, task: str) -> Path:
    path = tmp_path / "play.yml"
    path.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n    - {task}\n")
    return path


def entries(settings: Settings) -> list[dict]:
    return StateStore(settings.state_path).all(journal.TABLE)


def test_outcomes_and_resources(settings, tmp_path):
    ok = write_play(tmp_path, "ansible.builtin.command: echo {{ cloud_volume.name }}")
    extravars = {"cloud_volume": {"name": "vol-0a1b2c3d", "sc": "box", "note": "i-nothex"}}
    result = run_playbook(settings, ok, extravars=extravars, operation="volume-create")
    [entry] = entries(settings)
    assert entry["id"] == result.event_id
    assert (entry["operation"], entry["state"]) == ("volume-create", journal.SUCCEEDED)
    assert entry["resources"] == ["vol-0a1b2c3d"] and entry["pid"] == os.getpid()

    failing = write_play(tmp_path, "ansible.builtin.command: /bin/false")
    run_playbook(settings, failing, operation="volume-delete")
    assert [e["state"] for e in entries(settings)] == [journal.SUCCEEDED, journal.FAILED]
    with StateStore(settings.state_path).snapshot() as snap:
        assert journal.unfinished(snap) == []


def test_check_mode_and_read_only_plays_are_not_journaled(settings, tmp_path):
    play = write_play(tmp_path, "ansible.builtin.command: echo hi")
    run_playbook(settings, play, check=True, operation="instance-run-check")
    run_playbook(settings, play, operation="service-status", journal=False)
    assert entries(settings) == []


def test_killed_operation_is_seen_by_the_next_command(settings, tmp_path):
    init_state(settings.state_path)
    release = tmp_path / "release"
    play = write_play(tmp_path, f"ansible.builtin.wait_for: {{path: {release}, timeout: 300}}")
    script = (
        "import sys\nfrom pathlib import Path\nfrom cloudctl.config import Settings\n"
        "from cloudctl.runner import run_playbook\n"
        f"s = Settings(project_dir=Path({str(settings.project_dir)!r}), inventory=Path({str(settings.inventory)!r}),"
        f" home=Path({str(settings.home)!r}))\n"
        f"run_playbook(s, {str(play)!r}, extravars={{'ids': ['i-0a1b2c3d']}}, operation='instance-run')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not entries(settings) and time.monotonic() < deadline:
            assert proc.poll() is None, "the play ended before it could be killed"
            time.sleep(0.2)  # poll interval
        assert entries(settings), "no journal entry within 120 s"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        release.touch()  # lets an orphaned ansible-playbook end at once
        if proc.poll() is None:
            proc.kill()
    with StateStore(settings.state_path).snapshot() as snap:  # the state file loads
        [entry] = journal.unfinished(snap)  # and the entry is still running
    assert entry["resources"] == ["i-0a1b2c3d"] and entry["operation"] == "instance-run"

    env = dict(os.environ, CLOUDCTL_HOME=str(settings.home))
    cli = subprocess.run(
        [str(BIN / "cloudctl"), "--inventory", str(settings.inventory), "event", "list"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert f"operation instance-run of i-0a1b2c3d (event {entry['id']}" in cli.stderr
    assert "run cloudctl reconcile" in cli.stderr

"""Plays die with cloudctl (cloudctl/playguard.py), and reconcile ends what is left of one.

Real processes and real plays (connection local): cloudctl is killed (-9) in the middle of
a play on three hosts, from the main thread and from another thread, and every process of
the play (ansible-playbook, its workers, the modules they run) must end within seconds.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cloudctl import journal, playguard
from cloudctl.config import Settings
from cloudctl.reconcile import Reconciler
from cloudctl.state import StateStore
from tests import conftest
from tests.unit.conftest import PROJECT

poll = functools.partial(conftest.poll, interval_s=0.1)  # processes end fast

OWNER = {"account": "admin", "user": "admin"}
ENDED_WITHIN = 15  # seconds after cloudctl's death by which no process of its play is left


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def tagged(operation: str, code: str) -> subprocess.Popen:
    """A Python process that carries the tag of an operation's play."""
    env = dict(os.environ, **{playguard.ENV_OPERATION: operation})
    return subprocess.Popen([sys.executable, "-c", code], env=env)


@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "other-thread"])
def test_a_killed_cloudctl_leaves_no_process_of_its_play(tmp_path, in_thread):
    inventory = tmp_path / "inventory.yml"
    local = f"{{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}"
    inventory.write_text("all:\n  hosts:\n" + "".join(f"    h{i}: {local}\n" for i in (1, 2, 3)))
    settings = Settings(project_dir=PROJECT, inventory=inventory, home=tmp_path / "home")
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 300\n"
    )
    call = f"run_playbook(s, {str(play)!r}, operation='instance-run')"
    script = (
        "import threading\nfrom pathlib import Path\nfrom cloudctl.config import Settings\n"
        "from cloudctl.runner import run_playbook\n"
        f"s = Settings(project_dir=Path({str(PROJECT)!r}), inventory=Path({str(inventory)!r}),"
        f" home=Path({str(settings.home)!r}))\n"
        + (f"t = threading.Thread(target=lambda: {call})\nt.start()\nt.join()\n" if in_thread
           else f"{call}\n")
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", script])
    store = StateStore(settings.state_path)

    def playing():
        assert proc.poll() is None, "the play ended before it could be killed"
        if not settings.state_path.exists():
            return None
        entries = [e for e in store.all(journal.TABLE) if e.get("play")]
        sleeping = entries and [
            p for p in playguard.processes(entries[0]["id"]) if cmdline(p) == "sleep 300 "
        ]
        return entries[0] if sleeping and len(sleeping) == 3 else None

    entry = None
    try:
        entry = poll(playing, "three hosts running the play's task", 120)
        pids = playguard.processes(entry["id"])
        # The tag reaches everything: ansible-playbook, its 3 workers, the modules they run.
        assert entry["play"]["pid"] in pids and "ansible-playbook" in cmdline(entry["play"]["pid"])
        assert sum("ansible-playbook" in cmdline(p) for p in pids) >= 4, pids
        assert journal.play_processes(entry) == sorted(pids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        poll(lambda: not playguard.processes(entry["id"]), "the end of the play", ENDED_WITHIN)
        assert time.monotonic() - killed < playguard.GRACE + 1  # SIGTERM was enough
        assert journal.play_processes(entry) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        if entry:
            playguard.end(entry["id"])  # never leave a play behind, even when failing
    with store.snapshot() as snap:  # the operation is seen as interrupted
        assert [e["id"] for e in journal.unfinished(snap)] == [entry["id"]]


def test_end_terminates_then_kills(tmp_path):
    op, other_op = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    ready = tmp_path / "ready"
    obedient = tagged(op, "import time; time.sleep(300)")
    stubborn = tagged(
        op,
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(ready)!r}, 'w').close(); time.sleep(300)",
    )
    other = tagged(other_op, "import time; time.sleep(300)")  # another operation's play
    try:
        poll(ready.exists, "the stubborn process ignoring SIGTERM", 30)
        poll(lambda: len(playguard.processes(op)) == 2, "the tagged processes", 30)
        started = time.monotonic()
        assert playguard.end(op, grace=0.5, deadline=10) == []
        assert time.monotonic() - started < 10
        assert (obedient.wait(5), stubborn.wait(5)) == (-signal.SIGTERM, -signal.SIGKILL)
        assert other.poll() is None and playguard.processes(other_op) == [other.pid]
    finally:
        for proc in (obedient, stubborn, other):
            proc.kill()
            proc.wait()


def test_the_guard_runs_nothing_when_cloudctl_is_already_gone(tmp_path):
    marker = tmp_path / "ran"
    env = dict(
        os.environ, **{playguard.ENV_OPERATION: uuid.uuid4().hex[:8], playguard.ENV_PARENT: "1"}
    )
    guard = [sys.executable, "-I", playguard.__file__, "touch", str(marker)]
    assert subprocess.run(guard, env=env, check=False).returncode == 128 + signal.SIGTERM
    assert not marker.exists()
    env[playguard.ENV_PARENT] = str(os.getpid())  # its parent: the command runs
    assert subprocess.run(guard, env=env, check=False).returncode == 0 and marker.exists()


def test_reconcile_ends_a_leftover_play(settings):
    store = StateStore(settings.state_path)
    op = uuid.uuid4().hex[:8]
    leftover = tagged(op, "import time; time.sleep(300)")
    try:
        poll(lambda: playguard.processes(op), "the leftover play", 30)
        play = {"pid": leftover.pid, "started": playguard.process_start(leftover.pid)}
        entry = {"id": op, "operation": "instance-run", "hosts": "all", "pid": 1,
                 "pid_started": "0", "resources": ["i-0a1b2c3d"], "state": journal.RUNNING,
                 "play": play}  # fmt: skip
        with store.transaction() as tx:  # its cloudctl (pid 1 in another life) is gone
            tx.table(journal.TABLE).insert({**entry, **OWNER})
        [report] = Reconciler(settings)._leftover_plays(fix=False)
        assert (report.kind, report.resource, report.fixed) == ("leftover-play", op, False)
        assert "not compared" in report.detail and leftover.poll() is None

        [fixed] = Reconciler(settings)._leftover_plays(fix=True)
        assert fixed.fixed and leftover.wait(10) == -signal.SIGTERM
        assert Reconciler(settings)._leftover_plays(fix=True) == []
    finally:
        leftover.kill()
        leftover.wait()

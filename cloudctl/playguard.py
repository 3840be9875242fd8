"""No process of a play outlives the cloudctl that started it.

cloudctl/runner.py starts every play as `python -I playguard.py ansible-playbook ARGS`, with
the environment variables CLOUDCTL_OPERATION (the run's id) and CLOUDCTL_PARENT (cloudctl's
pid). The guard asks the kernel for SIGTERM when the cloudctl thread that started it ends
(prctl PR_SET_PDEATHSIG: a SIGKILL of cloudctl included), runs ansible-playbook as its child
and, on that signal, ends every process of the play: SIGTERM, then SIGKILL after GRACE
seconds. A process group is not enough: ansible's workers call setsid(), and a SIGKILLed
ansible-playbook leaves them running. The operation id is the tag that finds them all:
every process of the play inherits it and /proc/PID/environ shows it (ssh's ControlPersist
master rewrites its environment when it sets its title, so a connection that later plays
share is not taken for part of this one).

`cloudctl reconcile` uses the same functions to end what is left of an interrupted
operation. Standard library only: this file runs as a script, before ansible-playbook.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

ENV_OPERATION = "CLOUDCTL_OPERATION"
ENV_PARENT = "CLOUDCTL_PARENT"
GRACE = 5.0  # seconds between SIGTERM and SIGKILL
DEADLINE = 15.0  # seconds after which a process that survives SIGKILL is given up on
_PR_SET_PDEATHSIG = 1


class _ParentGone(Exception):
    pass


def processes(operation: str) -> list[int]:
    """The live processes (this one excepted) whose environment carries the operation's tag."""
    tag = f"{ENV_OPERATION}={operation}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()  # empty for a zombie: it is not counted
        except OSError:  # gone, or not ours to read
            continue
        if tag in environ.split(b"\0"):
            found.append(int(name))
    return found


def end(operation: str, grace: float = GRACE, deadline: float = DEADLINE) -> list[int]:
    """End every process of the operation's play; returns those still alive at `deadline`.

    Signals go to every process found, again at each scan, so that a process forked by one
    that was found meanwhile is found and signalled by the next scan.
    """
    start = time.monotonic()
    while pids := processes(operation):
        elapsed = time.monotonic() - start
        if elapsed > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM if elapsed < grace else signal.SIGKILL)
            except OSError:  # ended meanwhile, or not ours: reported if it stays
                pass
        time.sleep(0.1)  # poll interval
    return []


def process_start(pid: int) -> str | None:
    """The start time, in clock ticks since boot, of a live process (it tells a reused pid
    apart); None when there is no such process or it ended (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # The command name (field 2) may hold spaces: count fields after its ')'.
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _on_term(signum: int, frame: object) -> None:
    raise _ParentGone


def main(argv: list[str]) -> int:
    operation = os.environ[ENV_OPERATION]
    signal.signal(signal.SIGTERM, _on_term)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != int(os.environ[ENV_PARENT]):
            raise _ParentGone  # cloudctl died before the kernel could watch it
        play = subprocess.Popen(argv)
        returncode = play.wait()
    except _ParentGone:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        end(operation)
        return 128 + signal.SIGTERM
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

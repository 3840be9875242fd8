"""The operation journal: every play that changes the cloud, recorded before it runs and
after it ends, in the state store's `operations` table.

An entry is written `running` (with the cloudctl process's pid and the resource ids the play
carries) before ansible-runner starts, gets the play's pid (`play`) from its first event, and
becomes `succeeded` or `failed` when the play ends. If cloudctl dies in between (kill -9, a
crash, a reboot) the entry stays `running` while its process is gone: the next cloudctl
command warns about it (with the state in etcd, on any controller: the operation holds a
leased key `<prefix>ops/<event id>` that expires with its process or host; with the TinyDB
file, by the recorded pid), and `cloudctl reconcile` ends what is left of the play
(cloudctl/playguard.py, which normally ended it already), compares the state with the hosts
and, with --fix, closes the entry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from cloudctl import playguard
from cloudctl.config import Settings
from cloudctl.identity import current_owner
from cloudctl.ids import HEX_LEN, PREFIXES
from cloudctl.state import Transaction, open_store, utc_now

TABLE = "operations"
RUNNING, SUCCEEDED, FAILED, RECONCILED = "running", "succeeded", "failed", "reconciled"
_RESOURCE_ID = re.compile(rf"^(?:{'|'.join(PREFIXES.values())})-[0-9a-f]{{{HEX_LEN}}}$")


def begin(
    settings: Settings, event_id: str, operation: str, limit: str | None, extravars: Any
) -> None:
    owner = current_owner()
    entry = {
        "id": event_id,
        "account": owner.account,
        "user": owner.user,
        "operation": operation,
        "hosts": limit or "all",
        "resources": sorted(resource_ids(extravars)),
        "state": RUNNING,
        "pid": os.getpid(),
        "pid_started": playguard.process_start(os.getpid()),
    }
    store = open_store(settings)
    store.hold_operation(event_id)  # before the entry: a reader never sees it unheld
    with store.transaction() as tx:
        tx.table(TABLE).insert(entry)


def playing(settings: Settings, event_id: str, pid: int) -> None:
    """Record the play's ansible-playbook process (its pid and start time)."""
    play = {"pid": pid, "started": playguard.process_start(pid)}
    with open_store(settings).transaction() as tx:
        tx.table(TABLE).update(event_id, play=play)


def finish(settings: Settings, event_id: str, ok: bool, detail: str = "") -> None:
    store = open_store(settings)
    with store.transaction() as tx:
        tx.table(TABLE).update(
            event_id, state=SUCCEEDED if ok else FAILED, detail=detail, finished=utc_now()
        )
    store.drop_operation(event_id)


def unfinished(view: Transaction) -> list[dict[str, Any]]:
    """Entries still `running` whose cloudctl process is gone: interrupted operations."""
    running = view.table(TABLE).search(state=RUNNING)
    if view.running_operations is not None:  # etcd: the operation's lease is gone
        return [e for e in running if e["id"] not in view.running_operations]
    return [e for e in running if not _alive(e["pid"], e.get("pid_started"))]


def play_processes(entry: Mapping[str, Any]) -> list[int]:
    """The processes of the entry's play still alive: those carrying its tag, and its
    ansible-playbook if its recorded pid still names the same process."""
    pids = set(playguard.processes(entry["id"]))
    play = entry.get("play")
    if play and _alive(play["pid"], play["started"]):
        pids.add(play["pid"])
    return sorted(pids)


def end_play(entry: Mapping[str, Any]) -> list[int]:
    """End what is left of the entry's play (SIGTERM, then SIGKILL); the pids that outlived
    it (not ours to signal)."""
    if play_processes(entry):
        playguard.end(entry["id"])
    return play_processes(entry)


def close(tx: Any, entry: dict[str, Any], detail: str) -> None:
    """Mark an interrupted entry as dealt with (inside the caller's transaction)."""
    tx.table(TABLE).update(entry["id"], state=RECONCILED, detail=detail, finished=utc_now())


def describe(entry: Mapping[str, Any]) -> str:
    what = f" of {', '.join(entry['resources'])}" if entry.get("resources") else ""
    return (
        f"operation {entry['operation']}{what} (event {entry['id']}, started "
        f"{entry['created']}) was interrupted"
    )


def resource_ids(value: Any) -> set[str]:
    """Every EC2-style id (i-, vol-, snap-, emi-, ...) found in a play's extra vars."""
    if isinstance(value, str):
        return {value} if _RESOURCE_ID.match(value) else set()
    if isinstance(value, Mapping):
        return resource_ids(list(value.values()))
    if isinstance(value, list | tuple | set):
        found: set[str] = set()
        for item in value:
            found |= resource_ids(item)
        return found
    return set()


def _alive(pid: int, started: str | None) -> bool:
    start = playguard.process_start(pid)
    return start is not None and (started is None or start == started)

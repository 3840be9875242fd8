"""Long operations of the API: answer once the resources are in their first state, run the
play in a worker thread of the service.

    records = start(instances.run, image_id, type_name, count=2)   # pending, at once

`start` calls the service method (which validates, checks quotas, records the resources
`pending`/`creating`/... and then runs its play) in a new thread, in a copy of the request's
context (so it acts as the request's principal), and returns the records the method hands to
its `on_recorded` callback. An error before that point (bad input, quota, not found) is the
request's error; an error of the play afterwards is the resource's: the service records it
(`failed`/`error` with the reason) and the worker only logs it. The play runs under the
operation journal as every play does: a service killed mid-operation leaves it `running` in
the journal for `cloudctl reconcile`.

With the state in etcd (a CLC pair) every accepted operation is recorded too, before the
request is answered: a record of the table `api_operations` (`running`, the resource ids)
and a key on this process's lease. If the process or its host dies before the operation
ends, the lease expires and the elected takeover worker of the pair settles it
(cloudctl/api/takeover.py) instead of waiting for an operator. The TinyDB file (one CLC)
records nothing more than before.

Threads are not daemons: a graceful stop of the service (SIGTERM) lets running plays finish.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from cloudctl.identity import current_owner
from cloudctl.state import EtcdStore, Store, utc_now

log = logging.getLogger("cloudctl.api.worker")

TABLE = "api_operations"
RUNNING, SUCCEEDED, FAILED, SETTLED = "running", "succeeded", "failed", "settled"


def start(method: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Run a long service method in a worker thread; its records once recorded."""
    recorded: list[list[dict[str, Any]]] = []
    failure: list[BaseException] = []
    ready = threading.Event()
    service = getattr(method, "__self__", None)  # the service the method belongs to
    store = getattr(service, "store", None)
    tracked = store if isinstance(store, EtcdStore) else None
    operation = uuid.uuid4().hex

    def on_recorded(records: list[dict[str, Any]]) -> None:
        if tracked is not None:
            accept(tracked, operation, method.__name__, records)
        recorded.append(records)
        ready.set()

    def work() -> None:
        ok = False
        try:
            method(*args, on_recorded=on_recorded, **kwargs)
            ok = True
        except BaseException as exc:  # noqa: BLE001 (before on_recorded: the request's error)
            if not ready.is_set():
                failure.append(exc)
            else:
                log.warning("%s of %s failed: %s", method.__name__, _ids(recorded), exc)
        finally:
            ready.set()
            if tracked is not None:
                _end(tracked, operation, ok if recorded else None)

    if tracked is not None:
        tracked.hold_operation(operation)  # before the record: never seen without its lease
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(work,), name=f"op-{method.__name__}")
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    if not recorded:  # the method ended without recording anything (nothing to do)
        thread.join()
        return []
    return recorded[0]


def accept(store: Store, operation: str, action: str, records: list[dict[str, Any]]) -> None:
    """Record an accepted operation (its process holds the key `ops/<operation>`)."""
    owner = current_owner()
    with store.transaction() as tx:
        tx.table(TABLE).insert(
            {
                "id": operation,
                "account": owner.account,
                "user": owner.user,
                "action": action,
                "resources": [r["id"] for r in records],
                "state": RUNNING,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )


def _end(store: Store, operation: str, ok: bool | None) -> None:
    """The operation ended (None: refused before anything was recorded)."""
    try:
        if ok is not None:
            with store.transaction() as tx:
                state = SUCCEEDED if ok else FAILED
                tx.table(TABLE).update(operation, state=state, finished=utc_now())
    finally:
        store.drop_operation(operation)


def _ids(recorded: list[list[dict[str, Any]]]) -> str:
    return ", ".join(r["id"] for records in recorded for r in records) or "-"

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

Threads are not daemons: a graceful stop of the service (SIGTERM) lets running plays finish.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cloudctl.api.worker")


def start(method: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Run a long service method in a worker thread; its records once recorded."""
    recorded: list[list[dict[str, Any]]] = []
    failure: list[BaseException] = []
    ready = threading.Event()

    def on_recorded(records: list[dict[str, Any]]) -> None:
        recorded.append(records)
        ready.set()

    def work() -> None:
        try:
            method(*args, on_recorded=on_recorded, **kwargs)
        except BaseException as exc:  # noqa: BLE001 (before on_recorded: the request's error)
            if not ready.is_set():
                failure.append(exc)
            else:
                log.warning("%s of %s failed: %s", method.__name__, _ids(recorded), exc)
        finally:
            ready.set()

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


def _ids(recorded: list[list[dict[str, Any]]]) -> str:
    return ", ".join(r["id"] for records in recorded for r in records) or "-"

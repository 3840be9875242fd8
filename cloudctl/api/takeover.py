"""The takeover worker of a CLC pair (state in etcd): settles the API operations whose
process died, exactly once, on one controller at a time.

Every API process of both CLCs runs one (a thread started by the service, cloudctl.api.server)
and campaigns for the election `api-worker` every round; the elected one looks for accepted
operations (cloudctl/api/worker.py: `api_operations` records `running`) whose key
`ops/<id>` is gone: their process or host died (its lease expired, within its TTL). It
settles them as `cloudctl reconcile --fix` would (one reconcile for all of them: an
interrupted launch whose domain runs becomes `running`, one without a domain `failed`, an
interrupted terminate `terminated`, a volume `creating` `error`...), then marks them
`settled` with what reconcile found for their resources. It checks that it still leads
before it marks them; a leader that dies in between leaves them `running` for the next one,
whose reconcile finds nothing more to do (reconcile converges): the records end up settled
once and no play runs twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cloudctl.api.worker import RUNNING, SETTLED, TABLE
from cloudctl.config import Settings
from cloudctl.election import Election
from cloudctl.errors import CloudError
from cloudctl.state import EtcdStore, Transaction, utc_now

log = logging.getLogger("cloudctl.api.takeover")

ELECTION = "api-worker"
INTERVAL = 1.0  # s between rounds: well within the lease TTL a takeover waits for anyway
# Settles abandoned operations; returns a line per operation id (what was done).
Settle = Callable[[list[dict[str, Any]]], dict[str, str]]


class Takeover:
    def __init__(self, store: EtcdStore, settle: Settle, interval: float = INTERVAL) -> None:
        self.store = store
        self.settle = settle
        self.interval = interval
        self.election = Election(store, ELECTION)
        self.leading = False  # as of the last round
        self.stopping = threading.Event()

    def round(self) -> list[str]:
        """One round: campaign, and when elected settle what is abandoned; their ids."""
        self.leading = self.election.campaign()
        if not self.leading:
            return []
        with self.store.snapshot() as view:
            ops = abandoned(view)
        if not ops:
            return []
        log.warning("settling %d operation(s) whose process is gone: %s",
                    len(ops), ", ".join(f"{o['action']} of {', '.join(o['resources'])}" for o in ops))  # fmt: skip
        details = self.settle(ops)
        self.leading = self.election.campaign()
        if not self.leading:  # the next leader settles them again
            return []
        settled = []
        with self.store.transaction() as tx:
            table = tx.table(TABLE)
            for op in ops:
                if (table.get(op["id"]) or {}).get("state") == RUNNING:
                    table.update(
                        op["id"],
                        state=SETTLED,
                        detail=details.get(op["id"], ""),
                        settled_by=self.election.candidate,
                        finished=utc_now(),
                    )
                    settled.append(op["id"])
        return settled

    def run(self) -> None:
        """Rounds until stop(); an error of one round (etcd unreachable...) is logged."""
        while not self.stopping.is_set():
            try:
                self.round()
            except CloudError as exc:
                self.leading = False
                log.warning("takeover round failed: %s", exc)
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        if self.leading:
            self.election.resign()


def abandoned(view: Transaction) -> list[dict[str, Any]]:
    """Accepted operations still `running` whose process no longer holds their lease."""
    alive = view.running_operations or set()
    return [op for op in view.table(TABLE).search(state=RUNNING) if op["id"] not in alive]


def reconcile_settler(settings: Settings) -> Settle:
    """Settle as `cloudctl reconcile --fix` does; per operation, the drifts of its resources."""

    def settle(ops: list[dict[str, Any]]) -> dict[str, str]:
        from cloudctl.reconcile import Reconciler  # the runner: only when there is work

        drifts = Reconciler(settings).run(fix=True)
        details = {}
        for op in ops:
            mine = [d for d in drifts if d.resource in op["resources"]]
            found = "; ".join(f"{d.resource}: {d.kind}, {d.fix}" for d in mine)
            details[op["id"]] = f"reconciled ({found or 'nothing to fix'})"
        return details

    return settle

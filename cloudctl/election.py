"""Leader election on the etcd state (issue 12): one process at a time among those that
campaign for a name, e.g. the API's takeover worker on a CLC pair.

    election = Election(store, "api-worker")
    if election.campaign():      # True while this process leads (call it every round)
        ...

etcd's own recipe, on the state backend's calls (etcd3gw has no Election class): the
leader is the candidate whose key `<prefix>elections/<name>` holds its id, put on its
process's session lease (the one the state lock and the journal's running operations live
on). A campaign is one etcd transaction: put the key only if it does not exist (its create
revision is 0), else read it. The key goes with its lease when the leader's process or host
dies, within the lease's TTL, and the next campaign of another candidate wins. A lease lost
while its process lived (etcd out of reach longer than the TTL) is replaced by the session,
never with this key on it: that candidate leads again only by winning a new campaign.
"""

from __future__ import annotations

import base64
import os
import socket

from cloudctl.state import EtcdStore, b64, etcd_session

ELECTIONS = "elections/"


class Election:
    def __init__(self, store: EtcdStore, name: str, candidate: str | None = None) -> None:
        self.store = store
        self.key = store.prefix + ELECTIONS + name
        self.candidate = candidate or f"{socket.gethostname()}:{os.getpid()}"

    def campaign(self) -> bool:
        """Take the leadership if nobody holds it; True when this candidate holds it (on
        the process's current lease). Each round of a candidate calls it again: it is the
        check that this process still leads, too."""
        session = etcd_session(self.store.etcd, self.store.operation_ttl)
        lease, key = session.lease, b64(self.key)
        answer = self.store.etcd.post(
            "/kv/txn",
            {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
                "success": [{"request_put": {"key": key, "value": b64(self.candidate), "lease": lease}},
                            {"request_range": {"key": key}}],
                "failure": [{"request_range": {"key": key}}],
            },
        )  # fmt: skip
        holder = _holder(answer["responses"][-1]["response_range"])
        return holder == (self.candidate, lease)

    def leader(self) -> str | None:
        """The id of the candidate that leads (None: nobody)."""
        answer = self.store.etcd.post("/kv/range", {"key": b64(self.key)})
        holder = _holder(answer)
        return holder[0] if holder else None

    def resign(self) -> None:
        """Give the leadership up (a graceful stop: the next candidate need not wait for the
        lease to expire); nothing when another candidate leads."""
        key = b64(self.key)
        self.store.etcd.post(
            "/kv/txn",
            {
                "compare": [{"key": key, "target": "VALUE", "result": "EQUAL", "value": b64(self.candidate)}],
                "success": [{"request_delete_range": {"key": key}}],
            },
        )  # fmt: skip


def _holder(answer: dict) -> tuple[str, str] | None:
    """(candidate id, lease id) of the election key in a range answer; None: no key."""
    kvs = answer.get("kvs") or []
    if not kvs:
        return None
    return base64.b64decode(kvs[0].get("value", "")).decode(), str(kvs[0].get("lease", "0"))

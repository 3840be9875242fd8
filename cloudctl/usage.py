"""The usage record: every lifecycle change of a resource, with its time, for reports.

Table "usage": one document per event, appended in the transaction that makes the change
(so a change and its record commit together). Fields: id, account, user (the resource's
owner), resource_id, kind, event, at (UTC ISO 8601), plus the event's figures:
  instance: started (type, vcpus, memory_mb, disk_gb), stopped, terminated
  volume: created (size_gb), deleted, attached (instance_id), detached (instance_id)
  snapshot: created (size_gb, volume_id), deleted
  address: allocated (public_ip), associated (instance_id), disassociated, released
  bucket: created (bucket), deleted, stored (bytes: the bucket's total after a change)
cloudctl/reports.py turns them into usage reports.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from cloudctl.state import Transaction, utc_now

TABLE = "usage"
EVENTS = {
    "instance": {"started", "stopped", "terminated"},
    "volume": {"created", "deleted", "attached", "detached"},
    "snapshot": {"created", "deleted"},
    "address": {"allocated", "associated", "disassociated", "released"},
    "bucket": {"created", "deleted", "stored"},
}


def record(
    tx: Transaction,
    resource: Mapping[str, Any],
    kind: str,
    event: str,
    *,
    at: str | None = None,
    **figures: Any,
) -> dict[str, Any]:
    if event not in EVENTS.get(kind, ()):
        raise ValueError(f"unknown usage event {kind} {event}")
    return tx.table(TABLE).insert(
        {
            "id": f"u-{secrets.token_hex(8)}",
            "account": resource["account"],
            "user": resource["user"],
            "resource_id": resource["id"],
            "kind": kind,
            "event": event,
            "at": at or utc_now(),
            **figures,
        }
    )

"""Tags: key/value pairs on instances, volumes, snapshots, images and security groups.

A resource's tags live in its record, field `tags` ({key: value}), so that they go wherever
the record goes (the instances inventory plugin groups by them). EC2's limits: 50 tags per
resource, keys 1-128 characters, values 0-256, keys starting with `aws:` are reserved.
Tags are data: never templated, never split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cloudctl.errors import InputError, NotFound
from cloudctl.identity import visible
from cloudctl.state import Store, Transaction

MAX_TAGS = 50
# id prefix -> (table, EC2's resource type)
RESOURCES = {
    "i": ("instances", "instance"),
    "vol": ("volumes", "volume"),
    "snap": ("snapshots", "snapshot"),
    "emi": ("images", "image"),
    "eki": ("images", "image"),
    "eri": ("images", "image"),
    "sg": ("groups", "security-group"),
}
_GONE = {"terminated", "deleted"}


def resource_type(resource_id: str) -> str:
    return RESOURCES[resource_id.partition("-")[0]][1]


def _record(tx: Transaction, resource_id: str) -> dict[str, Any]:
    prefix = resource_id.partition("-")[0]
    if prefix not in RESOURCES:
        raise InputError(f"bad resource id {resource_id!r}: tags go on {', '.join(RESOURCES)}-…")
    table = RESOURCES[prefix][0]
    record = tx.table(table).get(resource_id)
    if record is None or not visible(record) or record.get("state") in _GONE:
        raise NotFound(f"{RESOURCES[prefix][1]} {resource_id} does not exist")
    return record


def validate(tags: Mapping[str, str | None]) -> None:
    """Refuse (InputError) keys and values past EC2's limits and the reserved `aws:` keys."""
    for key, value in tags.items():
        if not 1 <= len(key) <= 128:
            raise InputError(f"bad tag key {key[:40]!r}: 1 to 128 characters")
        if key.lower().startswith("aws:"):
            raise InputError(f"tag key {key[:40]!r}: keys starting with aws: are reserved")
        if value is not None and len(value) > 256:
            raise InputError(f"tag {key[:40]!r}: its value is longer than 256 characters")


class Tags:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, resource_ids: Iterable[str], tags: Mapping[str, str]) -> None:
        """Add or overwrite tags on every resource, all or nothing."""
        validate(tags)
        with self.store.transaction() as tx:
            for rid in resource_ids:
                record = _record(tx, rid)
                merged = {**(record.get("tags") or {}), **tags}
                if len(merged) > MAX_TAGS:
                    raise InputError(f"{rid} would have {len(merged)} tags: at most {MAX_TAGS}")
                tx.table(RESOURCES[rid.partition("-")[0]][0]).update(rid, tags=merged)

    def delete(
        self, resource_ids: Iterable[str], tags: Mapping[str, str | None] | None = None
    ) -> None:
        """Remove tags by key (value None) or by key and value (only when it matches); every
        tag of the resources when `tags` is None."""
        if tags is not None:
            validate(tags)
        with self.store.transaction() as tx:
            for rid in resource_ids:
                record = _record(tx, rid)
                kept = {
                    k: v
                    for k, v in (record.get("tags") or {}).items()
                    if tags is not None and not (k in tags and tags[k] in (None, v))
                }
                tx.table(RESOURCES[rid.partition("-")[0]][0]).update(rid, tags=kept)

    def list(self) -> list[dict[str, Any]]:
        """Every tag of every resource the principal sees: resource_id, resource_type, key,
        value."""
        rows = []
        with self.store.snapshot() as snap:
            for table in sorted({t for t, _ in RESOURCES.values()}):
                for record in snap.table(table).all():
                    if not visible(record) or record.get("state") in _GONE:
                        continue
                    for key, value in sorted((record.get("tags") or {}).items()):
                        rows.append(
                            {
                                "resource_id": record["id"],
                                "resource_type": resource_type(record["id"]),
                                "key": key,
                                "value": value,
                            }
                        )
        return rows

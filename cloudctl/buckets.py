"""Who owns which Walrus bucket, and how many bytes it holds: the S3 gateway's bookkeeping.

Walrus (SeaweedFS) knows one identity, the cloud's; the S3 gateway (cloudctl/api/s3.py) serves
every account in front of it and keeps here what Walrus cannot: table "buckets", one record per
bucket made through the gateway: id = the bucket's name, account and user (its owner), bytes
(what its objects hold, plus the growth of writes in flight) and writes (the writes in flight,
see below). A bucket without a record (the cloud's `images` and `snapshots`, anything made on
Walrus directly) is the cloud's: only the admin account reaches it.

Quotas (quotas.py counts this table): s3:quota-bucketnumber is checked in the transaction that
records a new bucket, s3:quota-buckettotalsize (MB, each bucket rounded up) in the one that
reserves a write's growth, before the gateway forwards anything to Walrus: of two concurrent
requests, one sees the other's record or reservation.

A write (PUT, copy, completing a multipart upload, delete) of some keys goes in three steps:
`claim` the keys (a second write of the same key meanwhile is refused with KeyBusy, so that the
old size each one reads stays true), read the old sizes from Walrus, `reserve` the change
(growth counts at once, shrinking only once done), then after Walrus answered `settle` it:
done or not, which records a usage "stored" sample of the bucket's new total.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudctl import quotas, usage
from cloudctl.errors import CloudError, InputError
from cloudctl.identity import Principal
from cloudctl.state import Store, utc_now
from cloudctl.walrus import IMAGES, SNAPSHOTS

TABLE = "buckets"
CLOUD_BUCKETS = (IMAGES, SNAPSHOTS)  # the cloud's own, whether Walrus has them yet or not
MB = 2**20
# A claim older than this is a write whose gateway died: its keys are free again and its
# reserved growth is given back (the largest single PUT, 5 GiB, takes minutes, not an hour).
CLAIM_TTL = timedelta(hours=1)


class BucketTaken(InputError):
    """The bucket name is someone's already (`own` when it is the caller's account's)."""

    def __init__(self, message: str, own: bool) -> None:
        super().__init__(message)
        self.own = own


class KeyBusy(CloudError):
    """Another write of the same key is in flight."""


def megabytes(size: int) -> int:
    """Bytes in MB as s3:quota-buckettotalsize counts them (rounded up)."""
    return -(-max(size, 0) // MB)


def owner_of(record: dict[str, Any]) -> Principal:
    return Principal(record["account"], record["user"])


class Buckets:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, name: str) -> dict[str, Any] | None:
        return self.store.get(TABLE, name)

    def owned(self, principal: Principal) -> dict[str, dict[str, Any]]:
        """The records of the buckets a principal sees (its account's; every one for admin)."""
        with self.store.snapshot() as snap:
            records = snap.table(TABLE).all()
        return {r["id"]: r for r in records if principal.admin or r["account"] == principal.account}

    # --- buckets ---------------------------------------------------------------------------

    def record_new(self, name: str, principal: Principal) -> dict[str, Any]:
        """Record a bucket about to be made for a principal, within its quota."""
        with self.store.transaction() as tx:
            existing = tx.table(TABLE).get(name)
            if existing is not None or name in CLOUD_BUCKETS:
                own = existing is not None and existing["account"] == principal.account
                raise BucketTaken(f"bucket {name} exists already", own=own)
            quotas.check(tx, principal, {"s3:quota-bucketnumber": 1})
            return tx.table(TABLE).insert(
                {"id": name, "account": principal.account, "user": principal.user,
                 "bytes": 0, "writes": {}}
            )  # fmt: skip

    def created(self, name: str) -> None:
        """Walrus made the bucket: its usage starts."""
        with self.store.transaction() as tx:
            record = tx.table(TABLE).get(name)
            if record is not None:
                usage.record(tx, record, "bucket", "created", bucket=name)

    def forget(self, name: str) -> None:
        """Walrus refused to make the bucket (or does not have it): drop its record."""
        with self.store.transaction() as tx:
            if tx.table(TABLE).get(name) is not None:
                tx.table(TABLE).remove(name)

    def deleted(self, name: str) -> None:
        """Walrus deleted the bucket: drop its record, its usage ends."""
        with self.store.transaction() as tx:
            record = tx.table(TABLE).get(name)
            if record is not None:
                tx.table(TABLE).remove(name)
                usage.record(tx, record, "bucket", "deleted")

    # --- writes ----------------------------------------------------------------------------

    def claim(self, name: str, keys: Iterable[str]) -> str | None:
        """Claim keys of a bucket for one write; returns its token (None: no record, nothing
        to account). Raises KeyBusy when another write holds one of them."""
        keys = sorted(set(keys))
        token = secrets.token_hex(8)
        with self.store.transaction() as tx:
            record = tx.table(TABLE).get(name)
            if record is None:
                return None
            writes = _live_writes(record)
            busy = set(keys) & {key for write in writes.values() for key in write["keys"]}
            if busy:
                raise KeyBusy(f"another write of {name}/{min(busy)} is in progress")
            writes[token] = {"keys": keys, "delta": 0, "at": utc_now()}
            tx.table(TABLE).update(name, writes=writes, bytes=_bytes_with(record, writes))
        return token

    def reserve(self, name: str, token: str, delta: int) -> None:
        """Reserve a claimed write's change of the bucket's bytes; its growth must fit the
        owner's s3:quota-buckettotalsize (QuotaExceeded: the claim is released)."""
        try:
            with self.store.transaction() as tx:
                record = tx.table(TABLE).get(name)
                writes = _live_writes(record) if record else {}
                if token not in writes:
                    return  # the bucket was deleted meanwhile: Walrus will refuse the write
                before = record["bytes"]
                writes[token]["delta"] = delta
                after = _bytes_with(record, writes)
                quotas.check(
                    tx,
                    owner_of(record),
                    {"s3:quota-buckettotalsize": megabytes(after) - megabytes(before)},
                )
                tx.table(TABLE).update(name, writes=writes, bytes=after)
        except quotas.QuotaExceeded:
            self.settle(name, token, done=False)
            raise

    def settle(self, name: str, token: str | None, done: bool, delta: int | None = None) -> None:
        """End a claimed write: when done, its change counts (`delta` when the real change is
        known only now) and a new total of the bucket is a usage sample; else it is undone."""
        if token is None:
            return
        with self.store.transaction() as tx:
            record = tx.table(TABLE).get(name)
            writes = _live_writes(record) if record else {}
            write = writes.pop(token, None)
            if write is None:
                return
            before = _stored(record)
            stored = (
                max(before + (write["delta"] if delta is None else delta), 0) if done else before
            )
            record = tx.table(TABLE).update(name, writes=writes, bytes=stored + _reserved(writes))
            if stored != before:
                usage.record(tx, record, "bucket", "stored", bytes=stored)

    def check_growth(self, name: str, size: int) -> None:
        """Refuse (QuotaExceeded) a part of a multipart upload that could not fit even alone."""
        with self.store.snapshot() as snap:
            record = snap.table(TABLE).get(name)
            if record is not None:
                grow = megabytes(record["bytes"] + size) - megabytes(record["bytes"])
                quotas.check(snap, owner_of(record), {"s3:quota-buckettotalsize": grow})


def _live_writes(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The record's writes in flight, without those whose gateway died (older than CLAIM_TTL)."""
    oldest = datetime.now(UTC) - CLAIM_TTL
    return {
        token: dict(write)  # a copy: the record's own stay as they were, for _stored()
        for token, write in record.get("writes", {}).items()
        if datetime.fromisoformat(write["at"]) > oldest
    }


def _reserved(writes: dict[str, dict[str, Any]]) -> int:
    """The growth reserved by writes in flight (a shrinking write counts once done)."""
    return sum(max(w["delta"], 0) for w in writes.values())


def _stored(record: dict[str, Any]) -> int:
    """What the bucket's objects hold: its bytes without the reservations in flight."""
    return record["bytes"] - _reserved(record.get("writes", {}))


def _bytes_with(record: dict[str, Any], writes: dict[str, dict[str, Any]]) -> int:
    """The record's bytes with `writes` as its writes in flight (stale ones dropped)."""
    return _stored(record) + _reserved(writes)

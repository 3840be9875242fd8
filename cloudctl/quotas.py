"""Quotas with Eucalyptus's quota keys, per account and per user.

Table "quotas": one record per account ("ACCOUNT", user "*") or user ("ACCOUNT/USER") with
`limits` {quota key: number}. No limit means unlimited. Usage is counted from the resource
tables INSIDE the transaction that allocates (`check(tx, ...)` before the insert), so the
state's lock makes the check and the allocation one step: two requests cannot both take the
last slot.

Units as Eucalyptus: sizes of instances in vCPUs, MB of memory and GB of disk; volumes GB;
s3:quota-buckettotalsize MB (of every bucket of the account/user together).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cloudctl.errors import CapacityError, InputError, NotFound
from cloudctl.identity import ACCOUNTS, ADMIN_ACCOUNT, USERS, Principal, parse_principal
from cloudctl.state import Store, Transaction

TABLE = "quotas"
ACCOUNT_WIDE = "*"
_LIVE_INSTANCE = {"pending", "running", "stopping", "stopped", "shutting-down"}
_ACTIVE_INSTANCE = {"pending", "running", "stopping", "shutting-down"}
_LIVE_VOLUME = {"creating", "available", "in-use", "deleting", "error"}
_LIVE_SNAPSHOT = {"pending", "completed", "error"}

Measure = Callable[[dict[str, Any]], int]
# key -> (table, which records count, how much each counts)
KEYS: dict[str, tuple[str, Callable[[dict[str, Any]], bool], Measure]] = {
    "ec2:quota-vminstancenumber": ("instances", lambda r: r["state"] in _LIVE_INSTANCE,
                                   lambda r: 1),
    "ec2:quota-vminstanceactivenumber": ("instances", lambda r: r["state"] in _ACTIVE_INSTANCE,
                                         lambda r: 1),
    "ec2:quota-cputotalsize": ("instances", lambda r: r["state"] in _LIVE_INSTANCE,
                               lambda r: int(r.get("vcpus", 0))),
    "ec2:quota-memorytotalsize": ("instances", lambda r: r["state"] in _LIVE_INSTANCE,
                                  lambda r: int(r.get("memory_mb", 0))),
    "ec2:quota-disktotalsize": ("instances", lambda r: r["state"] in _LIVE_INSTANCE,
                                lambda r: int(r.get("disk_gb", 0))),
    "ec2:quota-volumenumber": ("volumes", lambda r: r["state"] in _LIVE_VOLUME, lambda r: 1),
    "ec2:quota-volumetotalsize": ("volumes", lambda r: r["state"] in _LIVE_VOLUME,
                                  lambda r: int(r.get("size_gb", 0))),
    "ec2:quota-snapshotnumber": ("snapshots", lambda r: r["state"] in _LIVE_SNAPSHOT,
                                 lambda r: 1),
    "ec2:quota-addressnumber": ("addresses", lambda r: True, lambda r: 1),
    "ec2:quota-imagenumber": ("images", lambda r: r.get("kind", "machine") == "machine",
                              lambda r: 1),
    # The default group is made by the cloud on first use: it does not count.
    "ec2:quota-securitygroupnumber": ("groups", lambda r: r.get("name") != "default",
                                      lambda r: 1),
    "s3:quota-bucketnumber": ("buckets", lambda r: True, lambda r: 1),
    "s3:quota-buckettotalsize": ("buckets", lambda r: True,
                                 lambda r: -(-int(r.get("bytes", 0)) // 2**20)),  # MB, rounded up
}  # fmt: skip


class QuotaExceeded(CapacityError):
    """An allocation would pass a quota; nothing was allocated."""

    exit_code = 5


def validate_key(key: str) -> str:
    if key not in KEYS:
        raise InputError(f"unknown quota key {key!r}: one of {', '.join(KEYS)}")
    return key


def _record_id(principal: Principal, account_wide: bool) -> str:
    return principal.account if account_wide else str(principal)


def usage(tx: Transaction, key: str, account: str, user: str | None = None) -> int:
    table, counts, measure = KEYS[key]
    return sum(
        measure(r)
        for r in tx.table(table).search(account=account)
        if counts(r) and (user is None or r.get("user") == user)
    )


def check(tx: Transaction, principal: Principal, asked: Mapping[str, int]) -> None:
    """Refuse (QuotaExceeded) when adding `asked` {key: amount} to what the principal's
    account, or the principal itself, already holds passes a limit. Call it in the
    transaction that then allocates. The admin account has no quotas."""
    if principal.account == ADMIN_ACCOUNT:
        return
    quotas = tx.table(TABLE)
    scopes = [
        (quotas.get(principal.account), f"account {principal.account}", None),
        (quotas.get(str(principal)), f"user {principal}", principal.user),
    ]
    for record, who, user in scopes:
        for key, amount in asked.items():
            limit = (record or {}).get("limits", {}).get(key)
            if limit is None or amount <= 0:
                continue
            used = usage(tx, key, principal.account, user)
            if used + amount > limit:
                raise QuotaExceeded(
                    f"quota {key} of {who} is {limit}: {used} in use, {amount} more asked"
                )


class Quotas:
    def __init__(self, store: Store) -> None:
        self.store = store

    def set(self, target: str, key: str, limit: int | None) -> dict[str, Any]:
        """Set (or with None remove) a limit of 'ACCOUNT' or 'ACCOUNT/USER'."""
        validate_key(key)
        if limit is not None and limit < 0:
            raise InputError(f"bad limit {limit} for {key}: must be 0 or more")
        account_wide = "/" not in target
        principal = parse_principal(target)
        if account_wide:
            principal = Principal(principal.account, ACCOUNT_WIDE)
        if principal.account == ADMIN_ACCOUNT:
            raise InputError("the admin account has no quotas")
        with self.store.transaction() as tx:
            if account_wide and tx.table(ACCOUNTS).get(principal.account) is None:
                raise NotFound(f"account {principal.account} does not exist")
            if not account_wide and tx.table(USERS).get(str(principal)) is None:
                raise NotFound(f"user {principal} does not exist")
            rid = _record_id(principal, account_wide)
            record = tx.table(TABLE).get(rid)
            limits = dict((record or {}).get("limits", {}))
            if limit is None:
                limits.pop(key, None)
            else:
                limits[key] = limit
            if record is None:
                record = tx.table(TABLE).insert(
                    {"id": rid, "account": principal.account, "user": principal.user,
                     "limits": limits}
                )  # fmt: skip
            else:
                record = tx.table(TABLE).update(rid, limits=limits)
            return record

    def show(self, target: str) -> list[dict[str, Any]]:
        """Every quota key of 'ACCOUNT' or 'ACCOUNT/USER': limit and usage."""
        account_wide = "/" not in target
        principal = parse_principal(target)
        account, user = principal.account, None if account_wide else principal.user
        rid = _record_id(principal, account_wide)
        with self.store.snapshot() as snap:
            limits = (snap.table(TABLE).get(rid) or {}).get("limits", {})
            return [
                {"key": key, "limit": limits.get(key), "used": usage(snap, key, account, user)}
                for key in KEYS
            ]

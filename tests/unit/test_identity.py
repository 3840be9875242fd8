"""Accounts, users, access keys and quotas on a real state file (no cloud needed)."""

from __future__ import annotations

import json
import threading

import pytest

from cloudctl import quotas
from cloudctl.errors import InputError, NotFound
from cloudctl.identity import (
    ADMIN,
    Identity,
    InactiveAccessKey,
    Principal,
    UnknownAccessKey,
    acting_as,
    current_owner,
    parse_principal,
    visible,
)
from cloudctl.state import StateStore
from tests.unit.helpers import init_state


@pytest.fixture
def store(tmp_path):
    return StateStore(init_state(tmp_path / "state.json"))


def test_keys_authenticate_and_secrets_are_not_stored_in_clear(store):
    ident = Identity(store)
    ident.create_account("dev")
    dev = Principal("dev", "alice")
    ident.create_user(dev)
    key = ident.create_key(dev)
    assert key["access_key_id"].startswith("AKI") and len(key["access_key_id"]) == 20
    assert ident.authenticate(key["access_key_id"]) == (key["secret_access_key"], dev)
    assert key["secret_access_key"] not in store.path.read_text()
    assert oct(ident.key_path.stat().st_mode & 0o777) == "0o600"
    assert all("secret" not in k and "secret_access_key" not in k for k in ident.list_keys())
    ident.set_key_status(key["access_key_id"], active=False)
    with pytest.raises(InactiveAccessKey):
        ident.authenticate(key["access_key_id"])
    ident.delete_key(key["access_key_id"])
    with pytest.raises(UnknownAccessKey):
        ident.authenticate(key["access_key_id"])


def test_names_limits_and_deletion(store):
    ident = Identity(store)
    with pytest.raises(InputError, match="bad account name"):
        ident.create_account("Bad_Name")
    with pytest.raises(InputError, match="bad user name"):
        parse_principal("dev/no spaces")
    with pytest.raises(NotFound, match="account nope does not exist"):
        ident.create_user(Principal("nope", "bob"))
    ident.create_account("dev")
    with pytest.raises(InputError, match="already exists"):
        ident.create_account("dev")
    ident.create_key(Principal("dev", "admin"))
    ident.create_key(Principal("dev", "admin"))
    with pytest.raises(InputError, match="at most 2"):
        ident.create_key(Principal("dev", "admin"))
    with store.transaction() as tx:  # a live volume keeps the account
        tx.table("volumes").insert({"id": "vol-1", "account": "dev", "user": "admin",
                                    "state": "available"})  # fmt: skip
    with pytest.raises(InputError, match="still owns 1 volumes"):
        ident.delete_account("dev")
    with store.transaction() as tx:
        tx.table("volumes").update("vol-1", state="deleted")
    ident.delete_account("dev")
    assert [a["name"] for a in ident.list_accounts()] == ["admin"]
    assert ident.list_keys() == []
    with pytest.raises(InputError):
        ident.delete_account("admin")


def test_acting_as_scopes_visibility():
    assert current_owner() == ADMIN
    record = {"account": "dev"}
    with acting_as(Principal("ops", "bob")):
        assert not visible(record)
        with acting_as(Principal("dev", "x")):
            assert visible(record)
    assert current_owner() == ADMIN and visible(record)


def test_quota_check_counts_inside_the_transaction(store):
    ident = Identity(store)
    ident.create_account("dev")
    ident.create_user(Principal("dev", "alice"))
    q = quotas.Quotas(store)
    q.set("dev", "ec2:quota-volumenumber", 3)
    q.set("dev/alice", "ec2:quota-volumetotalsize", 5)
    alice = Principal("dev", "alice")
    with pytest.raises(InputError, match="unknown quota key"):
        q.set("dev", "ec2:quota-nothing", 1)

    def take(size: int, n: int) -> None:
        with store.transaction() as tx:
            quotas.check(tx, alice, {"ec2:quota-volumenumber": 1,
                                     "ec2:quota-volumetotalsize": size})  # fmt: skip
            tx.table("volumes").insert({"id": f"vol-{n}", "account": "dev", "user": "alice",
                                        "state": "creating", "size_gb": size})  # fmt: skip

    take(2, 1)
    with pytest.raises(quotas.QuotaExceeded, match="ec2:quota-volumetotalsize of user dev/alice"
                       " is 5: 2 in use, 4 more asked"):  # fmt: skip
        take(4, 2)
    # Concurrent: 8 threads for the last 2 account-wide slots (1 GB each): exactly 2 pass.
    results = []

    def racer(n: int) -> None:
        try:
            take(1, n)
            results.append("ok")
        except quotas.QuotaExceeded:
            results.append("refused")

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(10, 18)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] * 2 + ["refused"] * 6
    shown = {row["key"]: row for row in q.show("dev")}
    assert shown["ec2:quota-volumenumber"] == {"key": "ec2:quota-volumenumber", "limit": 3,
                                                "used": 3}  # fmt: skip
    assert json.loads(store.path.read_text())  # still a valid state


@pytest.mark.parametrize("key", sorted(quotas.KEYS))
def test_every_quota_key_refuses_past_its_limit(store, key):
    """Each key counts its own records: at its limit, one more is refused, naming the key."""
    Identity(store).create_account("dev")
    table, counts, measure = quotas.KEYS[key]
    record = {"id": "sg-00000001" if table == "groups" else "r-1", "account": "dev",
              "user": "admin", "state": "running" if table == "instances" else "available",
              "name": "web", "kind": "machine", "vcpus": 2, "memory_mb": 256, "disk_gb": 5,
              "size_gb": 3, "bytes": 3 * 2**20}  # fmt: skip
    if table == "snapshots":
        record["state"] = "completed"
    with store.transaction() as tx:
        tx.table(table).insert(record)
    used = measure(record)
    assert counts(record) and used > 0
    quotas.Quotas(store).set("dev", key, used)
    dev = Principal("dev", "admin")
    with store.snapshot() as snap:
        quotas.check(snap, dev, {key: 0})
        with pytest.raises(quotas.QuotaExceeded, match=f"quota {key} of account dev is {used}"):
            quotas.check(snap, dev, {key: 1})

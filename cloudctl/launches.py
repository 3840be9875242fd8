"""Launch rounds: `instance run` requests that arrive while a play runs share the next play.

    request_id = submit(store, {"instances": [...], "vars": {...}, "hosts": [...], ...})
    outcome = await_outcome(store, request_id, play_round)

A request waits in the state's table `launches` (`queued`). Whoever holds the lock
`launch-round` (Store.try_lock: it dies with its holder) is the round runner: it claims every
waiting request (`playing`, in one transaction), hands them to `play_round`, which runs ONE
play for all of them and records each request's instances, and stores each request's
outcome (`done`); then it claims again until nothing waits, and lets the lock go. Every
requester tries the lock (POLL_INTERVAL): once it holds it, it takes its outcome if its
request is done, else it is the runner. So no request is ever left without a runner, whether
the requesters are cloudctl processes or threads of the API's worker (each call opens its
own lock).

The runner holds the lock from its claim until the outcomes are stored: a request still
`playing` when the lock is free was claimed by a round whose runner died. The next runner
claims it again (`orphan`: its play may have left processes or started the instances;
play_round decides). An error of `play_round` ends every request of the round with that
error; a request whose requester is gone is removed KEEP_DONE seconds after it ended.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from cloudctl.identity import current_owner
from cloudctl.state import StateError, Store, utc_now

TABLE = "launches"
LOCK = "launch-round"
QUEUED, PLAYING, DONE = "queued", "playing", "done"
POLL_INTERVAL = 0.1  # s between a waiting requester's looks at its request
KEEP_DONE = 600  # s: an outcome nobody took is removed after this

# play_round(requests) -> {request id: outcome}: runs one play for the claimed requests.
PlayRound = Callable[[list[dict[str, Any]]], Mapping[str, dict[str, Any]]]


def submit(store: Store, request: Mapping[str, Any]) -> str:
    """Queue a launch request (what play_round needs of it); its id."""
    owner = current_owner()
    request_id = f"launch-{secrets.token_hex(8)}"
    with store.transaction() as tx:
        tx.table(TABLE).insert(
            {**request, "id": request_id, "account": owner.account, "user": owner.user,
             "state": QUEUED}
        )  # fmt: skip
    return request_id


def await_outcome(
    store: Store, request_id: str, play_round: PlayRound, poll: float = POLL_INTERVAL
) -> dict[str, Any]:
    """The outcome of a request, once this requester holds the lock: it runs rounds (this
    request's and others') until none waits, then takes its outcome and removes the
    request. Waiting requesters only try the lock: reading the state meanwhile would starve
    the runner's transactions (a flock favours no writer over many readers)."""
    while True:
        with store.try_lock(LOCK) as runner:
            if runner:
                outcome = _take(store, request_id)
                if outcome is None:
                    run_rounds(store, play_round)
                    outcome = _take(store, request_id)
                if outcome is None:
                    raise StateError(f"launch request {request_id} was not played")
                return outcome
        time.sleep(poll)


def _take(store: Store, request_id: str) -> dict[str, Any] | None:
    """The request's outcome, the request removed (None: not done yet)."""
    with store.transaction() as tx:
        request = tx.table(TABLE).get(request_id)
        if request is None:
            raise StateError(f"launch request {request_id} is gone from the state")
        if request["state"] != DONE:
            return None
        tx.table(TABLE).remove(request_id)
        return request["outcome"]


def run_rounds(store: Store, play_round: PlayRound) -> int:
    """Play rounds until no request waits (the caller holds the lock); the rounds played."""
    rounds = 0
    while batch := _claim(store):
        rounds += 1
        try:
            outcomes = dict(play_round(batch))
        except Exception as exc:  # noqa: BLE001 (each request's error, not only ours)
            outcomes = {r["id"]: {"error": str(exc) or type(exc).__name__} for r in batch}
        with store.transaction() as tx:
            table = tx.table(TABLE)
            for request in batch:
                outcome = outcomes.get(request["id"]) or {"error": "the round gave no outcome"}
                # The vars may carry user data: kept no longer than needed.
                table.update(request["id"], state=DONE, outcome=outcome, vars={}, ended=utc_now())
    return rounds


def _claim(store: Store) -> list[dict[str, Any]]:
    """Every request that waits, or that a dead runner's round had claimed (`orphan`)."""
    with store.transaction() as tx:
        table = tx.table(TABLE)
        batch = []
        for request in table.all():
            if request["state"] == DONE:
                if _age(request["ended"]) > KEEP_DONE:
                    table.remove(request["id"])
                continue
            orphan = request["state"] == PLAYING
            batch.append({**table.update(request["id"], state=PLAYING), "orphan": orphan})
        return batch


def _age(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def merge_vars(fragments: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The extra vars of one play for several requests' vars: mappings merged key by key,
    lists joined; a list item that is a mapping with a `name` (an instance, a firewall) or
    a `sha256` (an image) replaces an earlier one with the same (the later request's is
    the newer: e.g. a firewall's generation)."""
    merged: dict[str, Any] = {}
    for fragment in fragments:
        merged = _merge(merged, fragment)
    return merged


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return {**a, **{k: _merge(a[k], v) if k in a else v for k, v in b.items()}}
    if isinstance(a, list) and isinstance(b, list):
        keys = [_item_key(item) for item in b]
        kept = [item for item in a if _item_key(item) is None or _item_key(item) not in keys]
        return kept + [item for item in b if _item_key(item) is not None or item not in kept]
    return b


def _item_key(item: Any) -> tuple | None:
    if isinstance(item, Mapping):
        for field in ("name", "sha256"):
            if field in item:
                return (field, item[field], item.get("role"))
    return None

"""The state store: one repository API, two backends (open_store chooses from the settings).

    store = open_store(settings)             # StateStore (TinyDB file) or EtcdStore
    with store.transaction() as tx:
        tx.table("instances").insert({"id": new_id("instance"), "account": a, "user": u})
        ip = tx.allocate("ip:zone-a", subnet.iter_hosts(), owner_id=instance_id)
    with store.snapshot() as snap:           # read only, consistent
        running = snap.table("instances").search(state="running")

Concurrency and durability:
- Every transaction holds an exclusive fcntl.flock on `<state file>.lock` from its first read
  to its commit, so read-modify-write cycles of several cloudctl processes never interleave.
  Snapshots hold the shared lock. flock locks belong to an open file, so threads of one
  process are serialized the same way; a transaction or snapshot inside another one of the
  same file in the same thread is refused (it would wait for itself).
- A transaction works on a private copy of the whole database (TinyDB over an in-memory
  storage) and writes nothing until it ends without an exception. The commit writes a temp
  file in the same directory, fsyncs it, renames it over the state file and fsyncs the
  directory, so the file always holds either the old or the new content, never a mix.
- The file is TinyDB's JSON layout ({table: {doc_id: document}}), mode 0600.

The etcd backend (a CLC pair and a witness share the state) keeps the same API; see
EtcdStore for how it stores, locks and commits.

Every record carries `id`, `account` and `user` (the owner, DESIGN.md) and the store adds
`created` and `updated` (UTC, ISO 8601). Allocations of pooled values (IPs, MACs) live in the
reserved table `_allocations`, one document per allocated value.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import fcntl
import json
import os
import random
import re
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from cloudctl.config import EtcdState, Settings
from cloudctl.errors import CloudError

if TYPE_CHECKING:  # imported where used: see etcd_client
    import etcd3gw
    from etcd3gw import exceptions as etcd_errors

OWNER_FIELDS = ("account", "user")
STAMP_FIELDS = ("created", "updated")
ALLOCATIONS = "_allocations"
IDENTITY = "_cloud"  # one document: the id and name of the cloud the state describes


class StateError(CloudError):
    """The state store cannot be read or a change of it is inconsistent."""

    exit_code = 1


class PoolExhausted(StateError):
    """Every value of an allocation pool is taken."""


class RecordNotFound(StateError):
    """update/remove of a record that does not exist."""


class StateMissing(StateError):
    """There is no state file where the cloud's state should be."""


class ForeignState(StateError):
    """The state describes another cloud (or records no cloud at all)."""


class EtcdRefused(StateError):
    """etcd answered a request with an error (not: could not be reached)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class _BufferStorage(Storage):
    """TinyDB storage over a dict loaded once from the state file; tracks changes."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.dirty = False

    def read(self) -> dict[str, Any]:
        return self.data

    def write(self, data: dict[str, Any]) -> None:
        self.data = data
        self.dirty = True

    def close(self) -> None:
        pass


class Table:
    """Records of one table, addressed by their `id` field."""

    def __init__(self, tx: Transaction, name: str, writable: bool) -> None:
        self._tx = tx
        self._name = name
        self._writable = writable
        self._table = tx._db.table(name, cache_size=0)

    @property
    def name(self) -> str:
        return self._name

    def get(self, record_id: str) -> dict[str, Any] | None:
        doc = self._table.get(Query().id == record_id)
        return copy.deepcopy(dict(doc)) if doc is not None else None

    def all(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(dict(doc)) for doc in self._table.all()]

    def search(self, **equal_fields: Any) -> list[dict[str, Any]]:
        """Records whose fields equal all the given values (all records when none given)."""
        if not equal_fields:
            return self.all()
        return [
            copy.deepcopy(dict(doc))
            for doc in self._table.all()
            if all(k in doc and doc[k] == v for k, v in equal_fields.items())
        ]

    def insert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Insert a new record; refuses a record without id/owner or with a taken id."""
        self._check_writable()
        missing = [f for f in ("id", *OWNER_FIELDS) if not record.get(f)]
        if missing:
            raise StateError(f"{self._name}: record lacks {', '.join(missing)}: {record!r}")
        if self._table.contains(Query().id == record["id"]):
            raise StateError(f"{self._name}: duplicate id {record['id']}")
        now = utc_now()
        doc = {**record, "created": now, "updated": now}
        doc = _jsonable(doc, self._name)
        self._table.insert(doc)
        return copy.deepcopy(doc)

    def update(self, record_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a record and stamp `updated`; returns the new record."""
        self._check_writable()
        frozen = {"id", "created"} & fields.keys()
        if frozen:
            raise StateError(f"{self._name} {record_id}: cannot change {', '.join(sorted(frozen))}")
        q = Query().id == record_id
        if not self._table.contains(q):
            raise RecordNotFound(f"{self._name}: no record {record_id}")
        fields = _jsonable({**fields, "updated": utc_now()}, self._name)
        self._table.update(fields, q)
        return self.get(record_id)  # type: ignore[return-value]

    def remove(self, record_id: str) -> dict[str, Any]:
        """Remove a record; returns it."""
        self._check_writable()
        record = self.get(record_id)
        if record is None:
            raise RecordNotFound(f"{self._name}: no record {record_id}")
        self._table.remove(Query().id == record_id)
        return record

    def __len__(self) -> int:
        return len(self._table)

    def _check_writable(self) -> None:
        if not self._writable:
            raise StateError(f"{self._name}: read-only snapshot")


class Transaction:
    """A view of the whole store for the duration of one lock (see StateStore)."""

    def __init__(
        self,
        data: dict[str, Any],
        writable: bool,
        found: bool = True,
        running_operations: set[str] | None = None,
    ) -> None:
        self._storage = _BufferStorage(data)
        self._db = TinyDB(storage=_StorageFactory(self._storage))
        self._writable = writable
        self.found = found  # False: there is no state at all where it should be
        # etcd: the journal entries whose operation still holds its lease (journal.py);
        # None: the backend cannot tell (TinyDB: the journal checks the recorded pid)
        self.running_operations = running_operations

    @property
    def changed(self) -> bool:
        return self._storage.dirty

    def table(self, name: str) -> Table:
        if not name or name.startswith("_"):
            raise ValueError(f"reserved or empty table name {name!r}")
        return Table(self, name, self._writable)

    def identity(self) -> str:
        """The id of the cloud this state describes ("" when none is recorded)."""
        docs = self._db.table(IDENTITY, cache_size=0).all()
        return str(docs[0]["cloud_id"]) if docs else ""

    def check_identity(self, where: str, cloud_id: str) -> None:
        """Refuse a state (`where` names it) that records no cloud, or another one than
        `cloud_id` ("" accepts any recorded cloud: a configuration from before cloud ids)."""
        recorded = self.identity()
        if not recorded:
            raise ForeignState(
                f"the state {where} records no cloud id: `cloudctl state init` adopts it "
                "for this cloud"
            )
        if cloud_id and recorded != cloud_id:
            raise ForeignState(
                f"the state {where} is of cloud {recorded}, not of this cloud {cloud_id}"
            )

    def tables(self) -> set[str]:
        return {name for name in self._db.tables() if not name.startswith("_")}

    # --- pooled values (IP, MAC, ...) ---------------------------------------------------

    def allocate(self, pool_name: str, candidates: Iterable[Any], owner_id: str) -> Any:
        """Record and return the first candidate not yet allocated in the pool.

        Candidates are compared by str(); the candidate object itself is returned (e.g. a
        netaddr.IPAddress). Raises StateError when every candidate is taken.
        """
        if not self._writable:
            raise StateError(f"pool {pool_name}: read-only snapshot")
        pool = self._db.table(ALLOCATIONS, cache_size=0)
        taken = {doc["value"] for doc in pool.search(Query().pool == pool_name)}
        for candidate in candidates:
            value = str(candidate)
            if value not in taken:
                pool.insert(
                    {"pool": pool_name, "value": value, "owner": owner_id, "created": utc_now()}
                )
                return candidate
        raise PoolExhausted(f"pool {pool_name} exhausted ({len(taken)} values allocated)")

    def release(self, pool_name: str, value: Any) -> bool:
        """Free a value of a pool; returns False when it was not allocated."""
        if not self._writable:
            raise StateError(f"pool {pool_name}: read-only snapshot")
        pool = self._db.table(ALLOCATIONS, cache_size=0)
        q = (Query().pool == pool_name) & (Query().value == str(value))
        return bool(pool.remove(q))

    def allocations(self, pool_name: str) -> dict[str, str]:
        """value -> owner id of everything allocated in a pool."""
        pool = self._db.table(ALLOCATIONS, cache_size=0)
        return {d["value"]: d["owner"] for d in pool.search(Query().pool == pool_name)}

    def pools(self) -> set[str]:
        """The names of the pools that hold allocated values."""
        return {d["pool"] for d in self._db.table(ALLOCATIONS, cache_size=0).all()}

    def release_owner(self, pool_name: str, owner_id: str) -> list[str]:
        """Free every value of a pool held by an owner; returns the values."""
        if not self._writable:
            raise StateError(f"pool {pool_name}: read-only snapshot")
        pool = self._db.table(ALLOCATIONS, cache_size=0)
        q = (Query().pool == pool_name) & (Query().owner == owner_id)
        values = [d["value"] for d in pool.search(q)]
        pool.remove(q)
        return values


class _StorageFactory:
    """TinyDB instantiates its storage class itself; hand it an existing one."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def __call__(self, *args: Any, **kwargs: Any) -> Storage:
        return self._storage


class Store:
    """The repository API both backends share; a backend supplies transaction(), snapshot()
    and where its state is (`name`, for messages)."""

    name: str
    # The key that encrypts secrets in the state (cloudctl/identity.py), a file of the CLC
    # beside its state file: never in the state itself. With etcd, the same path on each CLC
    # (the deploy gives them the same key); None: there is none (secrets cannot be read).
    key_path: Path | None

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        raise NotImplementedError

    def snapshot(self) -> contextlib.AbstractContextManager[Transaction]:
        raise NotImplementedError

    # --- the cloud the state describes ---------------------------------------------------

    def check(self, cloud_id: str = "") -> None:
        """Refuse a missing state, a state that records no cloud, and (when `cloud_id` is
        given) the state of another cloud: never treat them as an empty cloud."""
        with self.checked_snapshot(cloud_id):
            pass

    @contextlib.contextmanager
    def checked_snapshot(self, cloud_id: str = "") -> Iterator[Transaction]:
        """A read-only view (snapshot) of a state that passed `check`, read once."""
        if not self._present():
            raise self._missing()
        with self.snapshot() as snap:
            if not snap.found:
                raise self._missing()
            snap.check_identity(self.name, cloud_id)
            yield snap

    def initialize(self, cloud_id: str, cloud_name: str) -> bool:
        """Record the cloud this state describes, creating the state when there is none;
        a state that records no cloud yet is adopted. True when something was written."""
        if not cloud_id:
            raise StateError("the cloud has no id (deploy it first)")
        with self.transaction() as tx:
            if not tx.identity():
                table = tx._db.table(IDENTITY, cache_size=0)
                table.insert({"cloud_id": cloud_id, "name": cloud_name, "created": utc_now()})
                return True
            tx.check_identity(self.name, cloud_id)
        return False

    # Shortcuts for a single read.
    def get(self, table: str, record_id: str) -> dict[str, Any] | None:
        with self.snapshot() as snap:
            return snap.table(table).get(record_id)

    def all(self, table: str) -> list[dict[str, Any]]:
        with self.snapshot() as snap:
            return snap.table(table).all()

    def search(self, table: str, **equal_fields: Any) -> list[dict[str, Any]]:
        with self.snapshot() as snap:
            return snap.table(table).search(**equal_fields)

    # --- operations of the journal (cloudctl/journal.py) ---------------------------------

    def hold_operation(self, event_id: str) -> None:
        """Mark an operation as running for as long as this process lives (etcd: a leased
        key; TinyDB: nothing, the journal records the pid)."""

    def drop_operation(self, event_id: str) -> None:
        """The operation ended (after its journal entry says so)."""

    # --- named locks that die with their holder ------------------------------------------

    def try_lock(self, name: str) -> contextlib.AbstractContextManager[bool]:
        """Take the lock `name` if it is free, without waiting: the block gets True while
        this thread holds it, False when another holder has it. The lock dies with its
        holder (a crashed process never keeps it): with the file, a flock on `<state
        file>.<name>.lock`, one open file per call, so threads of one process exclude each
        other too; with etcd, a key on the process's lease (gone within its TTL)."""
        raise NotImplementedError

    # --- internals -----------------------------------------------------------------------

    def _present(self) -> bool:
        return True

    def _missing(self) -> StateMissing:
        return StateMissing(
            f"no state in {self.name}: `cloudctl deploy` creates it, `cloudctl state migrate` "
            "copies a state file into it; `cloudctl state init` starts an empty one for a "
            "deployed cloud whose state is lost"
        )


class StateStore(Store):
    """The state database in one JSON file (TinyDB), safe for several processes at once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.name = str(self.path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.key_path = _key_path(self.path)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Exclusive read-modify-write; commits only when the block ends without exception."""
        with self._locked(fcntl.LOCK_EX):
            self._remove_stale_temps()
            tx = Transaction(self._load(), writable=True)
            yield tx
            if tx.changed:
                self._write(tx._storage.data)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Transaction]:
        """A consistent read-only view (shared lock held for the block)."""
        with self._locked(fcntl.LOCK_SH):
            yield Transaction(self._load(), writable=False)

    @contextlib.contextmanager
    def try_lock(self, name: str) -> Iterator[bool]:
        path = self.path.with_name(f"{self.path.name}.{_lock_name(name)}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                held = False
            yield held
        finally:
            os.close(fd)  # closing our open file releases its lock

    def _present(self) -> bool:
        return self.path.is_file()

    def _missing(self) -> StateMissing:
        return StateMissing(
            f"no state at {self.path}: `cloudctl deploy` creates it; `cloudctl state init` "
            "starts an empty one for a deployed cloud whose state is lost"
        )

    # --- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with _not_nested(self.name):
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StateError(
                    f"cannot open the state lock {self.lock_path}: {exc.strerror}"
                ) from exc
            try:
                fcntl.flock(fd, mode)
                yield
            finally:
                os.close(fd)  # closing the last descriptor releases the lock

    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateError(
                f"state file {self.path} is corrupt ({len(raw)} bytes, not JSON: {exc}); "
                "restore it from a backup or move it away"
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(table, dict) and all(isinstance(doc, dict) for doc in table.values())
            for table in data.values()
        ):
            raise StateError(
                f"state file {self.path} is corrupt (not a table -> document mapping); "
                "restore it from a backup or move it away"
            )
        return data

    def _write(self, data: dict[str, Any]) -> None:
        payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        directory = self.path.parent
        tmp_fd, tmp_name = tempfile.mkstemp(
            dir=directory, prefix=f".{self.path.name}.", suffix=".tmp"
        )  # mode 0600
        try:
            with os.fdopen(tmp_fd, "wb") as tmp:
                tmp.write(payload)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, self.path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            if isinstance(exc, OSError):
                raise StateError(f"cannot write the state file {self.path}: {exc}") from exc
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _remove_stale_temps(self) -> None:
        """Temp files are only written under the exclusive lock: any left is from a crash."""
        prefix, directory = f".{self.path.name}.", self.path.parent
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


# --- etcd ---------------------------------------------------------------------------------

# s: a dead or cut-off holder's lock frees itself within this time. It bounds a CLC
# failover: a primary cut off while holding the lock delays the secondary's first write by
# up to this (measured: 16 s after a network cut with 10). Kept alive every TTL/3.
LOCK_TTL = 5
LOCK_WAIT = 60  # s: how long a transaction waits for the lock before giving up
OPERATION_TTL = 10  # s: a dead cloudctl's operation shows as interrupted within this time
RETRY_FOR = 10  # s: how long a request tries the members before etcd counts as unreachable
REQUEST_TIMEOUT = 3  # s: one HTTP request to one member
LOCK_KEY, COMMIT_KEY, OPERATIONS, LOCKS = "lock", "txn", "ops/", "locks/"


class EtcdStore(Store):
    """The state in an etcd cluster (a CLC pair and a witness), through etcd's JSON gateway
    (etcd3gw). Keys under the prefix, values JSON:

        <prefix>cloud                   the identity document (_cloud)
        <prefix>t/<table>/<record id>   one record
        <prefix>a/<pool>/<value>        one allocated value (_allocations)
        <prefix>lock                    the transaction lock, on its holder's lease
        <prefix>txn                     the token of the last committed transaction
        <prefix>ops/<event id>          a running operation, on its process's lease
        <prefix>locks/<name>            a named lock (try_lock), on its holder's lease

    Each cloudctl process holds one lease that a thread keeps alive (a session, as etcd's
    own lock recipe): the lock and the keys of its running operations live on it, so they
    go when the process or its host dies, within the lease's TTL. A transaction takes the
    lock (a key created only if absent), reads the prefix at one revision into the same
    in-memory layout as the TinyDB file, runs the block on it, and commits only the keys
    that changed in one etcd transaction, which also releases the lock. The commit compares
    the mod revision of every changed key with what was read (create revision 0 for new
    ones) and that the lock is still this transaction's: a failed compare is a StateError,
    nothing is written. Snapshots read the prefix at one revision, without the lock (a
    process reads only what changed since its last read: _read). Records of a table come
    back in creation order (those created by one transaction by key). A member that cannot be reached passes the request to the next one; a commit
    whose answer was lost is recognised by its token, never applied twice.
    """

    def __init__(
        self,
        config: EtcdState,
        *,
        state_file: Path | None = None,
        lock_ttl: int | None = None,
        lock_wait: float | None = None,
        operation_ttl: int | None = None,
        retry_for: float | None = None,
    ) -> None:
        self.config = config
        self.prefix = config.prefix
        self.name = str(config)
        # state_file: where this CLC's state file is (or was, before `state migrate`)
        self.key_path = _key_path(state_file) if state_file else None
        self.lock_ttl = lock_ttl or LOCK_TTL
        self.lock_wait = lock_wait or LOCK_WAIT
        self.operation_ttl = operation_ttl or OPERATION_TTL
        self.etcd = _connection(config, retry_for or RETRY_FOR)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with _not_nested(self.name), self._locked() as lock:
            state = self._read()
            tx = Transaction(state.data(), True, state.found, state.operations)
            yield tx
            if tx.changed:
                lock.released = self._commit(state, _records(tx._storage.data), lock.token)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Transaction]:
        with _not_nested(self.name):
            state = self._read()
            yield Transaction(state.data(), False, state.found, state.operations)

    def hold_operation(self, event_id: str) -> None:
        etcd_session(self.etcd, self.operation_ttl).put(self.prefix + OPERATIONS + event_id)

    def drop_operation(self, event_id: str) -> None:
        etcd_session(self.etcd, self.operation_ttl).delete(self.prefix + OPERATIONS + event_id)

    @contextlib.contextmanager
    def try_lock(self, name: str) -> Iterator[bool]:
        # The key holds a token of this call: a request retried on another member finds
        # the lock its lost first answer gave us, and only we release it.
        session = etcd_session(self.etcd, self.operation_ttl)
        key, token = b64(self.prefix + LOCKS + _lock_name(name)), uuid.uuid4().hex
        # A look first (a read of this member, maybe stale): a try is a raft write.
        look = {"key": key, "count_only": True, "serializable": True}
        if int(self.etcd.post("/kv/range", look).get("count", 0)):
            yield False
            return
        answer = self.etcd.post("/kv/txn", {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
            "success": [{"request_put": {"key": key, "value": b64(token), "lease": session.current()}}],
            "failure": [{"request_range": {"key": key}}],
        })  # fmt: skip
        held = bool(answer.get("succeeded")) or _range_value(answer, 0) == token
        try:
            yield held
        finally:
            if held:
                release = {"compare": [_compare_value(self.prefix + LOCKS + name, token)],
                           "success": [{"request_delete_range": {"key": key}}]}  # fmt: skip
                with contextlib.suppress(StateError):  # out of reach: it goes with the lease
                    self.etcd.post("/kv/txn", release)

    # --- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Lock]:
        """Hold the state lock (its key holds our token while it is ours)."""
        session = etcd_session(self.etcd, self.lock_ttl)
        lock = _Lock(uuid.uuid4().hex)
        key = b64(self.prefix + LOCK_KEY)
        deadline = time.monotonic() + self.lock_wait
        delay = 0.002
        while True:
            lease = session.current()
            txn = {
                "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
                "success": [{"request_put": {"key": key, "value": b64(lock.token), "lease": lease}}],
                "failure": [{"request_range": {"key": key}}],
            }  # fmt: skip
            try:
                answer = self.etcd.post("/kv/txn", txn)
            except EtcdRefused as exc:
                if "lease not found" not in exc.reason:
                    raise
                session.renew(lease)  # expired while etcd was out of reach
                continue
            # A retried request may find the lock its lost first answer gave us.
            if answer.get("succeeded") or _range_value(answer, 0) == lock.token:
                break
            # Wait until the lock looks free: reads (of this member, maybe stale: the next
            # acquire decides), since every acquire attempt is a raft write.
            poll = {"key": key, "count_only": True, "serializable": True}
            while True:
                if time.monotonic() > deadline:
                    raise StateError(
                        f"the state lock {self.prefix}{LOCK_KEY} is still held by another "
                        f"transaction after {self.lock_wait:.0f} s (a dead holder's lock "
                        f"frees itself within {self.lock_ttl} s)"
                    )
                time.sleep(delay * (0.5 + random.random()))  # back off, not in lockstep
                delay = min(delay * 2, 0.1)
                if not int(self.etcd.post("/kv/range", poll).get("count", 0)):
                    break
        try:
            yield lock
        finally:
            if not lock.released:  # (a commit releases it) only if it is still ours
                release = {"compare": [_compare_value(self.prefix + LOCK_KEY, lock.token)],
                           "success": [{"request_delete_range": {"key": key}}]}  # fmt: skip
                try:
                    self.etcd.post("/kv/txn", release)
                except StateError:  # out of reach: let the lease, and the lock, expire
                    session.renew(lease)

    def _read(self) -> _EtcdState:
        """The prefix at one revision. The process keeps what it read last: it then reads
        only the keys changed since, and counts the records at the same revision (one
        read-only etcd transaction) to tell that none was deleted; else it reads it all."""
        cached = _READS.get((self.etcd, self.prefix))
        if cached is not None:
            state = self._read_changes(cached)
            if state is not None:
                _READS[(self.etcd, self.prefix)] = state
                return state
        prefix = self.prefix.encode()
        answer = self.etcd.post(
            "/kv/range", {"key": b64(prefix), "range_end": b64(_prefix_end(prefix))}
        )
        state = _EtcdState(int(answer["header"]["revision"]))
        self._take(state, answer.get("kvs", []))
        _READS[(self.etcd, self.prefix)] = state
        return state

    def _read_changes(self, cached: _EtcdState) -> _EtcdState | None:
        """`cached` brought up to date, or None when records were deleted since."""

        def counted(start: str, end: str | None = None) -> dict[str, Any]:
            ranged = {"key": b64(self.prefix + start), "count_only": True}
            return {
                "request_range": ranged | ({"range_end": b64(self.prefix + end)} if end else {})
            }

        prefix = self.prefix.encode()
        changed = {"key": b64(prefix), "range_end": b64(_prefix_end(prefix)),
                   "min_mod_revision": cached.revision + 1}  # fmt: skip
        ops = {"key": b64(self.prefix + OPERATIONS), "keys_only": True,
               "range_end": b64(_prefix_end((self.prefix + OPERATIONS).encode()))}  # fmt: skip
        answer = self.etcd.post("/kv/txn", {"success": [
            {"request_range": changed}, counted("t/", "t0"), counted("a/", "a0"), counted("cloud"),
            {"request_range": ops},
        ]})  # fmt: skip
        ranges = [r["response_range"] for r in answer["responses"]]
        state = _EtcdState(int(answer["header"]["revision"]), dict(cached.records))
        self._take(
            state, [kv for kv in ranges[0].get("kvs", []) if not _is_operation(kv, self.prefix)]
        )
        self._take(state, ranges[4].get("kvs", []))
        if sum(int(r.get("count", 0)) for r in ranges[1:4]) != len(state.records):
            return None
        return state

    def _take(self, state: _EtcdState, kvs: list[dict[str, Any]]) -> None:
        """Put what etcd answered into `state`: records (checked to be JSON objects) and
        running operations; the lock and the commit token are not the state's."""
        for kv in kvs:
            key = base64.b64decode(kv["key"]).decode()[len(self.prefix) :]
            if key.startswith(OPERATIONS):
                state.operations.add(key[len(OPERATIONS) :])
            elif _table_of(key) is not None:
                raw = base64.b64decode(kv.get("value", ""))
                try:
                    doc = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    doc = None
                if not isinstance(doc, dict):
                    raise StateError(
                        f"the state in {self.name} is corrupt (key {self.prefix}{key} does not "
                        "hold a JSON object); restore it from a backup"
                    )
                state.records[key] = _Record(
                    raw, int(kv["mod_revision"]), int(kv["create_revision"])
                )

    def _commit(self, state: _EtcdState, records: dict[str, dict[str, Any]], token: str) -> bool:
        """Write what changed and release the lock in one etcd transaction; False when
        nothing changed (nothing written, the lock still held)."""
        compare = [_compare_value(self.prefix + LOCK_KEY, token)]
        success = []
        for key, doc in records.items():
            old = state.records.get(key)
            payload = _json(doc)
            if old is not None and old.raw == payload:
                continue
            compare.append(_compare_revision(self.prefix + key, old))
            success.append({"request_put": {"key": b64(self.prefix + key), "value": b64(payload)}})
        for key in state.records.keys() - records.keys():
            compare.append(_compare_revision(self.prefix + key, state.records[key]))
            success.append({"request_delete_range": {"key": b64(self.prefix + key)}})
        if not success:
            return False
        commit_key = b64(self.prefix + COMMIT_KEY)
        success.append({"request_put": {"key": commit_key, "value": b64(token)}})
        success.append({"request_delete_range": {"key": b64(self.prefix + LOCK_KEY)}})
        failure = [
            {"request_range": {"key": b64(self.prefix + LOCK_KEY)}},
            {"request_range": {"key": commit_key}},
        ]
        answer = self.etcd.post(
            "/kv/txn", {"compare": compare, "success": success, "failure": failure}
        )
        if answer.get("succeeded") or _range_value(answer, 1) == token:
            return True  # (the second: a retried commit whose first answer was lost)
        if _range_value(answer, 0) != token:
            raise StateError(
                f"the state lock of {self.name} was lost before the commit (its lease expired: "
                "etcd unreachable or the transaction too long); nothing was written"
            )
        raise StateError(
            f"the state in {self.name} changed under a transaction that held its lock; "
            "nothing was written"
        )

    def _load_all(self) -> dict[str, dict[str, Any]]:
        """Every record key -> document (migrate compares them)."""
        return {key: record.doc for key, record in self._read().records.items()}


def open_store(settings: Settings) -> Store:
    """The state store of the settings' cloud: etcd when its `state:` names it, else the
    TinyDB file."""
    if settings.state_etcd is not None:
        if settings.state_path is not None and settings.state_path.is_file():
            # A state of this cloudctl from before the CLC pair: never hidden behind etcd's.
            raise StateError(
                f"{settings.state_path} holds a state that is not in etcd ({settings.state_etcd}): "
                "`cloudctl state migrate --merge` adds it to the shared state"
            )
        return EtcdStore(settings.state_etcd, state_file=settings.state_path)
    return StateStore(settings.state_path)  # type: ignore[arg-type]


@dataclass
class _Lock:
    token: str
    released: bool = False


@dataclass
class _Record:
    raw: bytes  # what etcd holds: a commit writes only the records whose JSON differs
    mod_revision: int
    create_revision: int

    @property
    def doc(self) -> dict[str, Any]:
        """A new copy each time (a transaction may change it)."""
        return json.loads(self.raw)


@dataclass
class _EtcdState:
    """The prefix as read at one revision."""

    revision: int
    records: dict[str, _Record] = field(default_factory=dict)  # key (no prefix) -> record
    operations: set[str] = field(default_factory=set)  # event ids holding their lease

    @property
    def found(self) -> bool:
        return bool(self.records)

    def data(self) -> dict[str, Any]:
        """The records in the TinyDB layout ({table: {doc id: document}}), in creation order."""
        data: dict[str, dict[str, Any]] = {}
        ordered = sorted(self.records.items(), key=lambda kv: (kv[1].create_revision, kv[0]))
        for key, record in ordered:
            table = data.setdefault(_table_of(key), {})  # type: ignore[arg-type]
            table[str(len(table) + 1)] = record.doc
        return data


# What each process read last of each state (EtcdStore._read), by connection and prefix.
_READS: dict[tuple[_Etcd, str], _EtcdState] = {}


def _is_operation(kv: dict[str, Any], prefix: str) -> bool:
    return base64.b64decode(kv["key"]).decode().startswith(prefix + OPERATIONS)


def _lock_name(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise ValueError(f"bad lock name {name!r}")
    return name


def _key_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".identity-key")


def _json(doc: dict[str, Any]) -> bytes:
    """A record as the etcd backend writes it (canonical: equal records, equal bytes)."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _records(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The TinyDB layout as etcd keys (without the prefix) -> documents."""
    records = {}
    for table, docs in data.items():
        for doc in docs.values():
            key = _record_key(table, doc)
            if key in records:
                raise StateError(f"{table}: two records are {key}")
            records[key] = doc
    return records


def _record_key(table: str, doc: dict[str, Any]) -> str:
    if table == IDENTITY:
        return "cloud"
    try:
        if table == ALLOCATIONS:
            return f"a/{_quote(doc['pool'])}/{_quote(doc['value'])}"
        return f"t/{_quote(table)}/{_quote(doc['id'])}"
    except KeyError as exc:
        raise StateError(f"{table}: a record lacks {exc}: {doc!r}") from None


def _table_of(key: str) -> str | None:
    """The table a key (without the prefix) belongs to; None for the lock and the like."""
    if key == "cloud":
        return IDENTITY
    if key.startswith("a/"):
        return ALLOCATIONS
    if key.startswith("t/") and key.count("/") == 2:
        return urllib.parse.unquote(key.split("/")[1])
    return None


def _quote(value: Any) -> str:
    return urllib.parse.quote(str(value), safe=":@")


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def _prefix_end(prefix: bytes) -> bytes:
    """The end of the key range of every key starting with `prefix` (a "/"-ended one)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _compare_revision(key: str, record: _Record | None) -> dict[str, Any]:
    if record is None:
        return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}
    return {
        "key": b64(key),
        "target": "MOD",
        "result": "EQUAL",
        "mod_revision": record.mod_revision,
    }


def _compare_value(key: str, value: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def _range_value(answer: dict[str, Any], index: int) -> str | None:
    """The value the `index`th range of a failed etcd transaction found (None: no key)."""
    kvs = answer["responses"][index]["response_range"].get("kvs") or []
    return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None


class _Etcd:
    """Requests to an etcd cluster, one member at a time (an etcd3gw client talks to one):
    a member that cannot be reached, or that cannot answer (no leader during an election),
    passes the request to the next one, round after round until `retry_for` seconds."""

    def __init__(self, config: EtcdState, retry_for: float) -> None:
        self.config = config
        self.retry_for = retry_for
        self.clients = [etcd_client(url, config) for url in config.endpoints]
        self.current = 0

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        from etcd3gw import exceptions as etcd_errors  # see etcd_client

        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            reasons = []
            for _ in self.clients:
                index = self.current
                client = self.clients[index]
                try:
                    return client.post(client.get_url(path), json=payload)
                except (
                    etcd_errors.ConnectionFailedError,
                    etcd_errors.ConnectionTimeoutError,
                ) as exc:
                    reasons.append(etcd_reason(exc))
                    self.current = (index + 1) % len(self.clients)
                except etcd_errors.Etcd3Exception as exc:
                    reason = etcd_reason(exc)
                    raise EtcdRefused(
                        f"etcd at {self.config.endpoints[index]} refused a request on "
                        f"{self.config.prefix}: {reason}",
                        reason,
                    ) from None
                except OSError as exc:  # requests' own: e.g. a TLS file being rewritten
                    raise StateError(f"cannot reach etcd on {self.config.prefix}: {exc}") from None
            tried = ", ".join(self.config.endpoints)
            if all(r.startswith("TLS: ") for r in reasons):  # does not pass by itself
                raise StateError(
                    f"etcd refused TLS (tried {tried}; check the state's ca_file, cert_file "
                    f"and key_file): {reasons[-1].removeprefix('TLS: ')}"
                )
            if time.monotonic() > deadline:
                raise StateError(
                    f"etcd unreachable (tried {tried} for {self.retry_for:.0f} s): {reasons[-1]}"
                )
            time.sleep(delay)  # every member failed: a new round after a pause
            delay = min(delay * 2, 1.0)


def etcd_client(url: str, config: EtcdState) -> etcd3gw.Etcd3Client:
    # Imported here: etcd3gw and requests are about half of cloudctl's start-up, and a
    # cloud whose state is a TinyDB file never needs them.
    import etcd3gw
    import requests

    # Our own session: with the environment trusted, $REQUESTS_CA_BUNDLE would replace the
    # cloud's CA and $HTTPS_PROXY would carry the state through a proxy.
    session = requests.Session()
    session.trust_env = False
    if config.ca_file:
        session.verify = config.ca_file
    if config.cert_file and config.key_file:
        session.cert = (config.cert_file, config.key_file)
    parts = urllib.parse.urlsplit(url)
    return etcd3gw.Etcd3Client(
        host=parts.hostname or "", port=parts.port or 2379, protocol=parts.scheme,
        timeout=REQUEST_TIMEOUT, api_path="/v3/", session=session,
    )  # fmt: skip


def etcd_reason(exc: etcd_errors.Etcd3Exception) -> str:
    """The gist of an etcd3gw error: etcd's own message, the TLS error ("TLS: ..."), or the
    socket error."""
    text = str(exc.detail_text or exc)
    if text.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(text).get("message") or text)
    if "SSLError" in text:
        found = re.search(r"\[SSL[^'\"]*|SSL\w*Error\(\d+, '([^']*)", text)
        return "TLS: " + (found.group(1) or found.group(0) if found else text[:200]).strip()
    found = re.search(r"\[Errno -?\d+\] [^'\")]*|Read timed out|timed out", text)
    return found.group(0).strip() if found else text[:200]


_CONNECTIONS: dict[tuple[int, EtcdState, float], _Etcd] = {}


def _connection(config: EtcdState, retry_for: float) -> _Etcd:
    """One connection per process (a forked API worker makes its own) and cluster."""
    key = (os.getpid(), config, retry_for)
    if key not in _CONNECTIONS:
        _CONNECTIONS[key] = _Etcd(config, retry_for)
    return _CONNECTIONS[key]


class _Session:
    """This process's lease on an etcd cluster (etcd's own lock recipe calls it a session):
    a thread keeps it alive while the process lives. A lease lost anyway (etcd out of reach
    longer than its TTL), or given up, is replaced on next use, and the keys put on it are
    put again."""

    def __init__(self, etcd: _Etcd, ttl: int) -> None:
        self.etcd, self.ttl = etcd, ttl
        self.keys: set[str] = set()
        self.mutex = threading.Lock()
        self.lease: str | None = None
        self.current()
        threading.Thread(target=self._keep, daemon=True, name="etcd-session").start()

    def current(self) -> str:
        """The lease (granted now if there is none)."""
        with self.mutex:
            if self.lease is None:
                lease = str(self.etcd.post("/lease/grant", {"TTL": self.ttl, "ID": 0})["ID"])
                for key in self.keys:
                    self.etcd.post("/kv/put", {"key": b64(key), "value": "", "lease": lease})
                self.lease = lease
            return self.lease

    def renew(self, lost: str) -> None:
        """Give up a lease that expired, or that holds a lock we could not release: it is
        no longer kept alive, the next use gets a new one."""
        with self.mutex:
            if self.lease == lost:  # (another thread may have renewed it already)
                self.lease = None

    def put(self, key: str) -> None:
        with self.mutex:
            self.keys.add(key)
        self.etcd.post("/kv/put", {"key": b64(key), "value": "", "lease": self.current()})

    def delete(self, key: str) -> None:
        with self.mutex:
            self.keys.discard(key)
        self.etcd.post("/kv/deleterange", {"key": b64(key)})

    def _keep(self) -> None:
        while True:
            time.sleep(self.ttl / 3)  # the keep-alive period, well within the TTL
            with contextlib.suppress(StateError):  # out of reach: the next round tries again
                lease = self.current()
                answer = self.etcd.post("/lease/keepalive", {"ID": lease})
                if int(answer.get("result", {}).get("TTL", 0)) <= 0:
                    self.renew(lease)
                    self.current()  # the running operations' keys back at once


_SESSIONS: dict[tuple[_Etcd, int], _Session] = {}
_SESSIONS_MUTEX = threading.Lock()


def etcd_session(etcd: _Etcd, ttl: int) -> _Session:
    """The process's session on a cluster (a connection is per process already)."""
    with _SESSIONS_MUTEX:
        if (etcd, ttl) not in _SESSIONS:
            _SESSIONS[(etcd, ttl)] = _Session(etcd, ttl)
        return _SESSIONS[(etcd, ttl)]


# --- moving a state file into etcd (a single CLC becomes a pair) -------------------------


@dataclass
class Migration:
    """What `migrate` did."""

    cloud_id: str
    tables: dict[str, int]  # records per table (copied, or added by a merge)
    allocations: int  # allocated pool values (copied or added)
    moved_to: Path  # the file's new name
    merged: bool = False  # added to a state etcd held already
    kept: int = 0  # a merge: records etcd held already (MERGE_KEEPS), left as they were


# A merge keeps etcd's copy of these records when both states have one: the administrator's
# account and user exist in every state that ever had an account (identity.py), each state
# with its own number and time; the scheduler's last node per zone is a hint.
MERGE_KEEPS = ("t/accounts/admin", "t/users/admin%2Fadmin", "t/scheduler/")
# Names a merge must not give twice: (table, the fields that make a record's name).
MERGE_UNIQUE = {"keypairs": ("account", "name"), "groups": ("account", "name"),
                "buckets": ("name",)}  # fmt: skip


def migrate(
    source: StateStore,
    target: EtcdStore,
    merge: bool = False,
    recrypt: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
) -> Migration:
    """Copy the state file into etcd in one etcd transaction, check the copy, then rename
    the file to <file>.migrated-<UTC time> so that nothing writes to it again. Refused
    (StateError, nothing written) when the target already holds a state, unless it is this
    very copy (a migration interrupted before the rename: the rename is finished). The
    file's lock is held throughout: no transaction of the file slips in.

    merge: etcd may already hold a state of the same cloud (a single CLC's, migrated by the
    deploy, beside which a controller's cloudctl kept its own file): the file's records are
    added to it. Refused, nothing written, when a record is in both with other content
    (MERGE_KEEPS aside) or a name would be given twice (MERGE_UNIQUE). `recrypt(table, doc)`
    returns a record with its secrets encrypted for the target (another identity key)."""
    if not source.path.is_file():
        raise StateMissing(f"no state at {source.path} to migrate")
    with source.transaction() as src:
        cloud_id = src.identity()
        if not cloud_id and not merge:
            src.check_identity(source.name, "")  # raises: the file records no cloud
        records = _records(src._storage.data)
        if recrypt is not None:
            records = {k: recrypt(_table_of(k) or "", doc) for k, doc in records.items()}
        with target.transaction() as dst:
            held = _records(dst._storage.data) if dst.found else {}
            if not cloud_id:  # a merge adopts a file that records no cloud yet (a deploy's
                cloud_id = dst.identity()  # journal, written before the cloud had an id)
                if not cloud_id:
                    src.check_identity(source.name, "")  # raises
            merged = bool(merge and held and dst.identity() == cloud_id)
            if merged:
                added, kept = _merged(held, records, source.path, target.name)
                data = dst._storage.data
                for key, doc in added.items():
                    table = data.setdefault(_table_of(key), {})
                    table[str(len(table) + 1)] = copy.deepcopy(doc)
                dst._storage.write(data)
                expected = held | added
            elif held and held != records:
                raise StateError(_occupied(target, dst.identity(), cloud_id, source.path))
            else:
                added, kept, expected = records, 0, records
                layout: dict[str, dict[str, Any]] = {}
                for key, doc in records.items():
                    table = layout.setdefault(_table_of(key), {})  # type: ignore[arg-type]
                    table[str(len(table) + 1)] = copy.deepcopy(doc)
                dst._storage.write(layout)  # commits every key
        copied = target._load_all()
        if copied != expected:
            differ = len(copied.keys() ^ expected.keys()) + sum(
                copied[k] != expected[k] for k in copied.keys() & expected.keys()
            )
            raise StateError(
                f"the copy in {target.name} differs from {source.path} in {differ} records; "
                "the file stays the state"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        moved_to = source.path.with_name(f"{source.path.name}.migrated-{stamp}")
        try:
            os.replace(source.path, moved_to)
        except OSError as exc:
            raise StateError(f"cannot rename {source.path}: {exc.strerror}") from exc
    tables: dict[str, int] = {}
    for key in added:
        table = _table_of(key)
        if table not in (IDENTITY, ALLOCATIONS):
            tables[table] = tables.get(table, 0) + 1  # type: ignore[index]
    allocations = sum(_table_of(key) == ALLOCATIONS for key in added)
    return Migration(cloud_id, dict(sorted(tables.items())), allocations, moved_to, merged, kept)


def _merged(
    held: dict[str, dict[str, Any]], records: dict[str, dict[str, Any]], path: Path, name: str
) -> tuple[dict[str, dict[str, Any]], int]:
    """The records of the file that etcd lacks, and how many etcd keeps (MERGE_KEEPS);
    StateError naming the first clashes when the two states disagree."""
    added, kept, clashes = {}, 0, []
    for key, doc in records.items():
        if key not in held:
            added[key] = doc
        elif key == "cloud" or held[key] == doc:
            continue
        elif key.startswith(MERGE_KEEPS):
            kept += 1
        else:
            clashes.append(f"{_key_text(key)} differs")
    names: dict[tuple, str] = {}
    for key, doc in (held | added).items():
        fields = MERGE_UNIQUE.get(_table_of(key) or "")
        if fields and all(doc.get(f) for f in fields):
            name_of = (_table_of(key), *(doc[f] for f in fields))
            if name_of in names:
                clashes.append(f"{_key_text(names[name_of])} and {_key_text(key)} have one name")
            names[name_of] = key
    if clashes:
        shown = "; ".join(clashes[:3]) + (
            f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        )
        raise StateError(
            f"cannot merge {path} into {name}: {shown}; nothing was written (the two states "
            "disagree: keep one, or remove the clashing records from the file first)"
        )
    return added, kept


def _key_text(key: str) -> str:
    """A record's key as a person reads it: `instances i-0a1b2c3d`, `allocation ip:zone-a
    172.31.0.5`."""
    kind, *parts = [urllib.parse.unquote(p) for p in key.split("/")]
    return " ".join([{"t": "", "a": "allocation"}.get(kind, kind), *parts]).strip()


def _occupied(target: EtcdStore, holder: str, cloud_id: str, path: Path) -> str:
    if not holder:
        return f"{target.name} already holds records of no cloud: nothing was written"
    if holder != cloud_id:
        return (
            f"{target.name} already holds the state of cloud {holder}, not of this cloud "
            f"{cloud_id}: nothing was written"
        )
    return (
        f"{target.name} already holds a state of this cloud {cloud_id} that differs from "
        f"{path} (migrated before?): nothing was written; move the file away to keep etcd's"
    )


_HELD = threading.local()


@contextlib.contextmanager
def _not_nested(name: str) -> Iterator[None]:
    """Refuse a transaction or snapshot of a store inside another one of the same store in
    the same thread: its lock would wait for itself (both backends refuse it alike)."""
    if not hasattr(_HELD, "names"):
        _HELD.names = set()
    if name in _HELD.names:
        raise StateError(f"{name}: nested transaction or snapshot in one thread")
    _HELD.names.add(name)
    try:
        yield
    finally:
        _HELD.names.discard(name)


def _jsonable(doc: dict[str, Any], table: str) -> dict[str, Any]:
    """Refuse values JSON cannot keep (they would break the next commit of everyone)."""
    try:
        return json.loads(json.dumps(doc))
    except (TypeError, ValueError) as exc:
        raise StateError(f"{table}: value cannot be stored: {exc}") from None

"""The state store: TinyDB documents behind a small repository API.

    store = StateStore(home / "state.json")
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

Every record carries `id`, `account` and `user` (the owner, DESIGN.md) and the store adds
`created` and `updated` (UTC, ISO 8601). Allocations of pooled values (IPs, MACs) live in the
reserved table `_allocations`, one document per allocated value.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from cloudctl.errors import CloudError

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

    def __init__(self, data: dict[str, Any], writable: bool) -> None:
        self._storage = _BufferStorage(data)
        self._db = TinyDB(storage=_StorageFactory(self._storage))
        self._writable = writable

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

    def check_identity(self, path: Path, cloud_id: str) -> None:
        """Refuse a state (at `path`) that records no cloud, or another one than `cloud_id`
        ("" accepts any recorded cloud: a configuration from before cloud ids)."""
        recorded = self.identity()
        if not recorded:
            raise ForeignState(
                f"the state {path} records no cloud id: `cloudctl state init` adopts it "
                "for this cloud"
            )
        if cloud_id and recorded != cloud_id:
            raise ForeignState(
                f"the state {path} is of cloud {recorded}, not of this cloud {cloud_id}"
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


class StateStore:
    """The state database in one JSON file, safe for several processes at once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.lock_path = self.path.with_name(self.path.name + ".lock")

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

    # --- the cloud the state describes ---------------------------------------------------

    def check(self, cloud_id: str = "") -> None:
        """Refuse a missing state, a state that records no cloud, and (when `cloud_id` is
        given) the state of another cloud: never treat them as an empty cloud."""
        with self.checked_snapshot(cloud_id):
            pass

    @contextlib.contextmanager
    def checked_snapshot(self, cloud_id: str = "") -> Iterator[Transaction]:
        """A read-only view (snapshot) of a state that passed `check`, read once."""
        if not self.path.is_file():
            raise StateMissing(
                f"no state at {self.path}: `cloudctl deploy` creates it; `cloudctl state init` "
                "starts an empty one for a deployed cloud whose state is lost"
            )
        with self.snapshot() as snap:
            snap.check_identity(self.path, cloud_id)
            yield snap

    def initialize(self, cloud_id: str, cloud_name: str) -> bool:
        """Record the cloud this state describes, creating the state file when there is none;
        a state that records no cloud yet is adopted. True when something was written."""
        if not cloud_id:
            raise StateError("the cloud has no id (deploy it first)")
        with self.transaction() as tx:
            if not tx.identity():
                table = tx._db.table(IDENTITY, cache_size=0)
                table.insert({"cloud_id": cloud_id, "name": cloud_name, "created": utc_now()})
                return True
            tx.check_identity(self.path, cloud_id)
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

    # --- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        held = _held_paths()
        if self.path in held:
            raise StateError(f"{self.path}: nested transaction or snapshot in one thread")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot open the state lock {self.lock_path}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, mode)
            held.add(self.path)
            try:
                yield
            finally:
                held.discard(self.path)
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


_HELD = threading.local()


def _held_paths() -> set[Path]:
    """State files whose lock the current thread holds (flock would wait for itself)."""
    if not hasattr(_HELD, "paths"):
        _HELD.paths = set()
    return _HELD.paths


def _jsonable(doc: dict[str, Any], table: str) -> dict[str, Any]:
    """Refuse values JSON cannot keep (they would break the next commit of everyone)."""
    try:
        return json.loads(json.dumps(doc))
    except (TypeError, ValueError) as exc:
        raise StateError(f"{table}: value cannot be stored: {exc}") from None

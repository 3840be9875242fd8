"""The state store against its two backends: the TinyDB file and a real 3-member etcd
cluster on 127.0.0.1 (started once per session, stopped by PID)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cloudctl.config import EtcdState
from cloudctl.state import EtcdStore, StateStore, Store
from tests.state.etcd_cluster import EtcdCluster, Tls


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory) -> EtcdCluster:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def etcd_tls(tmp_path_factory) -> tuple[EtcdCluster, Tls]:
    """One member serving clients over TLS, client certificates required."""
    root = tmp_path_factory.mktemp("etcd-tls")
    tls = Tls.make(root / "pki")
    cluster = EtcdCluster(root / "cluster", size=1, tls=tls).start()
    yield cluster, tls
    cluster.stop()


def etcd_state(cluster: EtcdCluster, **tls: str) -> EtcdState:
    """A prefix of its own for each test: tests share the cluster, never a state."""
    return EtcdState(tuple(cluster.endpoints), f"/test/{uuid.uuid4().hex[:12]}/", **tls)


@pytest.fixture(params=["tinydb", "etcd"])
def store(request, tmp_path) -> Store:
    if request.param == "tinydb":
        return StateStore(tmp_path / "state.json")
    return EtcdStore(etcd_state(request.getfixturevalue("etcd_cluster")))


@pytest.fixture
def etcd_store(etcd_cluster) -> EtcdStore:
    return EtcdStore(etcd_state(etcd_cluster))


def spec_of(store: Store) -> Path | EtcdState:
    """What another process opens the same store from (picklable)."""
    return store.config if isinstance(store, EtcdStore) else store.path


def open_spec(spec: Path | EtcdState, **options) -> Store:
    return EtcdStore(spec, **options) if isinstance(spec, EtcdState) else StateStore(spec)


def written(store: Store) -> object:
    """What the store holds, as written: the file's bytes, or every record key with its mod
    revision (None / {} when nothing was ever written)."""
    if isinstance(store, EtcdStore):
        return {key: record.mod_revision for key, record in store._read().records.items()}
    return store.path.read_bytes() if store.path.exists() else None

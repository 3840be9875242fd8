"""volume create --snapshot hands the SC the snapshot's recorded sha256, and a restore the SC
refused leaves the volume in `error` with the SC's reason (the play is synthetic here; the
check itself runs against real SeaweedFS in tests/modules/test_module_volume_snapshot.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudctl import walrus
from cloudctl.cloudconfig import CloudConfig, Cluster, Walrus
from cloudctl.errors import HostFailed, InputError
from cloudctl.state import StateStore
from cloudctl.volumes import TASK_EXPORT, Volumes
from tests.unit.helpers import host_event, play_result, task_start

SNAP, SHA = "snap-0a1b2c3d", "5e" * 32
REFUSED = f"snapshot {SNAP} data does not match its sha256 (recorded {SHA}, downloaded ...)"


def config() -> CloudConfig:
    cluster = Cluster(zone="zone-a", subnet="172.31.0.0/24", bridge="br0", gateway="172.31.0.1",
                      cc="cc1", sc=["sc1"], nodes=[])  # fmt: skip
    return CloudConfig(cloud_name="t", clusters={"zone-a": cluster}, instance_types={},
                       walrus=Walrus("http://192.0.2.10:8773", "a", "s"),
                       path=Path("/dev/null"))  # fmt: skip


def store_with_snapshot(tmp_path: Path, **fields) -> StateStore:
    store = StateStore(tmp_path / "state.json")
    with store.transaction() as tx:
        tx.table("snapshots").insert({
            "id": SNAP, "account": "admin", "user": "admin", "volume_id": "vol-0a1b2c3d",
            "size_gb": 1, "size_bytes": 1 << 30, "compressed_bytes": 1000, "sha256": SHA,
            "state": "completed", "reason": "", **fields,
        })  # fmt: skip
    return store


def test_restore_refused_by_the_sc_leaves_the_volume_in_error(tmp_path, settings, monkeypatch):
    store = store_with_snapshot(tmp_path)
    monkeypatch.setattr(walrus, "client", lambda conf: None)
    monkeypatch.setattr(walrus, "presigned_get", lambda *a: f"http://x/snapshots/{SNAP}?sig")
    seen = {}

    def play(self, playbook, extravars, host, operation, progress, check=False):
        seen.update(extravars["cloud_volume"])
        failed = host_event("runner_on_failed", "sc1", TASK_EXPORT, {"msg": REFUSED})
        run_dir = tmp_path / "20260101T000000Z-volume-create-0a1b2c3d"  # as the runner names it
        run_dir.mkdir()
        return play_result(run_dir, [task_start(TASK_EXPORT), failed])

    monkeypatch.setattr(Volumes, "_play", play)
    with pytest.raises(HostFailed, match="does not match its sha256"):
        Volumes(settings, store, config()).create(None, snapshot_id=SNAP)
    assert seen["source_sha256"] == SHA and seen["source_size"] == 1 << 30
    (volume,) = Volumes(settings, store, config()).list()
    assert volume["state"] == "error" and volume["snapshot_id"] == SNAP
    assert volume["reason"] == f"sc1: task '{TASK_EXPORT}' failed: {REFUSED}"


def test_snapshot_without_a_recorded_sha256_is_refused(tmp_path, settings):
    store = store_with_snapshot(tmp_path, sha256=None)
    with pytest.raises(InputError, match=f"snapshot {SNAP} has no recorded sha256"):
        Volumes(settings, store, config()).create(None, snapshot_id=SNAP)
    assert Volumes(settings, store, config()).list() == []

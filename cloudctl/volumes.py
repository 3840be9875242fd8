"""Volumes (EBS-style block storage on the SC, attached to instances over iSCSI) and snapshots.

Table "volumes": id, size_gb, zone, sc, state, reason, snapshot_id, iqn, lun, portal
{address, port}, chap_user, chap_secret (the state file is 0600), attachment {instance,
node, device, state} or None, event, owner fields. An attach or detach whose outcome is
unknown (the node went unreachable, the module crashed) leaves the attachment `attaching` or
`detaching` and the volume `in-use`, never `available` on a guess: `cloudctl reconcile` reads
the domain's disks and settles it.
Table "snapshots": id, volume_id, size_gb, description, size_bytes, compressed_bytes, sha256,
state, reason, event, owner fields. A snapshot is the gzip'd raw volume in the Walrus
`snapshots` bucket under its id, uploaded by the SC through presigned multipart URLs.
"""

from __future__ import annotations

import math
import secrets
import string
from collections.abc import Mapping
from typing import Any

from cloudctl import quotas, usage, walrus
from cloudctl.errors import CapacityError, InputError, NotFound
from cloudctl.identity import current_owner, visible
from cloudctl.ids import AttachmentState, SnapshotState, VolumeState, new_id, parse_id
from cloudctl.instances import TABLE as INSTANCES
from cloudctl.runner import PlayResult, ProgressCallback, run_playbook
from cloudctl.services import CloudService, Recorded

TABLE = "volumes"
SNAPSHOTS = "snapshots"
MAX_SIZE_GB = 1024
PART_SIZE_MB = 64
URL_EXPIRY = 3600
DEVICE_NAMES = tuple(f"vd{c}" for c in string.ascii_lowercase[1:])  # vdb .. vdz
CREATE_PLAYBOOK = "cloudctl.cloud.runtime.volume_create"
DELETE_PLAYBOOK = "cloudctl.cloud.runtime.volume_delete"
ATTACH_PLAYBOOK = "cloudctl.cloud.runtime.volume_attach"
DETACH_PLAYBOOK = "cloudctl.cloud.runtime.volume_detach"
SNAPSHOT_PLAYBOOK = "cloudctl.cloud.runtime.snapshot_create"
TASK_EXPORT = "Export the volume"
TASK_ATTACH = "Attach the volume"
TASK_DETACH = "Detach the volume"
TASK_UPLOAD = "Upload the snapshot"

_V, _A, _S = VolumeState, AttachmentState, SnapshotState


class Volumes(CloudService):
    # --- reads --------------------------------------------------------------------------

    def get(self, volume_id: str) -> dict[str, Any]:
        vid = parse_id(volume_id, "volume")
        record = self.store.get(TABLE, vid)
        if record is None or not visible(record):
            raise NotFound(f"volume {vid} does not exist")
        return record

    def list(self, state: str | None = None, zone: str | None = None) -> list[dict[str, Any]]:
        filters = {k: v for k, v in {"state": state, "zone": zone}.items() if v}
        records = [r for r in self.store.search(TABLE, **filters) if visible(r)]
        return sorted(records, key=lambda r: r["created"])

    def get_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        sid = parse_id(snapshot_id, "snapshot")
        record = self.store.get(SNAPSHOTS, sid)
        if record is None or not visible(record):
            raise NotFound(f"snapshot {sid} does not exist")
        return record

    def list_snapshots(self) -> list[dict[str, Any]]:
        records = [r for r in self.store.all(SNAPSHOTS) if visible(r)]
        return sorted(records, key=lambda r: r["created"])

    # --- create / delete ----------------------------------------------------------------

    def create(
        self,
        size_gb: int | None,
        zone: str | None = None,
        snapshot_id: str | None = None,
        progress: ProgressCallback | None = None,
        check: bool = False,
        on_recorded: Recorded | None = None,
    ) -> dict[str, Any] | PlayResult:
        """The new volume; with check, what the play would change (nothing is recorded).
        `on_recorded([volume])` is called once it is recorded `creating`, before the play."""
        snapshot = self.get_snapshot(snapshot_id) if snapshot_id else None
        if snapshot is not None and snapshot["state"] != _S.COMPLETED:
            raise InputError(f"snapshot {snapshot['id']} is {snapshot['state']}")
        if snapshot is not None and not snapshot.get("sha256"):
            raise InputError(f"snapshot {snapshot['id']} has no recorded sha256 to check")
        if size_gb is None:
            if snapshot is None:
                raise InputError("give --size or --snapshot")
            size_gb = snapshot["size_gb"]
        if not 1 <= size_gb <= MAX_SIZE_GB:
            raise InputError(f"bad size {size_gb} GiB: must be 1 to {MAX_SIZE_GB}")
        if snapshot is not None and size_gb < snapshot["size_gb"]:
            raise InputError(
                f"size {size_gb} GiB is smaller than snapshot {snapshot['id']} "
                f"({snapshot['size_gb']} GiB)"
            )
        zone = self.config.zone_or_default(zone)
        cluster = self.config.cluster(zone)
        if not cluster.sc:
            raise CapacityError(f"zone {zone} has no storage controller")
        owner = current_owner()
        vid = new_id("volume")
        record = {
            "id": vid,
            "account": owner.account,
            "user": owner.user,
            "size_gb": size_gb,
            "zone": zone,
            "sc": cluster.sc[0],
            "state": _V.CREATING.value,
            "reason": "",
            "snapshot_id": snapshot["id"] if snapshot else None,
            "chap_user": vid,
            "chap_secret": _chap_secret(),
            "attachment": None,
        }
        extravars: dict[str, Any] = {"cloud_volume": sc_view(record)}
        if snapshot is not None:
            client = walrus.client(self.config.walrus)
            extravars["cloud_volume"]["source_url"] = walrus.presigned_get(
                client, walrus.SNAPSHOTS, snapshot["id"], URL_EXPIRY
            )
            extravars["cloud_volume"]["source_size"] = snapshot["size_bytes"]
            # the SC checks the download against it before it exports anything
            extravars["cloud_volume"]["source_sha256"] = snapshot["sha256"]
        if check:
            return self._play(
                CREATE_PLAYBOOK, extravars, record["sc"], "volume-create", progress, check=True
            )
        with self.store.transaction() as tx:
            quotas.check(
                tx, owner, {"ec2:quota-volumenumber": 1, "ec2:quota-volumetotalsize": size_gb}
            )
            tx.table(TABLE).insert(record)
        _recorded(on_recorded, [self.get(vid)])
        result = self._play(CREATE_PLAYBOOK, extravars, record["sc"], "volume-create", progress)
        export = _first_res(result, TASK_EXPORT)
        with self.store.transaction() as tx:
            if not result.ok or export is None:
                tx.table(TABLE).update(
                    vid, state=_V.ERROR.value, reason=_reason(result), event=result.event_id
                )
            else:
                usage.record(tx, record, "volume", "created", size_gb=size_gb)
                tx.table(TABLE).update(
                    vid,
                    state=_V.AVAILABLE.value,
                    iqn=export["iqn"],
                    lun=export.get("lun", 1),
                    portal=export["portal"],
                    event=result.event_id,
                )
        result.raise_for_failures()
        return self.get(vid)

    def delete(
        self,
        volume_id: str,
        progress: ProgressCallback | None = None,
        on_recorded: Recorded | None = None,
    ) -> dict[str, Any]:
        with self.store.transaction() as tx:
            record = _get(tx, TABLE, parse_id(volume_id, "volume"), "volume")
            if record["state"] == _V.IN_USE or record.get("attachment"):
                instance = (record.get("attachment") or {}).get("instance", "an instance")
                raise InputError(
                    f"volume {record['id']} is attached to {instance}: detach it first"
                )
            if record["state"] == _V.DELETED:
                return record
            if record["state"] not in (_V.AVAILABLE, _V.ERROR):
                raise InputError(f"volume {record['id']} is {record['state']}: cannot delete")
            tx.table(TABLE).update(record["id"], state=_V.DELETING.value)
        _recorded(on_recorded, [self.get(record["id"])])
        result = self._play(
            DELETE_PLAYBOOK,
            {"cloud_volume": sc_view(record)},
            record["sc"],
            "volume-delete",
            progress,
        )
        with self.store.transaction() as tx:
            if result.ok:
                tx.table(TABLE).update(
                    record["id"], state=_V.DELETED.value, reason="", event=result.event_id
                )
                if record.get("iqn"):  # it was created (a volume in error never was)
                    usage.record(tx, record, "volume", "deleted")
            else:
                tx.table(TABLE).update(
                    record["id"],
                    state=_V.ERROR.value,
                    reason=_reason(result),
                    event=result.event_id,
                )
        result.raise_for_failures()
        return self.get(record["id"])

    # --- attach / detach ----------------------------------------------------------------

    def attach(
        self,
        volume_id: str,
        instance_id: str,
        device: str | None = None,
        progress: ProgressCallback | None = None,
        check: bool = False,
        on_recorded: Recorded | None = None,
    ) -> dict[str, Any] | PlayResult:
        """The attached volume; with check, what the play would change (nothing recorded)."""
        if device is not None and device not in DEVICE_NAMES:
            raise InputError(f"bad device {device!r}: one of vdb .. vdz")
        with self.store.transaction() as tx:
            volume = _get(tx, TABLE, parse_id(volume_id, "volume"), "volume")
            instance = _get(tx, INSTANCES, parse_id(instance_id, "instance"), "instance")
            if volume["state"] != _V.AVAILABLE or volume.get("attachment"):
                held = volume.get("attachment") or {}
                how = f" ({held['state']} to {held['instance']})" if held else ""
                raise InputError(f"volume {volume['id']} is {volume['state']}{how}: cannot attach")
            if instance["state"] not in ("running", "stopped"):
                raise InputError(f"instance {instance['id']} is {instance['state']}: cannot attach")
            if volume["zone"] != instance["zone"]:
                raise InputError(
                    f"volume {volume['id']} is in zone {volume['zone']}, instance "
                    f"{instance['id']} in zone {instance['zone']}: a volume attaches only "
                    "within its zone"
                )
            used = {
                (v.get("attachment") or {}).get("device")
                for v in tx.table(TABLE).all()
                if (v.get("attachment") or {}).get("instance") == instance["id"]
            }
            if device in used:
                raise InputError(f"device {device} of {instance['id']} is taken")
            device = device or next((d for d in DEVICE_NAMES if d not in used), None)
            if device is None:
                raise CapacityError(f"instance {instance['id']} has no free device name")
            attachment = {
                "instance": instance["id"],
                "node": instance["node"],
                "device": device,
                "state": _A.ATTACHING.value,
            }
            if not check:
                tx.table(TABLE).update(volume["id"], state=_V.IN_USE.value, attachment=attachment)
        if not check:
            _recorded(on_recorded, [self.get(volume["id"])])
        extravars = {"cloud_volume": {**sc_view(volume), **_nc_view(volume, attachment)}}
        hosts = instance["node"]  # the play reaches the SC by delegation when it must export
        if check:
            return self._play(
                ATTACH_PLAYBOOK, extravars, hosts, "volume-attach", progress, check=True
            )
        result = self._play(ATTACH_PLAYBOOK, extravars, hosts, "volume-attach", progress)
        attached = _outcome(result, TASK_ATTACH, attachment["node"])
        with self.store.transaction() as tx:
            if attached:
                device = (_first_res(result, TASK_ATTACH) or {}).get("device") or device
                attachment = {**attachment, "device": device, "state": _A.ATTACHED.value}
                tx.table(TABLE).update(
                    volume["id"], attachment=attachment, reason="", event=result.event_id
                )
                usage.record(tx, volume, "volume", "attached", instance_id=instance["id"])
            elif attached is None:  # the disk may be on the domain: never released on a guess
                tx.table(TABLE).update(
                    volume["id"],
                    reason=_unknown("attach", volume["id"], result),
                    event=result.event_id,
                )
            else:  # the hot-plug did not run, or failed (the module then attaches nothing)
                tx.table(TABLE).update(
                    volume["id"],
                    state=_V.AVAILABLE.value,
                    attachment=None,
                    reason=_reason(result),
                    event=result.event_id,
                )
        if not attached:
            result.raise_for_failures()
        return self.get(volume["id"])

    def detach(
        self,
        volume_id: str,
        progress: ProgressCallback | None = None,
        on_recorded: Recorded | None = None,
    ) -> dict[str, Any]:
        with self.store.transaction() as tx:
            volume = _get(tx, TABLE, parse_id(volume_id, "volume"), "volume")
            attachment = volume.get("attachment")
            if not attachment:
                raise InputError(f"volume {volume['id']} is not attached")
            tx.table(TABLE).update(
                volume["id"], attachment={**attachment, "state": _A.DETACHING.value}
            )
        _recorded(on_recorded, [self.get(volume["id"])])
        extravars = {"cloud_volume": {**sc_view(volume), **_nc_view(volume, attachment)}}
        result = self._play(
            DETACH_PLAYBOOK, extravars, attachment["node"], "volume-detach", progress
        )
        detached = _outcome(result, TASK_DETACH, attachment["node"])
        with self.store.transaction() as tx:
            if detached:
                tx.table(TABLE).update(
                    volume["id"],
                    state=_V.AVAILABLE.value,
                    attachment=None,
                    reason="",
                    event=result.event_id,
                )
                usage.record(tx, volume, "volume", "detached", instance_id=attachment["instance"])
            elif detached is None:  # the disk may still be on the domain: stays detaching
                tx.table(TABLE).update(
                    volume["id"],
                    reason=_unknown("detach", volume["id"], result),
                    event=result.event_id,
                )
            else:  # nothing was unplugged: the attachment is what it was
                tx.table(TABLE).update(
                    volume["id"],
                    attachment=attachment,
                    reason=_reason(result),
                    event=result.event_id,
                )
        if not detached:
            result.raise_for_failures()
        return self.get(volume["id"])

    # --- snapshots ----------------------------------------------------------------------

    def snapshot(
        self,
        volume_id: str,
        progress: ProgressCallback | None = None,
        on_recorded: Recorded | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        volume = self.get(volume_id)
        if volume["state"] not in (_V.AVAILABLE, _V.IN_USE):
            raise InputError(f"volume {volume['id']} is {volume['state']}: cannot snapshot")
        owner = current_owner()
        sid = new_id("snapshot")
        with self.store.transaction() as tx:
            quotas.check(tx, owner, {"ec2:quota-snapshotnumber": 1})
            tx.table(SNAPSHOTS).insert(
                {
                    "id": sid,
                    "account": owner.account,
                    "user": owner.user,
                    "volume_id": volume["id"],
                    "size_gb": volume["size_gb"],
                    "description": description,
                    "state": _S.PENDING.value,
                    "reason": "",
                }
            )
        _recorded(on_recorded, [self.get_snapshot(sid)])
        client = walrus.client(self.config.walrus)
        # gzip of raw data can be slightly bigger than the data: one spare part.
        parts = math.ceil(volume["size_gb"] * 1024 / PART_SIZE_MB) + 1
        try:
            upload_id = walrus.start_multipart(client, walrus.SNAPSHOTS, sid)
            urls = walrus.presigned_part_urls(
                client, walrus.SNAPSHOTS, sid, upload_id, parts, URL_EXPIRY
            )
        except Exception as exc:  # the snapshot ends in error, not pending
            with self.store.transaction() as tx:
                tx.table(SNAPSHOTS).update(sid, state=_S.ERROR.value, reason=f"Walrus: {exc}")
            raise
        extravars = {
            "cloud_volume": sc_view(volume),
            "cloud_part_urls": urls,
            "cloud_part_size_mb": PART_SIZE_MB,
        }
        result = self._play(SNAPSHOT_PLAYBOOK, extravars, volume["sc"], "snapshot-create", progress)
        upload = _first_res(result, TASK_UPLOAD)
        error = ""
        if result.ok and upload is not None:
            try:
                walrus.complete_multipart(client, walrus.SNAPSHOTS, sid, upload_id, upload["parts"])
            except Exception as exc:  # noqa: BLE001 (recorded as the snapshot's reason)
                error = f"completing the upload failed: {exc}"
        else:
            error = _reason(result)
        if error:
            walrus.abort_multipart(client, walrus.SNAPSHOTS, sid, upload_id)
        with self.store.transaction() as tx:
            if error:
                tx.table(SNAPSHOTS).update(
                    sid, state=_S.ERROR.value, reason=error, event=result.event_id
                )
            else:
                snap = tx.table(SNAPSHOTS).get(sid)
                usage.record(
                    tx, snap, "snapshot", "created", size_gb=snap["size_gb"],
                    volume_id=volume["id"], size_bytes=upload["size_bytes"],
                )  # fmt: skip
                tx.table(SNAPSHOTS).update(
                    sid,
                    state=_S.COMPLETED.value,
                    size_bytes=upload["size_bytes"],
                    compressed_bytes=upload["compressed_bytes"],
                    sha256=upload["sha256"],
                    event=result.event_id,
                )
        result.raise_for_failures()
        if error:
            raise InputError(f"snapshot {sid}: {error}")
        return self.get_snapshot(sid)

    def delete_snapshot(self, snapshot_id: str) -> dict[str, Any]:
        record = self.get_snapshot(snapshot_id)
        if record["state"] == _S.COMPLETED:
            walrus.delete_object(walrus.client(self.config.walrus), walrus.SNAPSHOTS, record["id"])
        with self.store.transaction() as tx:
            if record["state"] == _S.COMPLETED:
                usage.record(tx, record, "snapshot", "deleted")
            return tx.table(SNAPSHOTS).remove(record["id"])

    # --- internals ----------------------------------------------------------------------

    def _play(
        self,
        playbook: str,
        extravars: Mapping[str, Any],
        host: str,
        operation: str,
        progress: ProgressCallback | None,
        check: bool = False,
    ) -> PlayResult:
        """Run a runtime play; with check (--check), in check mode, where a failure raises
        (the caller records nothing)."""
        result = run_playbook(
            self.settings,
            playbook,
            extravars=extravars,
            limit=host,
            check=check,
            progress=progress,
            operation=f"{operation}-check" if check else operation,
        )
        if check:
            result.raise_for_failures()
        return result


def _chap_secret() -> str:
    # 16 characters: the longest CHAP secret every initiator accepts (12..16).
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


def sc_view(volume: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": volume["id"],
        "sc": volume["sc"],
        "size_gb": volume["size_gb"],
        "chap_user": volume["chap_user"],
        "chap_secret": volume["chap_secret"],
    }


def _nc_view(volume: Mapping[str, Any], attachment: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "instance": attachment["instance"],
        "node": attachment["node"],
        "device": attachment["device"],
        "iqn": volume.get("iqn"),
        "lun": volume.get("lun", 1),
        "portal": volume.get("portal"),
    }


def _recorded(on_recorded: Recorded | None, records: list[dict[str, Any]]) -> None:
    if on_recorded is not None:
        on_recorded(records)


def _get(tx, table: str, record_id: str, label: str) -> dict[str, Any]:
    record = tx.table(table).get(record_id)
    if record is None or not visible(record):
        raise NotFound(f"{label} {record_id} does not exist")
    return record


def _first_res(result: PlayResult, task: str) -> dict[str, Any] | None:
    for t in result.task_results(task):
        if t.status in ("ok", "changed"):
            return t.res
    return None


def _outcome(result: PlayResult, task: str, host: str) -> bool | None:
    """Whether `task` did its work on `host`: True when it said so; False when it never
    started there, or its module failed cleanly (our modules then change nothing); None
    (unknown) when the host went unreachable, the module crashed, or the play was cut off
    while the task may have run."""
    ran = [t for t in result.task_results(task) if t.host == host and t.status != "skipped"]
    if ran:
        last = ran[-1]
        if last.status in ("ok", "changed"):
            return True
        # A module that failed cleanly (fail_json) echoes its arguments ("invocation"); one
        # that crashed or was killed leaves none, or its stderr. ansible-core 2.19 adds an
        # "exception" (the call stack) to clean failures too: it tells nothing.
        crashed = "module_stderr" in last.res or "invocation" not in last.res
        return False if last.status == "failed" and not crashed else None
    if host in result.started(task) or result.status in ("timeout", "canceled"):
        return None
    return False


def _unknown(verb: str, volume_id: str, result: PlayResult) -> str:
    return (
        f"{verb} outcome unknown ({_reason(result)}): `cloudctl reconcile --fix` records "
        f"what the domain has, or `cloudctl volume detach {volume_id}`"
    )


def _reason(result: PlayResult) -> str:
    if result.failures:
        return "; ".join(str(f) for f in result.failures)
    return result.error or f"the play ended {result.status}"

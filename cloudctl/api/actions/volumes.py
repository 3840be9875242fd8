"""Volumes and snapshots (EBS's actions) over cloudctl.volumes: iSCSI volumes of the zone's SC.

Create, delete, attach, detach and snapshot answer at once, in EC2's first state (`creating`,
`deleting`, `attaching`, `detaching`, snapshot `pending`), and run their play in a worker
(cloudctl.api.worker); DescribeVolumes and DescribeSnapshots show the transitions. Device
names are hints, as on EC2: the guest finds a volume by its id at
/dev/disk/by-id/virtio-<volume id>.
"""

from __future__ import annotations

import re
from typing import Any

from cloudctl.api import worker
from cloudctl.api.actions import action
from cloudctl.api.errors import ApiError, invalid_value, missing_parameter, not_found
from cloudctl.api.params import filter_items, paginate
from cloudctl.api.request import ApiRequest
from cloudctl.api.shapes import account_numbers, select, tag_set, tags_on_create
from cloudctl.ids import AttachmentState, SnapshotState, VolumeState
from cloudctl.instances import Instances
from cloudctl.tags import Tags
from cloudctl.volumes import DEVICE_NAMES, MAX_SIZE_GB, Volumes

VOLUME_TYPE = "standard"  # EC2's magnetic type: the only one, whatever the client asks for
VOLUME_TYPES = ("standard", "gp2", "gp3", "io1", "io2", "st1", "sc1")
_DEVICE = re.compile(r"^(?:/dev/)?(vd[a-z])$")
ATTACHABLE_INSTANCE_STATES = ("running", "stopped")


def _tags(record: dict[str, Any]) -> dict[str, str]:
    return record.get("tags") or {}


# --- volumes ------------------------------------------------------------------------------


@action("CreateVolume")
def create_volume(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    size = params.integer("Size", minimum=1, maximum=MAX_SIZE_GB)
    snapshot_id = params.resource_id("SnapshotId", "snapshot")
    if size is None and snapshot_id is None:
        raise missing_parameter("Size")
    zone = params.string("AvailabilityZone")
    params.string("VolumeType", choices=VOLUME_TYPES)
    if params.boolean("Encrypted"):
        raise invalid_value("Encrypted", "true", "Encrypted volumes are not supported.")
    tags = tags_on_create(params, "volume")
    volumes = request.service(Volumes)
    [volume] = worker.start(volumes.create, size, zone=zone, snapshot_id=snapshot_id)
    if tags:
        Tags(request.store).create([volume["id"]], tags)
        volume = {**volume, "tags": tags}
    return _volume(volume, account_numbers(request))


@action("DescribeVolumes")
def describe_volumes(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    wanted = params.resource_ids("VolumeId", "volume")
    volumes = [v for v in request.service(Volumes).list() if v["state"] != VolumeState.DELETED]
    chosen = filter_items(
        select(volumes, wanted, "volume"), params.filters(), VOLUME_FILTERS, tags=_tags
    )
    page, token = paginate(params, chosen, key=lambda v: v["id"], minimum=5, maximum=500)
    owners = account_numbers(request)
    return {"volumeSet": [_volume(v, owners) for v in page], "nextToken": token}


def _attachment_field(name: str):
    return lambda v: (v.get("attachment") or {}).get(name)


VOLUME_FILTERS = {
    "volume-id": lambda v: v["id"],
    "status": lambda v: v["state"],
    "size": lambda v: str(v["size_gb"]),
    "availability-zone": lambda v: v["zone"],
    "snapshot-id": lambda v: v.get("snapshot_id") or "",
    "create-time": lambda v: v["created"],
    "volume-type": lambda v: VOLUME_TYPE,
    "encrypted": lambda v: False,
    "attachment.instance-id": _attachment_field("instance"),
    "attachment.status": _attachment_field("state"),
    "attachment.device": lambda v: _device_path(_attachment_field("device")(v)),
    "attachment.delete-on-termination": lambda v: False if v.get("attachment") else None,
}


@action("DeleteVolume")
def delete_volume(request: ApiRequest) -> dict[str, Any]:
    vid = request.params.resource_id("VolumeId", "volume", required=True)
    volumes = request.service(Volumes)
    volume = _get_volume(volumes, vid)
    if volume.get("attachment") or volume["state"] == VolumeState.IN_USE:
        instance = (volume.get("attachment") or {}).get("instance", "an instance")
        raise ApiError("VolumeInUse", f"Volume {vid} is currently attached to {instance}")
    if volume["state"] not in (VolumeState.AVAILABLE, VolumeState.ERROR):
        raise _incorrect_state(volume)
    worker.start(volumes.delete, vid)
    return {"return": True}


@action("AttachVolume")
def attach_volume(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    vid = params.resource_id("VolumeId", "volume", required=True)
    iid = params.resource_id("InstanceId", "instance", required=True)
    device = _device(params.string("Device", required=True))
    volumes = request.service(Volumes)
    volume = _get_volume(volumes, vid)
    instance = request.service(Instances).get(iid)
    if volume.get("attachment"):
        attached_to = volume["attachment"]["instance"]
        raise ApiError("VolumeInUse", f"{vid} is already attached to an instance ({attached_to})")
    if volume["state"] != VolumeState.AVAILABLE:
        raise _incorrect_state(volume)
    if instance["state"] not in ATTACHABLE_INSTANCE_STATES:
        raise ApiError(
            "IncorrectInstanceState",
            f"Instance '{iid}' is {instance['state']}: it must be running or stopped",
        )
    if instance["zone"] != volume["zone"]:
        raise ApiError(
            "InvalidVolume.ZoneMismatch",
            f"The volume '{vid}' is not in the same availability zone as instance '{iid}'",
        )
    [volume] = worker.start(volumes.attach, vid, iid, device)
    return _attachment(volume)


@action("DetachVolume")
def detach_volume(request: ApiRequest) -> dict[str, Any]:
    """Detach; `Force` also detaches a volume whose attach or detach is still in progress or
    ended with an unknown outcome (the service's plays settle what the domain has)."""
    params = request.params
    vid = params.resource_id("VolumeId", "volume", required=True)
    iid = params.resource_id("InstanceId", "instance")
    device = params.string("Device")
    force = params.boolean("Force")
    volumes = request.service(Volumes)
    volume = _get_volume(volumes, vid)
    attachment = volume.get("attachment")
    if not attachment:
        raise _incorrect_state(volume)
    if (iid and iid != attachment["instance"]) or (
        device is not None and _device(device) != attachment["device"]
    ):
        raise ApiError(
            "InvalidAttachment.NotFound",
            f"Attachment point {device or ''} for {vid} on {iid or 'the instance'} not found",
        )
    if attachment["state"] != AttachmentState.ATTACHED and not force:
        raise ApiError(
            "IncorrectState",
            f"Volume '{vid}' is {attachment['state']} to {attachment['instance']}: "
            "wait, or detach with Force",
        )
    [volume] = worker.start(volumes.detach, vid)
    return _attachment(volume)


def _get_volume(volumes: Volumes, vid: str) -> dict[str, Any]:
    """A volume the principal sees; a deleted one is gone, as on EC2."""
    volume = volumes.get(vid)
    if volume["state"] == VolumeState.DELETED:
        raise not_found("volume", vid)
    return volume


def _incorrect_state(volume: dict[str, Any]) -> ApiError:
    return ApiError(
        "IncorrectState", f"Volume '{volume['id']}' is in the '{volume['state']}' state."
    )


def _device(text: str) -> str:
    """vdX from /dev/vdX or vdX, as the service names devices (vdb .. vdz)."""
    match = _DEVICE.match(text.strip())
    if not match or match.group(1) not in DEVICE_NAMES:
        raise invalid_value("Device", text, "Expecting /dev/vdb to /dev/vdz.")
    return match.group(1)


def _device_path(device: str | None) -> str | None:
    return f"/dev/{device}" if device else None


def _volume(volume: dict[str, Any], owners: dict[str, str]) -> dict[str, Any]:
    return {
        "volumeId": volume["id"],
        "size": volume["size_gb"],
        "snapshotId": volume.get("snapshot_id") or "",
        "availabilityZone": volume["zone"],
        "status": volume["state"],
        "createTime": volume["created"],
        "attachmentSet": [_attachment(volume)] if volume.get("attachment") else [],
        "tagSet": tag_set(volume),
        "volumeType": VOLUME_TYPE,
        "encrypted": False,
        "multiAttachEnabled": False,
        "ownerId": owners.get(volume["account"]),
    }


def _attachment(volume: dict[str, Any]) -> dict[str, Any]:
    attachment = volume["attachment"]
    return {
        "volumeId": volume["id"],
        "instanceId": attachment["instance"],
        "device": _device_path(attachment["device"]),
        "status": attachment["state"],
        "deleteOnTermination": False,
    }


# --- snapshots ----------------------------------------------------------------------------


@action("CreateSnapshot")
def create_snapshot(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    vid = params.resource_id("VolumeId", "volume", required=True)
    description = params.string("Description", default="", max_length=255)
    tags = tags_on_create(params, "snapshot")
    volumes = request.service(Volumes)
    volume = _get_volume(volumes, vid)
    if volume["state"] not in (VolumeState.AVAILABLE, VolumeState.IN_USE):
        raise _incorrect_state(volume)
    [snapshot] = worker.start(volumes.snapshot, vid, description=description)
    if tags:
        Tags(request.store).create([snapshot["id"]], tags)
        snapshot = {**snapshot, "tags": tags}
    return _snapshot(snapshot, account_numbers(request))


@action("DescribeSnapshots")
def describe_snapshots(request: ApiRequest) -> dict[str, Any]:
    """Snapshots the principal sees; `Owner.N` (boto3) or `OwnerId.N` take account numbers or
    `self`; `RestorableBy.N` changes nothing (an account restores its own snapshots)."""
    params = request.params
    wanted = params.resource_ids("SnapshotId", "snapshot")
    owners = account_numbers(request)
    owner_ids = {
        owners.get(request.principal.account) if owner == "self" else owner
        for owner in params.list("Owner") + params.list("OwnerId")
    }
    params.list("RestorableBy")
    snapshots = [
        s
        for s in request.service(Volumes).list_snapshots()
        if not owner_ids or owners.get(s["account"]) in owner_ids
    ]
    fields = {
        **SNAPSHOT_FILTERS,
        "owner-id": lambda s: owners.get(s["account"]),
    }
    chosen = filter_items(select(snapshots, wanted, "snapshot"), params.filters(), fields, _tags)
    page, token = paginate(params, chosen, key=lambda s: s["id"], minimum=5, maximum=1000)
    return {"snapshotSet": [_snapshot(s, owners) for s in page], "nextToken": token}


SNAPSHOT_FILTERS = {
    "snapshot-id": lambda s: s["id"],
    "volume-id": lambda s: s["volume_id"],
    "status": lambda s: s["state"],
    "volume-size": lambda s: str(s["size_gb"]),
    "description": lambda s: s.get("description", ""),
    "progress": lambda s: _progress(s),
    "start-time": lambda s: s["created"],
    "encrypted": lambda s: False,
}


@action("DeleteSnapshot")
def delete_snapshot(request: ApiRequest) -> dict[str, Any]:
    sid = request.params.resource_id("SnapshotId", "snapshot", required=True)
    volumes = request.service(Volumes)
    snapshot = volumes.get_snapshot(sid)
    if snapshot["state"] == SnapshotState.PENDING:
        raise ApiError("IncorrectState", f"Snapshot '{sid}' is pending: wait for it to complete")
    volumes.delete_snapshot(sid)
    return {"return": True}


def _progress(snapshot: dict[str, Any]) -> str:
    return "100%" if snapshot["state"] == SnapshotState.COMPLETED else "0%"


def _snapshot(snapshot: dict[str, Any], owners: dict[str, str]) -> dict[str, Any]:
    return {
        "snapshotId": snapshot["id"],
        "volumeId": snapshot["volume_id"],
        "status": snapshot["state"],
        "statusMessage": snapshot.get("reason") or None,
        "startTime": snapshot["created"],
        "progress": _progress(snapshot),
        "ownerId": owners.get(snapshot["account"]),
        "volumeSize": snapshot["size_gb"],
        "description": snapshot.get("description", ""),
        "encrypted": False,
        "tagSet": tag_set(snapshot),
    }

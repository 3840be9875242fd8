"""Instances (EC2's RunInstances, DescribeInstances, TerminateInstances, StopInstances,
StartInstances, RebootInstances, GetConsoleOutput) over cloudctl.instances.

Run, terminate, stop, start and reboot answer at once, the instances in EC2's first state
(`pending`, `shutting-down`, `stopping`), and run their play in a worker
(cloudctl.api.worker); DescribeInstances shows the transitions. Terminated instances stay
visible, as on EC2. A launch that failed (cloudctl's `failed`: its hosts were cleaned up) is
`terminated` to EC2 clients, with the reason in stateReason, as EC2 shows an instance that
could not start.

MinCount/MaxCount: as many instances as fit (capacity and quotas), from MaxCount down to
MinCount, in one reservation and one play. ClientToken is not honoured (launches are not
idempotent): a retried request launches again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Iterator
from typing import Any

from cloudctl.addresses import Addresses
from cloudctl.api import worker
from cloudctl.api.actions import action
from cloudctl.api.actions.vpc import instance_network, launch_network
from cloudctl.api.errors import ApiError, invalid_value, missing_parameter, short
from cloudctl.api.params import Params, filter_items, paginate
from cloudctl.api.request import ApiRequest
from cloudctl.api.shapes import account_numbers, select, tag_set, tags_on_create
from cloudctl.errors import CapacityError
from cloudctl.groups import Groups
from cloudctl.ids import InstanceState
from cloudctl.images import ImageNotFound, Images
from cloudctl.instances import MAX_COUNT, Instances
from cloudctl.keypairs import KeyPairNotFound, KeyPairs
from cloudctl.state import utc_now
from cloudctl.tags import Tags
from cloudctl.volumes import Volumes

DEFAULT_TYPE = "m1.small"  # EC2's default type was m1.small too
# EC2's state codes (the low byte of instanceState.code).
STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
CONSOLE_BYTES = 64 * 1024  # EC2 returns the last 64 KiB of the console
ROOT_DEVICE = "/dev/vda"  # the image's disk, a virtio disk of the NC
_S = InstanceState


def ec2_state(record: dict[str, Any]) -> str:
    """The state EC2 clients see: a failed launch is terminated."""
    return _S.TERMINATED.value if record["state"] == _S.FAILED else record["state"]


def _state(name: str) -> dict[str, Any]:
    return {"code": STATE_CODES[name], "name": name}


# --- run ----------------------------------------------------------------------------------


@action("RunInstances")
def run_instances(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    config = request.config
    image_id = params.resource_id("ImageId", "image", required=True)
    minimum = params.integer("MinCount", required=True, minimum=1, maximum=MAX_COUNT)
    maximum = params.integer("MaxCount", required=True, minimum=1, maximum=MAX_COUNT)
    if minimum > maximum:
        raise invalid_value("MinCount", str(minimum), f"It is more than MaxCount ({maximum}).")
    type_name = params.string("InstanceType", default=DEFAULT_TYPE)
    if type_name not in config.instance_types:
        raise invalid_value(
            "InstanceType",
            short(type_name),
            f"Expecting one of: {', '.join(config.instance_types)}.",
        )
    if params.members("BlockDeviceMapping"):
        raise ApiError(
            "InvalidParameterValue",
            "BlockDeviceMapping is not supported: the root disk is the image's (instance store); "
            "attach volumes with AttachVolume",
        )
    network = launch_network(config, params)
    zone = _launch_zone(request, network.zone)
    groups = _launch_groups(request, network.group_ids)
    keypair = params.string("KeyName")
    if keypair is not None:
        with _key_pair_errors(keypair):
            KeyPairs(request.store).show(keypair)
    _check_image_parts(request, image_id)
    user_data = _user_data(params)
    # EC2 tags the volumes a launch makes with "volume" (amazon.aws's ec2_instance always
    # sends both): the root disk is instance store here, so a launch makes no volume.
    tags = tags_on_create(params, "instance", made_none_of=("volume",))
    params.string("ClientToken")  # not honoured: see the module's docstring

    instances = request.service(Instances)
    for count in range(maximum, minimum - 1, -1):
        try:
            records = worker.start(
                instances.run, image_id, type_name, count=count, zone=zone, keypair=keypair,
                user_data=user_data, groups=groups,
            )  # fmt: skip
            break
        except CapacityError:  # no room (or quota) for this many: fewer, down to MinCount
            if count == minimum:
                raise
    if tags:
        Tags(request.store).create([r["id"] for r in records], tags)
        records = [{**r, "tags": tags} for r in records]
    return _Views(request).reservation(records)


def _launch_zone(request: ApiRequest, subnet_zone: str | None) -> str | None:
    """Placement.AvailabilityZone, or the zone of the subnet asked for (both: the same)."""
    zone = request.params.string("Placement.AvailabilityZone") or None
    if zone is not None and zone not in request.config.clusters:
        raise ApiError("InvalidParameterValue", f"Invalid availability zone: [{short(zone)}]")
    if zone and subnet_zone and zone != subnet_zone:
        raise ApiError(
            "InvalidParameterCombination",
            f"The subnet is in zone {subnet_zone}, not in Placement.AvailabilityZone {zone}",
        )
    return zone or subnet_zone


def _launch_groups(request: ApiRequest, interface_group_ids: list[str]) -> list[str]:
    """The ids of the groups SecurityGroup.N (names of the caller's groups) and
    SecurityGroupId.N name; none: the caller's default group."""
    params = request.params
    names = params.list("SecurityGroup")
    ids = params.resource_ids("SecurityGroupId", "group")
    if interface_group_ids and (names or ids):
        raise ApiError(
            "InvalidParameterCombination",
            "Security groups may not be given both for the network interface and for the "
            "instance on the same request",
        )
    ids = ids or interface_group_ids
    if not names and not ids:
        return []
    known = request.service(Groups).list()
    by_id = {g["id"]: g for g in known}
    by_name = {g["name"]: g for g in known if g["account"] == request.principal.account}
    for ref in [*ids, *names]:
        if ref not in by_id and ref not in by_name:
            raise ApiError(
                "InvalidGroup.NotFound", f"The security group '{short(ref)}' does not exist"
            )
    return sorted({*ids, *(by_name[n]["id"] for n in names)})


def _check_image_parts(request: ApiRequest, image_id: str) -> None:
    """KernelId and RamdiskId, when given, must be the image's own: an instance boots its
    image's kernel and ramdisk."""
    params = request.params
    given = {
        "kernel_id": params.resource_id("KernelId", "kernel"),
        "ramdisk_id": params.resource_id("RamdiskId", "ramdisk"),
    }
    if not any(given.values()):
        return
    try:
        image = Images(request.store).show(image_id)
    except ImageNotFound:
        raise ApiError(
            "InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist"
        ) from None
    for field, value in given.items():
        if value is not None and value != image.get(field):
            name = "KernelId" if field == "kernel_id" else "RamdiskId"
            raise invalid_value(
                name, value, f"Image {image_id} boots {image.get(field) or 'none'}."
            )


def _user_data(params: Params) -> bytes | None:
    """UserData: base64, as EC2 takes it (the service checks its size and text)."""
    text = params.string("UserData")
    if not text:
        return None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_value("UserData", short(text), "It is not base64.") from None


@contextlib.contextmanager
def _key_pair_errors(name: str) -> Iterator[None]:
    try:
        yield
    except KeyPairNotFound:
        raise ApiError(
            "InvalidKeyPair.NotFound", f"The key pair '{short(name)}' does not exist"
        ) from None


# --- describe -----------------------------------------------------------------------------


@action("DescribeInstances")
def describe_instances(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    wanted = params.resource_ids("InstanceId", "instance")
    if wanted and "MaxResults" in params:
        raise ApiError(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        )
    views = _Views(request)
    records = select(request.service(Instances).list(), wanted, "instance")
    chosen = filter_items(records, params.filters(), views.filters(), tags=_tags)
    page, token = paginate(params, chosen, key=lambda r: r["id"], minimum=5, maximum=1000)
    page.sort(key=lambda r: (r["created"], r.get("launch_index", 0)))
    return {"reservationSet": views.reservations(page), "nextToken": token}


def _tags(record: dict[str, Any]) -> dict[str, str]:
    return record.get("tags") or {}


class _Views:
    """EC2's shapes of instance records, with what they show of other resources: the owners'
    account numbers, group names, elastic IPs, attached volumes, the VPC facade."""

    def __init__(self, request: ApiRequest) -> None:
        self.config = request.config
        self.owners = account_numbers(request)
        self.group_names = {g["id"]: g["name"] for g in request.service(Groups).list()}
        self.public_ips = {
            a["instance"]: a["public_ip"]
            for a in request.service(Addresses).list()
            if a.get("instance")
        }
        self.volumes: dict[str, list[dict[str, Any]]] = {}
        for volume in request.service(Volumes).list():
            attachment = volume.get("attachment")
            if attachment:
                self.volumes.setdefault(attachment["instance"], []).append(volume)

    def reservations(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Reservations (launches) in the order of their first instance."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            grouped.setdefault(r["reservation"], []).append(r)
        return [self.reservation(members) for members in grouped.values()]

    def reservation(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        first = records[0]
        return {
            "reservationId": first["reservation"],
            "ownerId": self.owners.get(first["account"]),
            "groupSet": self.group_set(first),
            "instancesSet": [self.instance(r) for r in records],
        }

    def group_set(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"groupId": gid, "groupName": self.group_names.get(gid)}
            for gid in record.get("groups") or []
        ]

    def instance(self, r: dict[str, Any]) -> dict[str, Any]:
        state = ec2_state(r)
        gone = state == _S.TERMINATED
        public_ip = self.public_ips.get(r["id"])
        owner = self.owners.get(r["account"])
        groups = self.group_set(r)
        item = {
            "instanceId": r["id"],
            "imageId": r["image_id"],
            "instanceState": _state(state),
            # No DNS: the addresses, as Eucalyptus answered without DNS.
            "privateDnsName": self._private_ip(r) or "",
            "dnsName": public_ip or "",
            "reason": r.get("reason") or "",
            "keyName": r.get("keypair"),
            "amiLaunchIndex": r.get("launch_index", 0),
            "productCodes": [],
            "instanceType": r["type"],
            "launchTime": r["created"],
            "placement": {"availabilityZone": r["zone"], "groupName": "", "tenancy": "default"},
            "kernelId": r.get("kernel_id"),
            "ramdiskId": r.get("ramdisk_id"),
            "monitoring": {"state": "disabled"},
            "privateIpAddress": self._private_ip(r),
            "ipAddress": public_ip,
            "groupSet": groups,
            "stateReason": _state_reason(r),
            "architecture": "x86_64",
            "rootDeviceType": "instance-store",
            "rootDeviceName": ROOT_DEVICE,
            "blockDeviceMapping": [self._mapping(v) for v in self.volumes.get(r["id"], [])],
            "virtualizationType": "hvm",
            "clientToken": "",
            "tagSet": tag_set(r),
            "hypervisor": "kvm",  # libvirt's QEMU/KVM driver (TCG where no KVM)
            "ebsOptimized": False,
            "enaSupport": False,
            "cpuOptions": {"coreCount": r["vcpus"], "threadsPerCore": 1},
        }
        if not gone:  # a terminated instance has no network interface any more
            item |= instance_network(
                self.config, r, owner_id=owner, group_set=groups, public_ip=public_ip
            )
        return item

    def _mapping(self, volume: dict[str, Any]) -> dict[str, Any]:
        attachment = volume["attachment"]
        return {
            "deviceName": f"/dev/{attachment['device']}",
            "ebs": {
                "volumeId": volume["id"],
                "status": attachment["state"],
                "attachTime": volume["updated"],
                "deleteOnTermination": False,
            },
        }

    def filters(self) -> dict[str, Any]:
        """DescribeInstances' filter names -> an instance record's value(s)."""
        return {
            "instance-id": lambda r: r["id"],
            "instance-state-name": ec2_state,
            "instance-state-code": lambda r: str(STATE_CODES[ec2_state(r)]),
            "instance-type": lambda r: r["type"],
            "availability-zone": lambda r: r["zone"],
            "image-id": lambda r: r["image_id"],
            "kernel-id": lambda r: r.get("kernel_id"),
            "ramdisk-id": lambda r: r.get("ramdisk_id"),
            "key-name": lambda r: r.get("keypair"),
            "private-ip-address": self._private_ip,
            "private-dns-name": self._private_ip,
            "ip-address": lambda r: self.public_ips.get(r["id"]),
            "dns-name": lambda r: self.public_ips.get(r["id"]),
            "reservation-id": lambda r: r["reservation"],
            "owner-id": lambda r: self.owners.get(r["account"]),
            "launch-time": lambda r: r["created"],
            "launch-index": lambda r: str(r.get("launch_index", 0)),
            "ami-launch-index": lambda r: str(r.get("launch_index", 0)),
            "architecture": lambda r: "x86_64",
            "root-device-type": lambda r: "instance-store",
            "root-device-name": lambda r: ROOT_DEVICE,
            "virtualization-type": lambda r: "hvm",
            "hypervisor": lambda r: "kvm",
            "tenancy": lambda r: "default",
            "instance.group-id": self._group_ids,
            "instance.group-name": self._group_names,
            "group-id": self._group_ids,
            "group-name": self._group_names,
            "block-device-mapping.volume-id": lambda r: [
                v["id"] for v in self.volumes.get(r["id"], [])
            ],
            "vpc-id": lambda r: self._network(r, "vpcId"),
            "subnet-id": lambda r: self._network(r, "subnetId"),
            "network-interface.network-interface-id": lambda r: [
                i["networkInterfaceId"] for i in self._network(r, "networkInterfaceSet") or []
            ],
        }

    @staticmethod
    def _private_ip(r: dict[str, Any]) -> str | None:
        return None if ec2_state(r) == _S.TERMINATED else r["private_ip"]

    @staticmethod
    def _group_ids(r: dict[str, Any]) -> list[str]:
        return r.get("groups") or []

    def _group_names(self, r: dict[str, Any]) -> list[str]:
        return [self.group_names.get(g, "") for g in r.get("groups") or []]

    def _network(self, r: dict[str, Any], field: str) -> Any:
        if ec2_state(r) == _S.TERMINATED:
            return None
        owner = self.owners.get(r["account"])
        return instance_network(self.config, r, owner_id=owner, group_set=[])[field]


def _state_reason(r: dict[str, Any]) -> dict[str, str] | None:
    if r["state"] == _S.FAILED:
        return {
            "code": "Server.InternalError",
            "message": f"Server.InternalError: {r.get('reason')}",
        }
    if r["state"] in (_S.SHUTTING_DOWN, _S.TERMINATED, _S.STOPPING, _S.STOPPED):
        return {
            "code": "Client.UserInitiatedShutdown",
            "message": "Client.UserInitiatedShutdown: User initiated shutdown",
        }
    return None


# --- terminate, stop, start, reboot -------------------------------------------------------


def _instance_ids(params: Params) -> list[str]:
    ids = params.resource_ids("InstanceId", "instance")
    if not ids:
        raise missing_parameter("InstanceId.1")
    return list(dict.fromkeys(ids))


def _changes(before: list[dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """EC2's instancesSet of a state change: each instance's previous and current state."""
    return {
        "instancesSet": [
            {
                "instanceId": r["id"],
                "currentState": _state(ec2_state(after.get(r["id"], r))),
                "previousState": _state(ec2_state(r)),
            }
            for r in before
        ]
    }


@action("TerminateInstances")
def terminate_instances(request: ApiRequest) -> dict[str, Any]:
    """Terminate; an instance already shutting down or terminated is left as it is."""
    ids = _instance_ids(request.params)
    instances = request.service(Instances)
    before = [instances.get(i) for i in ids]
    todo = [r["id"] for r in before if r["state"] not in (_S.SHUTTING_DOWN, _S.TERMINATED)]
    after = worker.start(instances.terminate, todo) if todo else []
    return _changes(before, {r["id"]: r for r in after})


# action -> (the EC2 states it leaves alone: there already or on the way, the states it
# starts from, the verb of its error message)
_POWER = {
    "stop": ((_S.STOPPING, _S.STOPPED), (_S.RUNNING,), "stopped"),
    "start": ((_S.PENDING, _S.RUNNING), (_S.STOPPED,), "started"),
    "reboot": ((), (_S.RUNNING,), "rebooted"),
}


def _power(request: ApiRequest, verb: str) -> tuple[list[dict], dict[str, dict]]:
    params = request.params
    ids = _instance_ids(params)
    params.boolean("Force")
    params.boolean("Hibernate")
    instances = request.service(Instances)
    before = [instances.get(i) for i in ids]
    done, starts, participle = _POWER[verb]
    todo = [r for r in before if r["state"] not in done]
    for r in todo:
        if r["state"] not in starts:
            raise ApiError(
                "IncorrectInstanceState",
                f"The instance '{r['id']}' is {ec2_state(r)}: it is not in a state from which "
                f"it can be {participle}.",
            )
    after = worker.start(instances.power, [r["id"] for r in todo], verb) if todo else []
    return before, {r["id"]: r for r in after}


@action("StopInstances")
def stop_instances(request: ApiRequest) -> dict[str, Any]:
    return _changes(*_power(request, "stop"))


@action("StartInstances")
def start_instances(request: ApiRequest) -> dict[str, Any]:
    return _changes(*_power(request, "start"))


@action("RebootInstances")
def reboot_instances(request: ApiRequest) -> dict[str, Any]:
    _power(request, "reboot")
    return {"return": True}


@action("GetConsoleOutput")
def get_console_output(request: ApiRequest) -> dict[str, Any]:
    """The last 64 KiB of the instance's serial console, base64 (none before it runs and
    once it is terminated)."""
    params = request.params
    iid = params.resource_id("InstanceId", "instance", required=True)
    params.boolean("Latest")  # the console is always the latest
    instances = request.service(Instances)
    record = instances.get(iid)
    text = ""
    if record["state"] in (_S.RUNNING, _S.STOPPING, _S.STOPPED):
        text = instances.console(iid)
    output = text.encode("utf-8")[-CONSOLE_BYTES:]
    return {
        "instanceId": iid,
        "timestamp": utc_now(),
        "output": base64.b64encode(output).decode() if output else None,
    }

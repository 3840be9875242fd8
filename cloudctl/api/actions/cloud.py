"""What the cloud offers: its region, zones, account attributes and instance types."""

from __future__ import annotations

from typing import Any

from cloudctl.api.actions import action
from cloudctl.api.actions.vpc import default_vpc_id
from cloudctl.api.errors import ApiError
from cloudctl.api.params import filter_items, paginate
from cloudctl.api.request import ApiRequest
from cloudctl.cloudconfig import InstanceType
from cloudctl.zones import Zones

VERBOSE = "verbose"  # Eucalyptus: ZoneName.1=verbose lists each zone's free / max capacity
OPT_IN = "opt-in-not-required"


@action("DescribeRegions")
def describe_regions(request: ApiRequest) -> dict[str, Any]:
    """The cloud's one region, with the endpoint of this service."""
    params = request.params
    params.boolean("AllRegions")  # every region is this one: checked, nothing to change
    api = request.config.api
    region = {
        "regionName": request.region,
        "regionEndpoint": api.endpoint if api else request.endpoint,
        "optInStatus": OPT_IN,
    }
    _check_names("region", params.list("RegionName"), [request.region])
    regions = filter_items(
        [region],
        params.filters(),
        {
            "region-name": lambda r: r["regionName"],
            "endpoint": lambda r: r["regionEndpoint"],
            "opt-in-status": lambda r: r["optInStatus"],
        },
    )
    return {"regionInfo": regions}


@action("DescribeAvailabilityZones")
def describe_availability_zones(request: ApiRequest) -> dict[str, Any]:
    """The zones (clusters) of the cloud; for the cloud's administrators, `ZoneName.1=verbose`
    adds under each zone one row per instance type: free / max instances, cpu, ram, disk, as
    `euca-describe-availability-zones verbose` showed them."""
    params = request.params
    params.boolean("AllAvailabilityZones")
    names = params.list("ZoneName")
    verbose = names == [VERBOSE] and request.principal.admin
    if names == [VERBOSE]:
        names = []  # others get the plain list, as Eucalyptus answered them
    rows = request.service(Zones).list(verbose=verbose)
    zones = [_zone(row, request.region) for row in rows if "state" in row]
    _check_names("availability zone", names, [z["zoneName"] for z in zones])
    wanted = {
        z["zoneName"]
        for z in filter_items(
            [z for z in zones if not names or z["zoneName"] in names],
            params.filters(),
            {
                "zone-name": lambda z: z["zoneName"],
                "state": lambda z: z["zoneState"],
                "region-name": lambda z: z["regionName"],
                "zone-type": lambda z: z["zoneType"],
                "opt-in-status": lambda z: z["optInStatus"],
            },
        )
    }
    items: list[dict[str, Any]] = []
    zone = ""
    for row in rows:
        if "state" in row:
            zone = row["zone"]
            if zone in wanted:
                items.append(_zone(row, request.region))
                if verbose:
                    items.append(_capacity_row("|- vm types", "free / max   cpu   ram  disk"))
        elif zone in wanted:
            items.append(
                _capacity_row(
                    row["zone"],
                    f"{row['free']:04d} / {row['max']:04d} {row['cpus']:4d} "
                    f"{row['memory_mb']:5d} {row['disk_gb']:5d}",
                )
            )
    return {"availabilityZoneInfo": items}


def _zone(row: dict[str, Any], region: str) -> dict[str, Any]:
    return {
        "zoneName": row["zone"],
        "zoneState": row["state"],
        "regionName": region,
        "messageSet": [],
        "zoneType": "availability-zone",
        "optInStatus": OPT_IN,
    }


def _capacity_row(name: str, text: str) -> dict[str, Any]:
    """A verbose row: Eucalyptus put the figures in zoneState."""
    return {"zoneName": name, "zoneState": text}


@action("DescribeAccountAttributes")
def describe_account_attributes(request: ApiRequest) -> dict[str, Any]:
    """EC2's account attributes as this cloud has them: EC2-Classic's network, presented as
    a default VPC too (cloudctl.api.actions.vpc), as EC2 accounts that had both platforms."""
    attributes = {
        "supported-platforms": ["EC2", "VPC"],
        "default-vpc": [default_vpc_id(request.config)],
    }
    names = request.params.list("AttributeName")
    for name in names:
        if name not in attributes:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({name}) for parameter attributeName is invalid. Expecting one of: "
                f"{', '.join(attributes)}.",
            )
    return {
        "accountAttributeSet": [
            {
                "attributeName": name,
                "attributeValueSet": [{"attributeValue": value} for value in values],
            }
            for name, values in attributes.items()
            if not names or name in names
        ]
    }


@action("DescribeInstanceTypes")
def describe_instance_types(request: ApiRequest) -> dict[str, Any]:
    """The instance types of the cloud configuration (vCPUs, memory, the instance's disk)."""
    params = request.params
    types = request.config.instance_types
    names = params.list("InstanceType")
    unknown = [name for name in names if name not in types]
    if unknown:
        raise ApiError(
            "InvalidInstanceType",
            f"The following supplied instance types do not exist: [{', '.join(unknown)}]",
        )
    chosen = [t for t in types.values() if not names or t.name in names]
    chosen = filter_items(
        chosen,
        params.filters(),
        {
            "instance-type": lambda t: t.name,
            "vcpu-info.default-vcpus": lambda t: str(t.cpus),
            "memory-info.size-in-mib": lambda t: str(t.memory_mb),
            "instance-storage-info.total-size-in-gb": lambda t: str(t.disk_gb),
            "current-generation": lambda t: "true",
            "processor-info.supported-architecture": lambda t: "x86_64",
        },
    )
    page, token = paginate(params, chosen, key=lambda t: t.name, minimum=5, maximum=100)
    return {"instanceTypeSet": [_instance_type(t) for t in page], "nextToken": token}


def _instance_type(itype: InstanceType) -> dict[str, Any]:
    return {
        "instanceType": itype.name,
        "currentGeneration": True,
        "freeTierEligible": False,
        "supportedUsageClasses": ["on-demand"],
        "supportedRootDeviceTypes": ["instance-store"],  # a disk of the NC, not a volume
        "supportedVirtualizationTypes": ["hvm"],
        "bareMetal": False,
        "processorInfo": {"supportedArchitectures": ["x86_64"]},
        "vCpuInfo": {
            "defaultVCpus": itype.cpus,
            "defaultCores": itype.cpus,
            "defaultThreadsPerCore": 1,
        },
        "memoryInfo": {"sizeInMiB": itype.memory_mb},
        "instanceStorageSupported": True,
        "instanceStorageInfo": {
            "totalSizeInGB": itype.disk_gb,
            "disks": [{"sizeInGB": itype.disk_gb, "count": 1, "type": "hdd"}],
        },
        "hibernationSupported": False,
        "burstablePerformanceSupported": False,
        "dedicatedHostsSupported": False,
        "autoRecoverySupported": False,
    }


def _check_names(what: str, names: list[str], known: list[str]) -> None:
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ApiError("InvalidParameterValue", f"Invalid {what}: [{', '.join(unknown)}]")

"""The default VPC: a facade over the cloud's EC2-Classic-style network.

Modern EC2 clients (amazon.aws's ec2_instance and ec2_eip, Terraform) assume that an account
has a default VPC with one default subnet per availability zone: they look the subnet up
before a launch, find groups by their VPC, and name elastic IPs by allocation and association
ids. This cloud has no VPCs: each zone is one flat instance network (the cluster's subnet
behind its CC), groups filter inbound traffic only, and elastic IPs are NAT on the CC. This
module presents that network the way those clients expect it, with nothing new stored:

- one VPC per cloud, `vpc-` + 8 hex derived from the cloud id, the default one; its CIDR is
  the smallest block that holds every zone's subnet;
- one default subnet per zone, `subnet-` + 8 hex derived from the cloud id and the zone name;
  its CIDR is the zone's subnet; `defaultForAz` true, `mapPublicIpOnLaunch` false (public
  addresses are elastic IPs, associated on request);
- an instance has one network interface, `eni-` + its own id's hex, in its zone's subnet;
- an associated elastic IP's association is `eipassoc-` + its allocation id's hex.

Every account sees the same VPC (the network is the cloud's) as its own: OwnerId is the
caller's account. The other families of actions use the functions below for the VPC fields of
their answers (vpcId, subnetId, networkInterfaceSet, ipPermissionsEgress, associationId) and
for the VPC parameters of their requests (SubnetId, NetworkInterface.N, VpcId,
AssociationId).
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import netaddr

from cloudctl.api.actions import action
from cloudctl.api.errors import ApiError
from cloudctl.api.params import Params, filter_items, paginate
from cloudctl.api.request import ApiRequest
from cloudctl.cloudconfig import CloudConfig
from cloudctl.identity import Identity
from cloudctl.zones import Zones

# A group's outbound rules: groups filter inbound traffic only, so every group lets
# everything out (what EC2 gives a new VPC group); clients expect the element.
EGRESS_ALL: list[dict[str, Any]] = [
    {
        "ipProtocol": "-1",
        "groups": [],
        "ipRanges": [{"cidrIp": "0.0.0.0/0"}],
        "ipv6Ranges": [],
        "prefixListIds": [],
    }
]
# RunInstances' NetworkInterface.1 fields this network can honour (one interface per
# instance, in its zone's subnet, gone with the instance).
_INTERFACE_FIELDS = (
    "DeviceIndex",
    "SubnetId",
    "SecurityGroupId",
    "DeleteOnTermination",
    "AssociatePublicIpAddress",
    "Description",
)


def _hex8(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]


def _cloud(config: CloudConfig) -> str:
    return config.cloud_id or config.cloud_name  # a cloud deployed before ids has only a name


def default_vpc_id(config: CloudConfig) -> str:
    """The cloud's one VPC (stable: derived from the cloud id)."""
    return f"vpc-{_hex8('vpc', _cloud(config))}"


def subnet_id(config: CloudConfig, zone: str) -> str:
    """The default subnet of a zone (stable: derived from the cloud id and the zone)."""
    return f"subnet-{_hex8('subnet', _cloud(config), zone)}"


def zone_of_subnet(config: CloudConfig, subnet: str) -> str:
    """The zone whose default subnet `subnet` is; EC2's InvalidSubnetID.NotFound if none."""
    for zone in config.clusters:
        if subnet_id(config, zone) == subnet:
            return zone
    raise ApiError("InvalidSubnetID.NotFound", f"The subnet ID '{subnet}' does not exist")


def check_vpc_id(config: CloudConfig, vpc_id: str | None) -> None:
    """A VpcId parameter (CreateSecurityGroup, filters): only the default VPC exists."""
    if vpc_id is not None and vpc_id != default_vpc_id(config):
        raise ApiError("InvalidVpcID.NotFound", f"The vpc ID '{vpc_id}' does not exist")


def vpc_cidr(config: CloudConfig) -> str:
    """The smallest block that holds every zone's subnet."""
    subnets = [cluster.subnet for cluster in config.clusters.values()]
    if len(subnets) == 1:  # spanning_cidr wants two at least: a cloud-in-a-box has one zone
        return str(netaddr.IPNetwork(subnets[0]).cidr)
    return str(netaddr.spanning_cidr(subnets)) if subnets else "0.0.0.0/0"


def interface_id(instance_id: str) -> str:
    """The one network interface of an instance: i-0a1b2c3d -> eni-0a1b2c3d."""
    return "eni-" + instance_id.split("-", 1)[1]


def association_id(allocation_id: str) -> str:
    """The association of an associated elastic IP: eipalloc-X -> eipassoc-X."""
    return "eipassoc-" + allocation_id.split("-", 1)[1]


def allocation_of_association(association: str) -> str:
    """The allocation id an AssociationId names; EC2's InvalidAssociationID.NotFound when it
    names none."""
    prefix, _, rest = association.partition("-")
    if prefix != "eipassoc" or not rest:
        raise ApiError(
            "InvalidAssociationID.NotFound", f"The association ID '{association}' does not exist"
        )
    return f"eipalloc-{rest}"


def instance_network(
    config: CloudConfig,
    instance: dict[str, Any],
    *,
    owner_id: str,
    group_set: list[dict[str, str]],
    public_ip: str | None = None,
) -> dict[str, Any]:
    """The VPC fields of a DescribeInstances/RunInstances item: vpcId, subnetId,
    sourceDestCheck and the instance's one interface (networkInterfaceSet). `instance` is the
    service layer's record (id, zone, private_ip, mac, created); `group_set` the item's
    groupSet; `public_ip` its elastic IP when one is associated."""
    vpc, subnet = default_vpc_id(config), subnet_id(config, instance["zone"])
    association = {"publicIp": public_ip, "ipOwnerId": owner_id} if public_ip else None
    private_ip = instance.get("private_ip")
    return {
        "vpcId": vpc,
        "subnetId": subnet,
        "sourceDestCheck": True,
        "networkInterfaceSet": [
            {
                "networkInterfaceId": interface_id(instance["id"]),
                "subnetId": subnet,
                "vpcId": vpc,
                "description": "",
                "ownerId": owner_id,
                "status": "in-use",
                "macAddress": instance.get("mac"),
                "privateIpAddress": private_ip,
                "sourceDestCheck": True,
                "groupSet": group_set,
                "attachment": {
                    "attachmentId": "eni-attach-" + instance["id"].split("-", 1)[1],
                    "deviceIndex": 0,
                    "status": "attached",
                    "attachTime": instance.get("created"),
                    "deleteOnTermination": True,
                    "networkCardIndex": 0,
                },
                "association": association,
                "privateIpAddressesSet": [
                    {"privateIpAddress": private_ip, "primary": True, "association": association}
                ],
                "ipv6AddressesSet": [],
                "interfaceType": "interface",
            }
        ],
    }


def address_association(
    address: dict[str, Any], *, owner_id: str, private_ip: str | None
) -> dict[str, Any]:
    """The VPC fields of a DescribeAddresses item: domain vpc, and for an associated address
    its association, the instance's interface and private address. `address` is the service
    layer's record (id, instance)."""
    instance = address.get("instance")
    fields: dict[str, Any] = {"domain": "vpc"}
    if instance:
        fields.update(
            associationId=association_id(address["id"]),
            networkInterfaceId=interface_id(instance),
            networkInterfaceOwnerId=owner_id,
            privateIpAddress=private_ip,
        )
    return fields


class LaunchNetwork(NamedTuple):
    zone: str | None  # the zone of the subnet asked for (None: none asked for)
    group_ids: list[str]  # NetworkInterface.1.SecurityGroupId.N


def launch_network(config: CloudConfig, params: Params) -> LaunchNetwork:
    """RunInstances' SubnetId and NetworkInterface.N in this network's terms: at most one
    interface (device 0, a default subnet, deleted with the instance, no public address of
    its own), and the zone of the subnet. The caller reconciles the zone with
    Placement.AvailabilityZone and the groups with SecurityGroupId.N (EC2 refuses groups at
    both levels)."""
    interfaces = params.members("NetworkInterface")
    top_subnet = params.string("SubnetId")
    if len(interfaces) > 1:
        raise ApiError(
            "InvalidParameterValue",
            "An instance of this cloud has one network interface: give one NetworkInterface",
        )
    subnet, group_ids = top_subnet, []
    if interfaces:
        spec = interfaces[0]
        unsupported = [name for name in spec.names() if name.split(".")[0] not in _INTERFACE_FIELDS]
        if unsupported:
            raise ApiError(
                "InvalidParameterValue",
                f"{spec.full_name(unsupported[0])} is not supported: an instance has one "
                "interface, in its zone's subnet, with an address of the zone's network",
            )
        spec.integer("DeviceIndex", minimum=0, maximum=0)
        if not spec.boolean("DeleteOnTermination", default=True):
            raise ApiError(
                "InvalidParameterValue",
                f"{spec.full_name('DeleteOnTermination')}: an instance's interface is deleted "
                "with the instance",
            )
        if spec.boolean("AssociatePublicIpAddress"):
            raise ApiError(
                "InvalidParameterValue",
                f"{spec.full_name('AssociatePublicIpAddress')}: public addresses are elastic "
                "IPs (AllocateAddress, AssociateAddress)",
            )
        if top_subnet is not None and spec.string("SubnetId") is not None:
            raise ApiError(
                "InvalidParameterCombination",
                "Network interfaces and an instance-level subnet ID may not be specified on "
                "the same request",
            )
        subnet = spec.string("SubnetId") or top_subnet
        group_ids = spec.resource_ids("SecurityGroupId", "group")
    return LaunchNetwork(zone_of_subnet(config, subnet) if subnet else None, group_ids)


# --- the actions --------------------------------------------------------------------------


def _owner_id(request: ApiRequest) -> str:
    """The caller's account: every account sees the cloud's VPC as its own."""
    return Identity(request.store).account(request.principal.account)["number"]


def _vpc(request: ApiRequest) -> dict[str, Any]:
    config = request.config
    vpc_id, cidr = default_vpc_id(config), vpc_cidr(config)
    return {
        "vpcId": vpc_id,
        "ownerId": _owner_id(request),
        "state": "available",
        "cidrBlock": cidr,
        "dhcpOptionsId": "default",
        "instanceTenancy": "default",
        "isDefault": True,
        "cidrBlockAssociationSet": [
            {
                "associationId": "vpc-cidr-assoc-" + vpc_id.split("-", 1)[1],
                "cidrBlock": cidr,
                "cidrBlockState": {"state": "associated"},
            }
        ],
        "ipv6CidrBlockAssociationSet": [],
        "tagSet": [],
    }


def _no_tags(_item: Any) -> dict[str, str]:
    return {}  # the facade's VPC and subnets carry no tags: tag filters match nothing


@action("DescribeVpcs")
def describe_vpcs(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    params.boolean("DryRun")
    vpc = _vpc(request)
    for wanted in params.list("VpcId"):
        check_vpc_id(request.config, wanted)
    vpcs = filter_items(
        [vpc],
        params.filters(),
        {
            "vpc-id": lambda v: v["vpcId"],
            "is-default": lambda v: v["isDefault"],
            "isDefault": lambda v: v["isDefault"],  # the name amazon.aws's ec2_instance sends
            "state": lambda v: v["state"],
            "cidr": lambda v: v["cidrBlock"],
            "cidr-block-association.cidr-block": lambda v: v["cidrBlock"],
            "cidr-block-association.state": lambda v: "associated",
            "dhcp-options-id": lambda v: v["dhcpOptionsId"],
            "owner-id": lambda v: v["ownerId"],
        },
        tags=_no_tags,
    )
    page, token = paginate(params, vpcs, key=lambda v: v["vpcId"])
    return {"vpcSet": page, "nextToken": token}


@action("DescribeSubnets")
def describe_subnets(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    params.boolean("DryRun")
    config = request.config
    owner, region, vpc = _owner_id(request), request.region, default_vpc_id(config)
    free = request.service(Zones).free_private_ips()
    subnets = [
        {
            "subnetId": subnet_id(config, zone),
            "subnetArn": f"arn:aws:ec2:{region}:{owner}:subnet/{subnet_id(config, zone)}",
            "state": "available",
            "vpcId": vpc,
            "cidrBlock": cluster.subnet,
            "availableIpAddressCount": free[zone],
            "availabilityZone": zone,
            "defaultForAz": True,
            "mapPublicIpOnLaunch": False,
            "assignIpv6AddressOnCreation": False,
            "ipv6CidrBlockAssociationSet": [],
            "ipv6Native": False,
            "ownerId": owner,
            "tagSet": [],
        }
        for zone, cluster in sorted(config.clusters.items())
    ]
    by_id = {s["subnetId"]: s for s in subnets}
    wanted = params.list("SubnetId")
    for sid in wanted:
        if sid not in by_id:
            raise ApiError("InvalidSubnetID.NotFound", f"The subnet ID '{sid}' does not exist")
    chosen = filter_items(
        [by_id[sid] for sid in dict.fromkeys(wanted)] if wanted else subnets,
        params.filters(),
        {
            "subnet-id": lambda s: s["subnetId"],
            "subnet-arn": lambda s: s["subnetArn"],
            "vpc-id": lambda s: s["vpcId"],
            "state": lambda s: s["state"],
            "availability-zone": lambda s: s["availabilityZone"],
            "availabilityZone": lambda s: s["availabilityZone"],
            "cidr-block": lambda s: s["cidrBlock"],
            "cidr": lambda s: s["cidrBlock"],
            "cidrBlock": lambda s: s["cidrBlock"],
            "default-for-az": lambda s: s["defaultForAz"],
            "defaultForAz": lambda s: s["defaultForAz"],
            "map-public-ip-on-launch": lambda s: s["mapPublicIpOnLaunch"],
            "available-ip-address-count": lambda s: str(s["availableIpAddressCount"]),
            "owner-id": lambda s: s["ownerId"],
        },
        tags=_no_tags,
    )
    page, token = paginate(params, chosen, key=lambda s: s["subnetId"])
    return {"subnetSet": page, "nextToken": token}

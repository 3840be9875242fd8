"""Elastic IPs over cloudctl.addresses: allocate from the zone's pool, associate with an
instance (DNAT/SNAT on the zone's CC, in the request), disassociate, release.

An address is named by its public IP or its allocation id (the record's eipalloc- id). They
are the default VPC's addresses (domain vpc, cloudctl.api.actions.vpc): an address has one
association at a time, whose id is derived from the allocation's (eipalloc-0a1b2c3d is
associated as eipassoc-0a1b2c3d), on the instance's one network interface.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cloudctl import ids
from cloudctl.addresses import ASSOCIABLE_STATES, Addresses
from cloudctl.api.actions import action
from cloudctl.api.actions.vpc import (
    address_association,
    allocation_of_association,
    association_id,
    interface_id,
)
from cloudctl.api.errors import ApiError, invalid_value, missing_parameter, not_found, short
from cloudctl.api.params import Params, filter_items
from cloudctl.api.request import ApiRequest
from cloudctl.api.shapes import account_numbers
from cloudctl.errors import CapacityError, NotFound
from cloudctl.instances import Instances
from cloudctl.quotas import QuotaExceeded

DOMAIN = "vpc"  # the default VPC's addresses (EC2-Classic's "standard" is accepted on input)


def _association(address: dict[str, Any]) -> str | None:
    """The id of an address's association (None when it is not associated)."""
    return association_id(address["id"]) if address.get("instance") else None


@action("AllocateAddress")
def allocate_address(request: ApiRequest) -> dict[str, Any]:
    request.params.string("Domain", choices=("vpc", "standard"))
    try:
        address = request.service(Addresses).allocate()
    except QuotaExceeded:
        raise
    except CapacityError as exc:  # the pool is used up
        raise ApiError("AddressLimitExceeded", str(exc)) from None
    return {
        "publicIp": address["public_ip"],
        "domain": DOMAIN,
        "allocationId": address["id"],
    }


@action("DescribeAddresses")
def describe_addresses(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    public_ips = [_public_ip(params, f"PublicIp.{n}", ip)
                  for n, ip in enumerate(params.list("PublicIp"), start=1)]  # fmt: skip
    allocation_ids = params.resource_ids("AllocationId", "address")
    addresses = request.service(Addresses).list()
    by_ip = {a["public_ip"]: a for a in addresses}
    by_id = {a["id"]: a for a in addresses}
    for ip in public_ips:
        if ip not in by_ip:
            raise _address_not_found(ip)
    for aid in allocation_ids:
        if aid not in by_id:
            raise not_found("address", aid)
    if public_ips or allocation_ids:
        wanted = {by_ip[ip]["id"] for ip in public_ips} | set(allocation_ids)
        addresses = [a for a in addresses if a["id"] in wanted]
    chosen = filter_items(addresses, params.filters(), ADDRESS_FILTERS)
    owners = account_numbers(request)
    return {"addressesSet": [_address(a, owners) for a in chosen]}


ADDRESS_FILTERS = {
    "allocation-id": lambda a: a["id"],
    "association-id": _association,
    "domain": lambda a: DOMAIN,
    "instance-id": lambda a: a.get("instance"),
    "network-interface-id": lambda a: interface_id(a["instance"]) if a.get("instance") else None,
    "public-ip": lambda a: a["public_ip"],
    "private-ip-address": lambda a: a.get("private_ip"),
}


@action("AssociateAddress")
def associate_address(request: ApiRequest) -> dict[str, Any]:
    """Associate with an instance; an address associated with another instance moves only with
    AllowReassociation (the default VPC's rule)."""
    params = request.params
    address = _named_address(request)
    interface = params.string("NetworkInterfaceId")
    if interface is not None:
        raise invalid_value("NetworkInterfaceId", interface, "Give InstanceId instead.")
    iid = params.resource_id("InstanceId", "instance", required=True)
    reassociate = params.boolean("AllowReassociation")
    instance = request.service(Instances).get(iid)
    private_ip = params.string("PrivateIpAddress")
    if private_ip is not None and private_ip != instance.get("private_ip"):
        raise invalid_value(
            "PrivateIpAddress", private_ip, f"Instance {iid} has {instance.get('private_ip')}."
        )
    if address.get("instance") == iid:
        return {"return": True, "associationId": _association(address)}
    if instance["state"] not in ASSOCIABLE_STATES:
        raise ApiError(
            "IncorrectInstanceState",
            f"The instance '{iid}' is {instance['state']}: an address needs a live instance",
        )
    addresses = request.service(Addresses)
    if address.get("instance"):
        if not reassociate:
            raise ApiError(
                "Resource.AlreadyAssociated",
                f"resource {address['id']} is already associated with associate-id "
                f"{_association(address)}",
            )
        addresses.disassociate(address["id"])
    associated = addresses.associate(address["id"], iid)
    return {"return": True, "associationId": _association(associated)}


@action("DisassociateAddress")
def disassociate_address(request: ApiRequest) -> dict[str, Any]:
    """Disassociate (by PublicIp or AssociationId); an address not associated is left as it
    is, as EC2 does (the action is idempotent)."""
    params = request.params
    association = params.string("AssociationId")
    if association is not None and params.string("PublicIp") is not None:
        raise _both("PublicIp", "AssociationId")
    if association is None:
        address = _named_address(request, by_allocation=False)
    else:
        allocation = allocation_of_association(association.strip())
        found = _lookup(request, allocation) if ids.kind_of(allocation) == "address" else None
        if found is None:
            raise ApiError(
                "InvalidAssociationID.NotFound",
                f"The association ID '{short(association)}' does not exist",
            )
        address = found
    if address.get("instance"):
        request.service(Addresses).disassociate(address["id"])
    return {"return": True}


@action("ReleaseAddress")
def release_address(request: ApiRequest) -> dict[str, Any]:
    """Release (by PublicIp or AllocationId); an associated address is disassociated first, as
    in EC2-Classic and the default VPC."""
    address = _named_address(request)
    request.service(Addresses).release(address["id"])
    return {"return": True}


def _named_address(request: ApiRequest, by_allocation: bool = True) -> dict[str, Any]:
    """The address a request names by PublicIp or (when allowed) AllocationId."""
    params = request.params
    allocation_id = params.resource_id("AllocationId", "address") if by_allocation else None
    text = params.string("PublicIp")
    if allocation_id is not None and text is not None:
        raise _both("PublicIp", "AllocationId")
    if allocation_id is None and text is None:
        raise missing_parameter("AllocationId" if by_allocation else "PublicIp")
    if allocation_id is not None:
        address = _lookup(request, allocation_id)
        if address is None:
            raise not_found("address", allocation_id)
        return address
    public_ip = _public_ip(params, "PublicIp", text or "")
    address = _lookup(request, public_ip)
    if address is None:
        raise _address_not_found(public_ip)
    return address


def _lookup(request: ApiRequest, ref: str) -> dict[str, Any] | None:
    """The address of an allocation id or public IP the principal sees, else None."""
    try:
        return request.service(Addresses).get(ref)
    except NotFound:
        return None


def _public_ip(params: Params, name: str, text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise invalid_value(params.full_name(name), text, "Expecting an IPv4 address.") from None


def _address_not_found(public_ip: str) -> ApiError:
    return ApiError("InvalidAddress.NotFound", f"Address '{public_ip}' not found.")


def _both(first: str, second: str) -> ApiError:
    return ApiError("InvalidParameterCombination", f"Give {first} or {second}, not both")


def _address(address: dict[str, Any], owners: dict[str, str]) -> dict[str, Any]:
    return {
        "publicIp": address["public_ip"],
        "allocationId": address["id"],
        "instanceId": address.get("instance") or None,
        **address_association(
            address,
            owner_id=owners.get(address["account"], ""),
            private_ip=address.get("private_ip"),
        ),
    }

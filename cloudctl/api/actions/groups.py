"""Security groups over cloudctl.groups: create, describe, delete, authorize and revoke
inbound rules (applied to the members' firewalls in the same request).

Rules come in EC2's two encodings: the old flat one (`IpProtocol`, `FromPort`, `ToPort`,
`CidrIp` or `SourceSecurityGroupName`) and `IpPermissions.N` (what boto3 sends), each
permission with `IpRanges.M.CidrIp` and `Groups.M.GroupId|GroupName`. Every range or source
group of a permission is one rule of cloudctl.groups (parse_rule); a request adds or removes
all of its rules or none. DescribeSecurityGroups folds the rules back into EC2's permissions,
one per protocol and port range.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from cloudctl.api.actions import action
from cloudctl.api.actions.vpc import EGRESS_ALL, check_vpc_id, default_vpc_id
from cloudctl.api.errors import ApiError, invalid_value, missing_parameter
from cloudctl.api.params import Params, filter_items, paginate
from cloudctl.api.request import ApiRequest
from cloudctl.api.shapes import account_numbers, select, tag_set, tags_on_create
from cloudctl.errors import NotFound
from cloudctl.groups import DEFAULT, GroupInUse, Groups, NoSuchRule, RuleExists, parse_rule
from cloudctl.tags import Tags

# EC2's protocol names and numbers -> cloudctl.groups' protocols; and back.
PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp",
             "-1": "all", "all": "all"}  # fmt: skip
EC2_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "all": "-1"}
FLAT = ("IpProtocol", "FromPort", "ToPort", "CidrIp", "SourceSecurityGroupName")


@contextlib.contextmanager
def _group_errors() -> Iterator[None]:
    """The service's refusals of a group request as EC2's codes."""
    try:
        yield
    except NotFound as exc:  # the group, or a source group, by id or name
        raise ApiError("InvalidGroup.NotFound", str(exc)) from None
    except RuleExists as exc:
        raise ApiError("InvalidPermission.Duplicate", str(exc)) from None
    except NoSuchRule as exc:
        raise ApiError("InvalidPermission.NotFound", str(exc)) from None
    except GroupInUse as exc:
        raise ApiError("InvalidGroup.InUse", str(exc)) from None


@action("CreateSecurityGroup")
def create_security_group(request: ApiRequest) -> dict[str, Any]:
    params = request.params
    name = params.string("GroupName", required=True, max_length=255)
    description = params.string("GroupDescription", required=True, max_length=255)
    check_vpc_id(request.config, params.string("VpcId"))  # the default VPC: the one network
    tags = tags_on_create(params, "security-group")
    service = request.service(Groups)
    if any(g["name"] == name and g["account"] == request.principal.account
           for g in service.list()):  # fmt: skip
        raise ApiError("InvalidGroup.Duplicate", f"The security group '{name}' already exists")
    group = service.create(name, description)
    if tags:
        Tags(request.store).create([group["id"]], tags)
        group = {**group, "tags": tags}
    return {"return": True, "groupId": group["id"], "tagSet": tag_set(group)}


@action("DescribeSecurityGroups")
def describe_security_groups(request: ApiRequest) -> dict[str, Any]:
    """Groups the principal sees; `GroupName.N` names groups of the principal's account."""
    params = request.params
    names = params.list("GroupName")
    wanted = params.resource_ids("GroupId", "group")
    groups = request.service(Groups).list()
    chosen = select(groups, wanted, "group") if wanted or not names else []
    for name in names:
        found = [
            g for g in groups if g["name"] == name and g["account"] == request.principal.account
        ]
        if not found:
            raise ApiError("InvalidGroup.NotFound", f"The security group '{name}' does not exist")
        chosen += [g for g in found if g not in chosen]
    owners = account_numbers(request)
    by_id = {g["id"]: g for g in groups}
    vpc_id = default_vpc_id(request.config)
    views = {g["id"]: _group(g, by_id, owners, vpc_id) for g in chosen}
    chosen = filter_items(chosen, params.filters(), _filters(views, owners), _tags)
    page, token = paginate(params, chosen, key=lambda g: g["id"], minimum=5, maximum=1000)
    return {"securityGroupInfo": [views[g["id"]] for g in page], "nextToken": token}


def _tags(group: dict[str, Any]) -> dict[str, str]:
    return group.get("tags") or {}


def _filters(views: dict[str, dict[str, Any]], owners: dict[str, str]) -> dict[str, Any]:
    def permissions(path: str):
        """A field of the group's permissions ("fromPort"), or of their items
        ("ipRanges.cidrIp"): every value any permission has."""
        field, _, sub = path.partition(".")

        def values(group: dict[str, Any]) -> list[str]:
            found = []
            for permission in views[group["id"]]["ipPermissions"]:
                items = permission[field] if sub else [permission[field]]
                found += [item[sub] if sub else item for item in items]
            return [str(value) for value in found if value is not None]

        return values

    return {
        "group-name": lambda g: g["name"],
        "group-id": lambda g: g["id"],
        "description": lambda g: g.get("description", ""),
        "owner-id": lambda g: owners.get(g["account"]),
        "vpc-id": lambda g: views[g["id"]]["vpcId"],
        "ip-permission.protocol": permissions("ipProtocol"),
        "ip-permission.from-port": permissions("fromPort"),
        "ip-permission.to-port": permissions("toPort"),
        "ip-permission.cidr": permissions("ipRanges.cidrIp"),
        "ip-permission.group-id": permissions("groups.groupId"),
        "ip-permission.group-name": permissions("groups.groupName"),
    }


@action("DeleteSecurityGroup")
def delete_security_group(request: ApiRequest) -> dict[str, Any]:
    ref = _group_ref(request.params)
    service = request.service(Groups)
    with _group_errors():
        group = service.show(ref)
        if group["name"] == DEFAULT:
            raise ApiError("CannotDelete", "The default security group cannot be deleted")
        service.delete(group["id"])
    return {"return": True, "groupId": group["id"]}


@action("AuthorizeSecurityGroupIngress")
def authorize_security_group_ingress(request: ApiRequest) -> dict[str, Any]:
    ref = _group_ref(request.params)
    rules = _rules(request)
    with _group_errors():
        request.service(Groups).authorize(ref, *rules)
    return {"return": True}


@action("RevokeSecurityGroupIngress")
def revoke_security_group_ingress(request: ApiRequest) -> dict[str, Any]:
    ref = _group_ref(request.params)
    rules = _rules(request)
    with _group_errors():
        request.service(Groups).revoke(ref, *rules)
    return {"return": True}


def _group_ref(params: Params) -> str:
    """The group a request names: GroupId, else GroupName (of the principal's account)."""
    group_id = params.resource_id("GroupId", "group")
    name = params.string("GroupName")
    if group_id is None and not name:
        raise missing_parameter("GroupId")
    return group_id or name


def _rules(request: ApiRequest) -> list[dict[str, Any]]:
    """The rules of an authorize/revoke request, in either encoding (not both)."""
    params = request.params
    permissions = params.members("IpPermissions")
    flat = any(name in params for name in FLAT)
    if flat and permissions:
        raise ApiError(
            "InvalidParameterCombination",
            "Give IpPermissions or the flat parameters (IpProtocol, CidrIp, ...), not both",
        )
    if flat:
        return [_flat_rule(params)]
    if not permissions:
        raise missing_parameter("IpPermissions.1.IpProtocol")
    own_number = account_numbers(request).get(request.principal.account)
    return [rule for p in permissions for rule in _permission_rules(p, own_number)]


def _flat_rule(params: Params) -> dict[str, Any]:
    """The old encoding: one rule. A source group alone (no protocol) lets the whole group in,
    as EC2-Classic's group grants did."""
    source = params.string("SourceSecurityGroupName")
    protocol = params.string("IpProtocol")
    cidr = params.string("CidrIp")
    if source is not None and cidr is not None:
        raise ApiError(
            "InvalidParameterCombination", "Give CidrIp or SourceSecurityGroupName, not both"
        )
    if protocol is None:
        if source is None:
            raise missing_parameter("IpProtocol")
        return parse_rule("all", source_group=source)
    if source is None and cidr is None:
        raise missing_parameter("CidrIp")
    return _rule(params, protocol, cidr=cidr, source_group=source)


def _permission_rules(permission: Params, own_number: str | None) -> list[dict[str, Any]]:
    """One rule per range and per source group of `IpPermissions.N`."""
    protocol = permission.string("IpProtocol", required=True)
    for unsupported in ("Ipv6Ranges", "PrefixListIds"):
        if permission.members(unsupported):
            raise ApiError(
                "InvalidParameterValue",
                f"{permission.full_name(unsupported)}: the cloud's rules take IPv4 ranges "
                "(IpRanges) and groups (Groups) only",
            )
    sources: list[dict[str, str | None]] = []
    for cidr_range in permission.members("IpRanges"):
        sources.append({"cidr": cidr_range.string("CidrIp", required=True)})
    for pair in permission.members("Groups"):
        user = pair.string("UserId")
        if user and user != own_number:
            raise invalid_value(
                pair.full_name("UserId"), user, "Source groups are of your own account."
            )
        ref = pair.resource_id("GroupId", "group") or pair.string("GroupName")
        if not ref:
            raise missing_parameter(pair.full_name("GroupId"))
        sources.append({"source_group": ref})
    if not sources:
        raise missing_parameter(permission.full_name("IpRanges.1.CidrIp"))
    return [_rule(permission, protocol, **source) for source in sources]


def _rule(
    params: Params, protocol_text: str, cidr: str | None = None, source_group: str | None = None
) -> dict[str, Any]:
    """One rule of cloudctl.groups from EC2's protocol and ports (icmp: FromPort is the type,
    ToPort the code; -1 any). Ports of protocol -1 are ignored, as EC2 does."""
    protocol = PROTOCOLS.get(protocol_text.lower())
    if protocol is None:
        raise invalid_value(
            params.full_name("IpProtocol"), protocol_text, "Expecting tcp, udp, icmp or -1."
        )
    source = {"cidr": cidr, "source_group": source_group}
    if protocol in ("tcp", "udp"):
        low = params.integer("FromPort", required=True, minimum=0, maximum=65535)
        high = params.integer("ToPort", required=True, minimum=0, maximum=65535)
        return parse_rule(protocol, port_range=f"{low}-{high}", **source)
    if protocol == "icmp":
        icmp_type = params.integer("FromPort", default=-1, minimum=-1, maximum=255)
        code = params.integer("ToPort", default=-1, minimum=-1, maximum=255)
        if code != -1:
            raise invalid_value(params.full_name("ToPort"), str(code), "ICMP codes: -1 (any).")
        return parse_rule("icmp", icmp_type=icmp_type, **source)
    return parse_rule("all", **source)


def _group(
    group: dict[str, Any], by_id: dict[str, dict[str, Any]], owners: dict[str, str], vpc_id: str
) -> dict[str, Any]:
    return {
        "ownerId": owners.get(group["account"]),
        "groupId": group["id"],
        "groupName": group["name"],
        "groupDescription": group.get("description", ""),
        "vpcId": vpc_id,
        "ipPermissions": _permissions(group["rules"], by_id, owners),
        "ipPermissionsEgress": EGRESS_ALL,
        "tagSet": tag_set(group),
    }


def _permissions(
    rules: list[dict[str, Any]], by_id: dict[str, dict[str, Any]], owners: dict[str, str]
) -> list[dict[str, Any]]:
    """Rules folded into EC2's permissions: one per protocol and ports, with its ranges and
    source groups."""
    permissions: dict[tuple, dict[str, Any]] = {}
    for rule in rules:
        protocol = rule["protocol"]
        ports = {
            "tcp": (rule.get("from_port"), rule.get("to_port")),
            "udp": (rule.get("from_port"), rule.get("to_port")),
            "icmp": (rule.get("icmp_type"), rule.get("icmp_code")),
        }.get(protocol, (None, None))
        permission = permissions.setdefault(
            (protocol, *ports),
            {"ipProtocol": EC2_PROTOCOLS[protocol], "fromPort": ports[0], "toPort": ports[1],
             "groups": [], "ipRanges": []},
        )  # fmt: skip
        if "cidr" in rule:
            permission["ipRanges"].append({"cidrIp": rule["cidr"]})
        else:
            source = by_id.get(rule["source_group"], {})
            permission["groups"].append(
                {"userId": owners.get(source.get("account", "")),
                 "groupId": rule["source_group"], "groupName": source.get("name")}
            )  # fmt: skip
    return list(permissions.values())

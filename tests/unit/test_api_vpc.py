"""The default VPC facade: DescribeVpcs and DescribeSubnets through the WSGI app (signed and
parsed by botocore), and the VPC fields and parameters the other families take from it."""

from __future__ import annotations

import io
from urllib.parse import urlencode, urlsplit

import pytest
import yaml
from botocore import parsers
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import get_session

from cloudctl.api import render
from cloudctl.api.actions import vpc
from cloudctl.api.app import Api
from cloudctl.api.errors import ApiError
from cloudctl.api.params import Params
from cloudctl.cloudconfig import parse_config
from cloudctl.identity import ADMIN, Identity, Principal
from cloudctl.instances import ip_pool
from cloudctl.state import StateStore
from tests.unit.helpers import init_state
from tests.unit.test_api_app import CLOUD, EC2, ENDPOINT, REGION, call

ZONE_A_SUBNET = "172.31.0.0/24"  # CLOUD's zones: zone-a 172.31.0.0/24, zone-b 172.31.1.0/24


@pytest.fixture
def cloud(settings, tmp_path, monkeypatch):
    """The app of a two-zone cloud, keys of an admin and of a user of account dev, and the
    cloud's configuration."""
    path = tmp_path / "cloud.yml"
    path.write_text(yaml.safe_dump(CLOUD))
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(path))
    store = StateStore(init_state(settings.state_path))
    identity = Identity(store)
    identity.create_account("dev")
    identity.create_user(Principal("dev", "alice"))
    keys = {
        "admin": identity.create_key(ADMIN),
        "alice": identity.create_key(Principal("dev", "alice")),
    }
    numbers = {a["name"]: a["number"] for a in identity.list_accounts()}
    return Api(settings), keys, parse_config(CLOUD, path), store, numbers


def filters(**named):
    params = {}
    for n, (name, values) in enumerate(named.items(), 1):
        params[f"Filter.{n}.Name"] = name
        for m, value in enumerate(values, 1):
            params[f"Filter.{n}.Value.{m}"] = value
    return params


def test_one_default_vpc_per_cloud_seen_by_every_account_as_its_own(cloud):
    app, keys, config, _, numbers = cloud
    status, out = call(app, keys["alice"], {"Action": "DescribeVpcs"})
    assert status == 200
    [found] = out["Vpcs"]
    assert (
        found
        == {
            "VpcId": vpc.default_vpc_id(config),
            "OwnerId": numbers["dev"],
            "State": "available",
            "CidrBlock": "172.31.0.0/23",  # the smallest block holding both zones' subnets
            "DhcpOptionsId": "default",
            "InstanceTenancy": "default",
            "IsDefault": True,
            "CidrBlockAssociationSet": [
                {
                    "AssociationId": "vpc-cidr-assoc-" + found["VpcId"][4:],
                    "CidrBlock": "172.31.0.0/23",
                    "CidrBlockState": {"State": "associated"},
                }
            ],
            "Ipv6CidrBlockAssociationSet": [],
            "Tags": [],
        }
    )
    _, admin = call(app, keys["admin"], {"Action": "DescribeVpcs"})
    assert [(v["VpcId"], v["OwnerId"]) for v in admin["Vpcs"]] == [
        (found["VpcId"], numbers["admin"])
    ]


def test_describe_vpcs_filters_and_ids(cloud):
    app, keys, config, _, _ = cloud
    vpc_id = vpc.default_vpc_id(config)
    for query, expected in [
        (filters(isDefault=["true"]), [vpc_id]),  # what amazon.aws's ec2_instance sends
        (filters(**{"is-default": ["false"]}), []),
        (filters(**{"vpc-id": ["vpc-*"], "state": ["available"]}), [vpc_id]),
        (filters(**{"tag:Name": ["*"]}), []),
        ({"VpcId.1": vpc_id}, [vpc_id]),
    ]:
        status, out = call(app, keys["alice"], {"Action": "DescribeVpcs", **query})
        assert (status, [v["VpcId"] for v in out["Vpcs"]]) == (200, expected), query
    status, out = call(app, keys["alice"], {"Action": "DescribeVpcs", "VpcId.1": "vpc-00000000"})
    assert status == 400 and out["Error"]["Code"] == "InvalidVpcID.NotFound"
    status, out = call(app, keys["alice"], {"Action": "DescribeVpcs", **filters(cidrr=["x"])})
    assert status == 400 and out["Error"]["Code"] == "InvalidParameterValue"


def test_a_default_subnet_per_zone_on_the_zone_network(cloud):
    app, keys, config, store, numbers = cloud
    with store.transaction() as tx:  # two instances' addresses taken in zone-a
        for owner in ("i-0000000a", "i-0000000b"):
            tx.allocate(ip_pool("zone-a"), ["172.31.0.10", "172.31.0.11"], owner)
    status, out = call(app, keys["alice"], {"Action": "DescribeSubnets"})
    assert status == 200
    subnets = {s["AvailabilityZone"]: s for s in out["Subnets"]}
    assert sorted(subnets) == ["zone-a", "zone-b"]
    a = subnets["zone-a"]
    assert a == {
        "SubnetId": vpc.subnet_id(config, "zone-a"),
        "SubnetArn": f"arn:aws:ec2:test-region:{numbers['dev']}:subnet/{a['SubnetId']}",
        "State": "available",
        "VpcId": vpc.default_vpc_id(config),
        "CidrBlock": ZONE_A_SUBNET,
        "AvailableIpAddressCount": 254 - 1 - 2,  # hosts, less the gateway and two instances
        "AvailabilityZone": "zone-a",
        "DefaultForAz": True,
        "MapPublicIpOnLaunch": False,
        "AssignIpv6AddressOnCreation": False,
        "Ipv6CidrBlockAssociationSet": [],
        "Ipv6Native": False,
        "OwnerId": numbers["dev"],
        "Tags": [],
    }
    assert subnets["zone-b"]["CidrBlock"] == "172.31.1.0/24"
    assert subnets["zone-b"]["AvailableIpAddressCount"] == 253
    assert subnets["zone-b"]["SubnetId"] != a["SubnetId"]


def test_describe_subnets_as_ec2_instance_looks_for_the_default_one(cloud):
    app, keys, config, _, _ = cloud
    vpc_id, a, b = (
        vpc.default_vpc_id(config),
        vpc.subnet_id(config, "zone-a"),
        vpc.subnet_id(config, "zone-b"),
    )
    for query, expected in [
        (
            filters(**{"vpc-id": [vpc_id], "state": ["available"], "default-for-az": ["true"]}),
            [a, b],
        ),
        (filters(**{"availability-zone": ["zone-b"]}), [b]),
        (filters(**{"cidr-block": ["172.31.0.*"]}), [a]),
        (filters(defaultForAz=["false"]), []),
        ({"SubnetId.1": b}, [b]),
        ({"SubnetId.1": b, "SubnetId.2": a, "SubnetId.3": b}, [a, b]),
    ]:
        status, out = call(app, keys["alice"], {"Action": "DescribeSubnets", **query})
        assert status == 200, out
        assert sorted(s["SubnetId"] for s in out["Subnets"]) == sorted(expected), query
    status, out = call(app, keys["alice"], {"Action": "DescribeSubnets", "SubnetId.1": "subnet-1"})
    assert status == 400 and out["Error"]["Code"] == "InvalidSubnetID.NotFound"


def test_ids_are_stable_and_per_cloud(cloud, tmp_path):
    _, _, config, _, _ = cloud
    same = parse_config(CLOUD, tmp_path / "again.yml")
    other = parse_config({**CLOUD, "cloud_id": "cloud-fedcba9876543210"}, tmp_path / "other.yml")
    assert vpc.default_vpc_id(same) == vpc.default_vpc_id(config)
    assert vpc.subnet_id(same, "zone-a") == vpc.subnet_id(config, "zone-a")
    assert vpc.default_vpc_id(other) != vpc.default_vpc_id(config)
    assert vpc.subnet_id(other, "zone-a") != vpc.subnet_id(config, "zone-a")
    for text in [vpc.default_vpc_id(config), vpc.subnet_id(config, "zone-b")]:
        prefix, _, hex8 = text.partition("-")
        assert prefix in ("vpc", "subnet") and len(hex8) == 8 and int(hex8, 16) >= 0
    assert vpc.zone_of_subnet(config, vpc.subnet_id(config, "zone-b")) == "zone-b"
    with pytest.raises(ApiError) as err:
        vpc.zone_of_subnet(config, vpc.subnet_id(other, "zone-b"))
    assert err.value.code == "InvalidSubnetID.NotFound"
    vpc.check_vpc_id(config, None)
    vpc.check_vpc_id(config, vpc.default_vpc_id(config))
    with pytest.raises(ApiError) as err:
        vpc.check_vpc_id(config, vpc.default_vpc_id(other))
    assert err.value.code == "InvalidVpcID.NotFound"


def test_launch_network_reads_what_ec2_instance_sends(cloud):
    _, _, config, _, _ = cloud
    b = vpc.subnet_id(config, "zone-b")
    # ec2_instance's NetworkInterfaces=[{DeviceIndex, SubnetId, DeleteOnTermination, Groups}]
    sent = Params({
        "NetworkInterface.1.DeviceIndex": "0", "NetworkInterface.1.SubnetId": b,
        "NetworkInterface.1.DeleteOnTermination": "true",
        "NetworkInterface.1.SecurityGroupId.1": "sg-0000000A",
    })  # fmt: skip
    assert vpc.launch_network(config, sent) == ("zone-b", ["sg-0000000a"])
    assert vpc.launch_network(config, Params({"SubnetId": b})) == ("zone-b", [])
    assert vpc.launch_network(config, Params({})) == (None, [])
    one = "NetworkInterface.1."
    for refused, code in [
        ({one + "SubnetId": b, "NetworkInterface.2.SubnetId": b}, "InvalidParameterValue"),
        ({one + "DeviceIndex": "1"}, "InvalidParameterValue"),
        ({one + "NetworkInterfaceId": "eni-00000001"}, "InvalidParameterValue"),
        ({one + "PrivateIpAddress": "172.31.1.9"}, "InvalidParameterValue"),
        ({one + "AssociatePublicIpAddress": "true"}, "InvalidParameterValue"),
        ({one + "DeleteOnTermination": "false"}, "InvalidParameterValue"),
        ({one + "SubnetId": b, "SubnetId": b}, "InvalidParameterCombination"),
        ({one + "SubnetId": "subnet-00000000"}, "InvalidSubnetID.NotFound"),
        ({one + "SecurityGroupId.1": "default"}, "InvalidGroupId.Malformed"),
    ]:
        with pytest.raises(ApiError) as err:
            vpc.launch_network(config, Params(refused))
        assert err.value.code == code, refused


def test_association_and_interface_ids():
    assert vpc.interface_id("i-0a1b2c3d") == "eni-0a1b2c3d"
    assert vpc.association_id("eipalloc-0a1b2c3d") == "eipassoc-0a1b2c3d"
    assert vpc.allocation_of_association("eipassoc-0a1b2c3d") == "eipalloc-0a1b2c3d"
    for bad in ("eipalloc-0a1b2c3d", "eipassoc-", "x"):
        with pytest.raises(ApiError) as err:
            vpc.allocation_of_association(bad)
        assert err.value.code == "InvalidAssociationID.NotFound"


def parsed(action, body):
    """A response body as botocore's EC2 parser reads it (the names must be EC2's)."""
    return parsers.create_parser("ec2").parse(
        {"body": render.response(action, "r-1", body), "headers": {}, "status_code": 200},
        EC2.operation_model(action).output_shape,
    )


def test_the_fields_other_families_take_are_ec2_shapes(cloud):
    _, _, config, _, _ = cloud
    record = {"id": "i-0a1b2c3d", "zone": "zone-a", "private_ip": "172.31.0.10",
              "mac": "d0:0d:0a:1b:2c:3d", "created": "2026-12-05T04:00:00Z"}  # fmt: skip
    groups = [{"groupId": "sg-0000000a", "groupName": "web"}]
    item = {"instanceId": record["id"]} | vpc.instance_network(
        config, record, owner_id="123456789012", group_set=groups, public_ip="198.51.100.17"
    )
    out = parsed("DescribeInstances", {"reservationSet": [{"instancesSet": [item]}]})
    instance = out["Reservations"][0]["Instances"][0]
    subnet = vpc.subnet_id(config, "zone-a")
    assert (instance["VpcId"], instance["SubnetId"]) == (vpc.default_vpc_id(config), subnet)
    [eni] = instance["NetworkInterfaces"]
    assert eni["NetworkInterfaceId"] == "eni-0a1b2c3d" and eni["SubnetId"] == subnet
    assert eni["Groups"] == [{"GroupId": "sg-0000000a", "GroupName": "web"}]
    assert eni["Attachment"]["DeviceIndex"] == 0 and eni["Attachment"]["DeleteOnTermination"]
    assert eni["Association"] == {"PublicIp": "198.51.100.17", "IpOwnerId": "123456789012"}
    assert eni["PrivateIpAddresses"][0]["PrivateIpAddress"] == "172.31.0.10"

    address = {"id": "eipalloc-0000000f", "instance": "i-0a1b2c3d"}
    item = {"publicIp": "198.51.100.17", "allocationId": address["id"]} | vpc.address_association(
        address, owner_id="123456789012", private_ip="172.31.0.10"
    )
    [found] = parsed("DescribeAddresses", {"addressesSet": [item]})["Addresses"]
    assert found == {
        "PublicIp": "198.51.100.17", "AllocationId": "eipalloc-0000000f", "Domain": "vpc",
        "AssociationId": "eipassoc-0000000f", "NetworkInterfaceId": "eni-0a1b2c3d",
        "NetworkInterfaceOwnerId": "123456789012", "PrivateIpAddress": "172.31.0.10",
    }  # fmt: skip
    free = vpc.address_association({"id": "eipalloc-0000000f", "instance": None},
                                   owner_id="123456789012", private_ip=None)  # fmt: skip
    assert free == {"domain": "vpc"}

    group = {"groupId": "sg-0000000a", "vpcId": vpc.default_vpc_id(config),
             "ipPermissionsEgress": vpc.EGRESS_ALL}  # fmt: skip
    [found] = parsed("DescribeSecurityGroups", {"securityGroupInfo": [group]})["SecurityGroups"]
    assert found["IpPermissionsEgress"] == [{
        "IpProtocol": "-1", "UserIdGroupPairs": [], "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        "Ipv6Ranges": [], "PrefixListIds": [],
    }]  # fmt: skip


def instance(iid, account, user, state, **extra):
    return {"id": iid, "account": account, "user": user, "reservation": "r-0000000a",
            "image_id": "emi-0000000a", "type": "m1.small", "vcpus": 1, "zone": "zone-a",
            "node": "nc1", "private_ip": "172.31.0.10", "mac": "d0:0d:00:00:00:0a",
            "groups": [], "state": state, "created": "2026-12-05T04:00:00Z", **extra}  # fmt: skip


def test_describe_instance_status_and_attribute_as_ec2_instance_asks(cloud):
    app, keys, _, store, _ = cloud
    with store.transaction() as tx:
        tx.table("groups").insert({"id": "sg-0000000a", "name": "web", "account": "dev",
                                   "user": "alice", "description": "", "rules": []})  # fmt: skip
        for record in (
            instance("i-0000000a", "dev", "alice", "running", groups=["sg-0000000a"]),
            instance("i-0000000b", "dev", "alice", "pending"),
            instance("i-0000000c", "admin", "admin", "running"),
        ):
            tx.table("instances").insert(record)

    def statuses(**params):
        status, out = call(app, keys["alice"], {"Action": "DescribeInstanceStatus", **params})
        assert status == 200, out
        return {s["InstanceId"]: s for s in out["InstanceStatuses"]}

    running = statuses()  # running instances only, the caller's only
    assert list(running) == ["i-0000000a"]
    assert running["i-0000000a"] == {
        "InstanceId": "i-0000000a",
        "AvailabilityZone": "zone-a",
        "InstanceState": {"Code": 16, "Name": "running"},
        "SystemStatus": {"Status": "ok", "Details": [{"Name": "reachability", "Status": "passed"}]},
        "InstanceStatus": {
            "Status": "ok",
            "Details": [{"Name": "reachability", "Status": "passed"}],
        },
        "Events": [],
    }
    every = statuses(IncludeAllInstances="true")  # what ec2_instance asks after RunInstances
    assert sorted(every) == ["i-0000000a", "i-0000000b"]
    assert every["i-0000000b"]["InstanceState"] == {"Code": 0, "Name": "pending"}
    assert every["i-0000000b"]["InstanceStatus"]["Status"] == "not-applicable"
    assert list(statuses(IncludeAllInstances="true", **{"InstanceId.1": "i-0000000b"})) == [
        "i-0000000b"
    ]
    assert list(statuses(IncludeAllInstances="true", **filters(**{
        "instance-state-name": ["pending"]}))) == ["i-0000000b"]  # fmt: skip
    status, out = call(app, keys["alice"], {"Action": "DescribeInstanceStatus",
                                            "InstanceId.1": "i-0000000c"})  # fmt: skip
    assert status == 400 and out["Error"]["Code"] == "InvalidInstanceID.NotFound"

    def attribute(name, iid="i-0000000a"):
        params = {"Action": "DescribeInstanceAttribute", "InstanceId": iid, "Attribute": name}
        return call(app, keys["alice"], params)

    status, out = attribute("instanceType")
    assert (status, out["InstanceId"], out["InstanceType"]) == (
        200,
        "i-0000000a",
        {"Value": "m1.small"},
    )
    _, out = attribute("groupSet")
    assert out["Groups"] == [{"GroupId": "sg-0000000a", "GroupName": "web"}]
    _, out = attribute("disableApiTermination")
    assert out["DisableApiTermination"] == {"Value": False}
    _, out = attribute("sourceDestCheck")
    assert out["SourceDestCheck"] == {"Value": True}
    for refused, code in [
        (attribute("userData"), "InvalidParameterValue"),  # not kept by the cloud
        (attribute("instanceType", "i-0000000c"), "InvalidInstanceID.NotFound"),
        (attribute("instanceType", "instance-1"), "InvalidInstanceID.Malformed"),
    ]:
        assert (refused[0], refused[1]["Error"]["Code"]) == (400, code)


def test_the_vpc_block_holds_every_zone_subnet(tmp_path):
    one = {**CLOUD, "clusters": {"zone-a": CLOUD["clusters"]["zone-a"]}}
    assert vpc.vpc_cidr(parse_config(one, tmp_path / "one.yml")) == ZONE_A_SUBNET
    apart = {**CLOUD, "clusters": {"zone-a": CLOUD["clusters"]["zone-a"],
                                   "zone-c": {**CLOUD["clusters"]["zone-b"],
                                              "subnet": "172.31.9.0/24"}}}  # fmt: skip
    assert vpc.vpc_cidr(parse_config(apart, tmp_path / "apart.yml")) == "172.31.0.0/20"


def sts_call(app, key, service):
    """GetCallerIdentity as botocore's STS client sends it, signed for `service`; the answer
    parsed with STS's model: (status, parsed)."""
    body = urlencode({"Action": "GetCallerIdentity", "Version": "2011-06-15"}).encode()
    request = AWSRequest("POST", ENDPOINT, data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    SigV4Auth(
        Credentials(key["access_key_id"], key["secret_access_key"]), service, REGION
    ).add_auth(request)
    url = urlsplit(ENDPOINT)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "QUERY_STRING": "",
               "wsgi.url_scheme": "https", "HTTP_HOST": url.netloc,
               "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}  # fmt: skip
    for name, value in request.headers.items():
        key_name = name.upper().replace("-", "_")
        environ[key_name if key_name == "CONTENT_TYPE" else f"HTTP_{key_name}"] = value
    answer = {}
    payload = b"".join(app(environ, lambda status, headers: answer.update(status=status)))
    status = int(answer["status"].split()[0])
    operation = get_session().get_service_model("sts").operation_model("GetCallerIdentity")
    parsed = parsers.create_parser("query").parse(
        {"body": payload, "headers": {}, "status_code": status},
        operation.output_shape if status == 200 else None,
    )
    return status, parsed


def test_get_caller_identity_for_sts_clients(cloud):
    """ec2_security_group asks STS who it is (at the EC2 endpoint) before comparing owners."""
    app, keys, _, _, numbers = cloud
    status, out = sts_call(app, keys["alice"], "sts")
    assert status == 200, out
    assert (out["Account"], out["Arn"], out["UserId"]) == (
        numbers["dev"],
        f"arn:aws:iam::{numbers['dev']}:user/alice",
        "dev/alice",
    )
    status, out = sts_call(app, keys["admin"], "sts")
    assert (status, out["Account"]) == (200, numbers["admin"])
    # Each action is signed for its own service: STS's for sts, EC2's for ec2.
    status, out = sts_call(app, keys["alice"], "ec2")
    assert (status, out["Error"]["Code"]) == (401, "AuthFailure")
    assert "scoped to correct service: 'sts'" in out["Error"]["Message"]

"""Volumes, snapshots, security groups, elastic IPs and tags through the EC2 API, end to end on
the shared cloud-in-a-box: boto3 as a non-admin user against the real `cloudctl api serve`
(tests/integration/api_fixtures.py), with real plays on the SC (volume create/delete, the
snapshot's upload to Walrus). No instance is booted here: attachments to a running guest are
in tests/integration/test_api_lifecycle.py. Bad input is refused with EC2's codes and changes
nothing (the state file's digest).
"""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from tests.conftest import poll

pytestmark = pytest.mark.integration

ZONE = "zone-a"
DEADLINE = 120  # a volume's play on the SC, a 1 GiB snapshot's upload


def digest(api) -> str:
    return hashlib.sha256(api.state.read_bytes()).hexdigest()


def refused(api, call, **kwargs) -> str:
    """The EC2 error code of a request that must fail, and changes nothing."""
    before = digest(api)
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    assert digest(api) == before, f"{call.__name__} {kwargs} changed the state"
    return caught.value.response["Error"]["Code"]


def test_storage_and_network_through_boto3(ops_api):
    api = ops_api
    ec2 = api.ec2("dev")

    # --- a volume, tagged at creation, and a snapshot of it ---
    volume = ec2.create_volume(Size=1, AvailabilityZone=ZONE, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "stn-data"}]}])  # fmt: skip
    vid = volume["VolumeId"]
    assert (volume["State"], volume["Size"]) == ("creating", 1)

    def volume_state():
        return ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"]

    poll(lambda: volume_state() == "available", "volume available", DEADLINE, 0.5)
    [found] = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": ["stn-*"]}])["Volumes"]
    assert found["VolumeId"] == vid and found["Attachments"] == []

    snapshot = ec2.create_snapshot(VolumeId=vid, Description="stn snapshot")
    sid = snapshot["SnapshotId"]
    assert (snapshot["State"], snapshot["VolumeId"]) == ("pending", vid)

    def snapshot_of():
        return ec2.describe_snapshots(OwnerIds=["self"], SnapshotIds=[sid])["Snapshots"][0]

    done = poll(lambda: snapshot_of()["State"] != "pending" and snapshot_of(), "snapshot done",
                DEADLINE, 0.5)  # fmt: skip
    assert (done["State"], done["Progress"], done["Description"]) == (
        "completed", "100%", "stn snapshot")  # fmt: skip
    ec2.delete_snapshot(SnapshotId=sid)
    assert refused(api, ec2.describe_snapshots, SnapshotIds=[sid]) == "InvalidSnapshot.NotFound"

    # --- tags on the volume ---
    ec2.create_tags(Resources=[vid], Tags=[{"Key": "team", "Value": "storage"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vid]}])["Tags"]
    assert [(t["Key"], t["Value"], t["ResourceType"]) for t in tags] == [
        ("Name", "stn-data", "volume"), ("team", "storage", "volume")]  # fmt: skip
    ec2.delete_tags(Resources=[vid], Tags=[{"Key": "team"}])
    assert [t["Key"] for t in ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Tags"]] == [
        "Name"]  # fmt: skip

    # --- bad input: EC2's codes, nothing changed ---
    assert refused(api, ec2.describe_volumes, VolumeIds=["vol-0badc0de"]) == (
        "InvalidVolume.NotFound")  # fmt: skip
    assert refused(api, ec2.delete_volume, VolumeId="vol-12") == "InvalidVolumeID.Malformed"
    assert refused(api, ec2.create_volume, Size=0, AvailabilityZone=ZONE) == (
        "InvalidParameterValue")  # fmt: skip

    ec2.delete_volume(VolumeId=vid)

    def volume_gone() -> bool:
        try:
            return volume_state() == "deleted"
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "InvalidVolume.NotFound"

    poll(volume_gone, "volume deleted", DEADLINE, 0.5)

    # --- a security group: authorize (boto3's IpPermissions), describe, revoke, delete ---
    gid = ec2.create_security_group(GroupName="stn-web", Description="stn web")["GroupId"]
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
           "IpRanges": [{"CidrIp": "198.51.100.0/24"}]}  # fmt: skip
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[ssh])
    [group] = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
    assert group["GroupName"] == "stn-web"
    assert [(p["IpProtocol"], p["FromPort"], p["IpRanges"]) for p in group["IpPermissions"]] == [
        ("tcp", 22, [{"CidrIp": "198.51.100.0/24"}])]  # fmt: skip
    assert refused(api, ec2.authorize_security_group_ingress, GroupId=gid,
                   IpPermissions=[ssh]) == "InvalidPermission.Duplicate"  # fmt: skip
    assert refused(api, ec2.authorize_security_group_ingress, GroupId=gid, IpPermissions=[
        {**ssh, "IpRanges": [{"CidrIp": "198.51.100.0/33"}]}]) == "InvalidParameterValue"  # fmt: skip
    assert refused(api, ec2.create_security_group, GroupName="stn-web",
                   Description="again") == "InvalidGroup.Duplicate"  # fmt: skip
    ec2.create_tags(Resources=[gid], Tags=[{"Key": "tier", "Value": "web"}])
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "tag:tier", "Values": ["web"]}])[
            "SecurityGroups"
        ][0]["GroupId"]
        == gid
    )
    ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[ssh])
    assert ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"] == []
    ec2.delete_security_group(GroupId=gid)
    assert refused(api, ec2.describe_security_groups, GroupIds=[gid]) == "InvalidGroup.NotFound"

    # --- an elastic IP ---
    address = ec2.allocate_address(Domain="vpc")
    [described] = ec2.describe_addresses(AllocationIds=[address["AllocationId"]])["Addresses"]
    assert described["PublicIp"] == address["PublicIp"] and "InstanceId" not in described
    ec2.release_address(AllocationId=address["AllocationId"])
    assert refused(api, ec2.describe_addresses, AllocationIds=[address["AllocationId"]]) == (
        "InvalidAllocationID.NotFound")  # fmt: skip
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vid, gid]}])["Tags"] == []

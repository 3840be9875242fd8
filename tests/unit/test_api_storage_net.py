"""The EC2 actions of volumes, snapshots, security groups, addresses and tags, in-process:
botocore signs the requests and parses the answers (tests/unit/test_api_app.py's `call`).

Short actions run for real on the state. The plays of the long ones (volumes) and of address
association are synthetic here: each succeeds as the real play would, after a gate the test
may hold, so that the first state (`creating`, `attaching`, ...) is seen before the worker
moves on. Real plays: tests/integration/test_api_storage_net.py.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import yaml

from cloudctl import volumes as volume_service
from cloudctl.addresses import Addresses
from cloudctl.api.app import Api
from cloudctl.identity import ADMIN, Identity, Principal
from cloudctl.state import StateStore
from cloudctl.volumes import (
    ATTACH_PLAYBOOK,
    CREATE_PLAYBOOK,
    DETACH_PLAYBOOK,
    SNAPSHOT_PLAYBOOK,
    TASK_ATTACH,
    TASK_DETACH,
    TASK_EXPORT,
    TASK_UPLOAD,
    Volumes,
)
from tests.conftest import poll
from tests.unit.helpers import host_event, init_state, play_result, task_start
from tests.unit.test_api_app import CLOUD, call

ALICE_INSTANCE, ALICE_OTHER, ADMIN_INSTANCE = "i-0000000a", "i-0000000b", "i-000000ad"
POOL = "198.51.100.16/30"  # two addresses: .17 and .18


class Plays:
    """The volumes' plays, synthetic: each waits at the gate (open unless a test closes it),
    then succeeds as the real play does (the SC's export, the NC's hot-plug, the upload)."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.gate = threading.Event()
        self.gate.set()
        self.count = 0

    def __call__(self, playbook, extravars, host, operation, progress, check=False):
        assert self.gate.wait(30), "the test never opened the gate"
        volume = extravars["cloud_volume"]
        done = {
            CREATE_PLAYBOOK: (TASK_EXPORT, host, {"iqn": f"iqn.test:{volume['name']}",
                                                  "portal": {"address": "127.0.0.1", "port": 3260}}),
            ATTACH_PLAYBOOK: (TASK_ATTACH, volume.get("node"),
                              {"changed": True, "device": volume.get("device")}),
            DETACH_PLAYBOOK: (TASK_DETACH, volume.get("node"), {"changed": True}),
            SNAPSHOT_PLAYBOOK: (TASK_UPLOAD, host, {"parts": [], "size_bytes": 1 << 30,
                                                    "compressed_bytes": 1000, "sha256": "0" * 64}),
        }.get(playbook)  # fmt: skip
        events = []
        if done:
            task, on, res = done
            events = [task_start(task), host_event("runner_on_ok", on, task, res)]
        self.count += 1
        run_dir = self.tmp_path / f"20260101T000000Z-{operation}-{self.count:08x}"
        run_dir.mkdir()
        return play_result(run_dir, events)


@pytest.fixture
def api(settings, tmp_path, monkeypatch):
    """A cloud whose zone has an SC and an elastic IP pool; accounts dev (alice) and other
    (bob); instances of alice and of the admin; synthetic plays. Yields a namespace: app,
    keys, state (path), store, plays, addresses (the views handed to the CC's play)."""
    config = tmp_path / "cloud.yml"
    zone = {**CLOUD["clusters"]["zone-a"], "sc": ["sc1"], "public_ips": POOL,
            "public_interface": "pub0"}  # fmt: skip
    config.write_text(yaml.safe_dump({**CLOUD, "clusters": {"zone-a": zone}}))
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(config))
    store = StateStore(init_state(settings.state_path))
    with store.transaction() as tx:
        for iid, account, ip in ((ALICE_INSTANCE, "dev", "172.31.0.10"),
                                 (ALICE_OTHER, "dev", "172.31.0.11"),
                                 (ADMIN_INSTANCE, "admin", "172.31.0.12")):  # fmt: skip
            tx.table("instances").insert({
                "id": iid, "account": account, "user": "alice" if account == "dev" else "admin",
                "node": "nc1", "zone": "zone-a", "type": "m1.small", "state": "running",
                "private_ip": ip, "mac": "d0:0d:00:00:00:01", "groups": [],
            })  # fmt: skip
    identity = Identity(store)
    keys = {"admin": identity.create_key(ADMIN)}
    for account, user in (("dev", "alice"), ("other", "bob")):
        identity.create_account(account)
        identity.create_user(Principal(account, user))
        keys[user] = identity.create_key(Principal(account, user))
    plays = Plays(tmp_path)
    monkeypatch.setattr(Volumes, "_play", plays)
    fake_walrus = SimpleNamespace(
        client=lambda config: None, start_multipart=lambda *a: "upload-1",
        presigned_part_urls=lambda *a: [], complete_multipart=lambda *a: None,
        abort_multipart=lambda *a: None, delete_object=lambda *a: None,
        presigned_get=lambda *a: "http://walrus.invalid/snap", SNAPSHOTS="snapshots",
    )  # fmt: skip
    monkeypatch.setattr(volume_service, "walrus", fake_walrus)
    applied = []
    monkeypatch.setattr(Addresses, "_apply", lambda self, views, progress: applied.extend(views))
    yield SimpleNamespace(app=Api(settings), keys=keys, state=settings.state_path, store=store,
                          plays=plays, addresses=applied)  # fmt: skip
    plays.gate.set()
    for thread in threading.enumerate():
        if thread.name.startswith("op-"):
            thread.join(30)


def ok(api, user, params):
    status, out = call(api.app, api.keys[user], params)
    assert status == 200, out
    return out


def error(api, user, params):
    """The error code and message of a refused request, which changed nothing."""
    before = api.state.read_bytes()
    status, out = call(api.app, api.keys[user], params)
    assert status >= 400, out
    assert api.state.read_bytes() == before, f"{params['Action']} changed the state"
    return out["Error"]["Code"], out["Error"]["Message"]


def described_volume(api, user, vid):
    return ok(api, user, {"Action": "DescribeVolumes", "VolumeId.1": vid})["Volumes"][0]


def create_volume(api, user="alice", **extra):
    out = ok(api, user, {"Action": "CreateVolume", "Size": "1", "AvailabilityZone": "zone-a",
                         **extra})  # fmt: skip
    poll(lambda: described_volume(api, user, out["VolumeId"])["State"] == "available",
         "volume available", deadline_s=30, interval_s=0.05)  # fmt: skip
    return out["VolumeId"]


# --- volumes ------------------------------------------------------------------------------


def test_volume_life_answers_first_states_and_describe_shows_the_transitions(api):
    api.plays.gate.clear()
    out = ok(api, "alice", {"Action": "CreateVolume", "Size": "2", "AvailabilityZone": "zone-a",
                            "TagSpecification.1.ResourceType": "volume",
                            "TagSpecification.1.Tag.1.Key": "Name",
                            "TagSpecification.1.Tag.1.Value": "data"})  # fmt: skip
    vid = out["VolumeId"]
    assert (out["State"], out["Size"], out["AvailabilityZone"]) == ("creating", 2, "zone-a")
    assert out["Tags"] == [{"Key": "Name", "Value": "data"}]
    assert described_volume(api, "alice", vid)["State"] == "creating"
    api.plays.gate.set()
    poll(lambda: described_volume(api, "alice", vid)["State"] == "available", "available",
         deadline_s=30, interval_s=0.05)  # fmt: skip

    api.plays.gate.clear()
    out = ok(api, "alice", {"Action": "AttachVolume", "VolumeId": vid,
                            "InstanceId": ALICE_INSTANCE, "Device": "/dev/vdc"})  # fmt: skip
    assert (out["State"], out["Device"], out["InstanceId"]) == ("attaching", "/dev/vdc",
                                                                ALICE_INSTANCE)  # fmt: skip
    volume = described_volume(api, "alice", vid)
    assert volume["State"] == "in-use" and volume["Attachments"][0]["State"] == "attaching"
    api.plays.gate.set()
    poll(lambda: described_volume(api, "alice", vid)["Attachments"][0]["State"] == "attached",
         "attached", deadline_s=30, interval_s=0.05)  # fmt: skip
    filters = {"Action": "DescribeVolumes", "Filter.1.Name": "attachment.instance-id",
               "Filter.1.Value.1": ALICE_INSTANCE, "Filter.2.Name": "tag:Name",
               "Filter.2.Value.1": "d*", "Filter.3.Name": "attachment.device",
               "Filter.3.Value.1": "/dev/vdc"}  # fmt: skip
    assert [v["VolumeId"] for v in ok(api, "alice", filters)["Volumes"]] == [vid]
    assert error(api, "alice", {"Action": "DeleteVolume", "VolumeId": vid})[0] == "VolumeInUse"
    assert error(api, "alice", {"Action": "DetachVolume", "VolumeId": vid,
                                "InstanceId": ALICE_OTHER})[0] == "InvalidAttachment.NotFound"  # fmt: skip

    api.plays.gate.clear()
    out = ok(api, "alice", {"Action": "DetachVolume", "VolumeId": vid, "Force": "false"})
    assert out["State"] == "detaching"
    api.plays.gate.set()
    poll(lambda: described_volume(api, "alice", vid)["State"] == "available", "detached",
         deadline_s=30, interval_s=0.05)  # fmt: skip
    assert described_volume(api, "alice", vid)["Attachments"] == []

    ok(api, "alice", {"Action": "DeleteVolume", "VolumeId": vid})

    def gone():
        status, out = call(api.app, api.keys["alice"], {"Action": "DescribeVolumes",
                                                        "VolumeId.1": vid})  # fmt: skip
        return status == 400 and out["Error"]["Code"] == "InvalidVolume.NotFound"

    poll(gone, "volume deleted", deadline_s=30, interval_s=0.05)


def test_describe_volumes_filters_and_pages(api):
    made = sorted(create_volume(api, Size=str(size)) for size in (1, 1, 1, 2, 2, 3))
    out = ok(api, "alice", {"Action": "DescribeVolumes", "Filter.1.Name": "size",
                            "Filter.1.Value.1": "2", "Filter.1.Value.2": "3"})  # fmt: skip
    assert sorted(v["Size"] for v in out["Volumes"]) == [2, 2, 3]
    out = ok(api, "alice", {"Action": "DescribeVolumes", "MaxResults": "5"})
    first = [v["VolumeId"] for v in out["Volumes"]]
    out = ok(api, "alice", {"Action": "DescribeVolumes", "MaxResults": "5",
                            "NextToken": out["NextToken"]})  # fmt: skip
    assert first + [v["VolumeId"] for v in out["Volumes"]] == made and "NextToken" not in out
    volume = described_volume(api, "alice", made[0])
    assert volume["VolumeType"] == "standard" and volume["Encrypted"] is False
    assert volume["OwnerId"] == Identity(api.store).account("dev")["number"]


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"Action": "CreateVolume", "Size": "0"}, "InvalidParameterValue", "parameter Size"),
        ({"Action": "CreateVolume", "Size": "1025"}, "InvalidParameterValue", "between 1 and"),
        ({"Action": "CreateVolume"}, "MissingParameter", "Size"),
        ({"Action": "CreateVolume", "Size": "1", "AvailabilityZone": "zone-q"},
         "InvalidParameterValue", "unknown zone"),
        ({"Action": "CreateVolume", "Size": "1", "Encrypted": "true"}, "InvalidParameterValue",
         "Encrypted"),
        ({"Action": "CreateVolume", "Size": "1", "VolumeType": "fast"}, "InvalidParameterValue",
         "VolumeType"),
        ({"Action": "CreateVolume", "Size": "1", "TagSpecification.1.ResourceType": "instance",
          "TagSpecification.1.Tag.1.Key": "k"}, "InvalidParameterValue", "instance"),
        ({"Action": "CreateVolume", "Size": "1", "TagSpecification.1.ResourceType": "volume",
          "TagSpecification.1.Tag.1.Key": "aws:x"}, "InvalidParameterValue", "reserved"),
        ({"Action": "CreateVolume", "SnapshotId": "snap-0000000f"}, "InvalidSnapshot.NotFound",
         "snap-0000000f"),
        ({"Action": "DescribeVolumes", "VolumeId.1": "vol-nothex1"}, "InvalidVolumeID.Malformed",
         'expecting "vol-..."'),
        ({"Action": "DescribeVolumes", "VolumeId.1": "vol-0000000f"}, "InvalidVolume.NotFound",
         "vol-0000000f"),
        ({"Action": "DescribeVolumes", "Filter.1.Name": "colour", "Filter.1.Value.1": "x"},
         "InvalidParameterValue", "colour"),
        ({"Action": "DeleteVolume"}, "MissingParameter", "VolumeId"),
        ({"Action": "AttachVolume", "VolumeId": "{vol}", "InstanceId": ALICE_INSTANCE,
          "Device": "/dev/sda"}, "InvalidParameterValue", "/dev/vdb to /dev/vdz"),
        ({"Action": "AttachVolume", "VolumeId": "{vol}", "InstanceId": "i-0000000f",
          "Device": "vdb"}, "InvalidInstanceID.NotFound", "i-0000000f"),
        ({"Action": "AttachVolume", "VolumeId": "{vol}", "InstanceId": "i-1",
          "Device": "vdb"}, "InvalidInstanceID.Malformed", "i-1"),
        ({"Action": "AttachVolume", "VolumeId": "{vol}", "InstanceId": ADMIN_INSTANCE,
          "Device": "vdb"}, "InvalidInstanceID.NotFound", ADMIN_INSTANCE),
        ({"Action": "DetachVolume", "VolumeId": "{vol}"}, "IncorrectState", "'available'"),
        ({"Action": "CreateSnapshot", "VolumeId": "vol-0000000f"}, "InvalidVolume.NotFound",
         "vol-0000000f"),
        ({"Action": "DescribeSnapshots", "SnapshotId.1": "snapshot-1"},
         "InvalidSnapshotID.Malformed", "snapshot-1"),
        ({"Action": "DeleteSnapshot", "SnapshotId": "snap-0000000f"}, "InvalidSnapshot.NotFound",
         "snap-0000000f"),
    ],
)  # fmt: skip
def test_volume_and_snapshot_errors_change_nothing(api, params, code, words):
    vid = create_volume(api)
    params = {k: v.replace("{vol}", vid) for k, v in params.items()}
    got, message = error(api, "alice", params)
    assert got == code and words in message, message


def test_a_volume_in_progress_is_refused_with_incorrect_state(api):
    api.plays.gate.clear()
    vid = ok(api, "alice", {"Action": "CreateVolume", "Size": "1"})["VolumeId"]
    for params in ({"Action": "DeleteVolume", "VolumeId": vid},
                   {"Action": "CreateSnapshot", "VolumeId": vid},
                   {"Action": "AttachVolume", "VolumeId": vid, "InstanceId": ALICE_INSTANCE,
                    "Device": "/dev/vdb"}):  # fmt: skip
        assert error(api, "alice", params) == (
            "IncorrectState", f"Volume '{vid}' is in the 'creating' state.")  # fmt: skip
    api.plays.gate.set()


def test_snapshots(api):
    vid = create_volume(api)
    api.plays.gate.clear()
    out = ok(api, "alice", {"Action": "CreateSnapshot", "VolumeId": vid,
                            "Description": "before upgrade",
                            "TagSpecification.1.ResourceType": "snapshot",
                            "TagSpecification.1.Tag.1.Key": "k"})  # fmt: skip
    sid = out["SnapshotId"]
    assert (out["State"], out["Progress"], out["VolumeId"], out["VolumeSize"]) == (
        "pending", "0%", vid, 1)  # fmt: skip
    assert out["Description"] == "before upgrade" and out["Tags"] == [{"Key": "k", "Value": ""}]
    assert error(api, "alice", {"Action": "DeleteSnapshot", "SnapshotId": sid})[0] == (
        "IncorrectState")  # fmt: skip
    api.plays.gate.set()

    def snapshot(**params):
        out = ok(api, "alice", {"Action": "DescribeSnapshots", **params})["Snapshots"]
        return out[0] if out else None

    poll(lambda: snapshot(**{"SnapshotId.1": sid})["State"] == "completed", "completed",
         deadline_s=30, interval_s=0.05)  # fmt: skip
    number = Identity(api.store).account("dev")["number"]
    assert snapshot(**{"Owner.1": "self"})["Progress"] == "100%"
    assert snapshot(**{"OwnerId.1": number})["OwnerId"] == number
    assert snapshot(**{"Owner.1": "000000000001"}) is None  # the admin's: none
    assert snapshot(**{"Filter.1.Name": "volume-id", "Filter.1.Value.1": vid,
                       "Filter.2.Name": "description", "Filter.2.Value.1": "before*"})  # fmt: skip
    assert snapshot(**{"Filter.1.Name": "status", "Filter.1.Value.1": "pending"}) is None
    # a volume from the snapshot says where it came from
    restored = create_volume(api, SnapshotId=sid)
    assert described_volume(api, "alice", restored)["SnapshotId"] == sid
    ok(api, "alice", {"Action": "DeleteSnapshot", "SnapshotId": sid})
    assert snapshot() is None


# --- security groups ----------------------------------------------------------------------


def group(api, user, name):
    out = ok(api, user, {"Action": "DescribeSecurityGroups", "GroupName.1": name})
    return out["SecurityGroups"][0]


def test_security_groups_rules_in_both_encodings(api):
    [vpc] = ok(api, "alice", {"Action": "DescribeVpcs"})["Vpcs"]
    out = ok(api, "alice", {"Action": "CreateSecurityGroup", "GroupName": "web",
                            "GroupDescription": "web servers", "VpcId": vpc["VpcId"]})  # fmt: skip
    gid = out["GroupId"]
    assert gid.startswith("sg-")
    # boto3's encoding: one permission, two ranges and a source group (by name)
    ok(api, "alice", {"Action": "AuthorizeSecurityGroupIngress", "GroupId": gid,
                      "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "22",
                      "IpPermissions.1.ToPort": "22",
                      "IpPermissions.1.IpRanges.1.CidrIp": "10.0.0.0/8",
                      "IpPermissions.1.IpRanges.2.CidrIp": "192.0.2.7/32",
                      "IpPermissions.1.Groups.1.GroupName": "default",
                      "IpPermissions.2.IpProtocol": "udp", "IpPermissions.2.FromPort": "5000",
                      "IpPermissions.2.ToPort": "5010",
                      "IpPermissions.2.IpRanges.1.CidrIp": "0.0.0.0/0"})  # fmt: skip
    # the old flat encoding: icmp echo from a range, and a whole group
    ok(api, "alice", {"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web",
                      "IpProtocol": "icmp", "FromPort": "8", "ToPort": "-1",
                      "CidrIp": "198.51.100.0/24"})  # fmt: skip
    ok(api, "alice", {"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web",
                      "SourceSecurityGroupName": "web"})  # fmt: skip
    web = group(api, "alice", "web")
    default = group(api, "alice", "default")
    number = Identity(api.store).account("dev")["number"]
    assert (web["GroupId"], web["Description"], web["OwnerId"]) == (gid, "web servers", number)
    assert web["VpcId"] == vpc["VpcId"]
    assert web["IpPermissionsEgress"] == [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                                           "Ipv6Ranges": [], "PrefixListIds": [],
                                           "UserIdGroupPairs": []}]  # fmt: skip
    assert web["IpPermissions"] == [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"CidrIp": "192.0.2.7/32"}],
         "UserIdGroupPairs": [{"UserId": number, "GroupId": default["GroupId"],
                               "GroupName": "default"}]},
        {"IpProtocol": "udp", "FromPort": 5000, "ToPort": 5010,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "UserIdGroupPairs": []},
        {"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1,
         "IpRanges": [{"CidrIp": "198.51.100.0/24"}], "UserIdGroupPairs": []},
        {"IpProtocol": "-1", "IpRanges": [],
         "UserIdGroupPairs": [{"UserId": number, "GroupId": gid, "GroupName": "web"}]},
    ]  # fmt: skip
    # the default group lets its members in (EC2-Classic)
    assert default["IpPermissions"][0]["UserIdGroupPairs"][0]["GroupId"] == default["GroupId"]

    def names(*filters):
        params = {"Action": "DescribeSecurityGroups"}
        for n, (name, value) in enumerate(filters, start=1):
            params |= {f"Filter.{n}.Name": name, f"Filter.{n}.Value.1": value}
        return [g["GroupName"] for g in ok(api, "alice", params)["SecurityGroups"]]

    assert names(("ip-permission.protocol", "udp")) == ["web"]
    assert names(("ip-permission.from-port", "22"), ("ip-permission.cidr", "10.0.0.0/8")) == ["web"]
    assert sorted(names(("ip-permission.group-name", "default"))) == ["default", "web"]
    assert names(("ip-permission.group-id", gid)) == ["web"]
    assert names(("group-name", "def*")) == ["default"]
    assert len(names(("vpc-id", vpc["VpcId"]))) == 2

    # a request that holds one rule the group has adds none of its rules
    code, _ = error(api, "alice", {
        "Action": "AuthorizeSecurityGroupIngress", "GroupId": gid,
        "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "22",
        "IpPermissions.1.ToPort": "22", "IpPermissions.1.IpRanges.1.CidrIp": "172.16.0.0/12",
        "IpPermissions.1.IpRanges.2.CidrIp": "10.0.0.0/8"})  # fmt: skip
    assert code == "InvalidPermission.Duplicate"
    code, _ = error(api, "alice", {"Action": "RevokeSecurityGroupIngress", "GroupId": gid,
                                   "IpProtocol": "tcp", "FromPort": "80", "ToPort": "80",
                                   "CidrIp": "0.0.0.0/0"})  # fmt: skip
    assert code == "InvalidPermission.NotFound"
    ok(api, "alice", {"Action": "RevokeSecurityGroupIngress", "GroupId": gid,
                      "IpPermissions.1.IpProtocol": "6", "IpPermissions.1.FromPort": "22",
                      "IpPermissions.1.ToPort": "22",
                      "IpPermissions.1.IpRanges.1.CidrIp": "10.0.0.0/8",
                      "IpPermissions.1.Groups.1.GroupId": default["GroupId"]})  # fmt: skip
    assert group(api, "alice", "web")["IpPermissions"][0]["IpRanges"] == [
        {"CidrIp": "192.0.2.7/32"}]  # fmt: skip

    # in use as a source of rules of another group; the default group stays
    ok(api, "alice", {"Action": "CreateSecurityGroup", "GroupName": "db",
                      "GroupDescription": "databases"})  # fmt: skip
    ok(api, "alice", {"Action": "AuthorizeSecurityGroupIngress", "GroupName": "db",
                      "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "5432",
                      "IpPermissions.1.ToPort": "5432",
                      "IpPermissions.1.Groups.1.GroupId": gid})  # fmt: skip
    assert error(api, "alice", {"Action": "DeleteSecurityGroup", "GroupId": gid})[0] == (
        "InvalidGroup.InUse")  # fmt: skip
    assert error(api, "alice", {"Action": "DeleteSecurityGroup", "GroupName": "default"})[0] == (
        "CannotDelete")  # fmt: skip
    out = ok(api, "alice", {"Action": "DeleteSecurityGroup", "GroupName": "db"})
    assert out["Return"] is True and out["GroupId"].startswith("sg-")
    ok(api, "alice", {"Action": "DeleteSecurityGroup", "GroupId": gid})
    assert names() == ["default"]


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"Action": "CreateSecurityGroup", "GroupName": "web", "GroupDescription": "again"},
         "InvalidGroup.Duplicate", "'web' already exists"),
        ({"Action": "CreateSecurityGroup", "GroupName": "default", "GroupDescription": "x"},
         "InvalidGroup.Duplicate", "default"),
        ({"Action": "CreateSecurityGroup", "GroupName": "x"}, "MissingParameter",
         "GroupDescription"),
        ({"Action": "CreateSecurityGroup", "GroupName": "x", "GroupDescription": "x",
          "VpcId": "vpc-0123abcd"}, "InvalidVpcID.NotFound", "vpc-0123abcd"),
        ({"Action": "CreateSecurityGroup", "GroupName": "sg-x", "GroupDescription": "x"},
         "InvalidParameterValue", "sg-"),
        ({"Action": "DescribeSecurityGroups", "GroupName.1": "nosuch"}, "InvalidGroup.NotFound",
         "nosuch"),
        ({"Action": "DescribeSecurityGroups", "GroupId.1": "sg-0000000f"},
         "InvalidGroup.NotFound", "sg-0000000f"),
        ({"Action": "DescribeSecurityGroups", "GroupId.1": "sg-web"}, "InvalidGroupId.Malformed",
         'expecting "sg-..."'),
        ({"Action": "DeleteSecurityGroup"}, "MissingParameter", "GroupId"),
        ({"Action": "DeleteSecurityGroup", "GroupName": "nosuch"}, "InvalidGroup.NotFound",
         "nosuch"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "tcp",
          "FromPort": "22", "ToPort": "22", "CidrIp": "10.0.0/8"}, "InvalidParameterValue",
         "CIDR"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "tcp",
          "FromPort": "22", "ToPort": "22", "CidrIp": "10.0.0.300/8"}, "InvalidParameterValue",
         "CIDR"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "gre",
          "CidrIp": "10.0.0.0/8"}, "InvalidParameterValue", "Expecting tcp, udp, icmp or -1"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "tcp",
          "FromPort": "90", "ToPort": "80", "CidrIp": "10.0.0.0/8"}, "InvalidParameterValue",
         "first port is higher"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "tcp",
          "FromPort": "22", "ToPort": "70000", "CidrIp": "10.0.0.0/8"}, "InvalidParameterValue",
         "ToPort"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "tcp",
          "CidrIp": "10.0.0.0/8"}, "MissingParameter", "FromPort"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "icmp",
          "FromPort": "8", "ToPort": "0", "CidrIp": "10.0.0.0/8"}, "InvalidParameterValue",
         "ICMP codes"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "tcp",
          "FromPort": "22", "ToPort": "22"}, "MissingParameter", "CidrIp"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web"}, "MissingParameter",
         "IpPermissions"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "tcp",
          "FromPort": "22", "ToPort": "22", "CidrIp": "10.0.0.0/8",
          "IpPermissions.1.IpProtocol": "tcp"}, "InvalidParameterCombination", "not both"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web",
          "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "22",
          "IpPermissions.1.ToPort": "22", "IpPermissions.1.Ipv6Ranges.1.CidrIpv6": "::/0"},
         "InvalidParameterValue", "IPv4"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web",
          "IpPermissions.1.IpProtocol": "tcp", "IpPermissions.1.FromPort": "22",
          "IpPermissions.1.ToPort": "22", "IpPermissions.1.Groups.1.GroupName": "nosuch"},
         "InvalidGroup.NotFound", "nosuch"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "web",
          "IpPermissions.1.IpProtocol": "-1", "IpPermissions.1.Groups.1.GroupName": "web",
          "IpPermissions.1.Groups.1.UserId": "123456789012"}, "InvalidParameterValue",
         "own account"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "nosuch", "IpProtocol": "-1",
          "CidrIp": "10.0.0.0/8"}, "InvalidGroup.NotFound", "nosuch"),
        ({"Action": "RevokeSecurityGroupIngress", "GroupName": "web", "IpProtocol": "-1",
          "CidrIp": "10.0.0.0/8"}, "InvalidPermission.NotFound", "no such rule"),
    ],
)  # fmt: skip
def test_security_group_errors_change_nothing(api, params, code, words):
    ok(api, "alice", {"Action": "CreateSecurityGroup", "GroupName": "web",
                      "GroupDescription": "web"})  # fmt: skip
    got, message = error(api, "alice", params)
    assert got == code and words in message, message


# --- addresses ----------------------------------------------------------------------------


def test_addresses(api):
    out = ok(api, "alice", {"Action": "AllocateAddress", "Domain": "vpc"})
    ip, aid = out["PublicIp"], out["AllocationId"]
    assert ip in ("198.51.100.17", "198.51.100.18") and aid.startswith("eipalloc-")
    assert out["Domain"] == "vpc"
    second = ok(api, "alice", {"Action": "AllocateAddress"})
    code, message = error(api, "alice", {"Action": "AllocateAddress"})
    assert code == "AddressLimitExceeded" and "every elastic IP of the pool" in message

    def address(**params):
        return ok(api, "alice", {"Action": "DescribeAddresses", **params})["Addresses"]

    assert address(**{"PublicIp.1": ip}) == [{"PublicIp": ip, "AllocationId": aid,
                                              "Domain": "vpc"}]  # fmt: skip
    assert address(**{"AllocationId.1": aid})[0]["PublicIp"] == ip
    assert len(address()) == 2

    out = ok(api, "alice", {"Action": "AssociateAddress", "AllocationId": aid,
                            "InstanceId": ALICE_INSTANCE})  # fmt: skip
    association = "eipassoc-" + aid.removeprefix("eipalloc-")
    assert out["AssociationId"] == association
    assert api.addresses[-1]["state"] == "present" and api.addresses[-1]["public_ip"] == ip
    [described] = address(**{"Filter.1.Name": "instance-id", "Filter.1.Value.1": ALICE_INSTANCE})
    number = Identity(api.store).account("dev")["number"]
    assert described == {"PublicIp": ip, "AllocationId": aid, "Domain": "vpc",
                         "InstanceId": ALICE_INSTANCE, "AssociationId": association,
                         "NetworkInterfaceId": "eni-" + ALICE_INSTANCE[2:],
                         "NetworkInterfaceOwnerId": number,
                         "PrivateIpAddress": "172.31.0.10"}  # fmt: skip
    assert address(**{"Filter.1.Name": "association-id", "Filter.1.Value.1": association})
    # again: nothing to do; elsewhere: only with AllowReassociation
    applied = len(api.addresses)
    ok(api, "alice", {"Action": "AssociateAddress", "PublicIp": ip, "InstanceId": ALICE_INSTANCE})
    assert len(api.addresses) == applied
    moved = {"Action": "AssociateAddress", "PublicIp": ip, "InstanceId": ALICE_OTHER}
    assert error(api, "alice", moved)[0] == "Resource.AlreadyAssociated"
    ok(api, "alice", moved | {"AllowReassociation": "true"})
    assert address(**{"PublicIp.1": ip})[0]["InstanceId"] == ALICE_OTHER

    ok(api, "alice", {"Action": "DisassociateAddress", "AssociationId": association})
    assert "InstanceId" not in address(**{"PublicIp.1": ip})[0]
    ok(api, "alice", {"Action": "DisassociateAddress", "PublicIp": ip})  # idempotent
    ok(api, "alice", {"Action": "ReleaseAddress", "AllocationId": aid})
    ok(api, "alice", {"Action": "ReleaseAddress", "PublicIp": second["PublicIp"]})
    assert address() == []


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"Action": "AllocateAddress", "Domain": "moon"}, "InvalidParameterValue", "Domain"),
        ({"Action": "DescribeAddresses", "PublicIp.1": "198.51.100.30"},
         "InvalidAddress.NotFound", "198.51.100.30"),
        ({"Action": "DescribeAddresses", "PublicIp.1": "1.2.3"}, "InvalidParameterValue",
         "IPv4"),
        ({"Action": "DescribeAddresses", "AllocationId.1": "eipalloc-0000000f"},
         "InvalidAllocationID.NotFound", "eipalloc-0000000f"),
        ({"Action": "DescribeAddresses", "AllocationId.1": "eipalloc-x"},
         "InvalidAllocationID.NotFound", "eipalloc-x"),
        ({"Action": "AssociateAddress", "InstanceId": ALICE_INSTANCE}, "MissingParameter",
         "AllocationId"),
        ({"Action": "AssociateAddress", "PublicIp": "{ip}"}, "MissingParameter", "InstanceId"),
        ({"Action": "AssociateAddress", "PublicIp": "{ip}", "AllocationId": "{aid}",
          "InstanceId": ALICE_INSTANCE}, "InvalidParameterCombination", "not both"),
        ({"Action": "AssociateAddress", "PublicIp": "{ip}", "InstanceId": ADMIN_INSTANCE},
         "InvalidInstanceID.NotFound", ADMIN_INSTANCE),
        ({"Action": "AssociateAddress", "PublicIp": "{ip}", "NetworkInterfaceId": "eni-1"},
         "InvalidParameterValue", "InstanceId"),
        ({"Action": "DisassociateAddress", "AssociationId": "eipassoc-0000000f"},
         "InvalidAssociationID.NotFound", "eipassoc-0000000f"),
        ({"Action": "DisassociateAddress", "AssociationId": "assoc"},
         "InvalidAssociationID.NotFound", "assoc"),
        ({"Action": "DisassociateAddress", "AssociationId": "eipassoc-x"},
         "InvalidAssociationID.NotFound", "eipassoc-x"),
        ({"Action": "ReleaseAddress", "PublicIp": "198.51.100.18"}, "InvalidAddress.NotFound",
         "198.51.100.18"),
        ({"Action": "ReleaseAddress"}, "MissingParameter", "AllocationId"),
    ],
)  # fmt: skip
def test_address_errors_change_nothing(api, params, code, words):
    out = ok(api, "alice", {"Action": "AllocateAddress"})
    swap = {"{ip}": out["PublicIp"], "{aid}": out["AllocationId"]}
    params = {k: swap.get(v, v) for k, v in params.items()}
    got, message = error(api, "alice", params)
    assert got == code and words in message, message


# --- tags ---------------------------------------------------------------------------------


def test_tags(api):
    vid = create_volume(api)
    gid = ok(api, "alice", {"Action": "CreateSecurityGroup", "GroupName": "web",
                            "GroupDescription": "web"})["GroupId"]  # fmt: skip
    ok(api, "alice", {"Action": "CreateTags", "ResourceId.1": vid, "ResourceId.2": gid,
                      "Tag.1.Key": "env", "Tag.1.Value": "prod", "Tag.2.Key": "team",
                      "Tag.3.Key": "Name", "Tag.3.Value": "x"})  # fmt: skip

    def tags(*filters, **params):
        query = {"Action": "DescribeTags", **params}
        for n, (name, value) in enumerate(filters, start=1):
            query |= {f"Filter.{n}.Name": name, f"Filter.{n}.Value.1": value}
        return ok(api, "alice", query)

    out = tags(("resource-type", "security-group"))
    assert out["Tags"] == [
        {"ResourceId": gid, "ResourceType": "security-group", "Key": k, "Value": v}
        for k, v in (("Name", "x"), ("env", "prod"), ("team", ""))
    ]
    assert [t["ResourceId"] for t in tags(("key", "env"), ("value", "pr*"))["Tags"]] == sorted(
        [vid, gid])  # fmt: skip
    page = tags(MaxResults="5")
    rest = tags(MaxResults="5", NextToken=page["NextToken"])
    assert len(page["Tags"]) == 5 and len(rest["Tags"]) == 1 and "NextToken" not in rest
    assert described_volume(api, "alice", vid)["Tags"] == [
        {"Key": "Name", "Value": "x"}, {"Key": "env", "Value": "prod"}, {"Key": "team", "Value": ""}
    ]  # fmt: skip

    # by key and value: only a tag with that value goes
    ok(api, "alice", {"Action": "DeleteTags", "ResourceId.1": vid, "Tag.1.Key": "env",
                      "Tag.1.Value": "test", "Tag.2.Key": "team", "Tag.2.Value": ""})  # fmt: skip
    assert [t["Key"] for t in tags(("resource-id", vid))["Tags"]] == ["Name", "env"]
    ok(api, "alice", {"Action": "DeleteTags", "ResourceId.1": vid, "Tag.1.Key": "env"})
    assert [t["Key"] for t in tags(("resource-id", vid))["Tags"]] == ["Name"]
    ok(api, "alice", {"Action": "DeleteTags", "ResourceId.1": vid, "ResourceId.2": gid})
    assert tags()["Tags"] == []


@pytest.mark.parametrize(
    ("params", "code", "words"),
    [
        ({"Action": "CreateTags", "Tag.1.Key": "k"}, "MissingParameter", "ResourceId.1"),
        ({"Action": "CreateTags", "ResourceId.1": "{vol}"}, "MissingParameter", "Tag.1.Key"),
        ({"Action": "CreateTags", "ResourceId.1": "web", "Tag.1.Key": "k"}, "InvalidID", "web"),
        ({"Action": "CreateTags", "ResourceId.1": "eipalloc-0000000f", "Tag.1.Key": "k"},
         "InvalidID", "eipalloc-0000000f"),
        ({"Action": "CreateTags", "ResourceId.1": "{vol}", "ResourceId.2": "vol-0000000f",
          "Tag.1.Key": "k"}, "InvalidVolume.NotFound", "vol-0000000f"),
        ({"Action": "CreateTags", "ResourceId.1": "i-0000000f", "Tag.1.Key": "k"},
         "InvalidInstanceID.NotFound", "i-0000000f"),
        ({"Action": "CreateTags", "ResourceId.1": "{vol}", "Tag.1.Key": "aws:x"},
         "InvalidParameterValue", "reserved"),
        ({"Action": "CreateTags", "ResourceId.1": "{vol}", "Tag.1.Key": "k" * 129},
         "InvalidParameterValue", "128"),
        ({"Action": "DeleteTags", "ResourceId.1": ADMIN_INSTANCE}, "InvalidInstanceID.NotFound",
         ADMIN_INSTANCE),
        ({"Action": "DescribeTags", "Filter.1.Name": "colour", "Filter.1.Value.1": "x"},
         "InvalidParameterValue", "colour"),
        ({"Action": "DescribeTags", "MaxResults": "2"}, "InvalidParameterValue", "MaxResults"),
    ],
)  # fmt: skip
def test_tag_errors_change_nothing(api, params, code, words):
    vid = create_volume(api)
    params = {k: v.replace("{vol}", vid) for k, v in params.items()}
    got, message = error(api, "alice", params)
    assert got == code and words in message, message


# --- ownership ----------------------------------------------------------------------------


def test_another_account_sees_none_and_gets_not_found(api):
    vid = create_volume(api)
    ok(api, "alice", {"Action": "CreateTags", "ResourceId.1": vid, "Tag.1.Key": "k"})
    sid = ok(api, "alice", {"Action": "CreateSnapshot", "VolumeId": vid})["SnapshotId"]
    gid = ok(api, "alice", {"Action": "CreateSecurityGroup", "GroupName": "web",
                            "GroupDescription": "web"})["GroupId"]  # fmt: skip
    address = ok(api, "alice", {"Action": "AllocateAddress"})
    ip, aid = address["PublicIp"], address["AllocationId"]

    assert ok(api, "bob", {"Action": "DescribeVolumes"})["Volumes"] == []
    assert ok(api, "bob", {"Action": "DescribeSnapshots"})["Snapshots"] == []
    assert ok(api, "bob", {"Action": "DescribeAddresses"})["Addresses"] == []
    assert ok(api, "bob", {"Action": "DescribeTags"})["Tags"] == []
    assert [g["GroupName"] for g in ok(api, "bob", {"Action": "DescribeSecurityGroups"})[
        "SecurityGroups"]] == ["default"]  # fmt: skip
    refused = [
        ({"Action": "DescribeVolumes", "VolumeId.1": vid}, "InvalidVolume.NotFound"),
        ({"Action": "DeleteVolume", "VolumeId": vid}, "InvalidVolume.NotFound"),
        ({"Action": "AttachVolume", "VolumeId": vid, "InstanceId": ALICE_INSTANCE,
          "Device": "vdb"}, "InvalidVolume.NotFound"),
        ({"Action": "DetachVolume", "VolumeId": vid}, "InvalidVolume.NotFound"),
        ({"Action": "CreateSnapshot", "VolumeId": vid}, "InvalidVolume.NotFound"),
        ({"Action": "CreateVolume", "SnapshotId": sid}, "InvalidSnapshot.NotFound"),
        ({"Action": "DescribeSnapshots", "SnapshotId.1": sid}, "InvalidSnapshot.NotFound"),
        ({"Action": "DeleteSnapshot", "SnapshotId": sid}, "InvalidSnapshot.NotFound"),
        ({"Action": "DescribeSecurityGroups", "GroupId.1": gid}, "InvalidGroup.NotFound"),
        ({"Action": "DescribeSecurityGroups", "GroupName.1": "web"}, "InvalidGroup.NotFound"),
        ({"Action": "DeleteSecurityGroup", "GroupId": gid}, "InvalidGroup.NotFound"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupId": gid, "IpProtocol": "-1",
          "CidrIp": "0.0.0.0/0"}, "InvalidGroup.NotFound"),
        ({"Action": "AuthorizeSecurityGroupIngress", "GroupName": "default",
          "IpPermissions.1.IpProtocol": "-1", "IpPermissions.1.Groups.1.GroupId": gid},
         "InvalidGroup.NotFound"),
        ({"Action": "DescribeAddresses", "AllocationId.1": aid}, "InvalidAllocationID.NotFound"),
        ({"Action": "DescribeAddresses", "PublicIp.1": ip}, "InvalidAddress.NotFound"),
        ({"Action": "ReleaseAddress", "AllocationId": aid}, "InvalidAllocationID.NotFound"),
        ({"Action": "ReleaseAddress", "PublicIp": ip}, "InvalidAddress.NotFound"),
        ({"Action": "AssociateAddress", "PublicIp": ip, "InstanceId": ALICE_INSTANCE},
         "InvalidAddress.NotFound"),
        ({"Action": "DisassociateAddress", "AssociationId": "eipassoc-" + aid[9:]},
         "InvalidAssociationID.NotFound"),
        ({"Action": "CreateTags", "ResourceId.1": vid, "Tag.1.Key": "k"},
         "InvalidVolume.NotFound"),
        ({"Action": "DeleteTags", "ResourceId.1": gid}, "InvalidGroup.NotFound"),
    ]  # fmt: skip
    for params, code in refused:
        assert error(api, "bob", params)[0] == code, params
    # the cloud's administrators see every account's
    assert vid in [v["VolumeId"] for v in ok(api, "admin", {"Action": "DescribeVolumes"})[
        "Volumes"]]  # fmt: skip
    assert ok(api, "admin", {"Action": "DescribeAddresses", "PublicIp.1": ip})["Addresses"]


def test_dry_run_answers_and_changes_nothing(api):
    """DryRun on every family: DryRunOperation, and the state stays as it was."""
    before = api.state.read_bytes()
    for params in (
        {"Action": "CreateSecurityGroup", "GroupName": "dry", "GroupDescription": "d"},
        {"Action": "CreateVolume", "Size": "1", "AvailabilityZone": "zone-a"},
        {"Action": "AllocateAddress"},
        {"Action": "CreateTags", "ResourceId.1": ALICE_INSTANCE, "Tag.1.Key": "k"},
    ):
        assert error(api, "alice", {**params, "DryRun": "true"})[0] == "DryRunOperation"
    assert api.state.read_bytes() == before

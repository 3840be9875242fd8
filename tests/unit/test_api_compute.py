"""The EC2 actions of instances, images and key pairs, in-process: botocore signs the requests
and parses the answers (tests/unit/test_api_app.py's `call`).

The instances' plays are synthetic here: each succeeds as the real play would, after a gate
the test may hold, so that the first state (`pending`, `stopping`, ...) is seen before the
worker moves on. Images are registered from a real SeaweedFS (tests/weed.py). The real plays
and boots: tests/integration/test_api_lifecycle.py.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from types import SimpleNamespace

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudctl import instances as instance_service
from cloudctl import walrus
from cloudctl.api.app import Api
from cloudctl.cloudconfig import Walrus
from cloudctl.identity import ADMIN, Identity, Principal
from cloudctl.instances import CONSOLE_PLAYBOOK, RUN_PLAYBOOK, TASK_CONSOLE, TASK_START
from cloudctl.quotas import Quotas
from cloudctl.state import StateStore
from tests.conftest import poll
from tests.unit.helpers import host_event, init_state, play_result, task_start
from tests.unit.test_api_app import CLOUD
from tests.unit.test_api_storage_net import error, ok
from tests.weed import weed  # noqa: F401 (a module fixture)

EMI, EKI, ERI = "emi-000000a1", "eki-000000a1", "eri-000000a1"
CONSOLE = "Linux version 6.1\r\n-----BEGIN SSH HOST KEY KEYS-----\r\n"


class Plays:
    """The instances' plays, synthetic: each waits at the gate (open unless a test closes
    it), then succeeds as the real play does (every instance started, the console read)."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.gate = threading.Event()
        self.gate.set()
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, settings, playbook, *, extravars=None, limit=None, operation="", **_):
        assert self.gate.wait(30), "the test never opened the gate"
        events = []
        if playbook == RUN_PLAYBOOK:
            events = [task_start(TASK_START)] + [
                host_event("runner_on_ok", node, TASK_START,
                           {"instances": [{"name": i["name"], "changed": True}
                                          for i in spec["instances"]]})
                for node, spec in extravars["cloud_nodes"].items()
            ]  # fmt: skip
        elif playbook == CONSOLE_PLAYBOOK:
            content = base64.b64encode(CONSOLE.encode()).decode()
            events = [task_start(TASK_CONSOLE),
                      host_event("runner_on_ok", limit, TASK_CONSOLE, {"content": content})]  # fmt: skip
        with self.lock:
            self.count += 1
            run_dir = self.tmp_path / f"20260101T000000Z-{operation}-{self.count:08x}"
        run_dir.mkdir()
        return play_result(run_dir, events)


@pytest.fixture(scope="module")
def s3(weed):  # noqa: F811
    weed.client().create_bucket(Bucket=walrus.IMAGES)
    return SimpleNamespace(
        walrus=walrus.client(Walrus(weed.endpoint, weed.access_key, weed.secret_key)),
        raw=weed.client(),
        config={"endpoint": weed.endpoint, "access_key": weed.access_key,
                "secret_key": weed.secret_key},
    )  # fmt: skip


@pytest.fixture
def api(settings, tmp_path, monkeypatch, s3):
    """A cloud with the admin's public image (kernel + ramdisk), accounts dev (alice) and
    other (bob), synthetic plays. Yields a namespace: app, keys, state (path), store, plays."""
    config = tmp_path / "cloud.yml"
    config.write_text(yaml.safe_dump({**CLOUD, "walrus": s3.config}))
    monkeypatch.setenv("CLOUDCTL_CONFIG", str(config))
    store = StateStore(init_state(settings.state_path))
    with store.transaction() as tx:
        for iid, kind, name in ((EKI, "kernel", "vmlinuz"), (ERI, "ramdisk", "initrd.img"),
                                (EMI, "machine", "tiny")):  # fmt: skip
            tx.table("images").insert({
                "id": iid, "name": name, "kind": kind, "format": "raw", "size": 4,
                "sha256": hashlib.sha256(iid.encode()).hexdigest(), "description": "",
                "kernel_id": EKI if kind == "machine" else None,
                "ramdisk_id": ERI if kind == "machine" else None,
                "state": "available", "account": "admin", "user": "admin",
            })  # fmt: skip
    identity = Identity(store)
    keys = {"admin": identity.create_key(ADMIN)}
    for account, user in (("dev", "alice"), ("other", "bob")):
        identity.create_account(account)
        identity.create_user(Principal(account, user))
        keys[user] = identity.create_key(Principal(account, user))
    plays = Plays(tmp_path)
    monkeypatch.setattr(instance_service, "run_playbook", plays)
    yield SimpleNamespace(app=Api(settings), keys=keys, state=settings.state_path, store=store,
                          plays=plays, numbers=_numbers(identity))  # fmt: skip
    plays.gate.set()
    for thread in threading.enumerate():
        if thread.name.startswith("op-"):
            thread.join(30)


def _numbers(identity):
    return {a["name"]: a["number"] for a in identity.list_accounts()}


def public_key_line() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)\
        .decode()  # fmt: skip


def import_key(api, user, name="laptop"):
    material = base64.b64encode(public_key_line().encode()).decode()
    return ok(api, user, {"Action": "ImportKeyPair", "KeyName": name,
                          "PublicKeyMaterial": material})  # fmt: skip


def run(api, user="alice", **extra):
    params = {"Action": "RunInstances", "ImageId": EMI, "MinCount": "1", "MaxCount": "1"}
    return ok(api, user, {**params, **extra})


def described(api, user, **params):
    out = ok(api, user, {"Action": "DescribeInstances", **params})
    return [i for r in out["Reservations"] for i in r["Instances"]]


def state_of(api, user, iid):
    [instance] = described(api, user, **{"InstanceId.1": iid})
    return instance["State"]["Name"]


def wait_state(api, user, iid, state):
    poll(lambda: state_of(api, user, iid) == state, f"{iid} {state}", deadline_s=30,
         interval_s=0.05)  # fmt: skip


# --- instances ----------------------------------------------------------------------------


def test_instance_life_answers_first_states_and_describe_shows_the_transitions(api):
    import_key(api, "alice")
    api.plays.gate.clear()
    user_data = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    out = run(api, MinCount="1", MaxCount="2", InstanceType="m1.large", KeyName="laptop",
              UserData=user_data, **{"Placement.AvailabilityZone": "zone-a",
                                     "SecurityGroup.1": "default",
                                     "TagSpecification.1.ResourceType": "instance",
                                     "TagSpecification.1.Tag.1.Key": "Name",
                                     "TagSpecification.1.Tag.1.Value": "web",
                                     # ec2_instance's: a launch makes no volume to tag here
                                     "TagSpecification.2.ResourceType": "volume",
                                     "TagSpecification.2.Tag.1.Key": "Name",
                                     "TagSpecification.2.Tag.1.Value": "web"})  # fmt: skip
    assert out["OwnerId"] == api.numbers["dev"] and out["ReservationId"].startswith("r-")
    assert [g["GroupName"] for g in out["Groups"]] == ["default"]
    first, second = out["Instances"]
    assert (first["State"], first["InstanceType"], first["KeyName"], first["ImageId"]) == (
        {"Code": 0, "Name": "pending"}, "m1.large", "laptop", EMI)  # fmt: skip
    assert (first["KernelId"], first["RamdiskId"], first["AmiLaunchIndex"]) == (EKI, ERI, 0)
    assert first["Tags"] == [{"Key": "Name", "Value": "web"}]
    assert first["Placement"]["AvailabilityZone"] == "zone-a"
    assert first["PrivateIpAddress"].startswith("172.31.0.")
    assert (first["Architecture"], first["RootDeviceType"]) == ("x86_64", "instance-store")
    assert first["VpcId"].startswith("vpc-") and first["SubnetId"].startswith("subnet-")
    iid = first["InstanceId"]
    assert state_of(api, "alice", iid) == "pending"
    api.plays.gate.set()
    wait_state(api, "alice", iid, "running")

    # filters and pagination
    for name, value in (("tag:Name", "w*"), ("instance-state-name", "running"),
                        ("key-name", "laptop"), ("reservation-id", out["ReservationId"]),
                        ("image-id", EMI), ("availability-zone", "zone-a"),
                        ("instance-type", "m1.large"), ("tag-key", "Name"),
                        ("instance.group-name", "default"),
                        ("private-ip-address", first["PrivateIpAddress"])):  # fmt: skip
        found = described(api, "alice", **{"Filter.1.Name": name, "Filter.1.Value.1": value})
        assert iid in [i["InstanceId"] for i in found], name
    assert described(api, "alice", **{"Filter.1.Name": "instance-state-code",
                                      "Filter.1.Value.1": "80"}) == []  # fmt: skip
    page = ok(api, "alice", {"Action": "DescribeInstances", "MaxResults": "5"})
    assert "NextToken" not in page and len(page["Reservations"][0]["Instances"]) == 2
    assert error(api, "alice", {"Action": "DescribeInstances", "InstanceId.1": iid,
                                "MaxResults": "5"})[0] == "InvalidParameterCombination"  # fmt: skip

    # stop, start, reboot, console
    api.plays.gate.clear()
    out = ok(api, "alice", {"Action": "StopInstances", "InstanceId.1": iid})
    assert out["StoppingInstances"] == [{"InstanceId": iid,
                                         "CurrentState": {"Code": 64, "Name": "stopping"},
                                         "PreviousState": {"Code": 16, "Name": "running"}}]  # fmt: skip
    api.plays.gate.set()
    wait_state(api, "alice", iid, "stopped")
    code, _ = error(api, "alice", {"Action": "RebootInstances", "InstanceId.1": iid})
    assert code == "IncorrectInstanceState"
    out = ok(api, "alice", {"Action": "StartInstances", "InstanceId.1": iid})
    assert out["StartingInstances"][0]["PreviousState"]["Name"] == "stopped"
    wait_state(api, "alice", iid, "running")
    ok(api, "alice", {"Action": "RebootInstances", "InstanceId.1": iid})  # no output shape
    out = ok(api, "alice", {"Action": "GetConsoleOutput", "InstanceId": iid})
    assert base64.b64decode(out["Output"]).decode() == CONSOLE and out["InstanceId"] == iid

    # terminate: shutting-down at once, terminated afterwards, and still described
    api.plays.gate.clear()
    out = ok(api, "alice", {"Action": "TerminateInstances", "InstanceId.1": iid,
                            "InstanceId.2": second["InstanceId"]})  # fmt: skip
    assert [c["CurrentState"]["Name"] for c in out["TerminatingInstances"]] == [
        "shutting-down", "shutting-down"]  # fmt: skip
    api.plays.gate.set()
    wait_state(api, "alice", iid, "terminated")
    [gone] = described(api, "alice", **{"InstanceId.1": iid})
    assert gone["State"] == {"Code": 48, "Name": "terminated"} and "PrivateIpAddress" not in gone
    assert gone["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    out = ok(api, "alice", {"Action": "TerminateInstances", "InstanceId.1": iid})
    assert out["TerminatingInstances"][0]["CurrentState"]["Name"] == "terminated"


def test_min_and_max_count_launch_what_the_quota_leaves(api):
    Quotas(api.store).set("dev", "ec2:quota-vminstancenumber", 3)
    out = run(api, MinCount="2", MaxCount="5")
    assert len(out["Instances"]) == 3
    code, message = error(api, "alice", {"Action": "RunInstances", "ImageId": EMI,
                                         "MinCount": "1", "MaxCount": "1"})  # fmt: skip
    assert code == "ResourceLimitExceeded" and "ec2:quota-vminstancenumber" in message


def test_run_refusals_change_nothing(api):
    base = {"Action": "RunInstances", "ImageId": EMI, "MinCount": "1", "MaxCount": "1"}
    import_key(api, "alice")
    ok(api, "alice", {"Action": "DescribeSecurityGroups"})  # makes alice's default group
    for change, code in (
        ({"ImageId": "emi-0000ffff"}, "InvalidAMIID.NotFound"),
        ({"ImageId": "ami-12345678"}, "InvalidAMIID.Malformed"),
        ({"ImageId": EKI}, "InvalidAMIID.Malformed"),
        ({"KeyName": "nope"}, "InvalidKeyPair.NotFound"),
        ({"SecurityGroup.1": "nope"}, "InvalidGroup.NotFound"),
        ({"SecurityGroupId.1": "sg-0000ffff"}, "InvalidGroup.NotFound"),
        ({"InstanceType": "m9.huge"}, "InvalidParameterValue"),
        ({"Placement.AvailabilityZone": "zone-q"}, "InvalidParameterValue"),
        ({"UserData": "!!not base64!!"}, "InvalidParameterValue"),
        ({"MinCount": "2"}, "InvalidParameterValue"),
        ({"MaxCount": "0"}, "InvalidParameterValue"),
        ({"KernelId": "eki-0000ffff"}, "InvalidParameterValue"),
        ({"TagSpecification.1.ResourceType": "snapshot",
          "TagSpecification.1.Tag.1.Key": "a"}, "InvalidParameterValue"),
        ({"TagSpecification.1.ResourceType": "volume",
          "TagSpecification.1.Tag.1.Key": "aws:a"}, "InvalidParameterValue"),
        ({"BlockDeviceMapping.1.DeviceName": "/dev/vdb"}, "InvalidParameterValue"),
        ({"DryRun": "true", "KeyName": "laptop"}, "DryRunOperation"),
    ):  # fmt: skip
        assert error(api, "alice", {**base, **change})[0] == code, change
    Quotas(api.store).set("dev", "ec2:quota-cputotalsize", 1)
    code, message = error(api, "alice", {**base, "InstanceType": "m1.large"})
    assert code == "ResourceLimitExceeded" and "ec2:quota-cputotalsize" in message


def test_another_account_sees_none_of_the_instances(api):
    iid = run(api)["Instances"][0]["InstanceId"]
    wait_state(api, "alice", iid, "running")
    assert described(api, "bob") == []
    for action, params in (("DescribeInstances", {"InstanceId.1": iid}),
                           ("TerminateInstances", {"InstanceId.1": iid}),
                           ("StopInstances", {"InstanceId.1": iid}),
                           ("StartInstances", {"InstanceId.1": iid}),
                           ("RebootInstances", {"InstanceId.1": iid}),
                           ("GetConsoleOutput", {"InstanceId": iid})):  # fmt: skip
        code, _ = error(api, "bob", {"Action": action, **params})
        assert code == "InvalidInstanceID.NotFound", action
    assert iid in [i["InstanceId"] for i in described(api, "admin")]
    code, _ = error(api, "alice", {"Action": "DescribeInstances", "InstanceId.1": "i-12"})
    assert code == "InvalidInstanceID.Malformed"


# --- key pairs ----------------------------------------------------------------------------


def test_key_pairs(api):
    out = ok(api, "alice", {"Action": "CreateKeyPair", "KeyName": "made"})
    private = serialization.load_ssh_private_key(out["KeyMaterial"].encode(), password=None)
    line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH)  # fmt: skip
    digest = base64.b64encode(hashlib.sha256(base64.b64decode(line.split()[1])).digest())
    assert out["KeyFingerprint"] == "SHA256:" + digest.decode().rstrip("=")
    assert out["KeyPairId"] == "dev:made"
    imported = import_key(api, "alice", "laptop")
    assert imported["KeyPairId"] == "dev:laptop"

    pairs = ok(api, "alice", {"Action": "DescribeKeyPairs"})["KeyPairs"]
    assert [(p["KeyName"], p["KeyType"]) for p in pairs] == [("laptop", "ed25519"),
                                                              ("made", "ed25519")]  # fmt: skip
    assert "PublicKey" not in pairs[0]
    for params in ({"KeyName.1": "made"}, {"KeyPairId.1": "dev:made"},
                   {"Filter.1.Name": "key-name", "Filter.1.Value.1": "ma*"},
                   {"Filter.1.Name": "fingerprint", "Filter.1.Value.1": out["KeyFingerprint"]},
                   {"Filter.1.Name": "key-pair-id", "Filter.1.Value.1": "dev:made"}):  # fmt: skip
        found = ok(api, "alice", {"Action": "DescribeKeyPairs", **params})["KeyPairs"]
        assert [p["KeyName"] for p in found] == ["made"], params
    with_key = ok(api, "alice", {"Action": "DescribeKeyPairs", "KeyName.1": "made",
                                 "IncludePublicKey": "true"})["KeyPairs"][0]  # fmt: skip
    assert with_key["PublicKey"] == line.decode()

    for params, code in (
        ({"Action": "CreateKeyPair", "KeyName": "made"}, "InvalidKeyPair.Duplicate"),
        ({"Action": "ImportKeyPair", "KeyName": "laptop",
          "PublicKeyMaterial": base64.b64encode(public_key_line().encode()).decode()},
         "InvalidKeyPair.Duplicate"),
        ({"Action": "ImportKeyPair", "KeyName": "bad",
          "PublicKeyMaterial": base64.b64encode(b"ssh-rsa AAAA").decode()}, "InvalidKey.Format"),
        ({"Action": "ImportKeyPair", "KeyName": "bad", "PublicKeyMaterial": "%%%"},
         "InvalidKey.Format"),
        ({"Action": "CreateKeyPair", "KeyName": "r", "KeyType": "rsa"}, "InvalidParameterValue"),
        ({"Action": "CreateKeyPair", "KeyName": ""}, "MissingParameter"),
        ({"Action": "DescribeKeyPairs", "KeyName.1": "nope"}, "InvalidKeyPair.NotFound"),
        ({"Action": "DescribeKeyPairs", "KeyPairId.1": "other:x"}, "InvalidKeyPair.NotFound"),
    ):  # fmt: skip
        assert error(api, "alice", params)[0] == code, params

    # names are per account: bob has a "made" of his own, and sees none of alice's
    assert error(api, "bob", {"Action": "DescribeKeyPairs", "KeyName.1": "laptop"})[0] == (
        "InvalidKeyPair.NotFound")  # fmt: skip
    assert ok(api, "bob", {"Action": "CreateKeyPair", "KeyName": "made"})["KeyPairId"] == (
        "other:made")  # fmt: skip
    assert ok(api, "bob", {"Action": "DeleteKeyPair", "KeyName": "laptop"})["Return"]
    assert "laptop" in [p["KeyName"] for p in
                        ok(api, "alice", {"Action": "DescribeKeyPairs"})["KeyPairs"]]  # fmt: skip

    out = ok(api, "alice", {"Action": "DeleteKeyPair", "KeyPairId": "dev:made"})
    assert out == {"Return": True, "KeyPairId": "dev:made", "ResponseMetadata": out[
        "ResponseMetadata"]}  # fmt: skip
    assert ok(api, "alice", {"Action": "DeleteKeyPair", "KeyName": "made"})["Return"]
    names = [p["KeyName"] for p in ok(api, "alice", {"Action": "DescribeKeyPairs"})["KeyPairs"]]
    assert names == ["laptop"]


# --- images -------------------------------------------------------------------------------


def user_bucket(api, s3, account, name, key, data):
    """A bucket of an account (as the S3 gateway records it) holding one object."""
    s3.raw.create_bucket(Bucket=name)
    s3.raw.put_object(Bucket=name, Key=key, Body=data)
    with api.store.transaction() as tx:
        tx.table("buckets").insert({"id": name, "account": account, "user": "x", "bytes": 0,
                                    "writes": {}})  # fmt: skip


def images_of(api, user, **params):
    out = ok(api, user, {"Action": "DescribeImages", **params})
    return {i["ImageId"]: i for i in out["Images"]}


def test_register_an_image_uploaded_to_walrus(api, s3):
    data = b"QFI\xfb" + b"\x01" * 5000
    sha256 = hashlib.sha256(data).hexdigest()
    user_bucket(api, s3, "dev", "alice-uploads", "disks/web.qcow2", data)
    params = {"Action": "RegisterImage", "ImageLocation": "alice-uploads/disks/web.qcow2",
              "Name": "web", "KernelId": EKI, "RamdiskId": ERI, "Description": "a web server",
              "Architecture": "x86_64"}  # fmt: skip
    # another account cannot register alice's object; nothing is copied
    code, message = error(api, "bob", params)
    assert code == "InvalidParameterValue" and "alice-uploads/disks/web.qcow2" in message
    assert walrus.head_object(s3.walrus, walrus.IMAGES, sha256) is None

    emi = ok(api, "alice", params)["ImageId"]
    head = walrus.head_object(s3.walrus, walrus.IMAGES, sha256)
    assert head["ContentLength"] == len(data) and head["Metadata"] == {"sha256": sha256}
    staged = s3.raw.list_objects_v2(Bucket=walrus.IMAGES, Prefix="staging/").get("KeyCount")
    assert staged == 0
    with api.store.snapshot() as snap:
        record = snap.table("images").get(emi)
    assert (record["sha256"], record["size"], record["format"]) == (sha256, len(data), "qcow2")

    mine = images_of(api, "alice")
    assert set(mine) == {EMI, EKI, ERI, emi}
    image = mine[emi]
    assert (image["Name"], image["ImageType"], image["Public"], image["OwnerId"]) == (
        "web", "machine", False, api.numbers["dev"])  # fmt: skip
    assert (image["KernelId"], image["RamdiskId"], image["ImageLocation"]) == (
        EKI, ERI, "alice-uploads/disks/web.qcow2")  # fmt: skip
    assert mine[EKI]["ImageType"] == "kernel" and mine[EMI]["Public"] is True
    assert set(images_of(api, "alice", **{"Owner.1": "self"})) == {emi}
    assert set(images_of(api, "alice", **{"Owner.1": api.numbers["admin"]})) == {EMI, EKI, ERI}
    assert set(images_of(api, "alice", **{"ExecutableBy.1": "all"})) == {EMI, EKI, ERI}
    for name, value, expected in (("name", "w*", {emi}), ("image-type", "kernel", {EKI}),
                                  ("is-public", "false", {emi}), ("state", "available",
                                                                  {EMI, EKI, ERI, emi}),
                                  ("owner-id", api.numbers["dev"], {emi}),
                                  ("image-id", EMI, {EMI})):  # fmt: skip
        found = images_of(api, "alice", **{"Filter.1.Name": name, "Filter.1.Value.1": value})
        assert set(found) == expected, name

    # the launch takes the new image
    [instance] = run(api, ImageId=emi)["Instances"]
    assert instance["ImageId"] == emi
    wait_state(api, "alice", instance["InstanceId"], "running")

    # bob sees the public images only, and none of alice's
    assert set(images_of(api, "bob")) == {EMI, EKI, ERI}
    for params_, code in (({"Action": "DescribeImages", "ImageId.1": emi}, "InvalidAMIID.NotFound"),
                          ({"Action": "DeregisterImage", "ImageId": emi}, "InvalidAMIID.NotFound"),
                          ({"Action": "DeregisterImage", "ImageId": EMI}, "InvalidAMIID.NotFound"),
                          ({"Action": "RunInstances", "ImageId": emi, "MinCount": "1",
                            "MaxCount": "1"}, "InvalidAMIID.NotFound")):  # fmt: skip
        assert error(api, "bob", params_)[0] == code, params_

    for change, code in (({"Name": "web"}, "InvalidAMIName.Duplicate"),
                         ({"Name": "x", "ImageLocation": "alice-uploads/nope"},
                          "InvalidParameterValue"),
                         ({"Name": "x", "ImageLocation": "nobucket"}, "InvalidParameterValue"),
                         ({"Name": "x", "KernelId": "eki-0000ffff"}, "InvalidAMIID.NotFound"),
                         ({"Name": "x", "KernelId": ERI}, "InvalidAMIID.Malformed"),
                         ({"Name": "x", "Architecture": "arm64"}, "InvalidParameterValue")):  # fmt: skip
        assert error(api, "alice", {**params, **change})[0] == code, change
    Quotas(api.store).set("dev", "ec2:quota-imagenumber", 1)
    code, message = error(api, "alice", {**params, "Name": "second"})
    assert code == "ResourceLimitExceeded" and "ec2:quota-imagenumber" in message

    assert ok(api, "alice", {"Action": "DeregisterImage", "ImageId": emi})["Return"]
    assert walrus.head_object(s3.walrus, walrus.IMAGES, sha256) is None
    assert error(api, "alice", {"Action": "DescribeImages", "ImageId.1": emi})[0] == (
        "InvalidAMIID.NotFound")  # fmt: skip

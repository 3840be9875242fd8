"""End to end through the EC2 API (issue 11): a non-admin user drives the whole life of an
instance on the shared cloud-in-a-box with boto3, another account sees and touches none of it,
quotas hold under concurrent launches, and awscli does a shorter round.

The API is the real `cloudctl api serve` of the ops cloud over TLS (tests/integration/
api_fixtures.py); users and keys come from `cloudctl account/user/user key create`. Every step
is checked through Describe*. SSH reaches the guest through the lab host (the instance network
lives inside it), with the guest's host keys taken from its console (GetConsoleOutput), as an
EC2 user does.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from pathlib import Path

import paramiko
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudctl.hostkeys import HostKey, console_host_keys
from tests.conftest import poll
from tests.integration.cloud_client import UnknownHostKey, guest_ssh, in_host

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def cached_images_removed(ops_cloud):
    """The images these tests register and deregister stay in the NC's cache: the shared
    cloud's later tests expect a reconcile to find no drift, so the module removes them."""
    yield
    ops_cloud.cloudctl("reconcile", "--fix", ok=False)


ZONE = "zone-a"
MARKER = "api-lifecycle-5d1c"
SSH_DEADLINE = 300  # a TCG guest boots, gets its address by DHCP and starts dropbear
STATE_DEADLINE = 180
QUOTA = 4


def error_code(call, **kwargs) -> str | None:
    """The EC2 error code a call answers, None when it succeeds."""
    try:
        call(**kwargs)
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return None


def code_of(call, **kwargs) -> str:
    """The EC2 error code a refused call answers."""
    code = error_code(call, **kwargs)
    assert code is not None, f"{call.__name__} {kwargs} succeeded"
    return code


def instance_of(ec2, iid: str) -> dict:
    [reservation] = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
    [instance] = reservation["Instances"]
    return instance


def wait_instance(ec2, iid: str, state: str) -> dict:
    def reached():
        instance = instance_of(ec2, iid)
        now = instance["State"]["Name"]
        assert now == state or now not in ("terminated", "stopped"), instance
        return instance if now == state else None

    return poll(reached, f"{iid} {state}", deadline_s=STATE_DEADLINE, interval_s=1)


def wait_volume(ec2, vid: str, check) -> dict:
    def reached():
        [volume] = ec2.describe_volumes(VolumeIds=[vid])["Volumes"]
        assert volume["State"] != "error", volume
        return volume if check(volume) else None

    return poll(reached, f"volume {vid}", deadline_s=STATE_DEADLINE, interval_s=1)


def key_pair(directory: Path) -> tuple[Path, str]:
    """A new ed25519 key: (its private key file, its OpenSSH public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / "alice.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)  # fmt: skip
    return path, public.decode()


def guest(api, ec2, iid: str, ip: str, key: Path, command: str) -> str:
    """Run a command in the instance over SSH; retry while it boots. The guest's host keys
    are the ones it printed on its console."""
    keys: list[HostKey] = []
    errors: list[BaseException] = []

    def attempt():
        nonlocal keys
        try:
            return [guest_ssh(api.cloud.inventory, api.cloud.host, ip, keys, key, command)]
        except UnknownHostKey:  # its SSH server answers: its keys are on the console by now
            keys = console_host_keys(ec2.get_console_output(InstanceId=iid).get("Output", ""))
        except paramiko.BadHostKeyException as exc:  # never accepted: looked up again
            errors.append(exc)
            keys = []
        except (OSError, paramiko.SSHException, EOFError) as exc:
            errors.append(exc)
        return None

    try:
        return poll(attempt, f"SSH to {iid}", deadline_s=SSH_DEADLINE, interval_s=2)[0]
    except BaseException:
        print(f"last SSH errors: {errors[-3:]!r}")
        raise


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the life of an instance, with boto3 ----------------------------------------------------


def test_instance_life_through_boto3(ops_api, tmp_path):
    api = ops_api
    ec2, s3 = api.ec2("dev"), api.s3("dev")
    tiny = ec2.describe_images(ImageIds=[api.cloud.ids["emi"]])["Images"][0]
    assert tiny["Public"] and tiny["ImageType"] == "machine"

    # an image of alice's own: uploaded to her bucket through S3, registered from there
    bucket = f"dev-images-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(api.cloud.workdir / "root.qcow2"), bucket, "tiny.qcow2")
    emi = ec2.register_image(ImageLocation=f"{bucket}/tiny.qcow2", Name="alice-tiny",
                             KernelId=tiny["KernelId"], RamdiskId=tiny["RamdiskId"])["ImageId"]  # fmt: skip
    [image] = ec2.describe_images(Owners=["self"])["Images"]
    assert (image["ImageId"], image["Public"], image["ImageLocation"]) == (
        emi, False, f"{bucket}/tiny.qcow2")  # fmt: skip

    # a key pair and a group that lets SSH in
    key, public = key_pair(tmp_path)
    imported = ec2.import_key_pair(KeyName="alice-key", PublicKeyMaterial=public.encode())
    [described] = ec2.describe_key_pairs(KeyNames=["alice-key"])["KeyPairs"]
    assert described["KeyFingerprint"] == imported["KeyFingerprint"]
    sg = ec2.create_security_group(GroupName="web", Description="ssh in")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])  # fmt: skip

    # run: pending at once, then running
    reservation = ec2.run_instances(
        ImageId=tiny["ImageId"], MinCount=1, MaxCount=1, InstanceType="m1.small",
        KeyName="alice-key", SecurityGroupIds=[sg], Placement={"AvailabilityZone": ZONE},
        UserData="#!/bin/sh\necho hello\n",
    )  # fmt: skip
    [launched] = reservation["Instances"]
    iid = launched["InstanceId"]
    assert launched["State"]["Name"] == "pending"
    assert reservation["OwnerId"] == ec2.describe_security_groups(GroupIds=[sg])[
        "SecurityGroups"][0]["OwnerId"]  # fmt: skip
    running = wait_instance(ec2, iid, "running")
    ip = running["PrivateIpAddress"]
    assert (running["KeyName"], running["ImageId"], running["Placement"]["AvailabilityZone"]) == (
        "alice-key", tiny["ImageId"], ZONE)  # fmt: skip
    assert [g["GroupId"] for g in running["SecurityGroups"]] == [sg]

    # SSH in with the key pair; the guest is the instance
    assert guest(api, ec2, iid, ip, key, "hostname").strip() == iid

    # a volume, attached, written from the guest by its id, detached
    vid = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    wait_volume(ec2, vid, lambda v: v["State"] == "available")
    attached = ec2.attach_volume(VolumeId=vid, InstanceId=iid, Device="/dev/vdb")
    assert attached["State"] == "attaching"
    wait_volume(ec2, vid, lambda v: v["Attachments"] and v["Attachments"][0]["State"] == "attached")
    assert [m["Ebs"]["VolumeId"] for m in instance_of(ec2, iid)["BlockDeviceMappings"]] == [vid]
    link = f"/dev/disk/by-id/virtio-{vid}"
    wait_link = f"i=0; while [ ! -e {link} ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; "
    guest(api, ec2, iid, ip, key, wait_link + f"printf '{MARKER}' > {link} && sync")
    backing = f"/var/lib/cloud/sc/volumes/{vid}.img"
    assert in_host(api.cloud.host, "head", "-c", str(len(MARKER)), backing).stdout == MARKER
    ec2.detach_volume(VolumeId=vid)
    wait_volume(ec2, vid, lambda v: v["State"] == "available" and not v["Attachments"])

    # a snapshot of it
    sid = ec2.create_snapshot(VolumeId=vid, Description="lifecycle")["SnapshotId"]
    poll(lambda: ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"]
         == "completed", f"snapshot {sid} completed", deadline_s=STATE_DEADLINE, interval_s=1)  # fmt: skip

    # tags, and found by them
    ec2.create_tags(Resources=[iid, vid, sid], Tags=[{"Key": "project", "Value": "lifecycle"}])
    by_tag = [{"Name": "tag:project", "Values": ["life*"]}]
    assert [i["InstanceId"] for r in ec2.describe_instances(Filters=by_tag)["Reservations"]
            for i in r["Instances"]] == [iid]  # fmt: skip
    assert [v["VolumeId"] for v in ec2.describe_volumes(Filters=by_tag)["Volumes"]] == [vid]
    assert [s["SnapshotId"] for s in
            ec2.describe_snapshots(OwnerIds=["self"], Filters=by_tag)["Snapshots"]] == [sid]  # fmt: skip
    tagged = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["project"]}])["Tags"]
    assert sorted(t["ResourceId"] for t in tagged) == sorted([iid, vid, sid])

    # an elastic IP, associated
    address = ec2.allocate_address(Domain="vpc")
    allocation, public_ip = address["AllocationId"], address["PublicIp"]
    association = ec2.associate_address(AllocationId=allocation, InstanceId=iid)["AssociationId"]
    [shown] = ec2.describe_addresses(AllocationIds=[allocation])["Addresses"]
    assert (shown["PublicIp"], shown["InstanceId"]) == (public_ip, iid)
    assert instance_of(ec2, iid)["PublicIpAddress"] == public_ip

    # while all of it exists: another account sees none of it and can touch none of it
    check_isolation(api, iid=iid, vid=vid, sid=sid, emi=emi, sg=sg, allocation=allocation,
                    association=association, bucket=bucket)  # fmt: skip

    ec2.disassociate_address(AssociationId=association)
    [shown] = ec2.describe_addresses(AllocationIds=[allocation])["Addresses"]
    assert "InstanceId" not in shown and "PublicIpAddress" not in instance_of(ec2, iid)
    ec2.release_address(AllocationId=allocation)
    assert code_of(ec2.describe_addresses, AllocationIds=[allocation]) == (
        "InvalidAllocationID.NotFound")  # fmt: skip

    # terminate; the instance stays visible, terminated
    out = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"]
    assert [(c["PreviousState"]["Name"], c["CurrentState"]["Name"]) for c in out] == [
        ("running", "shutting-down")]  # fmt: skip
    wait_instance(ec2, iid, "terminated")

    # delete the rest
    ec2.delete_volume(VolumeId=vid)
    poll(lambda: error_code(ec2.describe_volumes, VolumeIds=[vid]) == "InvalidVolume.NotFound",
         f"volume {vid} deleted", deadline_s=STATE_DEADLINE, interval_s=1)  # fmt: skip
    ec2.delete_snapshot(SnapshotId=sid)
    assert code_of(ec2.describe_snapshots, SnapshotIds=[sid]) == "InvalidSnapshot.NotFound"
    ec2.delete_key_pair(KeyName="alice-key")
    assert code_of(ec2.describe_key_pairs, KeyNames=["alice-key"]) == "InvalidKeyPair.NotFound"
    ec2.delete_security_group(GroupId=sg)
    ec2.deregister_image(ImageId=emi)
    assert code_of(ec2.describe_images, ImageIds=[emi]) == "InvalidAMIID.NotFound"
    s3.delete_object(Bucket=bucket, Key="tiny.qcow2")
    s3.delete_bucket(Bucket=bucket)
    assert instance_of(ec2, iid)["State"] == {"Code": 48, "Name": "terminated"}


def check_isolation(api, *, iid, vid, sid, emi, sg, allocation, association, bucket) -> None:
    """Account `other` lists none of dev's resources, gets EC2's NotFound code for each of
    their ids, cannot act on any of them, and nothing changes."""
    ec2 = api.ec2("other")
    ec2.describe_security_groups()  # other's default group is made on first use
    before = digest(api.state)

    assert ec2.describe_instances()["Reservations"] == []
    assert ec2.describe_volumes()["Volumes"] == []
    assert ec2.describe_snapshots()["Snapshots"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert ec2.describe_tags()["Tags"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == [
        "default"]  # fmt: skip
    assert emi not in [i["ImageId"] for i in ec2.describe_images()["Images"]]
    for call, kwargs, code in (
        (ec2.describe_instances, {"InstanceIds": [iid]}, "InvalidInstanceID.NotFound"),
        (ec2.describe_volumes, {"VolumeIds": [vid]}, "InvalidVolume.NotFound"),
        (ec2.describe_snapshots, {"SnapshotIds": [sid]}, "InvalidSnapshot.NotFound"),
        (ec2.describe_images, {"ImageIds": [emi]}, "InvalidAMIID.NotFound"),
        (ec2.describe_key_pairs, {"KeyNames": ["alice-key"]}, "InvalidKeyPair.NotFound"),
        (ec2.describe_security_groups, {"GroupIds": [sg]}, "InvalidGroup.NotFound"),
        (ec2.describe_addresses, {"AllocationIds": [allocation]}, "InvalidAllocationID.NotFound"),
        (ec2.terminate_instances, {"InstanceIds": [iid]}, "InvalidInstanceID.NotFound"),
        (ec2.stop_instances, {"InstanceIds": [iid]}, "InvalidInstanceID.NotFound"),
        (ec2.get_console_output, {"InstanceId": iid}, "InvalidInstanceID.NotFound"),
        (ec2.attach_volume, {"VolumeId": vid, "InstanceId": iid, "Device": "/dev/vdc"},
         "InvalidVolume.NotFound"),
        (ec2.delete_volume, {"VolumeId": vid}, "InvalidVolume.NotFound"),
        (ec2.create_volume, {"SnapshotId": sid, "AvailabilityZone": ZONE},
         "InvalidSnapshot.NotFound"),
        (ec2.delete_snapshot, {"SnapshotId": sid}, "InvalidSnapshot.NotFound"),
        (ec2.deregister_image, {"ImageId": emi}, "InvalidAMIID.NotFound"),
        (ec2.run_instances, {"ImageId": emi, "MinCount": 1, "MaxCount": 1},
         "InvalidAMIID.NotFound"),
        (ec2.delete_security_group, {"GroupId": sg}, "InvalidGroup.NotFound"),
        (ec2.authorize_security_group_ingress, {"GroupId": sg, "IpPermissions": [
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
             "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}, "InvalidGroup.NotFound"),
        (ec2.associate_address, {"AllocationId": allocation, "InstanceId": iid},
         "InvalidAllocationID.NotFound"),
        (ec2.disassociate_address, {"AssociationId": association},
         "InvalidAssociationID.NotFound"),
        (ec2.release_address, {"AllocationId": allocation}, "InvalidAllocationID.NotFound"),
        (ec2.create_tags, {"Resources": [iid], "Tags": [{"Key": "k", "Value": "v"}]},
         "InvalidInstanceID.NotFound"),
        (ec2.register_image, {"ImageLocation": f"{bucket}/tiny.qcow2", "Name": "stolen"},
         "InvalidParameterValue"),
    ):  # fmt: skip
        assert code_of(call, **kwargs) == code, (call.__name__, kwargs)
    # a key pair is named per account: deleting "alice-key" deletes other's (there is none)
    ec2.delete_key_pair(KeyName="alice-key")
    # and other's S3 keys cannot read dev's bucket
    s3 = api.s3("other")
    assert code_of(s3.get_object, Bucket=bucket, Key="tiny.qcow2") == "AccessDenied"
    assert digest(api.state) == before, "a refused request of another account changed the state"


# --- quotas under concurrent launches ---------------------------------------------------


def test_concurrent_launches_stop_at_the_quota(ops_api):
    api = ops_api
    api.cloud.cloudctl("quota", "set", "other", "ec2:quota-vminstancenumber", str(QUOTA))
    ec2 = api.ec2("other")
    emi = api.cloud.ids["emi"]
    results: list[dict | ClientError] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def launch():
        client = api.ec2("other")  # a client per thread, as boto3 wants
        start.wait()
        try:
            result = client.run_instances(ImageId=emi, MinCount=1, MaxCount=1)
        except ClientError as exc:
            result = exc
        with lock:
            results.append(result)

    threads = [threading.Thread(target=launch) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    launched = [r["Instances"][0]["InstanceId"] for r in results if isinstance(r, dict)]
    refused = [r.response["Error"] for r in results if isinstance(r, ClientError)]
    try:
        assert len(launched) == QUOTA and len(refused) == 10 - QUOTA, refused
        for error in refused:
            assert error["Code"] == "ResourceLimitExceeded", error
            assert "ec2:quota-vminstancenumber" in error["Message"], error
        listed = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                  for i in r["Instances"]]  # fmt: skip
        assert sorted(listed) == sorted(launched)
    finally:
        # a launch is terminated once its play is done (terminating a pending instance would
        # race its own launch play)
        for iid in launched:
            wait_instance(ec2, iid, "running")
        if launched:
            ec2.terminate_instances(InstanceIds=launched)
        for iid in launched:
            wait_instance(ec2, iid, "terminated")
        api.cloud.cloudctl("quota", "set", "other", "ec2:quota-vminstancenumber", "none")


# --- awscli -----------------------------------------------------------------------------


def test_awscli_registers_runs_and_terminates(ops_api):
    api = ops_api
    tiny = api.aws("dev", "ec2", "describe-images", "--image-ids", api.cloud.ids["emi"])
    [tiny] = tiny["Images"]
    bucket = f"dev-cli-{secrets.token_hex(3)}"
    api.aws("dev", "s3", "mb", f"s3://{bucket}")
    api.aws("dev", "s3", "cp", str(api.cloud.workdir / "root.qcow2"), f"s3://{bucket}/disk.qcow2")
    emi = api.aws("dev", "ec2", "register-image", "--image-location", f"{bucket}/disk.qcow2",
                  "--name", "cli-disk", "--kernel-id", tiny["KernelId"],
                  "--ramdisk-id", tiny["RamdiskId"])["ImageId"]  # fmt: skip
    mine = api.aws("dev", "ec2", "describe-images", "--owners", "self")["Images"]
    assert [(i["ImageId"], i["Name"]) for i in mine] == [(emi, "cli-disk")]

    out = api.aws("dev", "ec2", "run-instances", "--image-id", emi, "--count", "1",
                  "--instance-type", "m1.small", "--tag-specifications",
                  "ResourceType=instance,Tags=[{Key=Name,Value=cli}]")  # fmt: skip
    [instance] = out["Instances"]
    iid = instance["InstanceId"]
    assert instance["State"]["Name"] == "pending" and instance["ImageId"] == emi

    def state() -> str:
        out = api.aws("dev", "ec2", "describe-instances", "--filters", "Name=tag:Name,Values=cli",
                      "--query", "Reservations[].Instances[].[InstanceId,State.Name]")  # fmt: skip
        assert len(out) == 1 and out[0][0] == iid, out
        return out[0][1]

    poll(lambda: state() == "running", f"{iid} running", deadline_s=STATE_DEADLINE, interval_s=2)
    out = api.aws("dev", "ec2", "terminate-instances", "--instance-ids", iid)
    assert out["TerminatingInstances"][0]["CurrentState"]["Name"] == "shutting-down"
    poll(lambda: state() == "terminated", f"{iid} terminated", deadline_s=STATE_DEADLINE,
         interval_s=2)  # fmt: skip
    proc = api.aws("dev", "ec2", "describe-instances", "--instance-ids", "i-00000000", ok=False)
    assert proc.returncode == 254 and "(InvalidInstanceID.NotFound)" in proc.stderr

    api.aws("dev", "ec2", "deregister-image", "--image-id", emi)
    api.aws("dev", "s3", "rb", "--force", f"s3://{bucket}")

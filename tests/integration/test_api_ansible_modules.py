"""Ansible users' own cloud modules against the cloud's API (issue 11).

amazon.aws's EC2 modules (ec2_key, ec2_security_group, ec2_instance, ec2_eip, ec2_vol,
ec2_snapshot, ec2_tag) and S3 modules (s3_bucket, s3_object) from PyPI's `ansible` package,
run by ansible-playbook against the shared ops cloud's API (tests/integration/api_fixtures.py)
as the user alice of account dev: each creates, runs again unchanged, deletes and deletes
again unchanged (ansible_aws/amazon_aws_modules.yml asserts it). ec2_instance and ec2_eip
find the cloud's network through the default VPC facade (cloudctl/api/actions/vpc.py). One
instance boots; about two minutes under TCG.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.integration.cloud_client import BIN

pytestmark = pytest.mark.integration
PLAYBOOK = Path(__file__).parent / "ansible_aws" / "amazon_aws_modules.yml"
PREFIX = "ansible"  # the names the playbook gives what it makes: ansible-key, ansible-vm...
ACCOUNT = "dev"


def test_amazon_aws_modules_create_rerun_delete(ops_api, tmp_path):
    user = ops_api.users[ACCOUNT]
    public_key = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    note = tmp_path / "readme.txt"
    note.write_text("made by amazon.aws.s3_object\n")
    extra_vars = tmp_path / "vars.json"
    extra_vars.write_text(json.dumps({
        "api_endpoint": ops_api.endpoint, "api_ca": str(ops_api.ca),
        "api_access_key": user.access_key_id, "api_secret_key": user.secret_access_key,
        "api_region": ops_api.region, "test_image": ops_api.cloud.ids["emi"],
        "test_zone": "zone-a", "name_prefix": PREFIX, "public_key": public_key,
        "object_file": str(note),
    }))  # fmt: skip
    extra_vars.chmod(0o600)
    # Nothing of the machine's AWS settings; localhost is the implicit one (the venv's Python).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env |= {"ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1"}
    try:
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-e", f"@{extra_vars}", str(PLAYBOOK)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    finally:
        remove_leftovers(ops_api)
    # What the playbook left behind, as the API shows it: nothing of it.
    ec2 = ops_api.ec2(ACCOUNT)
    named = [{"Name": "tag:Name", "Values": [f"{PREFIX}-*"]}]
    live = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=named)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    assert live == []
    assert ec2.describe_volumes(Filters=named)["Volumes"] == []
    assert [g for g in ec2.describe_security_groups()["SecurityGroups"]
            if g["GroupName"].startswith(PREFIX)] == []  # fmt: skip
    assert [k for k in ec2.describe_key_pairs()["KeyPairs"]
            if k["KeyName"].startswith(PREFIX)] == []  # fmt: skip
    buckets = ops_api.s3(ACCOUNT).list_buckets()["Buckets"]
    assert [b for b in buckets if b["Name"].startswith(PREFIX)] == []


def remove_leftovers(ops_api) -> None:
    """What a failed run left of the playbook's resources, removed so that the shared cloud
    serves the next tests (each step on its own: one failure does not keep the rest)."""
    ec2, s3 = ops_api.ec2(ACCOUNT), ops_api.s3(ACCOUNT)
    named = [{"Name": "tag:Name", "Values": [f"{PREFIX}-*"]}]

    def attempt(call, **kwargs):
        try:
            return call(**kwargs)
        except ClientError:
            return None

    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=named)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]
    for address in ec2.describe_addresses()["Addresses"]:
        if address.get("InstanceId") in instances:
            attempt(ec2.disassociate_address, AssociationId=address["AssociationId"])
            attempt(ec2.release_address, AllocationId=address["AllocationId"])
    if instances:
        attempt(ec2.terminate_instances, InstanceIds=instances)
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=instances, WaiterConfig={"Delay": 2, "MaxAttempts": 150}
        )
    for volume in ec2.describe_volumes(Filters=named)["Volumes"]:
        for snapshot in ec2.describe_snapshots(
            Filters=[{"Name": "volume-id", "Values": [volume["VolumeId"]]}]
        )["Snapshots"]:
            attempt(ec2.delete_snapshot, SnapshotId=snapshot["SnapshotId"])
        attempt(ec2.delete_volume, VolumeId=volume["VolumeId"])
    attempt(ec2.delete_security_group, GroupName=f"{PREFIX}-ssh")
    attempt(ec2.delete_key_pair, KeyName=f"{PREFIX}-key")
    bucket = f"{PREFIX}-bucket"
    listed = attempt(s3.list_objects_v2, Bucket=bucket) or {}
    for item in listed.get("Contents", []):
        attempt(s3.delete_object, Bucket=bucket, Key=item["Key"])
    attempt(s3.delete_bucket, Bucket=bucket)

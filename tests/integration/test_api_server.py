"""`cloudctl api serve` for real: gunicorn over TLS on loopback, driven by boto3 and awscli.

The cloud is a state and a cloud configuration only (these actions read nothing else), so no
lab host is needed: a CA and the server's certificate are made here, the user and its keys
by `cloudctl user credentials` / `cloudctl user key create`, as an operator would.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import boto3
import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import poll
from tests.integration.cloud_client import BIN
from tests.unit.helpers import TEST_CLOUD_ID, init_state

pytestmark = pytest.mark.integration
AWS = Path("/usr/bin/aws")  # Debian's awscli (scripts/setup.sh)
REGION = "eucalyptus"  # the default region of a cloud configuration


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, key, signer, extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("test CA", "test CA", ca_key, ca_key, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                       content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, encipher_only=False,
                       decipher_only=False), True),
    ])  # fmt: skip
    cert = certificate("127.0.0.1", "test CA", key, ca_key, [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ])  # fmt: skip
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def api_serving(
    argv: list[str], env: dict[str, str], port: int, log: Path, deadline_s: float = 30
) -> Iterator[subprocess.Popen]:
    """A real `cloudctl ... api serve` process (argv: the arguments after cloudctl), once it
    listens on 127.0.0.1:port; its output in `log`; stopped by its PID (SIGTERM, then KILL)."""
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(BIN / "cloudctl"), *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:

        def listening() -> bool:
            assert server.poll() is None, log.read_text()
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        poll(listening, "the API listening", deadline_s=deadline_s, interval_s=0.1)
        yield server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def api_cloud(tmp_path):
    """A cloud (state + configuration) with a user's credentials files and the admin's key,
    and its API served by `cloudctl api serve` over TLS: yields a namespace of all that."""
    ca, cert, key = make_tls(tmp_path)
    port = free_port()
    endpoint = f"https://127.0.0.1:{port}/"
    config = tmp_path / "cloud.yml"
    config.write_text(yaml.safe_dump({
        "cloud_name": "apitest", "cloud_id": TEST_CLOUD_ID,
        "clusters": {"zone-a": {"subnet": "172.31.0.0/24", "bridge": "cloudbr0",
                                "gateway": "172.31.0.1", "cc": "cc1",
                                "nodes": {"nc1": {"vcpus": 4, "memory_mb": 4096}}}},
        "instance_types": [{"name": "m1.small", "cpus": 1, "memory_mb": 512, "disk_gb": 5},
                           {"name": "m1.large", "cpus": 2, "memory_mb": 2048, "disk_gb": 10}],
        "walrus": {"endpoint": "http://127.0.0.1:1", "access_key": "a", "secret_key": "s"},
        "api": {"endpoint": endpoint, "ca_file": str(ca)},
    }))  # fmt: skip
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts: {}\n")
    home = tmp_path / "home"
    state = init_state(home / "state.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDCTL_", "AWS_"))}
    env |= {"CLOUDCTL_INVENTORY": str(inventory), "CLOUDCTL_HOME": str(home),
            "CLOUDCTL_CONFIG": str(config), "HOME": str(tmp_path)}  # fmt: skip

    def cloudctl(*args: str) -> str:
        proc = subprocess.run([str(BIN / "cloudctl"), *args], env=env, capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    cloudctl("account", "create", "dev")
    cloudctl("user", "create", "dev/alice")
    creds_dir = tmp_path / "alice"
    cloudctl("user", "credentials", "dev/alice", "--output-dir", str(creds_dir))
    [admin_key] = json.loads(cloudctl("user", "key", "create", "admin/admin", "-o", "json"))

    log = tmp_path / "api.log"
    argv = ["api", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "2",
            "--certfile", str(cert), "--keyfile", str(key)]  # fmt: skip
    with api_serving(argv, env, port, log) as server:
        yield SimpleNamespace(
            endpoint=endpoint, ca=ca, creds_dir=creds_dir, admin_key=admin_key, state=state,
            log=log, env=env, server=server,
        )  # fmt: skip


def alice_keys(creds_dir: Path) -> tuple[str, str]:
    parser = configparser.ConfigParser()
    parser.read(creds_dir / "credentials")
    section = parser["dev-alice"]
    return section["aws_access_key_id"], section["aws_secret_access_key"]


def ec2_client(cloud, key_id: str, secret: str):
    return boto3.client(
        "ec2", region_name=REGION, endpoint_url=cloud.endpoint, verify=str(cloud.ca),
        aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def raw_post(cloud, key_id: str, secret: str, body: str) -> tuple[int, str, str]:
    """A form POST signed by botocore, sent as it is: (status, error code, message)."""
    request = AWSRequest("POST", cloud.endpoint, data=body.encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    SigV4Auth(Credentials(key_id, secret), "ec2", REGION).add_auth(request)
    prepared = request.prepare()
    sent = urllib.request.Request(
        cloud.endpoint, data=prepared.body, headers=dict(prepared.headers), method="POST"
    )
    context = ssl.create_default_context(cafile=str(cloud.ca))
    try:
        with urllib.request.urlopen(sent, context=context, timeout=10) as answer:
            return answer.status, "", answer.read().decode()
    except urllib.error.HTTPError as error:
        root = ElementTree.fromstring(error.read())
        return error.code, root.findtext("Errors/Error/Code"), root.findtext("Errors/Error/Message")


def test_api_server_with_boto3_and_awscli(api_cloud, monkeypatch):
    cloud = api_cloud
    key_id, secret = alice_keys(cloud.creds_dir)
    before = cloud.state.read_bytes()

    # boto3 through the profile `cloudctl user credentials` wrote: keys, region, CA (and the
    # endpoint, given explicitly too: a client that missed it would look for AWS's)
    assert f"endpoint_url = {cloud.endpoint}" in (cloud.creds_dir / "config").read_text()
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(cloud.creds_dir / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cloud.creds_dir / "config"))
    ec2 = boto3.Session(profile_name="dev-alice").client(
        "ec2", endpoint_url=cloud.endpoint, config=Config(retries={"max_attempts": 1})
    )
    regions = ec2.describe_regions()["Regions"]
    assert regions == [{"RegionName": REGION, "Endpoint": cloud.endpoint,
                        "OptInStatus": "opt-in-not-required"}]  # fmt: skip
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["State"]) for z in zones] == [("zone-a", "available")]
    attributes = ec2.describe_account_attributes()["AccountAttributes"]
    [vpc] = ec2.describe_vpcs()["Vpcs"]  # the default VPC facade
    assert {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
            for a in attributes} == {
        "supported-platforms": ["EC2", "VPC"], "default-vpc": [vpc["VpcId"]],
    }  # fmt: skip
    types = ec2.describe_instance_types(MaxResults=5)["InstanceTypes"]
    assert {(t["InstanceType"], t["VCpuInfo"]["DefaultVCpus"], t["MemoryInfo"]["SizeInMiB"])
            for t in types} == {("m1.small", 1, 512), ("m1.large", 2, 2048)}  # fmt: skip
    admin = ec2_client(
        cloud, cloud.admin_key["access_key_id"], cloud.admin_key["secret_access_key"]
    )
    verbose = admin.describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    assert ("|- m1.small", "0004 / 0004    1   512     5") in [
        (z["ZoneName"], z["State"]) for z in verbose
    ]

    # awscli (Debian's), with the credentials files and the endpoint and CA on its command line
    aws_env = cloud.env | {
        "AWS_SHARED_CREDENTIALS_FILE": str(cloud.creds_dir / "credentials"),
        "AWS_CONFIG_FILE": str(cloud.creds_dir / "config"),
        "AWS_PROFILE": "dev-alice", "AWS_PAGER": "",
    }  # fmt: skip
    proc = subprocess.run(
        [str(AWS), "ec2", "describe-regions", "--endpoint-url", cloud.endpoint,
         "--ca-bundle", str(cloud.ca), "--output", "json"],
        env=aws_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Regions"][0]["RegionName"] == REGION
    proc = subprocess.run(
        [str(AWS), "ec2", "describe-instance-types", "--instance-types", "m9.huge",
         "--endpoint-url", cloud.endpoint, "--ca-bundle", str(cloud.ca)],
        env=aws_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 254 and "(InvalidInstanceType)" in proc.stderr, proc.stderr

    # errors: EC2's codes, and nothing changes
    with pytest.raises(ClientError) as caught:
        ec2_client(cloud, key_id, "not-the-secret").describe_regions()
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as caught:
        ec2_client(cloud, "AKINOSUCHKEY0000000X", secret).describe_regions()
    assert caught.value.response["Error"]["Code"] == "AuthFailure"
    with pytest.raises(ClientError) as caught:
        ec2.describe_instance_types(MaxResults=1000)
    assert caught.value.response["Error"] == {
        "Code": "InvalidParameterValue",
        "Message": "Value (1000) for parameter MaxResults is invalid. "
        "Expecting a value between 5 and 100.",
    }
    assert raw_post(cloud, key_id, secret, "Action=LaunchRockets&Version=2016-11-15")[:2] == (
        400, "InvalidAction",
    )  # fmt: skip
    assert cloud.state.read_bytes() == before

    # SIGTERM stops the service cleanly; its log has one line per request and no secret
    cloud.server.send_signal(signal.SIGTERM)
    assert cloud.server.wait(timeout=20) == 0
    text = cloud.log.read_text()
    assert f"action=DescribeRegions principal=dev/alice key={key_id} status=200" in text
    assert (
        f"action=LaunchRockets principal=dev/alice key={key_id} status=400 code=InvalidAction"
        in text
    )
    assert secret not in text and "Signature=" not in text

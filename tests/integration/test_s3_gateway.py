"""Walrus per account for real: `cloudctl api serve` (gunicorn, TLS) in front of a real SeaweedFS,
driven by boto3 and Debian's awscli with users' own keys.

Accounts, users and keys are made by the Identity service, quotas by the Quotas service, on the
state the server reads. The server forwards to Walrus with the cloud's key; the tests look at
Walrus directly (weed.client(), the cloud's key) to see what really happened there.
"""

from __future__ import annotations

import http.client
import io
import os
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
import yaml
from boto3.s3.transfer import TransferConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from cloudctl import usage
from cloudctl.api import sigv4
from cloudctl.identity import ADMIN, Identity, Principal
from cloudctl.quotas import Quotas
from cloudctl.state import StateStore
from tests.aws_chunked import signed_body
from tests.integration.cloud_client import BIN
from tests.integration.test_api_server import api_serving, make_tls
from tests.unit.helpers import TEST_CLOUD_ID, init_state
from tests.weed import free_port, weed  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration
AWS = Path("/usr/bin/aws")  # Debian's awscli (scripts/setup.sh)
REGION = "eucalyptus"
MiB = 2**20
USERS = {
    "alice": Principal("dev", "alice"),
    "bob": Principal("ops", "bob"),
    "carol": Principal("quota", "carol"),
    "dave": Principal("race", "dave"),
}


@pytest.fixture(scope="module")
def cloud(weed, tmp_path_factory):  # noqa: F811 (the weed fixture)
    """A cloud whose Walrus is a real weed, four accounts with a user and a key each, the
    admin's key, and its API and S3 gateway served by `cloudctl api serve` over TLS."""
    tmp = tmp_path_factory.mktemp("s3gw")
    ca, cert, key = make_tls(tmp)
    port = free_port()
    endpoint = f"https://127.0.0.1:{port}/"
    config = tmp / "cloud.yml"
    config.write_text(yaml.safe_dump({
        "cloud_name": "s3test", "cloud_id": TEST_CLOUD_ID, "clusters": {}, "instance_types": [],
        "walrus": {"endpoint": weed.endpoint, "access_key": weed.access_key,
                   "secret_key": weed.secret_key},
        "api": {"endpoint": endpoint, "ca_file": str(ca)},
    }))  # fmt: skip
    config.chmod(0o600)
    inventory = tmp / "inventory.yml"
    inventory.write_text("all:\n  hosts: {}\n")
    home = tmp / "home"
    store = StateStore(init_state(home / "state.json"))
    identity = Identity(store)
    keys = {"admin": identity.create_key(ADMIN)}
    for name, principal in USERS.items():
        identity.create_account(principal.account)
        identity.create_user(principal)
        keys[name] = identity.create_key(principal)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDCTL_", "AWS_"))}
    env |= {"CLOUDCTL_INVENTORY": str(inventory), "CLOUDCTL_HOME": str(home),
            "CLOUDCTL_CONFIG": str(config), "HOME": str(tmp)}  # fmt: skip
    log = tmp / "api.log"
    argv = ["api", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4",
            "--certfile", str(cert), "--keyfile", str(key)]  # fmt: skip
    with api_serving(argv, env, port, log):
        yield SimpleNamespace(endpoint=endpoint, port=port, ca=ca, keys=keys, store=store,
                              walrus=weed.client(), env=env, tmp=tmp, log=log)  # fmt: skip


def s3(cloud, who: str):
    """A boto3 S3 client of a user (path-style addressing, the cloud's CA)."""
    key = cloud.keys[who]
    return boto3.client(
        "s3", endpoint_url=cloud.endpoint, region_name=REGION, verify=str(cloud.ca),
        aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )  # fmt: skip


def error_of(call) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"],
            response["Error"].get("Message", ""))  # fmt: skip


def in_walrus(cloud, bucket: str, key: str | None = None) -> bool:
    try:
        if key is None:
            cloud.walrus.head_bucket(Bucket=bucket)
        else:
            cloud.walrus.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        return False
    return True


def bucket_events(cloud, bucket: str) -> list[tuple[str, int | None]]:
    with cloud.store.snapshot() as snap:
        records = snap.table(usage.TABLE).search(kind="bucket", resource_id=bucket)
    return [(r["event"], r.get("bytes")) for r in sorted(records, key=lambda r: r["at"])]


def test_each_account_has_its_own_buckets(cloud):
    alice, bob, admin = s3(cloud, "alice"), s3(cloud, "bob"), s3(cloud, "admin")
    sent: dict[str, set[str]] = {}  # operation -> the x-amz-content-sha256 boto3 sent

    def note(request, event_name, **kwargs):
        value = request.headers.get("x-amz-content-sha256")
        sent.setdefault(event_name.rpartition(".")[2], set()).add(
            value.decode() if isinstance(value, bytes) else value
        )

    alice.meta.events.register("before-send.s3", note)
    alice.create_bucket(Bucket="dev-data")
    alice.put_object(Bucket="dev-data", Key="notes/hello.txt", Body=b"hello")
    big = os.urandom(9 * MiB)  # past boto3's 8 MiB threshold: a multipart upload of 2 parts
    alice.upload_fileobj(io.BytesIO(big), "dev-data", "big.bin",
                         Config=TransferConfig(multipart_threshold=8 * MiB))  # fmt: skip
    # boto3 over TLS streams with aws-chunked and a CRC32 trailer: the gateway decoded it
    assert sent["PutObject"] == sent["UploadPart"] == {"STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    assert alice.get_object(Bucket="dev-data", Key="big.bin")["Body"].read() == big
    assert alice.get_object(Bucket="dev-data", Key="notes/hello.txt")["Body"].read() == b"hello"
    listed = alice.list_objects_v2(Bucket="dev-data")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("big.bin", 9 * MiB),
                                                       ("notes/hello.txt", 5)]  # fmt: skip
    url = alice.generate_presigned_url(
        "get_object", Params={"Bucket": "dev-data", "Key": "notes/hello.txt"}, ExpiresIn=60
    )
    context = ssl.create_default_context(cafile=str(cloud.ca))
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        assert answer.read() == b"hello"

    # another account: AccessDenied on everything of it, and it does not list it
    denied = ("AccessDenied", 403, "Access Denied")
    assert error_of(lambda: bob.get_object(Bucket="dev-data", Key="notes/hello.txt")) == denied
    assert error_of(lambda: bob.put_object(Bucket="dev-data", Key="x", Body=b"x")) == denied
    assert error_of(lambda: bob.list_objects_v2(Bucket="dev-data")) == denied
    assert error_of(lambda: bob.delete_object(Bucket="dev-data", Key="big.bin")) == denied
    assert error_of(lambda: bob.delete_bucket(Bucket="dev-data")) == denied
    assert error_of(lambda: bob.copy_object(Bucket="dev-data", Key="copy", CopySource={
        "Bucket": "dev-data", "Key": "big.bin"})) == denied  # fmt: skip
    assert error_of(lambda: bob.create_bucket(Bucket="dev-data"))[:2] == (
        "BucketAlreadyExists",
        409,
    )
    assert error_of(lambda: bob.list_objects_v2(Bucket="no-such-bucket"))[:2] == (
        "NoSuchBucket",
        404,
    )
    assert [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["dev-data"]
    assert "dev-data" not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    # a presigned URL of another account's key does not open it either
    bob_url = bob.generate_presigned_url(
        "get_object", Params={"Bucket": "dev-data", "Key": "notes/hello.txt"}, ExpiresIn=60
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bob_url, context=context, timeout=10)
    assert refused.value.code == 403

    # the cloud's buckets are the admin's only
    if not in_walrus(cloud, "images"):
        cloud.walrus.create_bucket(Bucket="images")
    cloud.walrus.put_object(Bucket="images", Key="emi-0000test", Body=b"image")
    assert error_of(lambda: alice.get_object(Bucket="images", Key="emi-0000test")) == denied
    assert error_of(lambda: alice.put_object(Bucket="images", Key="mine", Body=b"x")) == denied
    assert error_of(lambda: alice.list_objects_v2(Bucket="images")) == denied
    assert error_of(lambda: alice.create_bucket(Bucket="images"))[:2] == (
        "BucketAlreadyExists",
        409,
    )
    assert admin.get_object(Bucket="images", Key="emi-0000test")["Body"].read() == b"image"
    assert {"images", "dev-data"} <= {b["Name"] for b in admin.list_buckets()["Buckets"]}
    assert not in_walrus(cloud, "images", "mine") and not in_walrus(cloud, "dev-data", "x")

    # deleting: objects, then the bucket; usage follows every change
    alice.copy_object(Bucket="dev-data", Key="copy.txt",
                      CopySource={"Bucket": "dev-data", "Key": "notes/hello.txt"})  # fmt: skip
    alice.delete_object(Bucket="dev-data", Key="copy.txt")
    alice.delete_objects(Bucket="dev-data", Delete={"Objects": [
        {"Key": "notes/hello.txt"}, {"Key": "big.bin"}]})  # fmt: skip
    alice.delete_bucket(Bucket="dev-data")
    assert not in_walrus(cloud, "dev-data")
    assert bucket_events(cloud, "dev-data") == [
        ("created", None),
        ("stored", 5),
        ("stored", 5 + 9 * MiB),
        ("stored", 10 + 9 * MiB),
        ("stored", 5 + 9 * MiB),
        ("stored", 0),
        ("deleted", None),
    ]
    with cloud.store.snapshot() as snap:
        assert snap.table("buckets").get("dev-data") is None
        creator = snap.table(usage.TABLE).search(resource_id="dev-data")[0]
    assert (creator["account"], creator["user"]) == ("dev", "alice")


class StreamingAuth(S3SigV4Auth):
    """botocore's S3 signer for a signed streaming upload (which botocore never sends itself)."""

    def payload(self, request):
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def test_signed_chunks_and_bodies_are_checked(cloud):
    """An upload whose chunk signature or declared sha256 is wrong is refused and leaves the
    object as it was (Walrus never receives the whole body)."""
    alice = s3(cloud, "alice")
    alice.create_bucket(Bucket="dev-chunks")
    alice.put_object(Bucket="dev-chunks", Key="object", Body=b"version 1")
    key = cloud.keys["alice"]
    credentials = Credentials(key["access_key_id"], key["secret_access_key"])
    url = f"{cloud.endpoint}dev-chunks/object"
    data = os.urandom(200_000)

    def put(auth_class, body: bytes, headers: dict[str, str], chunked=None) -> tuple[int, str]:
        request = AWSRequest("PUT", url, headers=headers)
        auth_class(credentials, "s3", REGION).add_auth(request)
        if chunked is not None:
            amz_date = request.headers["X-Amz-Date"]
            body = signed_body(
                data, 64 * 1024,
                key=sigv4.signing_key(key["secret_access_key"], amz_date[:8], REGION, "s3"),
                amz_date=amz_date, scope=f"{amz_date[:8]}/{REGION}/s3/aws4_request",
                seed=request.headers["Authorization"].rpartition("Signature=")[2], **chunked,
            )  # fmt: skip
        connection = http.client.HTTPSConnection(
            "127.0.0.1", cloud.port, context=ssl.create_default_context(cafile=str(cloud.ca))
        )
        try:
            connection.request("PUT", "/dev-chunks/object", body=body,
                               headers=dict(request.headers.items()))  # fmt: skip
            answer = connection.getresponse()
            text = answer.read().decode()
        finally:
            connection.close()
        code = text.partition("<Code>")[2].partition("</Code>")[0]
        return answer.status, code

    streaming = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))}
    assert put(StreamingAuth, b"", streaming, chunked={"corrupt_chunk": 2}) == (
        403, "SignatureDoesNotMatch",
    )  # fmt: skip
    assert alice.get_object(Bucket="dev-chunks", Key="object")["Body"].read() == b"version 1"

    class WrongHash(S3SigV4Auth):
        def payload(self, request):
            return sigv4.EMPTY_SHA256  # declares an empty body, sends 9 bytes

    assert put(WrongHash, b"version 2", {}) == (400, "XAmzContentSHA256Mismatch")
    assert alice.get_object(Bucket="dev-chunks", Key="object")["Body"].read() == b"version 1"

    class UnsignedTrailer(S3SigV4Auth):
        def payload(self, request):
            return "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    # boto3's own framing (with its CRC32 trailer), one byte short of what it declares
    framed = AwsChunkedWrapper(io.BytesIO(data), Crc32Checksum, "x-amz-checksum-crc32").read()
    trailer = streaming | {"x-amz-trailer": "x-amz-checksum-crc32",
                           "x-amz-decoded-content-length": str(len(data) + 1)}  # fmt: skip
    assert put(UnsignedTrailer, framed, trailer) == (400, "IncompleteBody")
    assert alice.get_object(Bucket="dev-chunks", Key="object")["Body"].read() == b"version 1"
    assert put(StreamingAuth, b"", streaming, chunked={}) == (200, "")
    assert alice.get_object(Bucket="dev-chunks", Key="object")["Body"].read() == data
    alice.delete_object(Bucket="dev-chunks", Key="object")
    alice.delete_bucket(Bucket="dev-chunks")


def test_awscli(cloud):
    """Debian's awscli with the credentials `cloudctl user credentials` writes."""
    creds = cloud.tmp / "alice-creds"
    proc = subprocess.run(
        [str(BIN / "cloudctl"), "user", "credentials", "dev/alice", "--output-dir", str(creds)],
        env=cloud.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "addressing_style = path" in (creds / "config").read_text()  # Walrus: by path
    env = cloud.env | {
        "AWS_SHARED_CREDENTIALS_FILE": str(creds / "credentials"),
        "AWS_CONFIG_FILE": str(creds / "config"), "AWS_PROFILE": "dev-alice", "AWS_PAGER": "",
    }  # fmt: skip
    upload = cloud.tmp / "report.txt"
    upload.write_text("quarterly figures\n")

    def aws(*args: str) -> str:
        proc = subprocess.run(
            [str(AWS), "--endpoint-url", cloud.endpoint, *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert aws("s3", "mb", "s3://dev-cli") == "make_bucket: dev-cli\n"
    assert "upload: " in aws("s3", "cp", str(upload), "s3://dev-cli/reports/q1.txt")
    assert aws("s3", "cp", "s3://dev-cli/reports/q1.txt", "-") == "quarterly figures\n"
    assert aws("s3", "ls", "s3://dev-cli/reports/").split()[-2:] == ["18", "q1.txt"]
    assert "dev-cli" in aws("s3", "ls")
    aws("s3", "rb", "--force", "s3://dev-cli")
    assert not in_walrus(cloud, "dev-cli")


def test_quotas(cloud):
    carol = s3(cloud, "carol")
    quotas = Quotas(cloud.store)
    quotas.set("quota", "s3:quota-bucketnumber", 2)
    quotas.set("quota", "s3:quota-buckettotalsize", 1)  # MB
    carol.create_bucket(Bucket="qa-one")
    carol.create_bucket(Bucket="qa-two")
    assert error_of(lambda: carol.create_bucket(Bucket="qa-three")) == (
        "TooManyBuckets", 400,
        "quota s3:quota-bucketnumber of account quota is 2: 2 in use, 1 more asked",
    )  # fmt: skip
    assert not in_walrus(cloud, "qa-three")

    carol.put_object(Bucket="qa-one", Key="first", Body=b"a" * 600_000)
    code, status, message = error_of(
        lambda: carol.put_object(Bucket="qa-two", Key="second", Body=b"b" * 600_000)
    )
    assert (code, status) == ("QuotaExceeded", 403)
    assert message == "quota s3:quota-buckettotalsize of account quota is 1: 1 in use, 1 more asked"
    assert not in_walrus(cloud, "qa-two", "second")
    # replacing an object by one of the same MB fits: only the growth counts
    carol.put_object(Bucket="qa-one", Key="first", Body=b"c" * 700_000)
    with cloud.store.snapshot() as snap:
        assert snap.table("buckets").get("qa-one")["bytes"] == 700_000


def test_concurrent_creates_respect_the_quota(cloud):
    Quotas(cloud.store).set("race", "s3:quota-bucketnumber", 3)
    results: dict[str, str] = {}

    def create(name: str) -> None:
        try:
            s3(cloud, "dave").create_bucket(Bucket=name)
            results[name] = "created"
        except ClientError as exc:
            results[name] = exc.response["Error"]["Code"]

    names = [f"par-{n}" for n in range(8)]
    threads = [threading.Thread(target=create, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    made = sorted(name for name, result in results.items() if result == "created")
    assert len(made) == 3 and sorted(results.values()).count("TooManyBuckets") == 5, results
    assert sorted(b["Name"] for b in s3(cloud, "dave").list_buckets()["Buckets"]) == made
    assert [name for name in names if in_walrus(cloud, name)] == made
    with cloud.store.snapshot() as snap:
        assert sorted(r["id"] for r in snap.table("buckets").search(account="race")) == made

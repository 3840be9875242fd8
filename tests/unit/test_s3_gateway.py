"""The S3 gateway's parts that need no Walrus: routing, request bodies as checked from a signed
request, errors, holding back the last piece, and the buckets' bookkeeping and quotas."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloudctl import quotas, usage
from cloudctl.api import s3, sigv4
from cloudctl.api.walrus_upstream import _send
from cloudctl.buckets import CLAIM_TTL, TABLE, Buckets, BucketTaken, KeyBusy
from cloudctl.identity import ADMIN, Identity, Principal
from cloudctl.state import StateStore
from tests.aws_chunked import signed_body
from tests.unit.helpers import init_state

ENDPOINT = "https://clc.example:8773"
REGION = "test-region"
KEY_ID, SECRET = "AKITESTKEY0000000001", "test-secret"
ALICE = Principal("dev", "alice")


def environ_of(request: AWSRequest) -> dict:
    """A WSGI environ for a prepared botocore request (as gunicorn would build it)."""
    url = urlsplit(request.url)
    body = request.body or b""
    environ = {
        "REQUEST_METHOD": request.method, "RAW_URI": url.path + (f"?{url.query}" if url.query else ""),
        "PATH_INFO": url.path, "QUERY_STRING": url.query, "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": url.netloc,
    }  # fmt: skip
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    return environ


def gateway(tmp_path) -> s3.Gateway:
    store = StateStore(init_state(tmp_path / "state.json"))
    config = SimpleNamespace(
        api=SimpleNamespace(region=REGION),
        walrus=SimpleNamespace(endpoint="http://127.0.0.1:1", access_key="a", secret_key="s"),
    )
    return s3.Gateway(store, lambda key: (SECRET, ALICE), lambda: config)


# --- routing -------------------------------------------------------------------------------


def signed(service: str, method: str = "GET", path: str = "/", presign: bool = False) -> dict:
    request = AWSRequest(method, ENDPOINT + path, data=b"")
    auth = (S3SigV4QueryAuth if presign else SigV4Auth)(
        Credentials(KEY_ID, SECRET), service, REGION, **({"expires": 60} if presign else {})
    )
    auth.add_auth(request)
    return environ_of(request)


@pytest.mark.parametrize(
    ("environ", "to_s3"),
    [
        (signed("s3", path="/bucket/key"), True),
        (signed("s3"), True),  # ListBuckets
        (signed("s3", path="/bucket/key", presign=True), True),
        (signed("ec2", "POST"), False),
        (signed("ec2", path="/?Action=DescribeRegions", presign=True), False),
        ({"REQUEST_METHOD": "GET", "RAW_URI": "/bucket/key", "QUERY_STRING": ""}, True),
        ({"REQUEST_METHOD": "GET", "RAW_URI": "/?Action=X", "QUERY_STRING": "Action=X"}, False),
        ({"REQUEST_METHOD": "POST", "RAW_URI": "/", "QUERY_STRING": ""}, False),
    ],
)
def test_routing(environ, to_s3):
    assert s3.is_s3_request(environ) is to_s3


# --- request bodies ------------------------------------------------------------------------


def s3_request(method: str, path: str, body: bytes, headers: dict[str, str]) -> AWSRequest:
    request = AWSRequest(method, ENDPOINT + path, data=body, headers=headers)
    S3SigV4Auth(Credentials(KEY_ID, SECRET), "s3", REGION).add_auth(request)
    return request


def test_a_plain_body_is_checked_against_its_declared_sha256(tmp_path):
    app = gateway(tmp_path)
    request = s3_request("PUT", "/bucket/key", b"hello", {})
    body = app._body(app._request(environ_of(request)))
    assert (b"".join(body.data), body.size) == (b"hello", 5)
    environ = environ_of(request)
    environ["wsgi.input"] = io.BytesIO(b"jello")
    with pytest.raises(s3.S3Error, match="x-amz-content-sha256"):
        b"".join(app._body(app._request(environ)).data)


class StreamingAuth(S3SigV4Auth):
    """botocore's S3 signer for a streaming upload (which botocore itself never sends)."""

    def payload(self, request):
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def test_a_signed_chunked_body_chains_on_the_request_signature(tmp_path):
    """The gateway's signer starts from the request's own signature, date and region."""
    app = gateway(tmp_path)
    data = b"0123456789" * 2000
    headers = {"x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
               "Content-Encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(data))}  # fmt: skip
    request = AWSRequest("PUT", ENDPOINT + "/bucket/key", data=b"", headers=headers)
    StreamingAuth(Credentials(KEY_ID, SECRET), "s3", REGION).add_auth(request)
    amz_date = request.headers["X-Amz-Date"]
    seed = request.headers["Authorization"].rpartition("Signature=")[2]

    def body_of(**corrupt) -> s3.Body:
        wire = signed_body(
            data, 8192, key=sigv4.signing_key(SECRET, amz_date[:8], REGION, "s3"),
            amz_date=amz_date, scope=f"{amz_date[:8]}/{REGION}/s3/aws4_request", seed=seed,
            **corrupt,
        )  # fmt: skip
        environ = environ_of(request)
        environ["wsgi.input"] = io.BytesIO(wire)
        return app._body(app._request(environ))

    body = body_of()
    assert b"".join(body.data) == data and body.size == len(data) and body.trailers is None
    with pytest.raises(sigv4.SignatureMismatch):
        b"".join(body_of(corrupt_chunk=1).data)


def test_errors_are_s3_codes():
    cases = {
        sigv4.UnknownKey("x"): ("InvalidAccessKeyId", 403),
        sigv4.SignatureMismatch("x"): ("SignatureDoesNotMatch", 403),
        sigv4.RequestSkewed("x"): ("RequestTimeTooSkewed", 403),
        sigv4.MissingAuth("x"): ("AccessDenied", 403),
        quotas.QuotaExceeded("quota s3:quota-bucketnumber of account dev is 2"): (
            "TooManyBuckets", 400),
        quotas.QuotaExceeded("quota s3:quota-buckettotalsize of account dev is 1"): (
            "QuotaExceeded", 403),
        KeyBusy("x"): ("OperationAborted", 409),
        RuntimeError("boom"): ("InternalError", 500),
    }  # fmt: skip
    for error, expected in cases.items():
        mapped = s3.s3_error(error)
        assert (mapped.code, mapped.status) == expected, error


def test_the_last_piece_waits_for_the_check():
    sent: list[bytes] = []
    connection = SimpleNamespace(send=sent.append)

    def failing():
        yield b"more"
        raise s3.S3Error("XAmzContentSHA256Mismatch", "bad")

    with pytest.raises(s3.S3Error):
        _send(connection, b"first", failing(), chunked=False)
    assert sent == [b"first"]  # "more", the last piece, never left
    sent.clear()
    _send(connection, b"ab", iter([b"c"]), chunked=True)
    assert sent == [b"2\r\nab\r\n", b"1\r\nc\r\n", b"0\r\n\r\n"]


# --- the buckets' bookkeeping --------------------------------------------------------------


@pytest.fixture
def buckets(tmp_path):
    store = StateStore(init_state(tmp_path / "state.json"))
    identity = Identity(store)
    identity.create_account("dev")
    identity.create_user(ALICE)
    return Buckets(store)


def set_quota(buckets: Buckets, key: str, limit: int) -> None:
    quotas.Quotas(buckets.store).set("dev", key, limit)


def events(buckets: Buckets) -> list[tuple]:
    with buckets.store.snapshot() as snap:
        return [(u["resource_id"], u["event"], u.get("bytes"))
                for u in sorted(snap.table(usage.TABLE).all(), key=lambda u: u["at"])]  # fmt: skip


def test_bucket_names_and_the_bucket_quota(buckets):
    set_quota(buckets, "s3:quota-bucketnumber", 2)
    for name in ("one", "two"):
        buckets.record_new(name, ALICE)
        buckets.created(name)
    with pytest.raises(quotas.QuotaExceeded, match="s3:quota-bucketnumber of account dev is 2"):
        buckets.record_new("three", ALICE)
    with pytest.raises(BucketTaken) as taken:
        buckets.record_new("one", Principal("dev", "admin"))
    assert taken.value.own
    for name in ("one", "images", "snapshots"):
        with pytest.raises(BucketTaken) as taken:
            buckets.record_new(name, ADMIN)
        assert not taken.value.own
    buckets.record_new("admins", ADMIN)  # the admin account has no quota
    assert set(buckets.owned(ALICE)) == {"one", "two"}
    assert set(buckets.owned(ADMIN)) == {"one", "two", "admins"}
    buckets.deleted("one")
    buckets.forget("admins")
    assert events(buckets) == [("one", "created", None), ("two", "created", None),
                               ("one", "deleted", None)]  # fmt: skip


def test_writes_count_within_the_size_quota(buckets):
    set_quota(buckets, "s3:quota-buckettotalsize", 2)  # MB
    buckets.record_new("data", ALICE)
    mb = 2**20
    first = buckets.claim("data", ["a"])
    with pytest.raises(KeyBusy):
        buckets.claim("data", ["b", "a"])
    buckets.reserve("data", first, mb + 1)  # 2 MB counted (rounded up)
    second = buckets.claim("data", ["b"])
    with pytest.raises(quotas.QuotaExceeded, match="2 in use, 1 more asked"):
        buckets.reserve("data", second, mb)  # the reservation in flight counts
    buckets.settle("data", first, done=True)
    assert buckets.get("data")["bytes"] == mb + 1 and buckets.get("data")["writes"] == {}
    third = buckets.claim("data", ["a"])  # replacing "a" by a smaller object: shrinks once done
    buckets.reserve("data", third, 10 - (mb + 1))
    assert buckets.get("data")["bytes"] == mb + 1
    buckets.settle("data", third, done=True)
    failed = buckets.claim("data", ["c"])
    buckets.reserve("data", failed, 100)
    buckets.settle("data", failed, done=False)  # Walrus refused: nothing counts
    assert buckets.get("data")["bytes"] == 10
    assert events(buckets)[-2:] == [("data", "stored", mb + 1), ("data", "stored", 10)]


def test_a_dead_gateways_claim_expires(buckets):
    buckets.record_new("data", ALICE)
    token = buckets.claim("data", ["a"])
    buckets.reserve("data", token, 500)
    with buckets.store.transaction() as tx:
        record = tx.table(TABLE).get("data")
        old = (datetime.now(UTC) - CLAIM_TTL - timedelta(seconds=1)).isoformat()
        record["writes"][token]["at"] = old
        tx.table(TABLE).update("data", writes=record["writes"])
    buckets.claim("data", ["a"])  # free again, and its reservation given back
    assert buckets.get("data")["bytes"] == 0


def test_concurrent_claims_of_one_key_one_wins(buckets):
    buckets.record_new("data", ALICE)
    results: list[str] = []

    def claim():
        try:
            buckets.claim("data", ["same"])
            results.append("claimed")
        except KeyBusy:
            results.append("busy")

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["busy"] * 5 + ["claimed"]


@pytest.mark.parametrize("path", ["/mine/../images/x", "/mine/a/./b", "/../images/x"])
def test_paths_cannot_climb_into_another_bucket(tmp_path, path):
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": path, "QUERY_STRING": ""}
    with pytest.raises(s3.S3Error, match=r"\. or \.\. segments"):
        gateway(tmp_path)._request(environ)

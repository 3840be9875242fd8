"""SigV4 verification against requests signed by botocore's own signers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from cloudctl.api import sigv4

KEY_ID, SECRET = "AKIEXAMPLE0000000001", "secret-of-the-example-key-0000000000000"
REGION = "eucalyptus"
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
BODY = b"Action=DescribeRegions&Version=2016-11-15"


def signed(signer, method="POST", url="https://clc.example:8773/", body=BODY, headers=FORM):
    """A request signed by botocore, as (method, raw path, query pairs, headers, body)."""
    request = AWSRequest(method, url, data=body, headers=dict(headers or {}))
    signer.add_auth(request)
    parts = urlsplit(request.url)
    names = {name.lower(): value for name, value in request.headers.items()}
    names["host"] = parts.netloc  # what the HTTP client sends
    return method, parts.path, parse_qsl(parts.query, keep_blank_values=True), names, body


def check(request, service="ec2", secret=SECRET, now=None, region=REGION):
    method, path, query, headers, body = request
    payload = sigv4.payload_hash(service, body or b"", headers, sigv4.is_presigned(query))
    return sigv4.verify(
        method, path, query, headers, payload,
        lambda key_id: secret if key_id == KEY_ID else None,
        service=service, region=region, now=now,
    )  # fmt: skip


def creds(secret=SECRET):
    return Credentials(KEY_ID, secret)


def test_header_form_accepted():
    found = check(signed(SigV4Auth(creds(), "ec2", REGION)))
    assert found.access_key_id == KEY_ID and found.service == "ec2" and not found.presigned
    assert found.signed_headers == ("content-type", "host", "x-amz-date")


def test_wrong_secret_is_a_mismatch():
    with pytest.raises(sigv4.SignatureMismatch):
        check(signed(SigV4Auth(creds("another-secret"), "ec2", REGION)))


@pytest.mark.parametrize("part", ["header", "body", "query", "method", "path"])
def test_altered_request_is_a_mismatch(part):
    method, path, query, headers, body = signed(
        SigV4Auth(creds(), "ec2", REGION), url="https://clc.example:8773/?Foo=1"
    )
    if part == "header":
        headers["content-type"] = "application/x-www-form-urlencoded"
    elif part == "body":
        body = body.replace(b"DescribeRegions", b"RunInstances")
    elif part == "query":
        query = [("Foo", "2")]
    elif part == "method":
        method = "PUT"
    else:
        path = "/other"
    with pytest.raises(sigv4.SignatureMismatch):
        check((method, path, query, headers, body))


def test_an_unsigned_header_may_change():
    method, path, query, headers, body = signed(SigV4Auth(creds(), "ec2", REGION))
    headers["user-agent"] = "changed on the way"
    check((method, path, query, headers, body))


class _NoHostSigner(SigV4Auth):
    """Signs a valid signature that does not cover the host header."""

    def headers_to_sign(self, request):
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


def test_host_must_be_signed():
    with pytest.raises(sigv4.MalformedAuth, match="host"):
        check(signed(_NoHostSigner(creds(), "ec2", REGION)))


@pytest.mark.parametrize(
    ("shift", "message"),
    [(timedelta(minutes=20), "Signature expired"), (-timedelta(minutes=20), "not yet current")],
)
def test_date_skew_beyond_15_minutes(shift, message):
    request = signed(SigV4Auth(creds(), "ec2", REGION))
    with pytest.raises(sigv4.RequestSkewed, match=message):
        check(request, now=datetime.now(UTC) + shift)
    check(request, now=datetime.now(UTC) + shift / 2)  # 10 minutes either way: accepted


def test_date_header_instead_of_x_amz_date():
    request = signed(SigV4Auth(creds(), "ec2", REGION), headers={**FORM, "Date": "x"})
    assert "x-amz-date" not in request[3]  # botocore signs the Date header it rewrote
    assert check(request).signed_headers == ("content-type", "date", "host")


def test_unknown_key_missing_and_garbled_auth():
    method, path, query, headers, body = signed(SigV4Auth(creds(), "ec2", REGION))
    with pytest.raises(sigv4.UnknownKey):
        check((method, path, query, headers, body), secret=None)
    without = {k: v for k, v in headers.items() if k != "authorization"}
    with pytest.raises(sigv4.MissingAuth):
        check((method, path, query, without, body))
    for garbled in (
        "AWS4-HMAC-SHA256 garbage",
        "AWS AKIEXAMPLE:c2lnbmF0dXJl",  # Signature V2
        headers["authorization"].replace("Signature=", "Signature=zz"),
        headers["authorization"].replace("/aws4_request", ""),
        headers["authorization"].replace(
            "SignedHeaders=content-type;host", "SignedHeaders=host;content-type"
        ),
    ):
        with pytest.raises(sigv4.MalformedAuth):
            check((method, path, query, {**headers, "authorization": garbled}, body))


def test_scope_must_name_this_service_and_region():
    with pytest.raises(sigv4.MalformedAuth, match="correct service: 'ec2'"):
        check(signed(SigV4Auth(creds(), "s3", REGION)))
    with pytest.raises(sigv4.MalformedAuth, match="not 'us-east-1'"):
        check(signed(SigV4Auth(creds(), "ec2", "us-east-1")))


def test_path_is_normalized_and_encoded_twice_except_for_s3():
    url = "https://clc.example:8773/a%20b/./c//d/"
    check(signed(SigV4Auth(creds(), "ec2", REGION), url=url))
    key = quote("bucket/a key+é~(1).txt", safe="/~")
    s3 = signed(
        S3SigV4Auth(creds(), "s3", REGION), method="PUT", url=f"https://w:8773/{key}", body=b"x"
    )
    check(s3, service="s3")


def test_s3_signs_the_declared_payload_hash():
    request = signed(
        S3SigV4Auth(creds(), "s3", REGION), method="PUT", url="https://w/b/k", body=b"data"
    )
    assert request[3]["x-amz-content-sha256"] == hashlib.sha256(b"data").hexdigest()
    check(request, service="s3")
    method, path, query, headers, _ = request
    with pytest.raises(sigv4.SignatureMismatch):  # a declared hash other than the signed one
        check(
            (method, path, query, {**headers, "x-amz-content-sha256": sigv4.EMPTY_SHA256}, b""),
            service="s3",
        )
    with pytest.raises(sigv4.MalformedAuth, match="x-amz-content-sha256"):
        del headers["x-amz-content-sha256"]
        check((method, path, query, headers, b"data"), service="s3")


def test_s3_unsigned_payload():
    request = AWSRequest("PUT", "https://w/b/k", data=b"data")
    request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    S3SigV4Auth(creds(), "s3", REGION).add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == sigv4.UNSIGNED_PAYLOAD
    headers = {k.lower(): v for k, v in request.headers.items()} | {"host": "w"}
    check(("PUT", "/b/k", [], headers, b"other data, not signed"), service="s3")


def test_presigned_query_form():
    request = signed(
        SigV4QueryAuth(creds(), "ec2", REGION, expires=60),
        method="GET",
        url="https://clc.example:8773/?Action=DescribeRegions&RegionName.1=a%20b",
        body=None,
        headers={},
    )
    names = [key for key, _ in request[2]]
    assert "X-Amz-Signature" in names and "authorization" not in request[3]
    found = check(request)
    assert found.presigned and found.signed_headers == ("host",)
    with pytest.raises(sigv4.PresignExpired):
        check(request, now=found.date + timedelta(seconds=61))
    method, path, query, headers, body = request
    altered = [(k, "b" if k == "RegionName.1" else v) for k, v in query]
    with pytest.raises(sigv4.SignatureMismatch):
        check((method, path, altered, headers, body))


def test_presigned_s3_url():
    request = signed(
        S3SigV4QueryAuth(creds(), "s3", REGION, expires=300),
        method="GET", url="https://w/bucket/some%20key", body=None, headers={},
    )  # fmt: skip
    check(request, service="s3")
    method, path, query, headers, body = request
    with pytest.raises(sigv4.MalformedAuth, match="X-Amz-Expires"):
        check((method, path, [(k, "0" if k == "X-Amz-Expires" else v) for k, v in query],
               headers, body), service="s3")  # fmt: skip

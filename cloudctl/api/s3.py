"""The S3 gateway: Walrus per account, on the API service's port (issue 11).

Walrus (SeaweedFS' S3) knows one identity, the cloud's. Users reach it through this gateway
with their own access keys; a request goes:
1. routing (`is_s3_request`): a request signed for service "s3", or carrying no EC2 Action,
   comes here from the API application (cloudctl.api.app);
2. its SigV4 signature is checked (sigv4.verify, with the S3 rules), then its body as it is
   read: the sha256 it declares, or each chunk's signature of an aws-chunked upload
   (awschunked);
3. the principal must own the bucket: its account's buckets (cloudctl.buckets records who made
   which), every bucket for the admin account; `images`, `snapshots` and any bucket without a
   record are the cloud's. Another account gets AccessDenied; ListBuckets lists only one's own;
4. creating a bucket, and writes that change what a bucket holds, are recorded with their
   quota checks before anything reaches Walrus (cloudctl.buckets);
5. the request goes on to Walrus signed with the cloud's key (walrus_upstream), bodies streamed
   both ways, and Walrus's status, headers and body come back to the client.

Addressing is path-style (http://HOST:PORT/BUCKET/KEY): the endpoint is an address, not a DNS
zone, so clients set addressing_style=path. Errors are S3's XML (<Error><Code>...).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote
from xml.sax.saxutils import escape

from cloudctl import identity, quotas
from cloudctl.api import awschunked, sigv4
from cloudctl.api.request import headers_of, raw_path, region_of
from cloudctl.api.walrus_upstream import (
    HOP_BY_HOP,
    NS,
    Response,
    Upstream,
    WalrusUnavailable,
    object_path,
)
from cloudctl.buckets import Buckets, BucketTaken, KeyBusy
from cloudctl.cloudconfig import CloudConfig
from cloudctl.errors import ConfigError
from cloudctl.state import Store

log = logging.getLogger("cloudctl.api")

SERVICE = "s3"
MAX_XML_BODY = 4 * 1024 * 1024  # DeleteObjects of 1000 long keys, CompleteMultipartUpload
DRAIN_LIMIT = 16 * 1024 * 1024  # an unread body read away before an error answer, at most
PIECE = 64 * 1024
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SCOPE_SERVICE = re.compile(r"Credential=[^/,\s]*/[^/,\s]*/[^/,\s]*/([^/,\s]*)/aws4_request")
# S3's bucket naming rules (path-style): 3-63 lowercase letters, digits, dots and hyphens.
_BUCKET_NAME = re.compile(r"^(?!\d+\.\d+\.\d+\.\d+$)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Client headers that never reach Walrus: the gateway's own signature and framing replace them.
_NOT_FORWARDED = HOP_BY_HOP | {
    "host", "authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token",
    "expect", "content-length", "content-encoding", "x-amz-decoded-content-length",
    "x-amz-trailer",
}  # fmt: skip
_PRESIGN_PARAMS = {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                   "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"}  # fmt: skip
# Not offered: versioning keeps old versions' bytes the gateway cannot count, and a bucket
# policy names Walrus's identities, not the cloud's accounts.
_REFUSED_BUCKET_CHANGES = {"versioning", "policy"}
# Object subresources: requests on them change no object's bytes.
_OBJECT_SUBRESOURCES = {"acl", "tagging", "retention", "legal-hold", "attributes", "restore",
                        "select", "torrent"}  # fmt: skip

Authenticate = Callable[[str], tuple[str, identity.Principal]]
StartResponse = Callable[..., Any]


class S3Error(Exception):
    """An S3 error answer: code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def access_denied() -> S3Error:
    return S3Error("AccessDenied", "Access Denied", 403)


# S3's codes for a request that is not signed right.
_SIGV4_ERRORS: list[tuple[type[Exception], str, int]] = [
    (sigv4.SignatureMismatch, "SignatureDoesNotMatch", 403),  # chunk signatures too
    (awschunked.ChunkError, "IncompleteBody", 400),
    (sigv4.MissingAuth, "AccessDenied", 403),
    (sigv4.MalformedAuth, "AuthorizationHeaderMalformed", 400),
    (sigv4.UnknownKey, "InvalidAccessKeyId", 403),
    (sigv4.RequestSkewed, "RequestTimeTooSkewed", 403),
    (sigv4.PresignExpired, "AccessDenied", 403),
]
_UNKNOWN_KEY = "The AWS Access Key Id you provided does not exist in our records."


def s3_error(error: BaseException) -> S3Error:
    """The S3 error for any exception a request raised (the client's mistakes carry their
    message; the cloud's failures a generic one, the log has the detail)."""
    if isinstance(error, S3Error):
        return error
    for kind, code, status in _SIGV4_ERRORS:
        if isinstance(error, kind):
            return S3Error(
                code, _UNKNOWN_KEY if code == "InvalidAccessKeyId" else str(error), status
            )
    message = " ".join(str(error).split())
    if isinstance(error, quotas.QuotaExceeded):
        if "s3:quota-bucketnumber" in message:
            return S3Error("TooManyBuckets", message, 400)
        return S3Error("QuotaExceeded", message, 403)
    if isinstance(error, KeyBusy):
        return S3Error("OperationAborted", f"{message}: try again", 409)
    if isinstance(error, (WalrusUnavailable, ConfigError)):
        return S3Error("ServiceUnavailable", "Please reduce your request rate.", 503)
    return S3Error("InternalError", "We encountered an internal error. Please try again.", 500)


def is_s3_request(environ: dict[str, Any]) -> bool:
    """Whether a request of the API's port is for S3: signed for service "s3" (Authorization
    header or presigned X-Amz-Credential); unsigned, when it names a bucket (EC2's Query API
    has one path, "/", and an Action)."""
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    credential = query.get("X-Amz-Credential")
    if credential is not None:
        parts = credential.split("/")
        return len(parts) == 5 and parts[3] == SERVICE
    match = _SCOPE_SERVICE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match:
        return match.group(1) == SERVICE
    return "Action" not in query and raw_path(environ) != "/"


@dataclass
class S3Request:
    """An authenticated S3 request."""

    environ: dict[str, Any]
    method: str
    bucket: str
    key: str
    query: list[tuple[str, str]]  # decoded, without the presigned URL's X-Amz-* parameters
    headers: dict[str, str]  # lowercase names
    principal: identity.Principal
    signed: sigv4.SignedRequest
    secret: str
    region: str
    walrus: Upstream

    @property
    def params(self) -> dict[str, str]:
        return dict(self.query)

    @property
    def content_sha256(self) -> str:
        if self.signed.presigned:
            return sigv4.UNSIGNED_PAYLOAD
        return self.headers.get("x-amz-content-sha256", "").strip()

    @property
    def resource(self) -> str:
        return object_path(self.bucket, self.key) if self.bucket else "/"


@dataclass
class Body:
    """A request's body, checked as it is read: the data, and how Walrus gets it."""

    data: Iterable[bytes]
    size: int  # of the data (the object's size)
    headers: dict[str, str]  # Content-Encoding, and a trailer's headers
    trailers: dict[str, str] | None = None  # aws-chunked with a trailer: Walrus checks it

    def upstream(self) -> dict[str, Any]:
        """Upstream.request's body arguments."""
        if self.trailers is None:
            return {"body": self.data, "length": self.size,
                    "content_sha256": sigv4.UNSIGNED_PAYLOAD, "headers": self.headers}  # fmt: skip
        return {
            "body": awschunked.encode_unsigned(iter(self.data), self.trailers),
            "length": None,
            "content_sha256": awschunked.UNSIGNED_TRAILER,
            "headers": self.headers,
        }

    def read(self, limit: int = MAX_XML_BODY) -> tuple[bytes, Body]:
        """The whole (small) body, checked, and a Body that sends it again."""
        if self.size > limit:
            raise S3Error("MaxMessageLengthExceeded", f"The request body is over {limit} bytes")
        data = b"".join(self.data)
        return data, replace(self, data=[data])


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: Iterable[bytes]


class Gateway:
    """The S3 side of the API service (a WSGI application)."""

    def __init__(
        self, store: Store, authenticate: Authenticate, config: Callable[[], CloudConfig]
    ) -> None:
        self.buckets = Buckets(store)
        self.authenticate = authenticate
        self.config = config

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        request_id = uuid.uuid4().hex[:16].upper()
        request: S3Request | None = None
        code = "-"
        try:
            request = self._request(environ)
            with identity.acting_as(request.principal):
                reply = self._handle(request)
        except Exception as exc:  # every failure is an S3 error to the client
            error = s3_error(exc)
            if error.status >= 500:
                log.error("s3 request %s failed", request_id, exc_info=exc)
            _drain(environ)
            code = error.code
            reply = _error_reply(error, request.resource if request else "/", request_id,
                                 head=environ.get("REQUEST_METHOD") == "HEAD")  # fmt: skip
        log.info(
            "s3 method=%s path=%s principal=%s key=%s status=%d code=%s duration_ms=%.1f "
            "request_id=%s",
            environ.get("REQUEST_METHOD", "-"), raw_path(environ)[:200],
            request.principal if request else "-",
            request.signed.access_key_id if request else "-", reply.status, code,
            (time.monotonic() - started) * 1000, request_id,
        )  # fmt: skip
        start_response(
            f"{reply.status} {HTTPStatus(reply.status).phrase}",
            [*reply.headers, ("x-amz-request-id", request_id)],
        )
        return reply.body

    # --- the request -----------------------------------------------------------------------

    def _request(self, environ: dict[str, Any]) -> S3Request:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = raw_path(environ)
        try:
            query = parse_qsl(
                environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8"),
                keep_blank_values=True,
                errors="strict",
            )
            bucket, _, key = unquote(path, errors="strict").lstrip("/").partition("/")
        except (UnicodeError, ValueError):
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.") from None
        if {".", ".."} & {bucket, *key.split("/")}:  # a path must not climb into another bucket
            raise S3Error("InvalidURI", "The path has . or .. segments.")
        headers = headers_of(environ)
        config = self.config()
        region = region_of(config)
        found: dict[str, tuple[str, identity.Principal]] = {}

        def secret_of(access_key_id: str) -> str | None:
            try:
                found[access_key_id] = self.authenticate(access_key_id)
            except (identity.UnknownAccessKey, identity.InactiveAccessKey):
                return None
            return found[access_key_id][0]

        payload = sigv4.payload_hash(SERVICE, b"", headers, sigv4.is_presigned(query))
        signed = sigv4.verify(
            method, path, query, headers, payload, secret_of, service=SERVICE, region=region
        )
        secret, principal = found[signed.access_key_id]
        return S3Request(
            environ=environ,
            method=method,
            bucket=bucket,
            key=key,
            query=[(k, v) for k, v in query if k not in _PRESIGN_PARAMS],
            headers=headers,
            principal=principal,
            signed=signed,
            secret=secret,
            region=region,
            walrus=Upstream(config.walrus),
        )

    def _body(self, request: S3Request) -> Body:
        """The request's body, checked as it is read: the declared sha256 of a plain body,
        the chunk signatures (and size) of an aws-chunked one."""
        stream: BinaryIO = request.environ["wsgi.input"]
        declared = request.content_sha256
        encodings = [
            e.strip()
            for e in request.headers.get("content-encoding", "").split(",")
            if e.strip() and e.strip() != "aws-chunked"
        ]
        headers = {"content-encoding": ",".join(encodings)} if encodings else {}
        if awschunked.is_streaming(declared):
            if declared not in awschunked.FORMATS:
                raise S3Error(
                    "NotImplemented", f"x-amz-content-sha256 {declared} is not supported", 501
                )
            size = _number(request.headers.get("x-amz-decoded-content-length"))
            if size is None:
                raise S3Error(
                    "MissingContentLength", "You must provide x-amz-decoded-content-length.", 411
                )
            signer = None
            if awschunked.is_signed(declared):
                amz_date = request.signed.date.strftime(sigv4.AMZ_DATE_FORMAT)
                signer = awschunked.ChunkSigner(
                    key=sigv4.signing_key(request.secret, amz_date[:8], request.region, SERVICE),
                    amz_date=amz_date,
                    scope=f"{amz_date[:8]}/{request.region}/{SERVICE}/aws4_request",
                    previous=request.signed.signature,
                )
            trailer = awschunked.has_trailer(declared)
            decoder = awschunked.Decoder(stream, signer=signer, trailer=trailer, declared_size=size)
            if not trailer:
                return Body(decoder, size, headers)
            headers |= {
                "content-encoding": ",".join([*encodings, "aws-chunked"]),
                "x-amz-trailer": request.headers.get("x-amz-trailer", ""),
                "x-amz-decoded-content-length": str(size),
            }
            return Body(decoder, size, headers, trailers=decoder.trailers)
        size = _number(request.headers.get("content-length"))
        if size is None:
            if request.headers.get("transfer-encoding"):
                raise S3Error(
                    "MissingContentLength", "You must provide the Content-Length HTTP header.", 411
                )
            size = 0
        if declared != sigv4.UNSIGNED_PAYLOAD and not _HEX_SHA256.match(declared):
            raise S3Error("InvalidArgument", f"x-amz-content-sha256 {declared[:70]!r} is not valid")
        expected = None if declared == sigv4.UNSIGNED_PAYLOAD else declared
        return Body(_plain(stream, size, expected), size, headers)

    def _forward(self, request: S3Request, body: Body | None = None) -> Response:
        """The request, with its (checked) body, to Walrus."""
        body = body or self._body(request)
        arguments = body.upstream()
        headers = {k: v for k, v in request.headers.items() if k not in _NOT_FORWARDED}
        arguments["headers"] = headers | arguments["headers"]
        return request.walrus.request(
            request.method, object_path(request.bucket, request.key), request.query, **arguments
        )

    # --- what the request does -------------------------------------------------------------

    def _handle(self, request: S3Request) -> Reply:
        method, params = request.method, request.params
        if not request.bucket:
            if method != "GET":
                raise S3Error("MethodNotAllowed", f"{method} is not allowed on the service", 405)
            return self._list_buckets(request)
        if not request.key:
            if method == "PUT" and not params:
                return self._create_bucket(request)
            self._authorize(request, request.bucket)
            if method == "DELETE" and not params:
                return self._delete_bucket(request)
            if method in ("PUT", "DELETE") and _REFUSED_BUCKET_CHANGES & params.keys():
                raise S3Error("NotImplemented", "Bucket versioning and bucket policies are not "
                              "offered by this cloud (access is per account)", 501)  # fmt: skip
            if method == "POST" and "delete" in params:
                return self._delete_objects(request)
            return _relay(self._forward(request))
        self._authorize(request, request.bucket)
        source = request.headers.get("x-amz-copy-source")
        if source:
            self._authorize(request, _copy_source(source)[0])
        subresource = _OBJECT_SUBRESOURCES & params.keys()
        if method == "PUT" and not subresource:
            if "uploadId" in params:  # UploadPart(Copy): counted when the upload completes
                body = self._body(request)
                if not source:
                    self.buckets.check_growth(request.bucket, body.size)
                return _relay(self._forward(request, body))
            return self._write(request, source)
        if method == "POST" and "uploadId" in params:
            return self._complete_upload(request)
        if method == "DELETE" and not params:
            return self._write(request, None, delete=True)
        return _relay(self._forward(request))

    def _authorize(self, request: S3Request, bucket: str) -> None:
        """The principal may act on the bucket: its account's, or any for the admin account;
        others get AccessDenied, or NoSuchBucket when it does not exist at all."""
        record = self.buckets.get(bucket)
        if request.principal.admin or (record and record["account"] == request.principal.account):
            return
        if record is None and not request.walrus.bucket_exists(bucket):
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", 404)
        raise access_denied()

    def _list_buckets(self, request: S3Request) -> Reply:
        response = self._forward(request)
        body = response.read()
        if response.status != 200 or request.principal.admin:
            return _relay(response, body)
        owned = self.buckets.owned(request.principal)
        ET.register_namespace("", NS.strip("{}"))
        root = ET.fromstring(body)
        for buckets in root.iter(f"{NS}Buckets"):
            for bucket in list(buckets):
                if bucket.findtext(f"{NS}Name") not in owned:
                    buckets.remove(bucket)
        return _relay(response, ET.tostring(root, xml_declaration=True, encoding="UTF-8"))

    def _create_bucket(self, request: S3Request) -> Reply:
        name = request.bucket
        if not _BUCKET_NAME.match(name):
            raise S3Error("InvalidBucketName", "The specified bucket is not valid.")
        _, body = self._body(request).read()  # CreateBucketConfiguration, checked
        try:
            self.buckets.record_new(name, request.principal)
        except BucketTaken as taken:
            if taken.own:
                raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the "
                              "named bucket succeeded and you already own it.", 409) from None  # fmt: skip
            raise _bucket_exists() from None
        try:
            if request.walrus.bucket_exists(name):  # made on Walrus directly: the cloud's
                raise _bucket_exists()
            response = self._forward(request, body)
        except BaseException:
            self.buckets.forget(name)
            raise
        if response.status == 200:
            self.buckets.created(name)
        else:
            self.buckets.forget(name)
        return _relay(response)

    def _delete_bucket(self, request: S3Request) -> Reply:
        response = self._forward(request)
        body = response.read()
        if response.status in (200, 204):
            self.buckets.deleted(request.bucket)
        elif response.status == 404 and _error_code(body) == "NoSuchBucket":
            self.buckets.forget(request.bucket)  # a record Walrus has no bucket for
        return _relay(response, body)

    def _write(self, request: S3Request, source: str | None, delete: bool = False) -> Reply:
        """PutObject, CopyObject or DeleteObject: the bucket's bytes follow, within quota."""
        bucket, key = request.bucket, request.key
        body = None if delete else self._body(request)
        token = self.buckets.claim(bucket, [key])
        done, delta = False, None
        try:
            old = (request.walrus.size(bucket, key) or 0) if token else 0
            if delete:
                new = 0
            elif source:
                new = request.walrus.size(*_copy_source(source)) or 0
            else:
                new = body.size  # type: ignore[union-attr]
            if token:
                self.buckets.reserve(bucket, token, new - old)
            response = self._forward(request, body)
            if source:  # a copy answers 200 with an error in its body when it fails late
                content = response.read()
                done = response.status == 200 and _error_code(content) is None
                if done and token:
                    delta = (request.walrus.size(bucket, key) or 0) - old
                return _relay(response, content)
            done = response.status in (200, 204)
            return _relay(response)
        finally:
            self.buckets.settle(bucket, token, done, delta)

    def _delete_objects(self, request: S3Request) -> Reply:
        """DeleteObjects: the deleted keys' bytes leave the bucket."""
        data, body = self._body(request).read()
        try:
            keys = [k.text or "" for k in ET.fromstring(data).iter(f"{NS}Key")]
        except ET.ParseError:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed") from None
        token = self.buckets.claim(request.bucket, keys)
        done, delta = False, 0
        try:
            old = {k: request.walrus.size(request.bucket, k) or 0 for k in keys} if token else {}
            response = self._forward(request, body)
            content = response.read()
            if response.status == 200 and token:
                deleted = ET.fromstring(content).iter(f"{NS}Deleted")
                delta = -sum(old.get(d.findtext(f"{NS}Key") or "", 0) for d in deleted)
                done = True
            return _relay(response, content)
        finally:
            self.buckets.settle(request.bucket, token, done, delta)

    def _complete_upload(self, request: S3Request) -> Reply:
        """CompleteMultipartUpload: the object's size is the listed parts' (checked against
        the quota before Walrus puts them together)."""
        bucket, key = request.bucket, request.key
        data, body = self._body(request).read()
        try:
            numbers = [int(n.text or 0) for n in ET.fromstring(data).iter(f"{NS}PartNumber")]
        except (ET.ParseError, ValueError):
            raise S3Error("MalformedXML", "The XML you provided was not well-formed") from None
        token = self.buckets.claim(bucket, [key])
        done, delta = False, None
        try:
            if token:
                sizes = request.walrus.part_sizes(bucket, key, request.params["uploadId"])
                old = request.walrus.size(bucket, key) or 0
                self.buckets.reserve(bucket, token, sum(sizes.get(n, 0) for n in numbers) - old)
            response = self._forward(request, body)
            content = response.read()  # 200 with an error inside when it fails late
            done = response.status == 200 and _error_code(content) is None
            if done and token:
                delta = (request.walrus.size(bucket, key) or 0) - old
            return _relay(response, content)
        finally:
            self.buckets.settle(bucket, token, done, delta)


# --- helpers -------------------------------------------------------------------------------


def _plain(stream: BinaryIO, size: int, expected_sha256: str | None) -> Iterator[bytes]:
    """A plain body's data; at its end, its sha256 must be the declared one."""
    digest = hashlib.sha256()
    remaining = size
    while remaining:
        piece = stream.read(min(PIECE, remaining))
        if not piece:
            raise S3Error("IncompleteBody", "You did not provide the number of bytes specified "
                          "by the Content-Length HTTP header")  # fmt: skip
        digest.update(piece)
        remaining -= len(piece)
        yield piece
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header "
                      "does not match what was computed.")  # fmt: skip


def _number(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() else None


def _copy_source(header: str) -> tuple[str, str]:
    """(bucket, key) of an x-amz-copy-source header ("/bucket/key?versionId=...")."""
    path = unquote(header.partition("?")[0]).lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key")
    return bucket, key


def _bucket_exists() -> S3Error:
    return S3Error("BucketAlreadyExists", "The requested bucket name is not available. The "
                   "bucket namespace is shared by all users of the system.", 409)  # fmt: skip


def _error_code(body: bytes) -> str | None:
    """The Code of an S3 <Error> document, None for any other body."""
    try:
        root = ET.fromstring(body) if body.lstrip().startswith(b"<") else None
    except ET.ParseError:
        return None
    if root is None or root.tag.rpartition("}")[2] != "Error":
        return None
    return root.findtext("Code") or root.findtext(f"{NS}Code") or ""


def _relay(response: Response, body: bytes | None = None) -> Reply:
    """Walrus's answer for the client: status, end-to-end headers, body (streamed)."""
    headers = [
        (k, v) for k, v in response.headers if k.lower() not in HOP_BY_HOP | {"content-length"}
    ]
    if body is None:
        length = response.header("content-length")
        if length is not None:
            headers.append(("Content-Length", length))
        return Reply(response.status, headers, response.stream())
    headers.append(("Content-Length", str(len(body))))
    return Reply(response.status, headers, [body])


def _error_reply(error: S3Error, resource: str, request_id: str, head: bool) -> Reply:
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()
    headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(document)))]
    return Reply(error.status, headers, [] if head else [document])


def _drain(environ: dict[str, Any]) -> None:
    """Read away what is left of the request body (up to DRAIN_LIMIT), so that the client,
    still sending it, reads the error answer instead of a reset connection."""
    stream = environ.get("wsgi.input")
    left = DRAIN_LIMIT
    try:
        while stream is not None and left > 0 and (piece := stream.read(min(PIECE, left))):
            left -= len(piece)
    except (OSError, ValueError):
        pass

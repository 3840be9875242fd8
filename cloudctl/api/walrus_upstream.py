"""Requests to Walrus (SeaweedFS' S3) signed with the cloud's own key, bodies streamed.

The S3 gateway (cloudctl/api/s3.py) forwards each checked request here. A request body is an
iterator of pieces; the last piece is held back until the iterator ends without an error (it
raises when the client's body fails a check), and a body of one piece is checked before
anything is sent: Walrus drops an upload whose connection closes inside its body (but stores an
empty object when it closes before the body's first byte), so a body that fails a check never
becomes an object. The payload is sent
UNSIGNED-PAYLOAD (the gateway has checked it) or, for aws-chunked bodies with a trailer,
STREAMING-UNSIGNED-PAYLOAD-TRAILER so that Walrus checks and keeps the client's checksum.
"""

from __future__ import annotations

import http.client
import itertools
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from cloudctl.api import sigv4
from cloudctl.cloudconfig import Walrus
from cloudctl.errors import CloudError

REGION = "us-east-1"  # what Walrus (and cloudctl.walrus) sign for
PIECE = 64 * 1024
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# Headers of one hop only (RFC 9110 7.6.1), never relayed either way.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-connection",
}  # fmt: skip


class WalrusUnavailable(CloudError):
    """Walrus does not answer."""


def object_path(bucket: str, key: str = "") -> str:
    """The URI-encoded path of a bucket or object, as S3 signs it (path-style)."""
    path = "/" + quote(bucket, safe="")
    return path + "/" + quote(key, safe="/~") if key else path


@dataclass
class Response:
    """Walrus's answer: status and headers read, the body still to read (stream or read)."""

    status: int
    headers: list[tuple[str, str]]
    _response: http.client.HTTPResponse = field(repr=False)
    _connection: http.client.HTTPConnection = field(repr=False)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def stream(self) -> Iterator[bytes]:
        """The body in pieces; the connection closes at its end (or when the WSGI server
        closes the iterator early)."""
        try:
            while piece := self._response.read(PIECE):
                yield piece
        finally:
            self._connection.close()

    def read(self) -> bytes:
        """The whole body (small answers only: XML results and errors)."""
        try:
            return self._response.read()
        finally:
            self._connection.close()


class Upstream:
    """One Walrus endpoint and the cloud's access key for it."""

    def __init__(self, config: Walrus, timeout: float = 300) -> None:
        self.config = config
        url = urlsplit(config.endpoint)
        self.https = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.https else 80)
        self.netloc = url.netloc
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        body: Iterable[bytes] = (),
        length: int | None = 0,
        content_sha256: str = sigv4.UNSIGNED_PAYLOAD,
    ) -> Response:
        """Send one signed request; `length` None sends the body with chunked transfer."""
        pieces = iter(body)
        # A body of one piece (or none) is checked whole before anything is sent: Walrus
        # stores an empty object when the connection drops before the first byte of the body.
        ahead = list(itertools.islice(pieces, 2))
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        headers |= {
            "host": self.netloc,
            "x-amz-date": datetime.now(UTC).strftime(sigv4.AMZ_DATE_FORMAT),
            "x-amz-content-sha256": content_sha256,
        }
        query = sorted(query)
        self._sign(method, path, query, headers)
        if length is None:
            headers["transfer-encoding"] = "chunked"
        else:
            headers["content-length"] = str(length)
        target = path + ("?" + sigv4.canonical_query(query) if query else "")
        connection = self._connect()
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            if ahead:
                _send(connection, ahead[0], itertools.chain(ahead[1:], pieces), length is None)
            elif length is None:
                connection.send(b"0\r\n\r\n")
            response = connection.getresponse()
        except OSError as exc:
            connection.close()
            raise WalrusUnavailable(f"Walrus at {self.config.endpoint}: {exc}") from None
        except BaseException:
            connection.close()  # the body failed a check: Walrus never gets its last byte
            raise
        return Response(response.status, response.getheaders(), response, connection)

    def size(self, bucket: str, key: str) -> int | None:
        """An object's size (HEAD), None when there is no such object."""
        response = self.request("HEAD", object_path(bucket, key))
        response.read()
        if response.status == 404:
            return None
        if response.status != 200:
            raise WalrusUnavailable(f"Walrus answers HEAD {bucket}/{key} with {response.status}")
        return int(response.header("content-length") or 0)

    def bucket_exists(self, bucket: str) -> bool:
        response = self.request("HEAD", object_path(bucket))
        response.read()
        return response.status != 404

    def part_sizes(self, bucket: str, key: str, upload_id: str) -> dict[int, int]:
        """Part number -> size of the parts of a multipart upload (ListParts, every page)."""
        sizes: dict[int, int] = {}
        marker = "0"
        while True:
            query = [("uploadId", upload_id), ("part-number-marker", marker)]
            response = self.request("GET", object_path(bucket, key), query)
            body = response.read()
            if response.status != 200:
                return sizes  # no such upload: completing it fails in Walrus too
            root = ET.fromstring(body)
            for part in root.iter(f"{NS}Part"):
                sizes[int(part.findtext(f"{NS}PartNumber") or 0)] = int(
                    part.findtext(f"{NS}Size") or 0
                )
            marker = root.findtext(f"{NS}NextPartNumberMarker") or ""
            if root.findtext(f"{NS}IsTruncated") != "true" or not marker:
                return sizes

    def _sign(
        self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str]
    ) -> None:
        signed = sorted(name for name in headers if name not in ("user-agent", "expect"))
        canonical = sigv4.canonical_request(
            method, path, query, headers, signed, headers["x-amz-content-sha256"], "s3"
        )
        amz_date = headers["x-amz-date"]
        signature = sigv4.signature(self.config.secret_key, amz_date, REGION, "s3", canonical)
        headers["authorization"] = (
            f"{sigv4.ALGORITHM} Credential={self.config.access_key}/{amz_date[:8]}/{REGION}/s3/"
            f"aws4_request, SignedHeaders={';'.join(signed)}, Signature={signature}"
        )

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


def _send(
    connection: http.client.HTTPConnection,
    first: bytes,
    rest: Iterator[bytes],
    chunked: bool,
) -> None:
    """Send the pieces, each only once the next one (or the checked end) has come."""

    def put(piece: bytes) -> None:
        if piece:  # an empty HTTP chunk would end the body
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)

    held = first
    for piece in rest:
        put(held)
        held = piece
    put(held)
    if chunked:
        connection.send(b"0\r\n\r\n")

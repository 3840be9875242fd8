"""S3's streaming uploads: aws-chunked request bodies, their chunk signatures and trailers.

A client that cannot (or will not) hash a whole body before sending it declares one of these in
x-amz-content-sha256 and frames the body in chunks (AWS's "Signature Calculations for the
Authorization Header: Transferring Payload in Multiple Chunks" and "... with trailers"):

  STREAMING-AWS4-HMAC-SHA256-PAYLOAD          SIZE;chunk-signature=SIG CRLF DATA CRLF ...
                                              0;chunk-signature=SIG CRLF CRLF
  STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER  the same, but the last chunk is followed by
                                              trailer lines (x-amz-checksum-crc32:VALUE CRLF),
                                              x-amz-trailer-signature:SIG CRLF, CRLF
  STREAMING-UNSIGNED-PAYLOAD-TRAILER          SIZE CRLF DATA CRLF ... 0 CRLF, trailer lines, CRLF
                                              (boto3 over HTTPS, with its CRC32 checksum)

SIZE is hexadecimal. Each chunk signature signs the chunk's sha256 and chains on the previous
signature, starting from the request's own (the "seed"); the trailer signature signs the
trailer lines and chains on the last chunk's. `Decoder` yields the data as it arrives, in pieces
of at most PIECE bytes, and raises once it finds a chunk that is not what it claims: its caller
must hold back the last piece it got until the iteration ends without error (the S3 gateway
does, so that Walrus never receives a complete body that failed a check).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cloudctl.api import sigv4

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
FORMATS = (SIGNED, SIGNED_TRAILER, UNSIGNED_TRAILER)
PIECE = 64 * 1024
MAX_LINE = 4096  # a chunk header or trailer line (AWS's and SeaweedFS' bound)
TRAILER_SIGNATURE = "x-amz-trailer-signature"


class ChunkError(sigv4.SigV4Error):
    """The aws-chunked body is malformed, shorter or longer than declared."""


class ChunkSignatureMismatch(sigv4.SignatureMismatch):
    """A chunk or trailer signature is not the one the key's secret gives."""


def is_streaming(content_sha256: str) -> bool:
    return content_sha256.startswith("STREAMING-")


def has_trailer(content_sha256: str) -> bool:
    return content_sha256.endswith("-TRAILER")


def is_signed(content_sha256: str) -> bool:
    return content_sha256 in (SIGNED, SIGNED_TRAILER)


@dataclass
class ChunkSigner:
    """The chain of chunk signatures of one request, from its seed signature."""

    key: bytes  # sigv4.signing_key(secret, date, region, "s3")
    amz_date: str
    scope: str  # DATE/REGION/s3/aws4_request
    previous: str  # the seed signature, then each verified chunk's

    def check_chunk(self, signature: str, data_sha256: str) -> None:
        self._check("AWS4-HMAC-SHA256-PAYLOAD", signature, sigv4.EMPTY_SHA256, data_sha256)

    def check_trailer(self, signature: str, canonical_trailer: bytes) -> None:
        self._check(
            "AWS4-HMAC-SHA256-TRAILER", signature, hashlib.sha256(canonical_trailer).hexdigest()
        )

    def sign(self, kind: str, *hashes: str) -> str:
        text = "\n".join([kind, self.amz_date, self.scope, self.previous, *hashes])
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def _check(self, kind: str, signature: str, *hashes: str) -> None:
        expected = self.sign(kind, *hashes)
        if not hmac.compare_digest(expected, signature):
            raise ChunkSignatureMismatch(
                "The chunk signature we calculated does not match the signature you provided"
            )
        self.previous = expected


class Decoder:
    """The data of an aws-chunked body, read from `stream` (read and readline), checked.

    After a complete iteration `size` is the number of data bytes and `trailers` the trailer
    lines (lowercase name -> value, without the trailer signature).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        signer: ChunkSigner | None,
        trailer: bool,
        declared_size: int | None = None,
    ) -> None:
        self.stream = stream
        self.signer = signer
        self.trailer = trailer
        self.declared_size = declared_size
        self.size = 0
        self.trailers: dict[str, str] = {}

    def __iter__(self) -> Iterator[bytes]:
        while True:
            size, signature = self._chunk_header()
            digest = hashlib.sha256()
            remaining = size
            while remaining:
                data = self.stream.read(min(PIECE, remaining))
                if not data:
                    raise ChunkError(f"the body ended inside a chunk ({remaining} bytes missing)")
                digest.update(data)
                remaining -= len(data)
                self.size += len(data)
                if self.declared_size is not None and self.size > self.declared_size:
                    raise ChunkError(
                        f"the body holds more than x-amz-decoded-content-length "
                        f"{self.declared_size} bytes"
                    )
                yield data
            if self.signer is not None:
                self.signer.check_chunk(signature, digest.hexdigest())
            if size == 0:
                break
            if self.stream.read(2) != b"\r\n":
                raise ChunkError("a chunk's data is not followed by CRLF")
        self._end()
        if self.declared_size is not None and self.size != self.declared_size:
            raise ChunkError(
                f"the body holds {self.size} bytes, x-amz-decoded-content-length says "
                f"{self.declared_size}"
            )

    def _line(self, what: str) -> str | None:
        """One CRLF-terminated line without its CRLF; None at the end of the body."""
        raw = self.stream.readline(MAX_LINE + 1)
        if not raw:
            return None
        if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
            raise ChunkError(f"{what} is too long or unterminated")
        try:
            return raw.rstrip(b"\r\n").decode("ascii")
        except UnicodeDecodeError:
            raise ChunkError(f"{what} is not ASCII") from None

    def _chunk_header(self) -> tuple[int, str]:
        line = self._line("a chunk header")
        if line is None:
            raise ChunkError("the body ended before its last (zero-length) chunk")
        size_text, _, extension = line.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ChunkError(f"chunk size {size_text[:20]!r} is not hexadecimal") from None
        name, _, signature = extension.partition("=")
        if self.signer is not None and name.strip() != "chunk-signature":
            raise ChunkError("a chunk of a signed streaming upload lacks its chunk-signature")
        return size, signature.strip()

    def _end(self) -> None:
        """After the last chunk: the trailer lines (with their signature), then an empty line."""
        canonical = []
        signature = None
        while True:
            line = self._line("a trailer line")
            if not line:  # the final empty line (some clients end the body without it)
                if line == "" and self.trailer and not canonical:
                    continue  # an empty line between the last chunk and the trailer
                break
            name, sep, value = line.partition(":")
            if not sep or not self.trailer:
                raise ChunkError(f"unexpected line after the last chunk: {line[:40]!r}")
            name, value = name.strip().lower(), value.strip()
            if name == TRAILER_SIGNATURE:
                signature = value
            else:
                self.trailers[name] = value
                canonical.append(f"{name}:{value}\n")
        if self.trailer and not self.trailers:
            raise ChunkError("the body has no trailer although x-amz-trailer announces one")
        if self.signer is not None and self.trailer:
            if signature is None:
                raise ChunkError(f"the trailer lacks its {TRAILER_SIGNATURE}")
            self.signer.check_trailer(signature, "".join(canonical).encode())


def encode_unsigned(pieces: Iterator[bytes], trailers: dict[str, str]) -> Iterator[bytes]:
    """The aws-chunked framing of STREAMING-UNSIGNED-PAYLOAD-TRAILER around data pieces (one
    chunk each), ending with the trailer lines; `trailers` is read when the pieces are done."""
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    lines = "".join(f"{name}:{value}\r\n" for name, value in trailers.items())
    yield b"0\r\n" + lines.encode("ascii") + b"\r\n"

"""aws-chunked bodies as S3 clients frame them, for tests: signed chunks written here from AWS's
description (independently of cloudctl.api.awschunked, which checks them)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib

EMPTY = hashlib.sha256(b"").hexdigest()


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def signed_body(
    data: bytes,
    chunk_size: int,
    *,
    key: bytes,
    amz_date: str,
    scope: str,
    seed: str,
    trailer: dict[str, str] | None = None,
    corrupt_chunk: int | None = None,
) -> bytes:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) framing of `data`; `corrupt_chunk` (an
    index) gets a wrong signature."""

    def sign(*lines: str) -> str:
        return hmac.new(key, "\n".join(lines).encode(), hashlib.sha256).hexdigest()

    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    previous, out = seed, []
    for index, chunk in enumerate(chunks):
        signature = sign("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY,
                         hashlib.sha256(chunk).hexdigest())  # fmt: skip
        previous = signature
        if index == corrupt_chunk:
            signature = "0" * 64
        out.append(b"%x;chunk-signature=%s\r\n%s" % (len(chunk), signature.encode(), chunk))
        out.append(b"\r\n" if chunk else b"")
    if trailer is None:
        return b"".join(out) + b"\r\n"
    canonical = "".join(f"{name}:{value}\n" for name, value in trailer.items())
    trailer_signature = sign("AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous,
                             hashlib.sha256(canonical.encode()).hexdigest())  # fmt: skip
    lines = canonical.replace("\n", "\r\n") + f"x-amz-trailer-signature:{trailer_signature}\r\n"
    return b"".join(out) + lines.encode() + b"\r\n"

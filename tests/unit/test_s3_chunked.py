"""aws-chunked request bodies: AWS's own example, botocore's framing, every way one can be bad."""

from __future__ import annotations

import io

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from cloudctl.api import sigv4
from cloudctl.api.awschunked import (
    ChunkError,
    ChunkSignatureMismatch,
    ChunkSigner,
    Decoder,
    encode_unsigned,
)
from tests.aws_chunked import crc32_b64, signed_body

# AWS's example "PUT Object" in "Signature Calculations for the Authorization Header:
# Transferring Payload in Multiple Chunks": 66560 bytes of 'a' in chunks of 64 KiB.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_DATE = "20130524T000000Z"
AWS_SCOPE = "20130524/us-east-1/s3/aws4_request"
AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    + b"\r\n\r\n"
)


def signer(seed: str = AWS_SEED) -> ChunkSigner:
    key = sigv4.signing_key(AWS_SECRET, AWS_DATE[:8], "us-east-1", "s3")
    return ChunkSigner(key=key, amz_date=AWS_DATE, scope=AWS_SCOPE, previous=seed)


def decode(body: bytes, **kwargs) -> tuple[bytes, Decoder]:
    decoder = Decoder(io.BytesIO(body), **kwargs)
    return b"".join(decoder), decoder


def test_aws_example_verifies_and_decodes():
    assert len(AWS_BODY) == 66824  # the example's Content-Length
    data, decoder = decode(AWS_BODY, signer=signer(), trailer=False, declared_size=66560)
    assert data == b"a" * 66560 and decoder.size == 66560 and decoder.trailers == {}


@pytest.mark.parametrize("offset", [100, 65700, 66700])  # in chunk 1, chunk 2, the last one
def test_any_changed_byte_or_signature_is_refused(offset):
    body = bytearray(AWS_BODY)
    body[offset] ^= 1 if body[offset] != ord("a") else 3
    with pytest.raises((ChunkSignatureMismatch, ChunkError)):
        decode(bytes(body), signer=signer(), trailer=False)


def test_a_wrong_seed_fails_at_the_first_chunk():
    pieces = iter(Decoder(io.BytesIO(AWS_BODY), signer=signer("0" * 64), trailer=False))
    next(pieces)  # data comes as it is read; the check ends the chunk
    with pytest.raises(ChunkSignatureMismatch):
        list(pieces)


def test_signed_with_trailer():
    data = bytes(range(256)) * 300
    trailer = {"x-amz-checksum-crc32": crc32_b64(data)}
    key = sigv4.signing_key(AWS_SECRET, AWS_DATE[:8], "us-east-1", "s3")
    body = signed_body(data, 8192, key=key, amz_date=AWS_DATE, scope=AWS_SCOPE, seed=AWS_SEED,
                       trailer=trailer)  # fmt: skip
    decoded, decoder = decode(body, signer=signer(), trailer=True, declared_size=len(data))
    assert decoded == data and decoder.trailers == trailer
    tampered = body.replace(trailer["x-amz-checksum-crc32"].encode(), b"AAAAAA==")
    with pytest.raises(ChunkSignatureMismatch):
        decode(tampered, signer=signer(), trailer=True)
    unsigned = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    with pytest.raises(ChunkError, match="lacks its x-amz-trailer-signature"):
        decode(unsigned, signer=signer(), trailer=True)


def test_botocore_unsigned_trailer_framing():
    """What boto3 sends over HTTPS (STREAMING-UNSIGNED-PAYLOAD-TRAILER), and our re-framing
    of it for Walrus, which is the same."""
    data = b"x" * 100_000
    body = AwsChunkedWrapper(io.BytesIO(data), Crc32Checksum, "x-amz-checksum-crc32").read()
    decoded, decoder = decode(body, signer=None, trailer=True, declared_size=len(data))
    assert decoded == data and decoder.trailers == {"x-amz-checksum-crc32": crc32_b64(data)}
    decoder = Decoder(io.BytesIO(body), signer=None, trailer=True)
    again = b"".join(encode_unsigned(iter(decoder), decoder.trailers))
    assert decode(again, signer=None, trailer=True)[0] == data


@pytest.mark.parametrize(
    ("body", "declared", "message"),
    [
        (b"5\r\nabc", None, "ended inside a chunk"),
        (b"5\r\nabcde\r\n", None, "before its last"),
        (b"zz\r\n", None, "not hexadecimal"),
        (b"5\r\nabcdeXY0\r\n\r\n", None, "not followed by CRLF"),
        (b"5\r\nabcde\r\n0\r\n\r\n", 4, "more than x-amz-decoded-content-length"),
        (b"5\r\nabcde\r\n0\r\n\r\n", 6, "says 6"),
        (b"1\r\na\r\n0\r\n\r\n", None, "no trailer although"),
        (b"1" * 5000 + b"\r\n", None, "too long"),
    ],
)
def test_malformed_bodies(body, declared, message):
    trailer = "no trailer" in message
    with pytest.raises(ChunkError, match=message):
        decode(body, signer=None, trailer=trailer, declared_size=declared)


def test_signed_chunks_need_their_signature():
    with pytest.raises(ChunkError, match="lacks its chunk-signature"):
        decode(b"1\r\na\r\n0\r\n\r\n", signer=signer(), trailer=False)

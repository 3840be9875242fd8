"""Walrus (S3): the only module of cloudctl that talks S3, through boto3.

    s3 = walrus.client(get_config(settings).walrus)
    if not walrus.object_exists(s3, IMAGES, sha256):
        walrus.upload_file(s3, IMAGES, sha256, path, progress=bar.update)
    url = walrus.presigned_get(s3, IMAGES, sha256, expires=3600)

The client signs with SigV4, uses path-style addressing (`http://host:port/bucket/key`: the
endpoint is an address, not a DNS zone) and region us-east-1. botocore errors become typed
CloudErrors with one line that names the endpoint and never the secret key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# boto3 itself is imported where a client is made: it costs every cloudctl command ~0.25 s.
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError  # not the builtin

from cloudctl.cloudconfig import Walrus
from cloudctl.errors import CloudError

IMAGES = "images"
SNAPSHOTS = "snapshots"
REGION = "us-east-1"
MiB = 1024 * 1024
PART_SIZE = 64 * MiB  # multipart above this size, in parts of this size
MAX_PARTS = 10000  # S3's limit of parts per upload
MAX_COPY = 5 * 1024 * MiB  # S3's limit of one CopyObject
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
_MISSING = {"NoSuchKey", "NotFound", "404"}


class WalrusError(CloudError):
    """An S3 request to Walrus failed."""


class WalrusUnreachable(WalrusError):
    """The Walrus endpoint does not answer (down, wrong address, timeout)."""


class WalrusAccessDenied(WalrusError):
    """Walrus refuses the configured credentials."""


class WalrusNoSuchBucket(WalrusError):
    """A bucket the cloud needs is missing (the walrus role creates it)."""


def error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "")


@dataclass(frozen=True)
class Client:
    """A boto3 S3 client bound to one Walrus endpoint (no secret kept beside it)."""

    s3: Any
    endpoint: str
    access_key: str


def client(config: Walrus, connect_timeout: float = 5, read_timeout: float = 60) -> Client:
    import boto3
    from botocore.config import Config

    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint,
        aws_access_key_id=config.access_key,
        aws_secret_access_key=config.secret_key,
        region_name=REGION,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )
    return Client(s3=s3, endpoint=config.endpoint, access_key=config.access_key)


# --- error mapping -----------------------------------------------------------------------


@contextmanager
def _errors(c: Client, action: str, bucket: str, key: str = "") -> Iterator[None]:
    """Turn botocore errors of one request into a WalrusError of one line."""
    where = f"{bucket}/{key}" if key else bucket
    try:
        yield
    except ClientError as exc:
        raise _client_error(c, action, where, bucket, exc) from None
    except (BotoConnectionError, HTTPClientError) as exc:
        raise WalrusUnreachable(
            f"Walrus at {c.endpoint} does not answer ({action} {where}): {exc}"
        ) from None
    except BotoCoreError as exc:
        raise WalrusError(f"Walrus at {c.endpoint}: {action} {where} failed: {exc}") from None


def _client_error(c: Client, action: str, where: str, bucket: str, exc: ClientError) -> WalrusError:
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message") or ""
    if code in _DENIED:
        return WalrusAccessDenied(
            f"Walrus at {c.endpoint} refuses access key {c.access_key} "
            f"({action} {where}: {code}); check walrus access_key/secret_key "
            "in the cloud configuration"
        )
    if code == "NoSuchBucket":
        return WalrusNoSuchBucket(
            f"Walrus at {c.endpoint} has no bucket {bucket!r} (deploy the walrus role to create it)"
        )
    if code.startswith("5") or code in ("ServiceUnavailable", "InternalError", "SlowDown"):
        return WalrusUnreachable(
            f"Walrus at {c.endpoint} cannot serve {action} {where} now: {code} {message}"
        )
    return WalrusError(f"Walrus at {c.endpoint}: {action} {where} failed: {code} {message}")


# --- objects -----------------------------------------------------------------------------


def head_object(c: Client, bucket: str, key: str) -> dict[str, Any] | None:
    """The object's metadata (ContentLength, Metadata, ...), None when it does not exist."""
    with _errors(c, "HeadObject", bucket, key):
        try:
            return c.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise


def object_exists(c: Client, bucket: str, key: str) -> bool:
    return head_object(c, bucket, key) is not None


def upload_file(
    c: Client,
    bucket: str,
    key: str,
    path: str | Path,
    progress: Callable[[int], None] | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Upload a file; multipart above 64 MiB, 64 MiB parts, two at a time.

    `progress(n)` gets the bytes sent since its last call (boto3 calls it from transfer
    threads: here under a lock).
    """
    callback = None
    if progress is not None:
        lock = threading.Lock()

        def callback(n: int) -> None:
            with lock:
                progress(n)

    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig

    transfer = TransferConfig(
        multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=2
    )
    extra = {"Metadata": metadata} if metadata else None
    with _errors(c, "upload", bucket, key):
        try:
            c.s3.upload_file(
                str(path), bucket, key, ExtraArgs=extra, Callback=callback, Config=transfer
            )
        except S3UploadFailedError as exc:  # boto3's transfer wraps the S3 error: unwrap it
            if isinstance(exc.__context__, ClientError):
                raise exc.__context__ from None
            raise WalrusError(f"Walrus at {c.endpoint}: upload {bucket}/{key}: {exc}") from None


def read_object(c: Client, bucket: str, key: str, chunk_size: int = MiB) -> Iterator[bytes]:
    """The object's bytes, streamed in chunks (constant memory)."""
    with _errors(c, "GetObject", bucket, key):
        body = c.s3.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()


def copy_object(
    c: Client,
    source_bucket: str,
    source_key: str,
    bucket: str,
    key: str,
    metadata: dict[str, str] | None = None,
) -> None:
    """Copy an object inside Walrus (server side: no byte passes through here); in 64 MiB
    parts above S3's 5 GiB limit of one copy."""
    from boto3.s3.transfer import TransferConfig

    transfer = TransferConfig(
        multipart_threshold=MAX_COPY, multipart_chunksize=PART_SIZE, max_concurrency=2
    )
    extra = {"Metadata": metadata, "MetadataDirective": "REPLACE"} if metadata else None
    with _errors(c, "CopyObject", bucket, key):
        c.s3.copy(
            {"Bucket": source_bucket, "Key": source_key}, bucket, key,
            ExtraArgs=extra, Config=transfer,
        )  # fmt: skip


def delete_object(c: Client, bucket: str, key: str) -> None:
    with _errors(c, "DeleteObject", bucket, key):
        c.s3.delete_object(Bucket=bucket, Key=key)


def presigned_get(c: Client, bucket: str, key: str, expires: int = 3600) -> str:
    """A URL anyone may GET for `expires` seconds (no credentials needed)."""
    with _errors(c, "presign GetObject", bucket, key):
        return c.s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
        )


# --- multipart through presigned URLs (a host uploads without the secret key) ------------


def start_multipart(c: Client, bucket: str, key: str) -> str:
    """Begin a multipart upload; returns its upload id."""
    with _errors(c, "CreateMultipartUpload", bucket, key):
        return c.s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]


def presigned_part_urls(
    c: Client, bucket: str, key: str, upload_id: str, count: int, expires: int = 3600
) -> list[str]:
    """PUT URLs of parts 1..count of a multipart upload; each PUT answers with an ETag.

    Every part but the last must be at least 5 MiB (S3's rule).
    """
    if not 1 <= count <= MAX_PARTS:
        raise ValueError(f"part count {count} outside 1..{MAX_PARTS}")
    with _errors(c, "presign UploadPart", bucket, key):
        return [
            c.s3.generate_presigned_url(
                "upload_part",
                Params={"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": n},
                ExpiresIn=expires,
            )
            for n in range(1, count + 1)
        ]


def complete_multipart(
    c: Client,
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[Mapping[str, Any] | tuple[int, str]],
) -> None:
    """Finish a multipart upload from its parts: (number, ETag) pairs or mappings with
    PartNumber/ETag (S3's names) or part_number/etag; only the parts uploaded count.
    """
    listed = []
    for part in parts:
        if isinstance(part, Mapping):
            number = part.get("PartNumber", part.get("part_number"))
            etag = part.get("ETag", part.get("etag"))
        else:
            number, etag = part
        listed.append({"PartNumber": int(number), "ETag": str(etag)})
    listed.sort(key=lambda p: p["PartNumber"])
    with _errors(c, "CompleteMultipartUpload", bucket, key):
        c.s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}
        )


def abort_multipart(c: Client, bucket: str, key: str, upload_id: str) -> None:
    with _errors(c, "AbortMultipartUpload", bucket, key):
        c.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)

"""AWS Signature Version 4: checking the signature of a request a client signed.

Both forms AWS defines: the `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
Signature=...` header, and the presigned query (`X-Amz-Algorithm`, `X-Amz-Credential`,
`X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Signature`). `verify()` knows no
HTTP framework and no service's error codes: it takes the method, the path as sent, the query
pairs, the headers, the payload hash and a secret lookup, and raises a SigV4Error subclass that
each service maps to its own codes (the EC2 API: cloudctl.api.errors; an S3 gateway: S3's).

The canonical request is built as AWS documents it ("Create a canonical request for Signature
Version 4"):
- the URI: the path as the client sent it (already URI-encoded once); for every service but S3
  dot segments and empty segments are removed and it is URI-encoded once more (AWS's "double
  encoding"); S3 uses it as it is;
- the query: every pair but X-Amz-Signature, key and value URI-encoded (RFC 3986 unreserved
  characters kept), sorted by key then value;
- the headers the client lists in SignedHeaders (lowercase names, values trimmed and inner runs
  of spaces made one), which must include `host` and the date header used;
- the payload hash: `payload_hash()` chooses it (the body's sha256; for S3 the declared
  x-amz-content-sha256, which may be UNSIGNED-PAYLOAD; always UNSIGNED-PAYLOAD for a presigned
  S3 URL).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = timedelta(minutes=15)  # AWS's bound between the request's date and the server's
MAX_EXPIRES = 7 * 24 * 3600  # the longest X-Amz-Expires AWS accepts (seconds)
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

_AUTH_FIELD = re.compile(r"\s*([A-Za-z]+)\s*=\s*([^,\s]*)\s*")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


class SigV4Error(Exception):
    """The request is not signed right; the message says why (it names no secret)."""


class MissingAuth(SigV4Error):
    """Neither an Authorization header nor presigned query parameters."""


class MalformedAuth(SigV4Error):
    """The signature's fields are garbled, incomplete or scoped to another service/region."""


class UnknownKey(SigV4Error):
    """The lookup knows no active key with this access key id."""


class SignatureMismatch(SigV4Error):
    """The signature is not the one the key's secret gives for this request."""


class RequestSkewed(SigV4Error):
    """The request's date is more than MAX_SKEW before or after the server's clock."""


class PresignExpired(SigV4Error):
    """A presigned request used after its X-Amz-Date + X-Amz-Expires."""


@dataclass(frozen=True)
class SignedRequest:
    """What a verified signature tells about the request."""

    access_key_id: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    date: datetime
    presigned: bool
    signature: str  # the request's own: the seed of an S3 streaming upload's chunk signatures


@dataclass(frozen=True)
class _Signature:
    access_key_id: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    expires: int | None  # presigned only


def verify(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    payload_hash: str,
    lookup_secret: Callable[[str], str | None],
    *,
    service: str,
    region: str,
    now: datetime | None = None,
) -> SignedRequest:
    """Check a request's SigV4 signature; returns what it found or raises a SigV4Error.

    `path` is the raw path as sent (percent-encoded), `query` the decoded query pairs,
    `headers` lowercase names -> values (repeated headers joined with ","), `lookup_secret`
    the secret of an active access key id (None when there is none).
    """
    query = list(query)
    headers = {name.lower(): value for name, value in headers.items()}
    now = now or datetime.now(UTC)
    presigned = is_presigned(query)
    sig = _from_query(query) if presigned else _from_header(headers)
    if sig.service != service:
        raise MalformedAuth(f"Credential should be scoped to correct service: '{service}'")
    if sig.region != region:
        raise MalformedAuth(
            f"Credential should be scoped to a valid region, not '{sig.region}' "
            f"(this cloud's region is '{region}')"
        )
    if "host" not in sig.signed_headers:
        raise MalformedAuth("the host header must be signed (SignedHeaders lacks host)")
    date = _request_date(sig, headers, presigned)
    amz_date = date.strftime(AMZ_DATE_FORMAT)  # the string to sign's, whichever header held it
    if amz_date[:8] != sig.scope_date:
        raise MalformedAuth(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{sig.scope_date}' != '{amz_date[:8]}'"
        )
    _check_time(date, sig.expires, now)

    secret = lookup_secret(sig.access_key_id)
    if secret is None:
        raise UnknownKey(f"no active access key {sig.access_key_id}")
    canonical = canonical_request(
        method, path, query, headers, sig.signed_headers, payload_hash, service
    )
    expected = signature(secret, amz_date, sig.region, sig.service, canonical)
    if not hmac.compare_digest(expected, sig.signature):
        raise SignatureMismatch(
            "The request signature we calculated does not match the signature you provided: "
            "check the secret access key and the signing method"
        )
    return SignedRequest(
        sig.access_key_id,
        sig.region,
        sig.service,
        sig.signed_headers,
        date,
        presigned,
        sig.signature,
    )


def payload_hash(
    service: str,
    body: bytes,
    headers: Mapping[str, str],
    presigned: bool = False,
) -> str:
    """The payload hash of the canonical request: the body's sha256, except for S3, which
    signs the x-amz-content-sha256 the client declares (a hex sha256, UNSIGNED-PAYLOAD or a
    STREAMING-* value; an S3 gateway checks a declared hex hash against the body it stores)
    and UNSIGNED-PAYLOAD for presigned URLs."""
    if service == "s3":
        if presigned:
            return UNSIGNED_PAYLOAD
        declared = {k.lower(): v for k, v in headers.items()}.get("x-amz-content-sha256")
        if not declared:
            raise MalformedAuth("x-amz-content-sha256 header is missing")
        return declared.strip()
    return hashlib.sha256(body).hexdigest()


def is_presigned(query: Iterable[tuple[str, str]]) -> bool:
    return any(key == "X-Amz-Algorithm" for key, _ in query)


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    payload: str,
    service: str,
) -> str:
    """The canonical request (AWS's text, lines joined by newlines)."""
    lines = [method.upper(), canonical_uri(path, service), canonical_query(query)]
    names = list(signed_headers)
    lines.append("".join(f"{name}:{_trimmed(headers[name])}\n" for name in names))
    lines.append(";".join(names))
    lines.append(payload)
    return "\n".join(lines)


def canonical_uri(path: str, service: str) -> str:
    path = path or "/"
    if service == "s3":
        return path
    return quote(_remove_dot_segments(path), safe="/~")


def canonical_query(query: Iterable[tuple[str, str]]) -> str:
    pairs = sorted(
        (uri_encode(key), uri_encode(value)) for key, value in query if key != "X-Amz-Signature"
    )
    return "&".join(f"{key}={value}" for key, value in pairs)


def uri_encode(text: str) -> str:
    """AWS's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ percent-encoded (uppercase hex)."""
    return quote(text, safe="-_.~")


def signature(secret: str, amz_date: str, region: str, service: str, canonical: str) -> str:
    """The hex signature of a canonical request."""
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = signing_key(secret, amz_date[:8], region, service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The key derived from the secret for one day (YYYYMMDD), region and service (it also
    signs the chunks of S3's streaming uploads)."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


# --- parsing the two forms ---------------------------------------------------------------


def _from_header(headers: Mapping[str, str]) -> _Signature:
    auth = headers.get("authorization", "").strip()
    if not auth:
        raise MissingAuth(
            "the request is not signed: it has neither an Authorization header nor "
            "X-Amz-Algorithm query parameters"
        )
    algorithm, _, rest = auth.partition(" ")
    if algorithm != ALGORITHM:
        raise MalformedAuth(f"unsupported authorization type {algorithm!r}: use {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        match = _AUTH_FIELD.fullmatch(part)
        if not match:
            raise MalformedAuth(f"Authorization header field {part.strip()!r} is not NAME=VALUE")
        fields[match.group(1)] = match.group(2)
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if not fields.get(f)]
    if missing:
        raise MalformedAuth(f"Authorization header lacks {', '.join(missing)}")
    amz_date = headers.get("x-amz-date", "")
    return _signature_fields(
        fields["Credential"], fields["SignedHeaders"], fields["Signature"], amz_date, None
    )


def _from_query(query: list[tuple[str, str]]) -> _Signature:
    params: dict[str, str] = {}
    for key, value in query:
        if key.startswith("X-Amz-"):
            if key in params:
                raise MalformedAuth(f"query parameter {key} is given twice")
            params[key] = value
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise MalformedAuth(
            f"unsupported X-Amz-Algorithm {params['X-Amz-Algorithm']!r}: use {ALGORITHM}"
        )
    needed = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
              "X-Amz-Signature")  # fmt: skip
    missing = [name for name in needed if not params.get(name)]
    if missing:
        raise MalformedAuth(f"presigned request lacks {', '.join(missing)}")
    expires = params["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_EXPIRES:
        raise MalformedAuth(
            f"X-Amz-Expires {expires!r} must be a number of seconds from 1 to {MAX_EXPIRES}"
        )
    return _signature_fields(
        params["X-Amz-Credential"],
        params["X-Amz-SignedHeaders"],
        params["X-Amz-Signature"],
        params["X-Amz-Date"],
        int(expires),
    )


def _signature_fields(
    credential: str, signed: str, sig: str, amz_date: str, expires: int | None
) -> _Signature:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
        raise MalformedAuth(
            f"Credential {credential!r} is not ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request"
        )
    names = tuple(signed.split(";"))
    if not all(names) or list(names) != sorted(set(names)) or signed != signed.lower():
        raise MalformedAuth(
            f"SignedHeaders {signed!r} must be lowercase header names, sorted, separated by ';'"
        )
    if not _SIGNATURE.match(sig):
        raise MalformedAuth("Signature must be 64 lowercase hex digits")
    return _Signature(parts[0], parts[1], parts[2], parts[3], names, sig, amz_date, expires)


# --- time ---------------------------------------------------------------------------------


def _request_date(sig: _Signature, headers: Mapping[str, str], presigned: bool) -> datetime:
    """The date the client signed: X-Amz-Date (query or header), else the Date header; the
    header it comes from must be signed, and every signed header must be there."""
    for name in sig.signed_headers:
        if name not in headers:
            raise MalformedAuth(f"signed header {name!r} is not in the request")
    if presigned or sig.amz_date:
        if not presigned and "x-amz-date" not in sig.signed_headers:
            raise MalformedAuth("the x-amz-date header must be signed")
        try:
            date = datetime.strptime(sig.amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise MalformedAuth(
                f"X-Amz-Date {sig.amz_date!r} is not YYYYMMDDTHHMMSSZ (ISO 8601 basic, UTC)"
            ) from None
        return date
    if "date" not in headers:
        raise MalformedAuth("the request has no date: sign an X-Amz-Date or Date header")
    if "date" not in sig.signed_headers:
        raise MalformedAuth("the date header must be signed")
    try:
        date = parsedate_to_datetime(headers["date"]).astimezone(UTC)
    except (TypeError, ValueError):
        raise MalformedAuth(f"Date header {headers['date']!r} is not an HTTP date") from None
    return date


def _check_time(date: datetime, expires: int | None, now: datetime) -> None:
    stamp = date.strftime(AMZ_DATE_FORMAT)
    if date > now + MAX_SKEW:
        raise RequestSkewed(
            f"Signature not yet current: {stamp} is still later than "
            f"{(now + MAX_SKEW).strftime(AMZ_DATE_FORMAT)} "
            f"({now.strftime(AMZ_DATE_FORMAT)} + 15 min.)"
        )
    if expires is not None:
        if now > date + timedelta(seconds=expires):
            raise PresignExpired(
                f"Request has expired: signed {stamp} for {expires} seconds, "
                f"now {now.strftime(AMZ_DATE_FORMAT)}"
            )
        return
    if date < now - MAX_SKEW:
        raise RequestSkewed(
            f"Signature expired: {stamp} is now earlier than "
            f"{(now - MAX_SKEW).strftime(AMZ_DATE_FORMAT)} "
            f"({now.strftime(AMZ_DATE_FORMAT)} - 15 min.)"
        )


def _trimmed(value: str) -> str:
    return " ".join(value.split())


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, and empty segments dropped as AWS's signers do."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    trailing = "/" if path.endswith("/") and segments else ""
    return "/" + "/".join(segments) + trailing

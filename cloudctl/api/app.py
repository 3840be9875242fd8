"""The EC2 Query API as a plain WSGI application (served by gunicorn: cloudctl.api.server).

One request: read its parameters (GET query or POST form, the body bounded), check its SigV4
signature with the secret of its access key (identity.Identity), run the action's handler as
the key's principal (identity.acting_as), and answer EC2's XML or EC2's XML error. A plain WSGI
callable is all this needs: the Query API has one path and no routing, sessions or templates.
Every request logs one line (action, principal, status, duration), never a secret or signature.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from cloudctl import identity
from cloudctl.api import actions, render, s3, sigv4
from cloudctl.api.errors import ApiError, api_error, short
from cloudctl.api.params import Params
from cloudctl.api.request import ApiRequest, headers_of, raw_path, region_of
from cloudctl.cloudconfig import CloudConfig
from cloudctl.config import Settings
from cloudctl.services import CloudService
from cloudctl.state import open_store

log = logging.getLogger("cloudctl.api")

SERVICE = "ec2"  # the SigV4 service name EC2 clients sign for
MAX_BODY_BYTES = 1024 * 1024  # far above any EC2 request (UserData is at most 16 KiB)
FORM = "application/x-www-form-urlencoded"
# An access key id -> (its secret, whom it belongs to); identity's errors when there is none.
Authenticate = Callable[[str], tuple[str, identity.Principal]]
StartResponse = Callable[..., Any]


class Api:
    """The WSGI application of one cloud (its Settings name the state and configuration)."""

    def __init__(
        self,
        settings: Settings,
        *,
        authenticate: Authenticate | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.authenticate = authenticate or identity.Identity(self.store).authenticate
        self.max_body_bytes = max_body_bytes
        self.actions = actions.load()
        self.s3 = s3.Gateway(self.store, self.authenticate, self.config)  # Walrus per account

    def config(self) -> CloudConfig:
        """The cloud configuration, read per request (a redeploy may change it); the state is
        refused when missing or of another cloud."""
        return CloudService(self.settings, store=self.store).config

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if s3.is_s3_request(environ):
            return self.s3(environ, start_response)
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        # What the log line tells, filled in as the request is read: an access key and an
        # action are known before the signature is checked.
        seen = {"action": "-", "key": "-", "principal": "-"}
        try:
            request = self._request(environ, request_id, seen)
            handler = self.actions.get(request.action)
            if handler is None:
                raise ApiError(
                    "InvalidAction",
                    f"The action {short(request.action)} is not valid for this web service.",
                )
            if request.params.boolean("DryRun"):  # EC2: signed and known, nothing runs
                raise ApiError(
                    "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412
                )
            with identity.acting_as(request.principal):
                payload = render.response(request.action, request_id, handler(request))
            status, code = 200, "-"
        except Exception as exc:  # every failure is an EC2 error to the client
            error = api_error(exc)
            if error.status >= 500:
                log.error("request %s failed", request_id, exc_info=exc)
            status, code = error.status, error.code
            payload = render.error(error.code, error.message, request_id)
        log.info(
            "action=%s principal=%s key=%s status=%d code=%s duration_ms=%.1f request_id=%s",
            _loggable(seen["action"]), seen["principal"], _loggable(seen["key"]), status, code,
            (time.monotonic() - started) * 1000, request_id,
        )  # fmt: skip
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [
                ("Content-Type", "text/xml;charset=UTF-8"),
                ("Content-Length", str(len(payload))),
                ("x-amzn-RequestId", request_id),
            ],
        )
        return [payload]

    def _request(
        self, environ: dict[str, Any], request_id: str, seen: dict[str, str]
    ) -> ApiRequest:
        """The authenticated request: parameters, principal, configuration."""
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method not in ("GET", "POST"):
            raise ApiError("MethodNotAllowed", f"{method} is not supported: use GET or POST", 405)
        query = _pairs(environ.get("QUERY_STRING", ""))
        body = self._body(environ) if method == "POST" else b""
        params = dict(query) | (dict(_pairs(body.decode("latin-1"))) if body else {})
        seen["action"] = params.get("Action") or "-"

        config = self.config()
        principals: dict[str, identity.Principal] = {}

        def secret_of(access_key_id: str) -> str | None:
            seen["key"] = access_key_id
            try:
                secret, principals[access_key_id] = self.authenticate(access_key_id)
            except (identity.UnknownAccessKey, identity.InactiveAccessKey):
                return None
            return secret

        headers = headers_of(environ)
        service = actions.SERVICES.get(params.get("Action", ""), SERVICE)
        signed = sigv4.verify(
            method,
            raw_path(environ),
            query,
            headers,
            sigv4.payload_hash(SERVICE, body, headers),
            secret_of,
            service=service,
            region=region_of(config),
        )
        principal = principals[signed.access_key_id]
        seen["principal"] = str(principal)
        action = params.get("Action", "")
        if not action:
            raise ApiError("MissingAction", "The request must contain the parameter Action")
        return ApiRequest(
            action=action,
            params=Params({k: v for k, v in params.items() if not k.startswith("X-Amz-")}),
            principal=principal,
            settings=self.settings,
            store=self.store,
            request_id=request_id,
            endpoint=_endpoint(environ),
            _config=config,
        )

    def _body(self, environ: dict[str, Any]) -> bytes:
        """A form POST's body, refused past max_body_bytes."""
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != FORM:
            raise ApiError(
                "InvalidParameterValue",
                f"Content-Type {content_type or '(none)'} is not supported: use {FORM}",
            )
        length = environ.get("CONTENT_LENGTH") or ""
        if length and not length.isdigit():
            raise ApiError(
                "InvalidParameterValue", f"Content-Length {short(length)} is not a number"
            )
        if length and int(length) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        body = environ["wsgi.input"].read(int(length) if length else self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        return body


def _pairs(text: str) -> list[tuple[str, str]]:
    """Decoded name/value pairs of a query string or form body (UTF-8, percent-encoded)."""
    try:
        raw = text.encode("latin-1").decode("utf-8")
        return parse_qsl(raw, keep_blank_values=True, errors="strict")
    except (UnicodeError, ValueError):
        raise ApiError("MalformedQueryString", "The parameters are not valid UTF-8") from None


def _endpoint(environ: dict[str, Any]) -> str:
    host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}/"


def _too_large(limit: int) -> ApiError:
    return ApiError("RequestEntityTooLarge", f"The request body is larger than {limit} bytes", 413)


def _loggable(text: str) -> str:
    """A value the client sent, fit for one log line (short, printable, no spaces)."""
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in short(text))

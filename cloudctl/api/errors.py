"""EC2's errors, and the one place that maps cloudctl's errors to them.

A handler raises `ApiError(code, message)` for an EC2-specific code (InvalidInstanceID.NotFound,
IncorrectState, ...), or lets the service layer's typed errors through: `api_error()` turns
every exception into the EC2 error the client gets.
"""

from __future__ import annotations

import re

from cloudctl import errors, ids
from cloudctl.api import sigv4


class ApiError(Exception):
    """An EC2 error response: code, message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r}, {self.status})"


# The codes EC2 answers when a resource of a kind does not exist (or is not the caller's).
NOT_FOUND_CODES = {
    "image": "InvalidAMIID.NotFound",
    "kernel": "InvalidAMIID.NotFound",
    "ramdisk": "InvalidAMIID.NotFound",
    "instance": "InvalidInstanceID.NotFound",
    "volume": "InvalidVolume.NotFound",
    "snapshot": "InvalidSnapshot.NotFound",
    "group": "InvalidGroup.NotFound",
    "address": "InvalidAllocationID.NotFound",
    "keypair": "InvalidKeyPair.NotFound",
}
# The codes EC2 answers for an id that is not of its kind's form. EC2 publishes no
# InvalidAllocationID.Malformed: a malformed allocation id is one that is not found.
MALFORMED_CODES = {
    "image": "InvalidAMIID.Malformed",
    "kernel": "InvalidAMIID.Malformed",
    "ramdisk": "InvalidAMIID.Malformed",
    "instance": "InvalidInstanceID.Malformed",
    "volume": "InvalidVolumeID.Malformed",
    "snapshot": "InvalidSnapshotID.Malformed",
    "group": "InvalidGroupId.Malformed",
    "address": "InvalidAllocationID.NotFound",
}
_RESOURCE_ID = re.compile(r"\b(?:emi|eki|eri|i|vol|snap|sg|eipalloc)-[0-9a-f]{8}\b")

# EC2 answers AuthFailure (401) for credentials it cannot validate, and clients see a stale
# date the same way: aws-sdk-java#519 reports AuthFailure from EC2 for a skewed clock.
# RequestExpired is EC2's code for a presigned request used after its X-Amz-Expires.
_SIGV4_ERRORS: dict[type[sigv4.SigV4Error], tuple[str, int]] = {
    sigv4.MissingAuth: ("AuthFailure", 401),
    sigv4.MalformedAuth: ("AuthFailure", 401),
    sigv4.UnknownKey: ("AuthFailure", 401),
    sigv4.RequestSkewed: ("AuthFailure", 401),
    sigv4.SignatureMismatch: ("SignatureDoesNotMatch", 403),
    sigv4.PresignExpired: ("RequestExpired", 400),
}
UNKNOWN_KEY_MESSAGE = "AWS was not able to validate the provided access credentials"
INTERNAL_MESSAGE = "An internal error has occurred"


def not_found(kind: str, resource_id: str) -> ApiError:
    """EC2's not-found error for a resource id of a kind ("instance" -> InvalidInstanceID)."""
    return ApiError(NOT_FOUND_CODES[kind], f"The {kind} ID '{resource_id}' does not exist")


def malformed(kind: str, value: str) -> ApiError:
    """EC2's error for a text that is not an id of a kind (as Eucalyptus words it)."""
    return ApiError(
        MALFORMED_CODES[kind],
        f'Invalid id: "{short(value)}" (expecting "{ids.PREFIXES[kind]}-...")',
    )


def missing_parameter(name: str) -> ApiError:
    return ApiError("MissingParameter", f"The request must contain the parameter {name}")


def invalid_value(name: str, value: str, reason: str) -> ApiError:
    return ApiError(
        "InvalidParameterValue", f"Value ({value}) for parameter {name} is invalid. {reason}"
    )


def api_error(error: BaseException) -> ApiError:
    """The EC2 error for any exception a request raised.

    The client's own mistakes (InputError, NotFound, CapacityError, QuotaExceeded) carry the
    service layer's message; the cloud's failures (state, configuration, hosts, anything
    unexpected) only a generic one: the request log has the detail, the client no host name.
    """
    from cloudctl.quotas import QuotaExceeded  # quotas imports identity, which imports state

    if isinstance(error, ApiError):
        return error
    for kind, (code, status) in _SIGV4_ERRORS.items():
        if isinstance(error, kind):
            message = UNKNOWN_KEY_MESSAGE if kind is sigv4.UnknownKey else str(error)
            return ApiError(code, message, status)
    message = " ".join(str(error).split())
    if isinstance(error, QuotaExceeded):
        return ApiError("ResourceLimitExceeded", message)
    if isinstance(error, errors.NotFound):
        # The service layer names the id it did not find: the code follows its kind.
        found = _RESOURCE_ID.search(message)
        kind = ids.kind_of(found.group(0)) if found else None
        return ApiError(NOT_FOUND_CODES[kind] if kind else "InvalidParameterValue", message)
    if isinstance(error, errors.IncorrectState):
        return ApiError("IncorrectState", message)
    if isinstance(error, errors.InputError):
        return ApiError("InvalidParameterValue", message)
    if isinstance(error, errors.CapacityError):
        # A server error in EC2's list (clients may retry later); nothing was allocated.
        return ApiError("InsufficientInstanceCapacity", message, 503)
    if isinstance(error, errors.ConfigError):
        return ApiError("Unavailable", "The service is unavailable: see the service's log", 503)
    return ApiError("InternalError", INTERNAL_MESSAGE, 500)


def short(text: str, width: int = 64) -> str:
    """A value the client sent, cut to fit a message."""
    return text if len(text) <= width else text[: width - 3] + "..."

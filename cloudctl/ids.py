"""EC2-style resource ids and the EC2 state names with their allowed transitions.

An id is a prefix and 8 lowercase hex characters (as Eucalyptus): `i-0a1b2c3d`. Key pairs are
named by the operator and have no id.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from enum import StrEnum

from cloudctl.errors import IncorrectState, InputError

# kind -> prefix. Images, kernels and ramdisks are all "images" to the operator.
PREFIXES: dict[str, str] = {
    "image": "emi",
    "kernel": "eki",
    "ramdisk": "eri",
    "instance": "i",
    "volume": "vol",
    "snapshot": "snap",
    "group": "sg",
    "address": "eipalloc",
}
_KIND_OF_PREFIX = {prefix: kind for kind, prefix in PREFIXES.items()}
HEX_LEN = 8
_ID = re.compile(rf"^([a-z]+)-([0-9a-f]{{{HEX_LEN}}})$")


def new_id(kind: str) -> str:
    """A fresh random id of a kind ("instance" -> "i-3f9c01ab")."""
    try:
        prefix = PREFIXES[kind]
    except KeyError:
        raise ValueError(f"unknown resource kind {kind!r}") from None
    return f"{prefix}-{secrets.token_hex(HEX_LEN // 2)}"


def kind_of(resource_id: str) -> str | None:
    """The kind of a well-formed id, None when it is not one."""
    match = _ID.match(resource_id)
    return _KIND_OF_PREFIX.get(match.group(1)) if match else None


def parse_id(text: str, expected_kinds: str | Iterable[str]) -> str:
    """Validate an id given by the operator and return it normalized (lowercase hex).

    Raises InputError with one line, e.g. "bad instance id 'x-123': expected i-XXXXXXXX".
    """
    kinds = [expected_kinds] if isinstance(expected_kinds, str) else list(expected_kinds)
    for kind in kinds:
        if kind not in PREFIXES:
            raise ValueError(f"unknown resource kind {kind!r}")
    candidate = text.strip()
    prefix, _, rest = candidate.partition("-")
    normalized = f"{prefix}-{rest.lower()}"
    if kind_of(normalized) in kinds:
        return normalized
    expected = [f"{PREFIXES[k]}-{'X' * HEX_LEN}" for k in kinds]
    wanted = expected[0] if len(expected) == 1 else ", ".join(expected[:-1]) + f" or {expected[-1]}"
    label = "image" if set(kinds) <= {"image", "kernel", "ramdisk"} else "/".join(kinds)
    raise InputError(f"bad {label} id {text!r}: expected {wanted}")


# --- states (EC2 names) -------------------------------------------------------------------


class InstanceState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    FAILED = "failed"  # the launch failed (reason recorded); terminate cleans it up


class VolumeState(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    IN_USE = "in-use"
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"


class AttachmentState(StrEnum):
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"
    DETACHED = "detached"


class SnapshotState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    ERROR = "error"


_I, _V, _A, _S = InstanceState, VolumeState, AttachmentState, SnapshotState

# state -> the states it may move to. A state absent from the values is final.
INSTANCE_TRANSITIONS: Mapping[InstanceState, frozenset[InstanceState]] = {
    _I.PENDING: frozenset({_I.RUNNING, _I.FAILED, _I.SHUTTING_DOWN, _I.TERMINATED}),
    _I.RUNNING: frozenset({_I.STOPPING, _I.SHUTTING_DOWN}),
    _I.STOPPING: frozenset({_I.STOPPED, _I.SHUTTING_DOWN}),
    _I.STOPPED: frozenset({_I.PENDING, _I.SHUTTING_DOWN}),
    _I.FAILED: frozenset({_I.SHUTTING_DOWN}),
    _I.SHUTTING_DOWN: frozenset({_I.TERMINATED}),
    _I.TERMINATED: frozenset(),
}
VOLUME_TRANSITIONS: Mapping[VolumeState, frozenset[VolumeState]] = {
    _V.CREATING: frozenset({_V.AVAILABLE, _V.ERROR}),
    _V.AVAILABLE: frozenset({_V.IN_USE, _V.DELETING}),
    _V.IN_USE: frozenset({_V.AVAILABLE, _V.ERROR}),
    _V.DELETING: frozenset({_V.DELETED, _V.ERROR}),
    _V.ERROR: frozenset({_V.DELETING}),
    _V.DELETED: frozenset(),
}
ATTACHMENT_TRANSITIONS: Mapping[AttachmentState, frozenset[AttachmentState]] = {
    _A.ATTACHING: frozenset({_A.ATTACHED, _A.DETACHED}),  # detached: the attach failed
    _A.ATTACHED: frozenset({_A.DETACHING}),
    _A.DETACHING: frozenset({_A.DETACHED, _A.ATTACHED}),  # attached: the detach failed
    _A.DETACHED: frozenset(),
}
SNAPSHOT_TRANSITIONS: Mapping[SnapshotState, frozenset[SnapshotState]] = {
    _S.PENDING: frozenset({_S.COMPLETED, _S.ERROR}),
    _S.COMPLETED: frozenset(),
    _S.ERROR: frozenset(),
}
TRANSITIONS: Mapping[str, Mapping] = {
    "instance": INSTANCE_TRANSITIONS,
    "volume": VOLUME_TRANSITIONS,
    "attachment": ATTACHMENT_TRANSITIONS,
    "snapshot": SNAPSHOT_TRANSITIONS,
}


def can_transition(kind: str, current: str, new: str) -> bool:
    """Whether a resource of a kind ("instance", "volume", ...) may move between states."""
    table = TRANSITIONS[kind]
    return new in table.get(current, frozenset())


def require_transition(kind: str, current: str, new: str, resource_id: str = "") -> None:
    """Raise InputError with one line unless the transition is allowed."""
    if not can_transition(kind, current, new):
        name = f"{kind} {resource_id}" if resource_id else kind
        raise IncorrectState(f"{name} is {current}: cannot move to {new}")

# SPDX-License-Identifier: GPL-3.0-or-later
"""A client of tgtd's management socket: the requests ``tgtadm`` sends, without its command
line. A CHAP password given to ``tgtadm --password`` is readable by every user of the host in
/proc/PID/cmdline; sent over this socket it never is. Stdlib only (runs on target hosts).

The protocol, as in tgt 1.0.85 (Debian 12; usr/tgtadm.h, usr/tgtadm.c, usr/mgmt.c), checked
byte for byte against Debian's tgtadm by tests/modules/test_module_iscsi_volume.py:

- a unix stream socket ``/var/run/tgtd/socket.<N>`` (a file, not an abstract name), N being
  tgtd's ``--control-port`` (0 by default, as the sc role and the test hosts run it: each host
  has its own /run);
- one request per connection: ``struct tgtadm_req`` (``REQ`` below, 120 bytes in the host's
  byte order) followed by the parameters, ``key=value`` pairs joined by ``,`` and ended by a
  NUL byte; ``req.len`` is the size of both;
- the answer: ``struct tgtadm_rsp {uint32 err; uint32 len}``, then ``len - 8`` bytes of text
  ended by a NUL (what tgtadm prints for ``--op show``). ``err`` indexes ``ERRORS``.

tgtd splits the parameters at commas and keeps everything after ``password=`` as the
password, so no value may hold a comma or a NUL (checked here, before anything is sent).
"""

from __future__ import annotations

import socket
import struct

SOCKET_PATH = "/var/run/tgtd/socket.0"  # tgtd --control-port 0
TIMEOUT = 30.0  # seconds for connecting and for each read or write

# enum tgtadm_mode and enum tgtadm_op
MODE_SYSTEM, MODE_TARGET, MODE_DEVICE, MODE_PORTAL, MODE_LLD = 0, 1, 2, 3, 4
MODE_SESSION, MODE_CONNECTION, MODE_ACCOUNT = 5, 6, 7
OP_NEW, OP_DELETE, OP_SHOW, OP_BIND, OP_UNBIND, OP_UPDATE = 0, 1, 2, 3, 4, 5
MODES = {MODE_SYSTEM: "system", MODE_TARGET: "target", MODE_DEVICE: "logicalunit",
         MODE_ACCOUNT: "account"}  # fmt: skip
OPS = {OP_NEW: "new", OP_DELETE: "delete", OP_SHOW: "show", OP_BIND: "bind",
       OP_UNBIND: "unbind", OP_UPDATE: "update"}  # fmt: skip

ALL_TIDS = -1  # tid of a request about no particular target (tgtadm's default)
NO_LUN = (1 << 64) - 1  # lun of a request about no logical unit (tgtadm's default)

# struct tgtadm_req: mode, op, lld[64], len, tid, sid, lun, cid, host_no, device_type
# (0: disk), ac_dir (0: incoming account), pack, force. No padding: every field is at its
# natural alignment and the size is a multiple of 8.
REQ = struct.Struct("=II64sIiQQIIIIII")
RSP = struct.Struct("=II")  # struct tgtadm_rsp: err, len (including these 8 bytes)
MAX_ANSWER = 64 << 20  # a sanity bound on rsp.len

# enum tgtadm_errno (usr/tgtadm_error.h), as tgtadm words them
ERRORS = [
    "success", "unknown error", "out of memory", "can't find the driver",
    "can't find the target", "can't find the logical unit", "can't find the session",
    "can't find the connection", "can't find the binding", "this target already exists",
    "this binding already exists", "this logical unit number already exists",
    "this access control rule already exists", "this access control rule does not exist",
    "this account already exists", "can't find the account", "too many accounts",
    "invalid request", "this target already has an outgoing account",
    "this target is still active", "this logical unit is still active",
    "this driver is busy", "this operation isn't supported", "unknown parameter",
    "this device has Prevent Removal set",
]  # fmt: skip
SECRET_KEYS = {"password"}  # never part of a message
FORBIDDEN = ",\0"  # in no key or value: tgtd splits the parameters at commas


class TgtIpcError(Exception):
    """A request that failed; the message names the request, never a password."""


class TgtdUnreachable(TgtIpcError):
    """tgtd does not answer on its socket (not running, another control port...)."""


class TgtdRefused(TgtIpcError):
    """tgtd answered with an error (``code``: enum tgtadm_errno)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def describe(mode: int, op: int, tid: int, params: dict[str, str]) -> str:
    """The request in tgtadm's words, e.g. ``account new (user=vol-1)``, without secrets."""
    shown = [f"tid={tid}"] if tid != ALL_TIDS else []
    shown += [f"{k}={'********' if k in SECRET_KEYS else v}" for k, v in params.items()]
    words = f"{MODES.get(mode, f'mode {mode}')} {OPS.get(op, f'op {op}')}"
    return f"{words} ({', '.join(shown)})" if shown else words


def encode(
    mode: int,
    op: int,
    *,
    tid: int = ALL_TIDS,
    lun: int = NO_LUN,
    force: bool = False,
    params: dict[str, str] | None = None,
    lld: str = "iscsi",
) -> bytes:
    """The bytes of one request: header, then the NUL-ended parameter string (if any)."""
    params = params or {}
    for key, value in params.items():
        if any(c in FORBIDDEN for c in str(value)) or any(c in FORBIDDEN + "=" for c in key):
            shown = "the password" if key in SECRET_KEYS else f"{key} {value!r}"
            raise TgtIpcError(
                f"{describe(mode, op, tid, params)}: {shown} holds a comma or a NUL "
                "byte, which tgtd cannot take"
            )
    body = b""
    if params:
        body = ",".join(f"{k}={v}" for k, v in params.items()).encode() + b"\0"
    header = REQ.pack(
        mode, op, lld.encode(), REQ.size + len(body), tid, 0, lun, 0, 0, 0, 0, 0, int(force)
    )
    return header + body


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock``, fewer only when the peer closed the connection."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def request(
    mode: int,
    op: int,
    *,
    tid: int = ALL_TIDS,
    lun: int = NO_LUN,
    force: bool = False,
    params: dict[str, str] | None = None,
    path: str = SOCKET_PATH,
    timeout: float = TIMEOUT,
) -> str:
    """Send one request to tgtd; returns its text answer ('' for most operations)."""
    params = params or {}
    what = describe(mode, op, tid, params)
    data = encode(mode, op, tid=tid, lun=lun, force=force, params=params)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except OSError as exc:
                raise TgtdUnreachable(f"{what}: cannot connect to tgtd at {path}: {exc}")
            sock.sendall(data)
            head = recv_exactly(sock, RSP.size)
            if len(head) != RSP.size:
                raise TgtIpcError(f"{what}: tgtd closed the connection without an answer")
            err, length = RSP.unpack(head)
            if err:
                reason = ERRORS[err] if err < len(ERRORS) else f"tgtadm error {err}"
                raise TgtdRefused(f"{what} refused by tgtd: {reason}", err)
            if not RSP.size <= length <= MAX_ANSWER:
                raise TgtIpcError(f"{what}: tgtd announced an answer of {length} bytes")
            text = recv_exactly(sock, length - RSP.size)
    except OSError as exc:  # timeouts and resets after connecting
        raise TgtIpcError(f"{what}: talking to tgtd at {path} failed: {exc}")
    if len(text) != length - RSP.size:
        raise TgtIpcError(f"{what}: tgtd's answer ends early ({len(text)} bytes)")
    return text.split(b"\0", 1)[0].decode("utf-8", "replace")

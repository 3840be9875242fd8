#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Export one block volume of the Storage Controller as one tgt iSCSI target."""

from __future__ import annotations

DOCUMENTATION = r"""
module: iscsi_volume
short_description: Create, export and delete a Storage Controller volume (tgt iSCSI target)
description:
  - >-
    Makes one EBS-style volume exist (or not) on a Storage Controller: a backing store and
    one tgt iSCSI target that exports it as LUN 1 to every initiator address, protected by
    the volume's own CHAP account when the SC configuration says C(chap=true).
  - Reads the SC configuration (C(sc.json), written by the C(sc) role) for the store
    (sparse file C(<volume_dir>/<name>.img) or logical volume C(<volume_group>/<name>)), the
    target name prefix and the portal.
  - Finds the target by its IQN C(<iqn_prefix>:<name>) in tgtd's target list;
    a new target gets the smallest free tid. tgtd keeps targets in memory only, so after a
    tgtd restart the module re-creates the missing target on the existing backing store
    without touching the data (reported as a change).
  - >-
    The backing store is never resized: a size that differs from I(size_gb) is an error.
  - >-
    With I(source_url) a new backing store is filled from a snapshot (a gzip stream of the
    raw volume, one or more gzip members, as written by M(cloudctl.cloud.volume_snapshot)): decompressed
    while downloading and written sparse (all-zero blocks are skipped). The data must match
    the snapshot's I(source_sha256), checked before anything is exported. A failed or
    mismatching download leaves neither backing store nor target behind. I(source_url) is
    ignored when the backing store exists already.
  - tgtd never shows an account's password. The module sets the password when it creates
    the account; an account that exists but is not bound to the target is re-created with
    I(chap_secret). A changed I(chap_secret) for a bound account is not detected.
  - Check mode reports what would change and changes nothing; diff mode shows the backing
    store, target, LUN and CHAP user before and after (never the secret).
  - Target changes run under a lock file (C(/run/lock/cloud-sc.lock)) so that concurrent runs
    never pick the same tid.
requirements:
  - tgt with tgtd running (service C(cloud-tgtd)) on its default control port (socket
    C(/var/run/tgtd/socket.0)); the module talks to it over that socket, never through a
    C(tgtadm) command line, which would show the CHAP secret in C(/proc) on the SC
  - lvm2 and util-linux C(blkdiscard) for the C(lvm) store
options:
  name:
    description: Volume id (C(vol-) and 8 to 17 hexadecimal digits).
    type: str
    required: true
  state:
    description: C(absent) deletes the target, its CHAP account and the backing store.
    type: str
    choices: [present, absent]
    default: present
  size_gb:
    description: Size in GiB. Required for C(state=present).
    type: int
  sc_config:
    description: Path of the SC configuration written by the C(sc) role.
    type: path
    default: /etc/cloud/sc/sc.json
  chap_user:
    description:
      - CHAP user of the volume (incoming authentication). Required for C(state=present)
        when the SC configuration has C(chap=true); ignored (with a warning) otherwise.
      - With C(state=absent), this account is deleted too unless another target uses it.
    type: str
  chap_secret:
    description:
      - CHAP secret of the volume (never shown in the output or the diff, never on a command
        line). No comma and no NUL in it or in I(chap_user).
    type: str
  source_url:
    description:
      - >-
        Presigned HTTP(S) GET URL of a snapshot object: a gzip stream of the raw volume.
        Used only when the backing store is created.
      - The snapshot may be smaller than the volume (the rest reads as zeros), never larger.
    type: str
  source_size:
    description: Expected decompressed size of the snapshot in bytes; a different size fails.
    type: int
  source_sha256:
    description:
      - SHA-256 (hex) of the decompressed snapshot, as M(cloudctl.cloud.volume_snapshot) returned it when it
        made the snapshot. Required with I(source_url); different data fails the task.
    type: str
  force:
    description: With C(state=absent), delete a target that still has initiator sessions.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the volume before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Create and export a 10 GiB volume with its CHAP account
  cloudctl.cloud.iscsi_volume:
    name: vol-0a1b2c3d
    size_gb: 10
    chap_user: vol-0a1b2c3d
    chap_secret: "{{ volume_chap_secret }}"
  register: volume

- name: Create a volume from a snapshot
  cloudctl.cloud.iscsi_volume:
    name: vol-1b2c3d4e
    size_gb: 10
    chap_user: vol-1b2c3d4e
    chap_secret: "{{ volume_chap_secret }}"
    source_url: "{{ snapshot_get_url }}"
    source_size: 10737418240
    source_sha256: "{{ snapshot_sha256 }}"

- name: Delete a volume
  cloudctl.cloud.iscsi_volume:
    name: vol-0a1b2c3d
    state: absent
"""

RETURN = r"""
iqn:
  description: Target name of the volume.
  type: str
  returned: state=present
  sample: iqn.2026-11.cloud.cloud:vol-0a1b2c3d
lun:
  description: LUN of the volume in the target (always 1).
  type: int
  returned: state=present
tid:
  description: tgt target id (predicted in check mode).
  type: int
  returned: state=present
path:
  description: Backing store (file or logical volume device).
  type: str
  returned: always
portal:
  description: Address and port initiators connect to (from the SC configuration).
  type: dict
  returned: state=present
  sample: {address: 192.0.2.10, port: 3260}
chap:
  description: Whether the target wants CHAP.
  type: bool
  returned: state=present
restored_bytes:
  description: Decompressed bytes of the snapshot written into the new backing store.
  type: int
  returned: when the backing store was created from I(source_url) (not in check mode)
"""

import contextlib
import fcntl
import hashlib
import http.client
import os
import posixpath
import re
import urllib.error
import urllib.parse
import zlib

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.cloudctl.cloud.plugins.module_utils import tgt_ipc as ipc
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_role_config import (
    RoleConfigError,
    read_role_config,
)

GIB = 1 << 30
LUN = 1
VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LOCK_FILE = "/run/lock/cloud-sc.lock"
HTTP_TIMEOUT = 60  # seconds for one socket operation of the download
READ_CHUNK = 1 << 20  # compressed bytes read at a time
OUT_CHUNK = 1 << 22  # at most this many decompressed bytes at a time (bounds memory)
SPARSE_BLOCK = 1 << 16  # all-zero blocks of this size are skipped, not written
ZEROS = bytes(SPARSE_BLOCK)


class Failure(Exception):
    """Ends the module with fail_json(msg=...), after any rollback."""


def load_config(path: str) -> dict:
    try:
        conf = read_role_config(path, "sc")
    except RoleConfigError as exc:
        raise Failure(f"SC configuration: {exc}") from None
    store = conf.get("store")
    need = ["iqn_prefix", "portal", {"file": "volume_dir", "lvm": "volume_group"}.get(store)]
    if store not in ("file", "lvm") or any(not conf.get(k) for k in need if k):
        raise Failure(
            f"SC configuration {path} is incomplete: it needs store (file or lvm), "
            "volume_dir or volume_group, iqn_prefix and portal"
        )
    return conf


def url_for_messages(url: str) -> str:
    """The URL without its query string (a presigned URL's query holds the signature)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# --- the snapshot download ------------------------------------------------------------------


def gunzip(read):
    """Decompressed chunks of a gzip stream of one or more members read with ``read(n)``."""
    d = zlib.decompressobj(31)
    fed = False  # the current member has had input
    data = b""
    while True:
        if not data:
            data = read(READ_CHUNK)
            if not data:
                break
        fed = True
        out = d.decompress(data, OUT_CHUNK)
        if out:
            yield out
        if d.eof:  # next member (if any) starts in unused_data
            data = d.unused_data
            d = zlib.decompressobj(31)
            fed = False
        else:
            data = d.unconsumed_tail
    if fed:
        out = d.flush()
        if out:
            yield out
        if not d.eof:
            raise zlib.error("the gzip stream ends in the middle (truncated download?)")


def write_sparse(f, chunks, limit: int, digest) -> int:
    """Write ``chunks`` into a fresh (all-zero) file/device, seeking over all-zero blocks;
    ``digest`` (hashlib) sees every byte."""
    pos = 0
    for chunk in chunks:
        if pos + len(chunk) > limit:
            raise Failure(f"the snapshot holds more than the volume's {limit} bytes")
        digest.update(chunk)
        for start in range(0, len(chunk), SPARSE_BLOCK):
            piece = chunk[start : start + SPARSE_BLOCK]
            if piece != ZEROS[: len(piece)]:
                f.seek(pos)
                f.write(piece)
            pos += len(piece)
    return pos


def restore(url: str, f, size: int, expected: int | None, sha256: str) -> int:
    """Download the snapshot at ``url`` into ``f`` and check it against ``sha256``; returns
    the decompressed size."""
    where = url_for_messages(url)
    digest = hashlib.sha256()
    try:
        with open_url(url, timeout=HTTP_TIMEOUT, decompress=False, use_netrc=False) as answer:
            written = write_sparse(f, gunzip(answer.read), size, digest)
    except urllib.error.HTTPError as exc:
        raise Failure(f"downloading the snapshot {where} failed: HTTP {exc.code} {exc.reason}")
    except (OSError, http.client.HTTPException, zlib.error, ValueError) as exc:
        raise Failure(f"restoring the snapshot {where} failed: {exc}")
    if written == 0:
        raise Failure(f"the snapshot {where} is empty")
    if expected is not None and written != expected:
        raise Failure(
            f"the snapshot {where} holds {written} bytes after decompression, "
            f"expected source_size {expected}"
        )
    if digest.hexdigest() != sha256:
        name = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))
        raise Failure(
            f"snapshot {name} data does not match its sha256 (recorded {sha256}, downloaded "
            f"{digest.hexdigest()}): {where} is damaged or not this snapshot; the volume was "
            "not created"
        )
    return written


# --- backing stores -------------------------------------------------------------------------


class FileStore:
    """A sparse file <volume_dir>/<name>.img."""

    def __init__(self, module: AnsibleModule, conf: dict, name: str) -> None:
        self.dir = conf["volume_dir"]
        self.path = os.path.join(self.dir, f"{name}.img")

    def size(self) -> int | None:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return None

    def create(self, size: int, fill) -> int | None:
        """Create the file (filled by ``fill(f)`` when given), atomically by rename."""
        if not os.path.isdir(self.dir):
            raise Failure(f"volume directory {self.dir} does not exist (deploy the sc role)")
        part = f"{self.path}.part"
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                restored = fill(f) if fill else None
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())
            os.rename(part, self.path)
        except OSError as exc:
            raise Failure(f"cannot create the backing file {self.path}: {exc}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
        return restored

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class LvmStore:
    """A logical volume <volume_group>/<name>, zeroed when created (no data of an older
    volume may leak into a new one)."""

    def __init__(self, module: AnsibleModule, conf: dict, name: str) -> None:
        self.module = module
        self.vg, self.name = conf["volume_group"], name
        self.path = f"/dev/{self.vg}/{name}"

    def run(self, *cmd: str) -> str:
        rc, out, err = self.module.run_command(list(cmd))
        if rc != 0:
            raise Failure(f"{cmd[0]} for {self.vg}/{self.name} failed: {err.strip() or out}")
        return out

    def size(self) -> int | None:
        out = self.run(
            "lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size", self.vg
        )
        sizes = dict(line.split() for line in out.splitlines() if line.strip())
        return int(sizes[self.name]) if self.name in sizes else None

    def create(self, size: int, fill) -> int | None:
        self.run("lvcreate", "-y", "-Wy", "-Zy", "-L", f"{size}b", "-n", self.name, self.vg)
        try:
            self.run("blkdiscard", "--zeroout", self.path)
            if not fill:
                return None
            with open(self.path, "r+b") as f:
                restored = fill(f)
                f.flush()
                os.fsync(f.fileno())
            return restored
        except (Failure, OSError) as exc:
            self.remove()
            raise Failure(f"cannot fill {self.path}: {exc}") from exc

    def remove(self) -> None:
        if self.size() is not None:
            self.run("lvremove", "-f", f"{self.vg}/{self.name}")


# --- tgt ------------------------------------------------------------------------------------


def parse_targets(text: str) -> dict[str, dict]:
    """tgtd's target list (as ``tgtadm --mode target --op show`` prints it) as
    {iqn: {tid, sessions, luns, accounts, acl}}."""
    targets: dict[str, dict] = {}
    target = section = lun = None
    for line in text.splitlines():
        head = re.match(r"^Target (\d+): (\S+)$", line)
        if head:
            target = {"tid": int(head[1]), "sessions": 0, "luns": {}, "accounts": [], "acl": []}
            targets[head[2]] = target
            continue
        text_ = line.strip()
        indent = len(line) - len(line.lstrip())
        if target is None or not text_:
            continue
        if indent == 4:  # "    LUN information:" and the like
            section = text_.rstrip(":")
        elif section == "I_T nexus information" and text_.startswith("I_T nexus:"):
            target["sessions"] += 1
        elif section == "LUN information":
            if text_.startswith("LUN:"):
                lun = int(text_.split(":")[1])
            elif text_.startswith("Backing store path:"):
                target["luns"][lun] = text_.split(":", 1)[1].strip()
        elif section == "Account information" and not text_.endswith("(outgoing)"):
            target["accounts"].append(text_)
        elif section == "ACL information":
            target["acl"].append(text_)
    return targets


class Tgt:
    """tgtd's management requests, sent over its socket (module_utils/tgt_ipc) rather than
    through tgtadm, whose command line (/proc/PID/cmdline) anyone on the SC could read, CHAP
    secret included. A failed request raises Failure with tgtd's reason."""

    def request(self, mode: int, op: int, **kw) -> str:
        try:
            return ipc.request(mode, op, **kw)
        except ipc.TgtdUnreachable as exc:
            raise Failure(f"{exc} (is tgtd, service cloud-tgtd, running?)")
        except ipc.TgtIpcError as exc:
            raise Failure(str(exc))

    def targets(self) -> dict[str, dict]:
        return parse_targets(self.request(ipc.MODE_TARGET, ipc.OP_SHOW))

    def accounts(self) -> list[str]:
        out = self.request(ipc.MODE_ACCOUNT, ipc.OP_SHOW)
        return [line.strip() for line in out.splitlines()[1:] if line.strip()]

    def new_target(self, tid: int, iqn: str) -> None:
        self.request(ipc.MODE_TARGET, ipc.OP_NEW, tid=tid, params={"targetname": iqn})

    def delete_target(self, tid: int) -> None:
        self.request(ipc.MODE_TARGET, ipc.OP_DELETE, tid=tid, force=True)

    def new_lun(self, tid: int, lun: int, path: str) -> None:
        self.request(ipc.MODE_DEVICE, ipc.OP_NEW, tid=tid, lun=lun, params={"path": path})

    def allow_address(self, tid: int, address: str) -> None:
        params = {"initiator-address": address}
        self.request(ipc.MODE_TARGET, ipc.OP_BIND, tid=tid, params=params)

    def new_account(self, user: str, secret: str) -> None:
        params = {"user": user, "password": secret}  # tgtd wants user first
        self.request(ipc.MODE_ACCOUNT, ipc.OP_NEW, params=params)

    def delete_account(self, user: str) -> None:
        self.request(ipc.MODE_ACCOUNT, ipc.OP_DELETE, params={"user": user})

    def bind_account(self, tid: int, user: str, bind: bool = True) -> None:
        op = ipc.OP_BIND if bind else ipc.OP_UNBIND
        self.request(ipc.MODE_ACCOUNT, op, tid=tid, params={"user": user})


@contextlib.contextmanager
def tgt_lock():
    """Serialise target changes of concurrent runs (tid allocation)."""
    os.makedirs(os.path.dirname(LOCK_FILE), exist_ok=True)
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_tid(targets: dict[str, dict]) -> int:
    used = {t["tid"] for t in targets.values()}
    return next(tid for tid in range(1, len(used) + 2) if tid not in used)


def view(path: str, size: int | None, iqn: str, target: dict | None, chap_users: list) -> dict:
    """The volume as shown in diff mode."""
    return {
        "backing_store": path if size is not None else None,
        "size_bytes": size,
        "target": iqn if target else None,
        "tid": target["tid"] if target else None,
        "lun": LUN if target and LUN in target["luns"] else None,
        "initiators": sorted(target["acl"]) if target else [],
        "chap_users": sorted(chap_users),
    }


# --- states ---------------------------------------------------------------------------------


def present(module, conf, store, tgt, iqn) -> dict:
    p = module.params
    name, size = p["name"], p["size_gb"] * GIB
    want_users = [p["chap_user"]] if conf["chap"] else []
    have_size = store.size()
    targets = tgt.targets()
    target = targets.get(iqn)
    if have_size is not None and have_size != size:
        raise Failure(
            f"volume {name}: backing store {store.path} holds {have_size} bytes, not "
            f"size_gb={p['size_gb']} ({size} bytes); volumes are never resized"
        )
    if target:
        lun_path = target["luns"].get(LUN)
        if lun_path and lun_path != store.path:
            raise Failure(f"target {iqn} exports {lun_path} as LUN {LUN}, not {store.path}")
        if have_size is None:
            raise Failure(f"target {iqn} exists but its backing store {store.path} does not")

    before = view(store.path, have_size, iqn, target, target["accounts"] if target else [])
    after_target = {"tid": target["tid"] if target else free_tid(targets)}
    acl = sorted({"ALL", *(target["acl"] if target else [])})
    after_target.update(luns={LUN: store.path}, acl=acl)
    after = view(store.path, size, iqn, after_target, want_users)
    result = {
        "changed": before != after,
        "iqn": iqn,
        "lun": LUN,
        "tid": after["tid"],
        "path": store.path,
        "portal": {"address": conf["portal"]["address"], "port": conf["portal"]["port"]},
        "chap": bool(conf["chap"]),
        "diff": {"before": before, "after": after},
    }
    if module.check_mode or not result["changed"]:
        return result

    created_store = False
    if have_size is None:
        fill = None
        if p["source_url"]:

            def fill(f):
                return restore(p["source_url"], f, size, p["source_size"], p["source_sha256"])

        restored = store.create(size, fill)
        created_store = True
        if restored is not None:
            result["restored_bytes"] = restored
    try:
        with tgt_lock():
            result["tid"] = export(tgt, iqn, store.path, want_users, p["chap_secret"])
    except Failure:
        if created_store:  # leave nothing half-done behind
            store.remove()
        raise
    return result


def export(tgt: Tgt, iqn: str, path: str, want_users: list[str], secret: str | None) -> int:
    """Make the target of ``path`` as wanted (under the lock); returns its tid."""
    targets = tgt.targets()
    target = targets.get(iqn)
    created = target is None
    tid = target["tid"] if target else free_tid(targets)
    try:
        if created:
            tgt.new_target(tid, iqn)
            target = {"luns": {}, "acl": [], "accounts": []}
        if LUN not in target["luns"]:
            tgt.new_lun(tid, LUN, path)
        if "ALL" not in target["acl"]:
            tgt.allow_address(tid, "ALL")
        accounts = tgt.accounts()
        for user in target["accounts"]:
            if user not in want_users:
                tgt.bind_account(tid, user, bind=False)
        for user in want_users:
            if user in target["accounts"]:
                continue
            # tgtd never shows a password: an account not bound here gets the given secret.
            if user in accounts:
                tgt.delete_account(user)
            tgt.new_account(user, secret)
            tgt.bind_account(tid, user)
    except Failure:
        if created:
            with contextlib.suppress(Failure):
                tgt.delete_target(tid)
        raise
    return tid


def absent(module, conf, store, tgt, iqn) -> dict:
    p = module.params
    have_size = store.size()
    targets = tgt.targets()
    target = targets.get(iqn)
    if target and target["sessions"] and not p["force"]:
        raise Failure(
            f"volume {p['name']}: target {iqn} has {target['sessions']} initiator "
            "session(s) (attached?); detach it first or use force=true"
        )
    elsewhere = {u for other, t in targets.items() if other != iqn for u in t["accounts"]}
    accounts = tgt.accounts()
    users = set(target["accounts"]) if target else set()
    if p["chap_user"] and p["chap_user"] in accounts:
        users.add(p["chap_user"])
    users -= elsewhere
    before = view(store.path, have_size, iqn, target, sorted(users))
    after = view(store.path, None, iqn, None, [])
    result = {
        "changed": before != after,
        "path": store.path,
        "diff": {"before": before, "after": after},
    }
    if module.check_mode or not result["changed"]:
        return result
    if target:
        with tgt_lock():
            tgt.delete_target(target["tid"])
    for user in sorted(users):
        tgt.delete_account(user)
    store.remove()
    return result


def core(module: AnsibleModule) -> dict:
    p = module.params
    if not VOLUME_ID.match(p["name"]):
        raise Failure(f"name {p['name']!r} is not a volume id (vol- and 8-17 hex digits)")
    conf = load_config(p["sc_config"])
    store = (FileStore if conf["store"] == "file" else LvmStore)(module, conf, p["name"])
    iqn = f"{conf['iqn_prefix']}:{p['name']}"
    if p["state"] == "absent":
        return absent(module, conf, store, Tgt(), iqn)
    if not p["size_gb"] or p["size_gb"] < 1:
        raise Failure("size_gb (at least 1) is required for state=present")
    if conf["chap"] and not (p["chap_user"] and p["chap_secret"]):
        raise Failure(f"{p['sc_config']} wants CHAP: chap_user and chap_secret are required")
    if any(c in ipc.FORBIDDEN for c in (p["chap_user"] or "") + (p["chap_secret"] or "")):
        raise Failure("chap_user and chap_secret cannot hold a comma or a NUL (tgtd refuses them)")
    if p["source_url"] and urllib.parse.urlsplit(p["source_url"]).scheme not in ("http", "https"):
        raise Failure("source_url must be an http:// or https:// URL")
    if p["source_url"] and not SHA256.match(p["source_sha256"] or ""):
        raise Failure("source_sha256 (64 hexadecimal digits) is required with source_url")
    if not conf["chap"] and p["chap_user"]:
        module.warn(f"{p['sc_config']} says chap=false: chap_user/chap_secret are ignored")
    return present(module, conf, store, Tgt(), iqn)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "size_gb": {"type": "int"},
            "sc_config": {"type": "path", "default": "/etc/cloud/sc/sc.json"},
            "chap_user": {"type": "str"},
            "chap_secret": {"type": "str", "no_log": True},
            # A presigned URL carries its signature in the query string.
            "source_url": {"type": "str", "no_log": True},
            "source_size": {"type": "int"},
            "source_sha256": {"type": "str"},
            "force": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    try:
        result = core(module)
    except Failure as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()

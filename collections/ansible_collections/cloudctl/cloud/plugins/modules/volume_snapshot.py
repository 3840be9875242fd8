#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Upload a Storage Controller volume, gzip-compressed, through presigned S3 part URLs."""

from __future__ import annotations

DOCUMENTATION = r"""
module: volume_snapshot
short_description: Upload a volume's content to Walrus through presigned multipart part URLs
description:
  - >-
    Reads the backing store of a volume (file store C(<volume_dir>/<name>.img) or logical
    volume C(/dev/<volume_group>/<name>), from the SC configuration written by the C(sc)
    role) sequentially, gzip-compresses the stream, cuts it into parts of exactly
    I(part_size_mb) MiB (the last one smaller) and HTTP PUTs each part to the next URL of
    I(part_urls): presigned S3 C(UploadPart) URLs. The Storage Controller never holds S3
    credentials; the caller creates the multipart upload, presigns the part URLs and
    completes the upload with the returned ETags (or aborts it when the module fails).
  - >-
    The stream is a sequence of gzip members (C(gzip -d) and O(cloudctl.cloud.iscsi_volume#module:source_url)
    read it): every all-zero MiB of the volume is one precomputed member of about 1 KiB
    (about 1000 times smaller), the data between them is compressed at level 1 (speed over
    size: the SC compresses with one core).
  - A part that fails is retried up to 3 times (after 1, 2 and 4 s). When the stream needs
    more parts than there are URLs, the module fails and says so.
  - >-
    Consistency: the volume is read while its target stays exported, so a snapshot of an
    attached volume is crash-consistent (like EBS): it holds what a power cut would have
    left. Flush or freeze the guest's filesystem first for an application-consistent one.
  - Always reports a change. In check mode it reads and uploads nothing and reports what it
    would upload.
requirements:
  - the volume's backing store on the host (made by M(cloudctl.cloud.iscsi_volume))
options:
  name:
    description: Volume id (C(vol-) and 8 to 17 hexadecimal digits).
    type: str
    required: true
  sc_config:
    description: Path of the SC configuration written by the C(sc) role.
    type: path
    default: /etc/cloud/sc/sc.json
  part_urls:
    description:
      - Presigned S3 C(UploadPart) URLs for part numbers 1, 2, ... in order. Extra URLs are
        left unused. S3 wants parts of at least 5 MiB except the last.
    type: list
    elements: str
    required: true
  part_size_mb:
    description: Size of every part but the last, in MiB (5 to 5120).
    type: int
    default: 64
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Upload a snapshot of a volume (URLs presigned by cloudctl)
  cloudctl.cloud.volume_snapshot:
    name: vol-0a1b2c3d
    part_urls: "{{ snapshot_part_urls }}"
    part_size_mb: 64
  register: snapshot
"""

RETURN = r"""
parts:
  description: Uploaded parts for CompleteMultipartUpload (ETags as S3 returned them, quoted).
  type: list
  elements: dict
  returned: success, not in check mode
  sample: [{part_number: 1, etag: '"9b2cf535f27731c974343645a3985328"'}]
compressed_bytes:
  description: Bytes uploaded (size of the snapshot object).
  type: int
  returned: success, not in check mode
size_bytes:
  description: Raw size of the volume (the snapshot's size after decompression).
  type: int
  returned: always
sha256:
  description: SHA-256 of the raw volume content (hex).
  type: str
  returned: success, not in check mode
path:
  description: Backing store that was read.
  type: str
  returned: always
seconds:
  description: Wall time of reading, compressing and uploading.
  type: float
  returned: success, not in check mode
max_parts:
  description: Number of part URLs given (in check mode, the most it would upload).
  type: int
  returned: always
"""

import gzip
import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import zlib

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_role_config import (
    RoleConfigError,
    read_role_config,
)

MIB = 1 << 20
BLOCK = MIB  # read size, and the unit of the all-zero shortcut
ZERO_BLOCK = bytes(BLOCK)
ZERO_MEMBER = gzip.compress(ZERO_BLOCK, compresslevel=9, mtime=0)  # about 1 KiB
COMPRESS_LEVEL = 1
ATTEMPTS = 4  # first try + 3 retries
HTTP_TIMEOUT = 120  # seconds for one socket operation of a PUT
VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")


class Failure(Exception):
    """Ends the module with fail_json(msg=...)."""


def backing_store(config_path: str, name: str) -> str:
    """Path of the volume's backing store, from the SC configuration."""
    try:
        conf = read_role_config(config_path, "sc")
    except RoleConfigError as exc:
        raise Failure(f"SC configuration: {exc}") from None
    if conf.get("store") == "file" and conf.get("volume_dir"):
        return os.path.join(conf["volume_dir"], f"{name}.img")
    if conf.get("store") == "lvm" and conf.get("volume_group"):
        return f"/dev/{conf['volume_group']}/{name}"
    raise Failure(f"SC configuration {config_path} names no file or lvm store")


def store_size(path: str) -> int:
    """Size in bytes of a regular file or a block device."""
    try:
        with open(path, "rb") as f:
            return f.seek(0, os.SEEK_END)
    except FileNotFoundError:
        raise Failure(f"the volume's backing store {path} does not exist")
    except OSError as exc:
        raise Failure(f"cannot open {path}: {exc}")


def compressed(f, digest):
    """Gzip stream (a sequence of members) of everything read from ``f``."""
    comp = None
    while True:
        block = f.read(BLOCK)
        if not block:
            break
        digest.update(block)
        if block == ZERO_BLOCK:
            if comp:  # close the data member; the zero member follows it
                yield comp.flush()
                comp = None
            yield ZERO_MEMBER
            continue
        if comp is None:
            comp = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 31)
        out = comp.compress(block)
        if out:
            yield out
    if comp:
        yield comp.flush()


def put_part(url: str, number: int, body: bytes) -> str:
    """PUT one part (with retries); returns its ETag."""
    parts = urllib.parse.urlsplit(url)
    where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # no query: it holds the signature
    error = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(2 ** (attempt - 1))
        # An empty Content-Type, as the presigner assumed: a SigV2 presigned URL signs it, and
        # urllib would otherwise send application/x-www-form-urlencoded.
        headers = {"Content-Length": str(len(body)), "Content-Type": ""}
        try:
            with open_url(
                url,
                data=body,
                headers=headers,
                method="PUT",
                timeout=HTTP_TIMEOUT,
                decompress=False,
                use_netrc=False,
            ) as answer:
                etag = answer.headers.get("ETag")
                if etag:
                    return etag
                error = "no ETag in the answer"
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip()
            error = f"HTTP {exc.code} {exc.reason} {detail}".strip()
        except (OSError, http.client.HTTPException) as exc:
            error = str(exc)
    raise Failure(f"uploading part {number} to {where} failed {ATTEMPTS} times: {error}")


def upload(path: str, urls: list[str], part_size: int) -> dict:
    digest = hashlib.sha256()
    parts: list[dict] = []
    buffer = bytearray()
    sent = 0

    def send(body: bytes) -> None:
        nonlocal sent
        if len(parts) == len(urls):
            raise Failure(
                f"the compressed volume needs more than the {len(urls)} part URL(s) given "
                f"({sent + len(body)} bytes of parts of {part_size} bytes so far); "
                "presign more URLs or use a larger part_size_mb"
            )
        number = len(parts) + 1
        parts.append({"part_number": number, "etag": put_part(urls[number - 1], number, body)})
        sent += len(body)

    try:
        with open(path, "rb") as f:
            for chunk in compressed(f, digest):
                buffer += chunk
                while len(buffer) >= part_size:
                    send(bytes(buffer[:part_size]))
                    del buffer[:part_size]
            size = f.tell()
    except OSError as exc:
        raise Failure(f"reading {path} failed: {exc}")
    if buffer or not parts:
        send(bytes(buffer))
    return {"parts": parts, "compressed_bytes": sent, "size_bytes": size,
            "sha256": digest.hexdigest()}  # fmt: skip


def core(module: AnsibleModule) -> dict:
    p = module.params
    if not VOLUME_ID.match(p["name"]):
        raise Failure(f"name {p['name']!r} is not a volume id (vol- and 8-17 hex digits)")
    if not 5 <= p["part_size_mb"] <= 5120:
        raise Failure(f"part_size_mb {p['part_size_mb']} is outside S3's 5 to 5120 MiB")
    if not p["part_urls"]:
        raise Failure("part_urls is empty")
    path = backing_store(p["sc_config"], p["name"])
    result = {"changed": True, "path": path, "size_bytes": store_size(path)}
    result["max_parts"] = len(p["part_urls"])
    if module.check_mode:
        return result
    started = time.monotonic()
    result.update(upload(path, p["part_urls"], p["part_size_mb"] * MIB))
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "sc_config": {"type": "path", "default": "/etc/cloud/sc/sc.json"},
            # Presigned URLs carry their signatures in the query string.
            "part_urls": {"type": "list", "elements": "str", "required": True, "no_log": True},
            "part_size_mb": {"type": "int", "default": 64},
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

# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One image file (by sha256) in a Node Controller's image cache (the code of image_cache,
also run per image by node_instances)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
import urllib.error

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.cloudctl.cloud.plugins.module_utils.cloud_role_config import (
    RoleConfigError,
    read_role_config,
)

SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
MIB = 1 << 20


def load_config(path: str) -> dict:
    """The node facts the cache needs (RoleConfigError when they are missing)."""
    return read_role_config(path, "nc", ("cache_dir", "cache_max_mb", "instances_dir"))


def load_node_config(module: AnsibleModule) -> dict:
    try:
        return load_config(module.params["node_config"])
    except RoleConfigError as exc:
        module.fail_json(msg=f"node_config: {exc}")


def referenced_images(module: AnsibleModule, instances_dir: str) -> dict[str, list[str]]:
    """sha256 -> instances using it, from every <instances_dir>/*/instance.json."""
    refs: dict[str, list[str]] = {}
    try:
        names = sorted(os.listdir(instances_dir))
    except FileNotFoundError:
        return refs
    for name in names:
        path = os.path.join(instances_dir, name, "instance.json")
        try:
            with open(path, encoding="utf-8") as f:
                images = json.load(f).get("images") or []
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            module.warn(f"cannot read {path}: {exc}")
            continue
        for sha in images:
            refs.setdefault(sha, []).append(name)
    return refs


def cache_files(cache_dir: str) -> list[tuple[str, int, float]]:
    """(sha256, size, mtime) of the cached files; temp and lock files are dot files."""
    out = []
    for entry in os.scandir(cache_dir):
        if SHA256.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # evicted by a concurrent run
                continue
            out.append((entry.name, st.st_size, st.st_mtime))
    return out


def download(module: AnsibleModule, cache_dir: str, sha: str, path: str) -> int:
    """Download url to a temp file in cache_dir, verify, rename to path. Returns bytes read."""
    p = module.params
    fd, tmp = tempfile.mkstemp(prefix=f".{sha}.", suffix=".part", dir=cache_dir)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with open_url(
                    p["url"], timeout=p["timeout"], decompress=False, use_netrc=False
                ) as resp:
                    while chunk := resp.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                # URLError's text names the host at most, never the presigned query.
                raise DownloadError(str(getattr(exc, "reason", exc))) from None
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if p["size"] is not None and size != p["size"]:
            raise DownloadError(f"size mismatch: expected {p['size']} bytes, got {size}")
        if actual != sha:
            raise DownloadError(f"checksum mismatch: expected sha256 {sha}, actual {actual}")
        os.chmod(tmp, 0o644)
        os.chown(tmp, -1, os.stat(cache_dir).st_gid)
        os.rename(tmp, path)
        fsync_dir(cache_dir)
        return size
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class DownloadError(Exception):
    pass


def fsync_dir(path: str) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def evict(
    module: AnsibleModule, cfg: dict, keep: str, refs: dict[str, list[str]]
) -> tuple[list[str], int]:
    """Evict LRU files while the cache exceeds its cap. Returns (evicted, cache bytes)."""
    cache_dir = cfg["cache_dir"]
    cap = int(cfg["cache_max_mb"]) * MIB
    files = cache_files(cache_dir)
    total = sum(size for _sha, size, _mtime in files)
    now = time.time()
    candidates = sorted(
        (f for f in files if f[0] != keep and f[0] not in refs),
        key=lambda f: f[2],
    )
    evicted = []
    for sha, size, mtime in candidates:
        if total <= cap:
            break
        if now - mtime < module.params["evict_grace"]:
            continue
        if not module.check_mode:
            try:
                os.unlink(os.path.join(cache_dir, sha))
            except FileNotFoundError:
                pass
        evicted.append(sha)
        total -= size
    if total > cap:
        module.warn(
            f"image cache {cache_dir} holds {total // MIB} MB, over its cap of "
            f"{cfg['cache_max_mb']} MB: the remaining files are in use or were used recently"
        )
    return evicted, total


def lock_path(cache_dir: str, sha: str) -> str:
    return os.path.join(cache_dir, f".{sha}.lock")


def core(module: AnsibleModule) -> dict:
    p = module.params
    start = time.monotonic()
    sha = p["sha256"].strip().lower()
    if not SHA256.match(sha):
        module.fail_json(msg=f"sha256: {p['sha256']!r} is not 64 hex digits")
    cfg = load_node_config(module)
    cache_dir = cfg["cache_dir"]
    if not os.path.isdir(cache_dir):
        module.fail_json(msg=f"cache_dir {cache_dir} (from {p['node_config']}) does not exist")
    path = os.path.join(cache_dir, sha)
    present = os.path.isfile(path)
    res = {
        "changed": False,
        "path": path,
        "hit": present,
        "downloaded_bytes": 0,
        "evicted": [],
    }
    if module._diff:
        res["diff"] = {"before": {"path": path, "cached": present}}

    if p["state"] == "absent":
        if present:
            users = referenced_images(module, cfg["instances_dir"]).get(sha)
            if users:
                module.fail_json(
                    msg=f"image {sha} is used by instance(s) {', '.join(users)}: not removed",
                    **res,
                )
            if not module.check_mode:
                os.unlink(path)
                fsync_dir(cache_dir)
            res["changed"] = True
        res["cache_bytes"] = sum(size for _sha, size, _mtime in cache_files(cache_dir))
        return finish(module, res, start, cached=False)

    if present:
        check_size(module, path, res)
        if not module.check_mode:
            os.utime(path)  # LRU clock
    else:
        if not p["url"]:
            module.fail_json(msg=f"image {sha} is not cached on this node and no url was given")
        if module.check_mode:
            res["changed"] = True
            res["would_download"] = True
        else:
            fetch(module, cache_dir, sha, path, res)

    refs = referenced_images(module, cfg["instances_dir"])
    res["evicted"], res["cache_bytes"] = evict(module, cfg, sha, refs)
    res["changed"] = res["changed"] or bool(res["evicted"])
    return finish(module, res, start, cached=True)


def fetch(module: AnsibleModule, cache_dir: str, sha: str, path: str, res: dict) -> None:
    """Download under the per-image lock, unless a concurrent run did it while we waited."""
    lfd = os.open(lock_path(cache_dir, sha), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(lfd, fcntl.LOCK_EX)
        if os.path.isfile(path):
            res["hit"] = True
            check_size(module, path, res)
            os.utime(path)
            return
        # Holding the lock, no other run downloads this image: a .part left here is from a
        # run that died half-way.
        for name in os.listdir(cache_dir):
            if name.startswith(f".{sha}.") and name.endswith(".part"):
                os.unlink(os.path.join(cache_dir, name))
        try:
            res["downloaded_bytes"] = download(module, cache_dir, sha, path)
        except DownloadError as exc:
            module.fail_json(msg=f"download of image {sha} failed: {exc}", **res)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                module.fail_json(msg=f"download of image {sha} failed: {cache_dir} is full", **res)
            module.fail_json(msg=f"download of image {sha} failed: {exc}", **res)
        res["changed"] = True
    finally:
        os.close(lfd)  # releases the lock


def check_size(module: AnsibleModule, path: str, res: dict) -> None:
    expected = module.params["size"]
    if expected is not None:
        actual = os.path.getsize(path)
        if actual != expected:
            module.fail_json(
                msg=f"cached file {path} has {actual} bytes, expected {expected}: "
                "remove it with state=absent and download it again",
                **res,
            )


def finish(module: AnsibleModule, res: dict, start: float, cached: bool) -> dict:
    res["seconds"] = round(time.monotonic() - start, 3)
    if module._diff:
        res["diff"]["after"] = {"path": res["path"], "cached": cached}
    return res


ARGUMENT_SPEC = {
    "sha256": {"type": "str", "required": True},
    "url": {"type": "str", "no_log": True},
    "size": {"type": "int"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "node_config": {"type": "path", "default": "/etc/cloud/nc/node.json"},
    "timeout": {"type": "int", "default": 60},
    "evict_grace": {"type": "int", "default": 300},
}

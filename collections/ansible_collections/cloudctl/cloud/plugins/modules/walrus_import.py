#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Copy the buckets and objects of a single-host Walrus into another S3 endpoint (a pair)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: walrus_import
short_description: Carry the objects of a single-host Walrus into a Walrus pair
description:
  - A single-host Walrus (one C(weed server -s3)) keeps its volumes and its filer store
    (C(filerldb2/), leveldb) in its data directory. When the host becomes a member of a
    Walrus pair, the pair starts with new volumes and a filer store in etcd; this module
    carries the old buckets and objects over.
  - When I(source_dir) holds a C(filerldb2/) directory and no record of a finished import
    (C(imported.json)), it starts a temporary C(weed server) on that directory (loopback
    only, free ports, its own master metadata and settings in a temporary directory, the
    S3 identities of I(s3_config)), waits for its S3 API, and copies every bucket and
    every object through S3 into I(endpoint), keeping keys, C(Content-Type) and user
    metadata. Each copy is checked (size, and the MD5 of the bytes read against the
    source's ETag when that is a plain MD5).
  - An object already at the destination with the same size (and the same ETag when both
    are plain MD5s) is skipped, so an interrupted import resumes where it stopped.
  - The destination is asked first (C(ListBuckets)), so wrong keys fail before any server
    starts.
  - Then it stops the temporary server (SIGTERM, then SIGKILL; also on failure) and writes
    C(imported.json) into I(source_dir) (time, destination, counts), so that later runs
    change nothing. The old files are never deleted or moved; remove them once satisfied.
  - The temporary server appends a little to the old files (its filer's metadata log), as
    the single-host server itself did whenever it ran. It refuses to start while another
    process holds the filer store (the single-host server still running).
  - In check mode the temporary server runs, and the module reports what it would copy,
    copies nothing and writes no record. When the destination does not answer in check
    mode (a first check-mode deploy of the pair) it counts every object as to copy and warns.
requirements:
  - boto3 (Debian C(python3-boto3)) on the host that runs the module
  - the C(weed) binary of SeaweedFS
options:
  source_dir:
    description: Data directory of the single-host Walrus (its C(weed server -dir)).
    type: path
    required: true
  weed:
    description: Path of the C(weed) binary that runs the temporary server.
    type: path
    required: true
  s3_config:
    description:
      - SeaweedFS S3 identities file (C(s3.json)) of the temporary server. It must accept
        I(access_key) and I(secret_key), as the pair's own does.
    type: path
    required: true
  endpoint:
    description: S3 endpoint URL of the destination, C(http://HOST:PORT).
    type: str
    required: true
  access_key:
    description: Access key accepted by both the temporary server and the destination.
    type: str
    required: true
  secret_key:
    description: Secret key of that identity.
    type: str
    required: true
  region:
    description: Region name used to sign the requests.
    type: str
    default: us-east-1
  timeout:
    description: Seconds to wait for one S3 request.
    type: int
    default: 60
  wait_timeout:
    description:
      - Seconds to wait for the temporary server's S3 API to answer, and (not in check
        mode) for the destination.
    type: int
    default: 120
  stop_timeout:
    description:
      - Seconds the temporary server has to stop after SIGTERM before it gets SIGKILL.
        SeaweedFS 4.x takes about 15 s (its filer's gRPC drain).
    type: int
    default: 30
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the old data and reports what would be copied; copies nothing, writes no record.
  diff_mode:
    support: full
    details: A short text of the destination's objects before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Carry the single-host Walrus's objects into the pair
  cloudctl.cloud.walrus_import:
    source_dir: /var/lib/cloud/walrus
    weed: /opt/cloud/walrus/bin/weed
    s3_config: /etc/cloud/walrus/s3.json
    endpoint: http://127.0.0.1:8333
    access_key: "{{ walrus_credentials.access_key }}"
    secret_key: "{{ walrus_credentials.secret_key }}"
"""

RETURN = r"""
record:
  description: Path of the record of a finished import.
  type: str
  returned: always
  sample: /var/lib/cloud/walrus/imported.json
buckets:
  description: Names of the buckets of the single-host Walrus.
  type: list
  elements: str
  returned: when the old data was read
objects:
  description: Objects of the single-host Walrus.
  type: int
  returned: when the old data was read
bytes:
  description: Their total size in bytes.
  type: int
  returned: when the old data was read
copied:
  description: Objects copied by this run (to copy, in check mode).
  type: int
  returned: when the old data was read
copied_bytes:
  description: Bytes copied by this run (to copy, in check mode).
  type: int
  returned: when the old data was read
already_there:
  description: Objects skipped because the destination already held them.
  type: int
  returned: when the old data was read
server_pid:
  description: PID of the temporary weed server (stopped before the module returns).
  type: int
  returned: when the temporary server was started
"""

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    HAS_BOTO3 = True
except ImportError:
    HAS_BOTO3 = False

RECORD = "imported.json"
STORE = "filerldb2"  # the filer store of `weed server` (leveldb2), beside the volumes
PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")  # a multipart upload's ETag is "<md5>-<parts>"
PART_SIZE = 8 * 1024 * 1024


class ImportFailed(Exception):
    """The import cannot go on; the message says where and why, in one line."""


def free_port() -> int:
    """A free loopback port whose +10000 (SeaweedFS' gRPC port) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def store_in_use(store: str) -> str | None:
    """The lock file of the leveldb store that another process holds (goleveldb flocks
    LOCK in each partition), or None."""
    for lock in sorted(glob.glob(os.path.join(store, "*", "LOCK"))):
        with open(lock, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return lock
            fcntl.flock(f, fcntl.LOCK_UN)
    return None


class TemporaryWalrus:
    """`weed server -s3` on the old data directory, on loopback, while the import runs.

    Its master metadata, settings and cwd are in a temporary directory: the old raft state
    does not matter, and the pair's filer.toml (etcd) is never read. Its filer.toml names
    the old leveldb2 store explicitly (weed server keeps it beside the master metadata).
    """

    def __init__(self, weed: str, source_dir: str, s3_config: str) -> None:
        self.work = tempfile.mkdtemp(prefix="walrus-import-")
        store = os.path.join(source_dir, STORE)
        with open(os.path.join(self.work, "filer.toml"), "w") as f:
            f.write(f"[leveldb2]\nenabled = true\ndir = {json.dumps(store)}\n")
        # One volume at a time if the filer needs room for its metadata log (default 7).
        with open(os.path.join(self.work, "master.toml"), "w") as f:
            f.write("[master.volume_growth]\ncopy_1 = 1\n")
        self.ports = free_ports(4)
        master, volume, filer, s3 = self.ports
        self.endpoint = f"http://127.0.0.1:{s3}"
        command = [
            weed, "-logtostderr", f"-config_dir={self.work}", "server",
            f"-dir={source_dir}", f"-master.dir={self.work}/master",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={master}", f"-volume.port={volume}", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}",
            "-s3", f"-s3.port={s3}", "-s3.ip.bind=127.0.0.1", f"-s3.config={s3_config}",
            "-s3.iam=false", "-s3.allowDeleteBucketNotEmpty=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        os.mkdir(os.path.join(self.work, "master"))
        self.log_path = os.path.join(self.work, "weed.log")
        self.returncode: int | None = None
        # module.run_command runs a command to its end; this server must run while the
        # module copies, so it is spawned here and stopped by its PID.
        previous = os.getcwd()
        os.chdir(self.work)  # weed would also read a filer.toml found in its cwd
        try:
            self.pid = os.posix_spawn(
                weed,
                command,
                dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, self.log_path, os.O_WRONLY | os.O_CREAT, 0o600),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                ],
            )
        finally:
            os.chdir(previous)

    def poll(self) -> int | None:
        """The server's exit code once it has ended (reaped), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def exited(self) -> str | None:
        """Why the server is gone (its exit code and last log line), or None."""
        if self.poll() is None:
            return None
        with open(self.log_path, "rb") as f:
            lines = f.read().decode(errors="replace").strip().splitlines()
        return f"exit code {self.returncode}: {lines[-1] if lines else 'no output'}"

    def stop(self, timeout: int) -> None:
        """SIGTERM, then SIGKILL after timeout seconds (a clean stop takes about 15 s)."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.poll() is None:
                os.kill(self.pid, signal.SIGKILL)
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        # weed leaves unix sockets named after its ports in /tmp.
        for port in self.ports:
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock") + glob.glob(
                f"/tmp/seaweedfs-*-{port + 10000}.sock"
            ):
                os.unlink(sock)
        shutil.rmtree(self.work, ignore_errors=True)


class HashingReader:
    """A source object's body for upload_fileobj: counts and MD5-hashes what is read."""

    def __init__(self, body) -> None:
        self.body = body
        self.md5 = hashlib.md5()  # S3 ETags are MD5s
        self.size = 0

    def read(self, amount: int = -1) -> bytes:
        chunk = self.body.read(amount if amount and amount > 0 else None)
        self.md5.update(chunk)
        self.size += len(chunk)
        return chunk


def s3_client(endpoint: str, p: dict):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=p["access_key"],
        aws_secret_access_key=p["secret_key"],
        region_name=p["region"],
        config=Config(
            connect_timeout=p["timeout"],
            read_timeout=p["timeout"],
            retries={"max_attempts": 3},
            s3={"addressing_style": "path"},
        ),
    )


def list_buckets(s3, what: str, wait_timeout: int, server: TemporaryWalrus | None = None):
    """Bucket names, waiting while the endpoint does not answer (refused, 5xx); None
    when it still does not answer at the deadline."""
    deadline = time.monotonic() + wait_timeout
    while True:
        try:
            return [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) < 500:
                raise ImportFailed(f"S3 ListBuckets at {what} failed: {exc}") from exc
        except BotoCoreError:
            pass
        if server and server.exited():
            raise ImportFailed(f"the temporary weed server on {what} stopped: {server.exited()}")
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def list_objects(s3, bucket: str, what: str) -> dict[str, tuple[int, str]]:
    """key -> (size, ETag without quotes) of every object of a bucket."""
    found = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                found[o["Key"]] = (o["Size"], o.get("ETag", "").strip('"'))
    except (ClientError, BotoCoreError) as exc:
        raise ImportFailed(f"S3 ListObjectsV2 of bucket {bucket} at {what} failed: {exc}") from exc
    return found


def already_there(source: tuple[int, str], destination: tuple[int, str] | None) -> bool:
    if destination is None or destination[0] != source[0]:
        return False
    both_plain = PLAIN_ETAG.match(source[1]) and PLAIN_ETAG.match(destination[1])
    return not both_plain or source[1] == destination[1]


def verify_copy(got: dict, reader: HashingReader, head: dict) -> None:
    """Raise ValueError unless the bytes read are the source object and the copy holds them."""
    etag, md5 = got.get("ETag", "").strip('"'), reader.md5.hexdigest()
    copied_etag = head.get("ETag", "").strip('"')
    if reader.size != got["ContentLength"]:
        raise ValueError(f"read {reader.size} bytes of {got['ContentLength']}")
    if PLAIN_ETAG.match(etag) and md5 != etag:
        raise ValueError(f"MD5 of the bytes read {md5} differs from the source's ETag {etag}")
    if head["ContentLength"] != reader.size:
        raise ValueError(f"the copy holds {head['ContentLength']} bytes, not {reader.size}")
    if PLAIN_ETAG.match(copied_etag) and copied_etag != md5:
        raise ValueError(f"the copy's ETag {copied_etag} differs from the MD5 read {md5}")


def copy_object(src, dst, bucket: str, key: str) -> int:
    """Stream one object from src to dst (multipart above 8 MiB) and check the copy;
    returns its size. A copy that fails the check is deleted, so that a later run does
    not take it for one already there."""
    got = src.get_object(Bucket=bucket, Key=key)
    extra = {"Metadata": got.get("Metadata", {})}
    if got.get("ContentType"):
        extra["ContentType"] = got["ContentType"]
    reader = HashingReader(got["Body"])
    transfer = TransferConfig(
        multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, use_threads=False
    )
    dst.upload_fileobj(reader, bucket, key, ExtraArgs=extra, Config=transfer)
    try:
        verify_copy(got, reader, dst.head_object(Bucket=bucket, Key=key))
    except ValueError:
        dst.delete_object(Bucket=bucket, Key=key)
        raise
    return reader.size


def destination_buckets(module: AnsibleModule, dst) -> list[str]:
    """The destination's buckets; in check mode none (and a warning) when it does not answer."""
    p = module.params
    buckets = list_buckets(dst, p["endpoint"], 0 if module.check_mode else p["wait_timeout"])
    if buckets is None:
        if not module.check_mode:
            raise ImportFailed(f"S3 endpoint {p['endpoint']} does not answer")
        module.warn(
            f"S3 endpoint {p['endpoint']} does not answer; counting every object as to copy"
        )
        return []
    return buckets


def import_objects(module: AnsibleModule, server: TemporaryWalrus, dst, dst_buckets) -> dict:
    p = module.params
    src_what = f"the old data of {p['source_dir']} ({server.endpoint})"
    src = s3_client(server.endpoint, p)
    buckets = list_buckets(src, src_what, p["wait_timeout"], server)
    if buckets is None:
        raise ImportFailed(f"the temporary weed server on {src_what} did not answer in time")

    result = dict(buckets=buckets, objects=0, bytes=0, copied=0, copied_bytes=0, already_there=0)
    for bucket in buckets:
        objects = list_objects(src, bucket, src_what)
        present = list_objects(dst, bucket, p["endpoint"]) if bucket in dst_buckets else {}
        if bucket not in dst_buckets and not module.check_mode:
            try:
                dst.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise ImportFailed(
                        f"S3 CreateBucket {bucket} at {p['endpoint']} failed: {exc}"
                    ) from exc
            except BotoCoreError as exc:
                raise ImportFailed(
                    f"S3 CreateBucket {bucket} at {p['endpoint']} failed: {exc}"
                ) from exc
        for key, (size, etag) in sorted(objects.items()):
            result["objects"] += 1
            result["bytes"] += size
            if already_there((size, etag), present.get(key)):
                result["already_there"] += 1
                continue
            if not module.check_mode:
                try:
                    size = copy_object(src, dst, bucket, key)
                except (ClientError, BotoCoreError, ValueError) as exc:
                    raise ImportFailed(
                        f"copying s3://{bucket}/{key} to {p['endpoint']}: {exc}"
                    ) from exc
            result["copied"] += 1
            result["copied_bytes"] += size
    return result


def write_record(module: AnsibleModule, path: str, counts: dict) -> None:
    record = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "destination": module.params["endpoint"],
        "buckets": counts["buckets"],
        "objects": counts["objects"],
        "bytes": counts["bytes"],
        "copied": counts["copied"],
        "already_there": counts["already_there"],
    }
    fd, tmp = tempfile.mkstemp(prefix=".imported-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    module.atomic_move(tmp, path)


def core(module: AnsibleModule) -> dict:
    p = module.params
    record = os.path.join(p["source_dir"], RECORD)
    store = os.path.join(p["source_dir"], STORE)
    result = {"changed": False, "record": record}
    if not os.path.isdir(store):
        result["msg"] = f"no single-host Walrus data in {p['source_dir']} (no {STORE}/)"
        return result
    if os.path.exists(record):
        result["msg"] = f"already imported ({record})"
        return result
    held = store_in_use(store)
    if held:
        why = f"the single-host Walrus still runs on {p['source_dir']} ({held} is locked)"
        if not module.check_mode:
            module.fail_json(msg=f"{why}: stop it first", **result)
        module.warn(f"{why}; the import would run once it has stopped")
        result.update(changed=True, msg=f"would import the objects of {p['source_dir']}")
        return result

    if not os.access(p["weed"], os.X_OK):
        module.fail_json(msg=f"weed binary {p['weed']} is not an executable file", **result)
    # The destination first: wrong keys or a pair not up fail before weed starts.
    dst = s3_client(p["endpoint"], p)
    try:
        dst_buckets = destination_buckets(module, dst)
    except ImportFailed as exc:
        module.fail_json(msg=str(exc), **result)
    server = TemporaryWalrus(p["weed"], p["source_dir"], p["s3_config"])
    result["server_pid"] = server.pid
    failure = None
    try:
        counts = import_objects(module, server, dst, dst_buckets)
    except ImportFailed as exc:
        failure = str(exc)
    finally:
        server.stop(p["stop_timeout"])
    if failure:
        module.fail_json(msg=failure, **result)
    if not module.check_mode:
        write_record(module, record, counts)

    result.update(counts, changed=True)
    done = "would copy" if module.check_mode else "copied"
    result["msg"] = (
        f"{done} {counts['copied']} of {counts['objects']} object(s) "
        f"({counts['copied_bytes']} of {counts['bytes']} bytes) in {len(counts['buckets'])} "
        f"bucket(s) from {p['source_dir']} to {p['endpoint']}; "
        f"{counts['already_there']} already there"
    )
    result["diff"] = {
        "before": f"{p['endpoint']}: {counts['already_there']} of {counts['objects']} "
        f"object(s) of {p['source_dir']}\n",
        "after": f"{p['endpoint']}: {counts['objects']} of {counts['objects']} object(s) "
        f"of {p['source_dir']}; record {record}\n",
    }
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            source_dir=dict(type="path", required=True),
            weed=dict(type="path", required=True),
            s3_config=dict(type="path", required=True),
            endpoint=dict(type="str", required=True),
            access_key=dict(type="str", required=True, no_log=True),
            secret_key=dict(type="str", required=True, no_log=True),
            region=dict(type="str", default="us-east-1"),
            timeout=dict(type="int", default=60),
            wait_timeout=dict(type="int", default=120),
            stop_timeout=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3 (Debian package python3-boto3)"))
    # A SIGTERM (ansible's timeout) unwinds through the finally that stops weed.
    signal.signal(signal.SIGTERM, lambda *args: module.fail_json(msg="walrus_import got SIGTERM"))
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()

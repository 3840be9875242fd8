"""The walrus_import module against real SeaweedFS servers, run through ansible-playbook.

A single-host Walrus (`weed server -s3` as the walrus role runs it) gets buckets and objects
(one multipart, one with a content type and user metadata, one empty) and is stopped; a
second server plays the pair's S3 gateway. The module then reads the old data directory
with its temporary server: check mode, a wrong secret key, an interrupted import that
resumes, the real import, and a re-run that changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from modhelpers import load_module_source, run_module, weed_server

pytestmark = pytest.mark.integration

ACCESS_KEY = "AKIMPORTTEST00000001"
SECRET_KEY = "import-test-secret-import-test-secret-00"
BIG = os.urandom(9 * 1024 * 1024)  # above boto3's 8 MiB multipart threshold
SMALL = b"qcow2 header, or so\n"
OBJECTS = {  # (bucket, key) -> body
    ("images", hashlib.sha256(BIG).hexdigest()): BIG,
    ("images", "with-metadata"): SMALL,
    ("user-bucket", "empty"): b"",
    ("user-bucket", "dir/a key with spaces.txt"): b"hello",
}
TYPED = ("images", "with-metadata")
CONTENT_TYPE = "application/x-qemu-disk"
METADATA = {"format": "qcow2", "owner": "alice"}


def client(endpoint: str):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 10}),
    )  # fmt: skip


def wait_for_buckets(s3) -> None:
    """Create images and snapshots (as the role does), retrying while S3 starts."""
    deadline = time.monotonic() + 90
    while True:
        try:
            for bucket in ("images", "snapshots"):
                s3.create_bucket(Bucket=bucket)
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def objects_at(s3) -> dict:
    found = {}
    for bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                found[bucket, o["Key"]] = o["Size"]
    return found


@pytest.fixture(scope="module")
def single_host(tmp_path_factory) -> Path:
    """The data directory of a stopped single-host Walrus holding OBJECTS."""
    work = tmp_path_factory.mktemp("single")
    with weed_server(work, ACCESS_KEY, SECRET_KEY) as server:
        s3 = client(server.endpoint)
        wait_for_buckets(s3)
        s3.create_bucket(Bucket="user-bucket")
        for (bucket, key), body in OBJECTS.items():
            if (bucket, key) == TYPED:
                s3.put_object(
                    Bucket=bucket, Key=key, Body=body, ContentType=CONTENT_TYPE, Metadata=METADATA
                )
            else:
                s3.upload_fileobj(io.BytesIO(body), bucket, key)
        head = s3.head_object(Bucket="images", Key=hashlib.sha256(BIG).hexdigest())
        assert head["ETag"].strip('"').endswith("-2")  # multipart indeed
        # The store is locked while the single-host server runs: the import refuses.
        res = run_module(work, "walrus_import", module_args(server.data_dir, server))
        assert res["failed"] and "still runs" in res["msg"], res
        res = run_module(work, "walrus_import", module_args(server.data_dir, server), check=True)
        assert not res["failed"] and res["changed"], res
        assert "still runs" in json.dumps(res.get("warnings", [])), res
    return server.data_dir


def module_args(source_dir: Path, destination, **extra) -> dict:
    return {
        "source_dir": str(source_dir),
        "weed": str(Path(destination.proc.args[0])),
        "s3_config": str(destination.s3_config),
        "endpoint": destination.endpoint,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "wait_timeout": 90,
        **extra,
    }


def no_process_of(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_import_single_host_walrus_into_pair(tmp_path, single_host):
    (tmp_path / "pair").mkdir()
    # The pair's data is thrown away afterwards: no clean stop needed.
    with weed_server(tmp_path / "pair", ACCESS_KEY, SECRET_KEY, stop_timeout=0) as pair:
        dst = client(pair.endpoint)
        wait_for_buckets(dst)
        args = module_args(single_host, pair)
        quick = {**args, "stop_timeout": 5}  # SIGKILL 5 s after SIGTERM: nothing copied
        record = single_host / "imported.json"

        res = run_module(tmp_path, "walrus_import", quick, check=True)
        assert not res["failed"] and res["changed"], res
        assert sorted(res["buckets"]) == ["images", "snapshots", "user-bucket"]
        assert res["objects"] == res["copied"] == len(OBJECTS)
        assert res["bytes"] == res["copied_bytes"] == sum(map(len, OBJECTS.values()))
        assert "would copy" in res["msg"] and "before" in res["diff"], res
        assert objects_at(dst) == {} and not record.exists()
        assert no_process_of(res["server_pid"])

        # Wrong keys: the destination refuses them before any weed server starts.
        res = run_module(tmp_path, "walrus_import", {**quick, "secret_key": "wrong"})
        assert res["failed"] and "\n" not in res["msg"] and "server_pid" not in res, res
        assert f"ListBuckets at {pair.endpoint} failed" in res["msg"], res
        # Identities the keys do not match: the temporary server refuses them, and stops.
        other = tmp_path / "other-s3.json"
        other.write_text(pair.s3_config.read_text().replace(SECRET_KEY, "another-secret"))
        res = run_module(tmp_path, "walrus_import", {**quick, "s3_config": str(other)})
        assert res["failed"] and "\n" not in res["msg"], res
        assert "ListBuckets at the old data of" in res["msg"], res
        assert no_process_of(res["server_pid"])

        # An import interrupted after one object: it is not copied again.
        dst.put_object(Bucket="images", Key=hashlib.sha256(BIG).hexdigest(), Body=BIG)
        res = run_module(tmp_path, "walrus_import", args)
        assert not res["failed"] and res["changed"], res
        assert res["already_there"] == 1 and res["copied"] == len(OBJECTS) - 1, res
        assert no_process_of(res["server_pid"])
        saved = json.loads(record.read_text())
        assert saved["objects"] == len(OBJECTS) and saved["destination"] == pair.endpoint

        for (bucket, key), body in OBJECTS.items():
            got = dst.get_object(Bucket=bucket, Key=key)
            assert got["Body"].read() == body, (bucket, key)
        head = dst.head_object(Bucket=TYPED[0], Key=TYPED[1])
        assert head["ContentType"] == CONTENT_TYPE and head["Metadata"] == METADATA, head

        res = run_module(tmp_path, "walrus_import", args)
        assert not res["failed"] and not res["changed"], res
        assert "already imported" in res["msg"] and "server_pid" not in res


def test_nothing_to_import_without_old_data(tmp_path):
    res = run_module(
        tmp_path,
        "walrus_import",
        {
            "source_dir": str(tmp_path),
            "weed": "/nonexistent/weed",
            "s3_config": str(tmp_path / "s3.json"),
            "endpoint": "http://127.0.0.1:9",
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        },
    )
    assert not res["failed"] and not res["changed"] and "no single-host" in res["msg"], res


def test_a_copy_is_checked_against_the_source():
    module = load_module_source("walrus_import")
    body = b"abc"
    md5 = hashlib.md5(body).hexdigest()
    reader = module.HashingReader(io.BytesIO(body))
    while reader.read(2):
        pass
    got = {"ETag": f'"{md5}"', "ContentLength": 3}
    module.verify_copy(got, reader, {"ETag": f'"{md5}"', "ContentLength": 3})
    with pytest.raises(ValueError, match="differs from the source's ETag"):
        module.verify_copy({**got, "ETag": '"' + "0" * 32 + '"'}, reader, {"ContentLength": 3})
    with pytest.raises(ValueError, match="the copy holds 2 bytes"):
        module.verify_copy(got, reader, {"ETag": '"x-2"', "ContentLength": 2})
    # Multipart ETags are not MD5s of the object: only sizes can be compared.
    assert module.already_there((3, "a" * 32 + "-2"), (3, md5))
    assert not module.already_there((3, md5), (3, "f" * 32))
    assert not module.already_there((3, md5), (4, md5))
    assert not module.already_there((3, md5), None)

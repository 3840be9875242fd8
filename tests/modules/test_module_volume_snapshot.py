"""modules/volume_snapshot.py and iscsi_volume's restore (source_url), run for real through
ansible-playbook inside a test SC host (sc_host.py) with a real tgtd and a real SeaweedFS.
The S3 client steps cloudctl does (multipart upload, presigning, completing) run in the same
namespace through sc_s3.py."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import time

import pytest
from modhelpers import run_module
from sc_host import IQN_PREFIX, S3_ACCESS_KEY, S3_SECRET_KEY, ScHost, sparse_usage

pytestmark = pytest.mark.integration

GIB, MIB = 1 << 30, 1 << 20
BUCKET = "snapshots"
SECRET = "secret-123456"
ANY_SHA256 = "0" * 64
MARKERS = {0: b"first-sector", 300 * MIB + 123: b"in-the-middle", GIB - 4096: b"last-block"}


@pytest.fixture(scope="module")
def sc(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    host = ScHost(tmp_path_factory.mktemp("sc"))
    try:
        host.start_tgtd()
        host.endpoint = host.start_weed()
        s3(host, "bucket", "")  # waits for S3 to answer
        yield host
    finally:
        host.close()


@pytest.fixture
def run(sc, tmp_path):
    """run(module, check=False, **args) inside the SC host."""

    def run(module: str, check: bool = False, **args) -> dict:
        args = {"sc_config": str(sc.config), **args}
        return run_module(tmp_path, module, args, check=check, wrapper=sc.wrapper, timeout=300)

    return run


def s3(sc: ScHost, op: str, key: str, **req) -> dict:
    creds = {"access_key": S3_ACCESS_KEY, "secret_key": S3_SECRET_KEY}
    return sc.s3({"op": op, "endpoint": sc.endpoint, "bucket": BUCKET, "key": key, **creds, **req})


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result


def create(run, name: str, **args) -> dict:
    return run("iscsi_volume", name=name, size_gb=1, chap_user=name, chap_secret=SECRET, **args)


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def test_snapshot_and_restore(sc, run):
    src, dst = "vol-5a000001", "vol-5a000002"
    ok(create(run, src))
    path = sc.volume_dir / f"{src}.img"
    with open(path, "r+b") as f:
        for offset, marker in MARKERS.items():
            f.seek(offset)
            f.write(marker)
        f.seek(600 * MIB)
        f.write(os.urandom(12 * MIB))  # incompressible: makes three 5 MiB parts
    want = sha256(path)

    upload = s3(sc, "start", f"{src}.gz", parts=5)
    args = {"name": src, "part_urls": upload["urls"], "part_size_mb": 5}
    res = ok(run("volume_snapshot", check=True, **args))
    assert res["changed"] and res["size_bytes"] == GIB and res["max_parts"] == 5
    assert "parts" not in res

    res = ok(run("volume_snapshot", **args))
    assert res["changed"] and res["size_bytes"] == GIB and res["sha256"] == want
    assert [p["part_number"] for p in res["parts"]] == [1, 2, 3]
    assert 12 * MIB < res["compressed_bytes"] < 14 * MIB
    assert "X-Amz-Signature" not in res["_stdout"]  # no_log hides the presigned URLs
    snapshot = res
    done = s3(sc, "finish", f"{src}.gz", upload_id=upload["upload_id"], parts=res["parts"])
    assert done["size"] == res["compressed_bytes"]

    # a new volume from the snapshot: same content, still sparse, exported
    restore = {"source_url": done["url"], "source_sha256": snapshot["sha256"]}
    res = ok(create(run, dst, source_size=GIB, **restore))
    assert res["changed"] and res["restored_bytes"] == GIB
    restored = sc.volume_dir / f"{dst}.img"
    assert restored.stat().st_size == GIB and sha256(restored) == want
    assert sparse_usage(restored) < 20 * MIB
    with open(restored, "rb") as f:
        for offset, marker in MARKERS.items():
            f.seek(offset)
            assert f.read(len(marker)) == marker
    started = time.monotonic()
    same = sc.run(
        "qemu-img", "compare", "-f", "raw", "-F", "raw", str(path),
        f"iscsi://{dst}%{SECRET}@127.0.0.1:3260/{IQN_PREFIX}:{dst}/1",
    )  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr
    compared_in = time.monotonic() - started
    # source_url only matters when the backing store is created
    assert not ok(create(run, dst, **restore))["changed"]

    print(
        f"\nsnapshot of 1 GiB (12 MiB data): {snapshot['seconds']} s in the module, "
        f"{snapshot['compressed_bytes']} bytes; qemu-img compare over iSCSI {compared_in:.1f} s"
    )
    for name in (src, dst):
        ok(run("iscsi_volume", name=name, state="absent"))


def test_too_few_part_urls(sc, run):
    name = "vol-5a000003"
    ok(create(run, name))
    with open(sc.volume_dir / f"{name}.img", "r+b") as f:
        f.write(os.urandom(7 * MIB))
    upload = s3(sc, "start", f"{name}.gz", parts=1, signature="s3")  # SigV2
    res = run("volume_snapshot", name=name, part_urls=upload["urls"], part_size_mb=5)
    assert res.get("failed") and "more than the 1 part URL(s)" in res["msg"], res
    res = run("volume_snapshot", name="vol-5a0000ff", part_urls=upload["urls"])
    assert res.get("failed") and "does not exist" in res["msg"], res
    ok(run("iscsi_volume", name=name, state="absent"))


def test_failed_restore_leaves_nothing(sc, run):
    name = "vol-5a000004"
    missing = s3(sc, "presign_get", "no-such-key")
    res = create(run, name, source_url=missing["url"])
    assert res.get("failed") and "source_sha256 (64 hexadecimal digits) is required" in res["msg"]
    res = create(run, name, source_url=missing["url"], source_sha256=ANY_SHA256)
    assert res.get("failed") and "HTTP 404" in res["msg"], res
    assert "X-Amz-Signature" not in res["msg"]

    # (this one presigned with SigV2, boto3's default for S3 presigning)
    body = base64.b64encode(b"not gzip").decode()
    garbage = s3(sc, "put", "garbage.gz", body=body, signature="s3")
    res = create(run, name, source_url=garbage["url"], source_sha256=ANY_SHA256)
    assert res.get("failed") and "restoring the snapshot" in res["msg"], res

    body = base64.b64encode(gzip.compress(b"\1" * 1000)).decode()
    small = s3(sc, "put", "small.gz", body=body)
    res = create(run, name, source_url=small["url"], source_size=999, source_sha256=ANY_SHA256)
    assert res.get("failed") and "expected source_size 999" in res["msg"], res

    assert not list(sc.volume_dir.glob(f"{name}*"))
    assert f"{IQN_PREFIX}:{name}" not in sc.show()


def test_restore_checks_the_snapshot_sha256(sc, run):
    """A snapshot object that is damaged, or is another snapshot's data under this key, is
    refused before anything is exported, and leaves nothing on the SC."""
    name, key = "vol-5a000005", "snap-5a000005"
    raw = bytearray(os.urandom(3 * MIB) + bytes(2 * MIB) + b"tail")
    want = hashlib.sha256(raw).hexdigest()
    good = gzip.compress(raw, compresslevel=1)
    raw[4 * MIB] ^= 1  # a bit flipped before compression: a valid gzip of other data
    other = gzip.compress(raw, compresslevel=1)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x40  # a bit flipped in the stored object

    def put(body: bytes) -> dict:
        url = s3(sc, "put", key, body=base64.b64encode(body).decode())["url"]
        return {"source_url": url, "source_sha256": want, "source_size": len(raw)}

    res = create(run, name, **put(bytes(other)))
    assert res.get("failed"), res
    assert res["msg"].startswith(f"snapshot {key} data does not match its sha256 "), res["msg"]
    assert want in res["msg"] and hashlib.sha256(raw).hexdigest() in res["msg"]
    assert "X-Amz-Signature" not in res["msg"]
    res = create(run, name, **put(bytes(flipped)))
    assert res.get("failed") and f"restoring the snapshot {sc.endpoint}/" in res["msg"], res
    assert not list(sc.volume_dir.glob(f"{name}*"))  # no backing file, no .part
    assert f"{IQN_PREFIX}:{name}" not in sc.show()

    started = time.monotonic()
    res = ok(create(run, name, **put(good)))
    restored_in = time.monotonic() - started
    assert res["restored_bytes"] == len(raw)
    with open(sc.volume_dir / f"{name}.img", "rb") as f:
        assert f.read(3 * MIB) == bytes(raw[: 3 * MIB])
    ok(run("iscsi_volume", name=name, state="absent"))
    print(f"\nrestore of a 5 MiB snapshot, checked: {restored_in:.1f} s through ansible-playbook")

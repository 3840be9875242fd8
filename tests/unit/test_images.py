"""Images and Walrus: file inspection without a daemon; upload, dedupe, deregister and the
S3 helpers against a real SeaweedFS on 127.0.0.1 (tests/weed.py), no fakes.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import urllib.request
from pathlib import Path

import pytest

from cloudctl import walrus
from cloudctl.cloudconfig import Walrus
from cloudctl.errors import InputError
from cloudctl.images import (
    TABLE,
    ImageNotFound,
    Images,
    detect_format,
    inspect_file,
    validate_name,
)
from cloudctl.state import StateStore
from tests.weed import free_port, weed  # noqa: F401 (weed: a module fixture)

MiB = 1024 * 1024


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def s3(weed) -> walrus.Client:  # noqa: F811
    weed.client().create_bucket(Bucket=walrus.IMAGES)
    return walrus.client(Walrus(weed.endpoint, weed.access_key, weed.secret_key))


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path / "state.json")


@pytest.fixture
def images(store, s3) -> Images:
    return Images(store, s3)


# --- without a daemon ---------------------------------------------------------------------


def test_detect_format():
    assert detect_format(b"QFI\xfb\x00\x00\x00\x03") == "qcow2"
    assert detect_format(b"QFI") == "raw"  # too short to be the magic
    assert detect_format(b"\xebc\x90") == "raw"  # an MBR
    assert detect_format(b"") == "raw"


def test_inspect_streams_sha256_size_and_format(tmp_path):
    data = b"QFI\xfb" + os.urandom(3 * MiB + 123)  # several read chunks, a partial last one
    path = write(tmp_path / "disk.qcow2", data)
    seen: list[tuple[str, int, int]] = []
    info = inspect_file(path, progress=lambda *a: seen.append(a))
    assert (info.size, info.format) == (len(data), "qcow2")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(n for _, _, n in seen) == len(data) and len(seen) == 4
    assert {(label, total) for label, total, _ in seen} == {("reading disk.qcow2", len(data))}
    assert inspect_file(write(tmp_path / "raw.img", b"\0" * 10)).format == "raw"


def test_inspect_takes_constant_memory(tmp_path):
    path = tmp_path / "big.img"
    with path.open("wb") as fh:
        fh.truncate(64 * MiB)  # sparse: 64 MiB to read, no disk used
    tracemalloc.start()
    try:
        info = inspect_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == 64 * MiB
    assert peak < 4 * MiB, f"hashing 64 MiB peaked at {peak} bytes"


def test_inspect_refuses_what_is_not_an_image_file(tmp_path):
    cases = {
        write(tmp_path / "empty.img", b""): "is empty",
        tmp_path: "is a directory",
        tmp_path / "missing.img": "cannot read .*No such file or directory",
        write(tmp_path / "file", b"x") / "below": "cannot read .*Not a directory",
    }
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases[fifo] = "not a regular file"
    for path, message in cases.items():
        with pytest.raises(InputError, match=message) as info:
            inspect_file(path)
        assert "\n" not in str(info.value)


def test_image_names():
    assert validate_name("debian 12 (tiny)") == "debian 12 (tiny)"
    for bad in ("", " lead", "trail ", "tab\there", "x" * 256, "émi", "emi-0123abcd"):
        with pytest.raises(InputError, match="bad image name"):
            validate_name(bad)


def test_list_and_show_need_no_walrus(store):
    service = Images(store)
    assert service.list() == [] and service.list("kernel") == []
    with pytest.raises(InputError, match="bad image kind"):
        service.list("floppy")
    with pytest.raises(ImageNotFound, match="'emi-00000000' does not exist"):
        service.show("emi-00000000")
    with pytest.raises(ImageNotFound, match="'nosuch' does not exist"):
        service.show("nosuch")


def test_nothing_is_recorded_when_walrus_does_not_answer(tmp_path, store):
    down = walrus.client(Walrus(f"http://127.0.0.1:{free_port()}", "AK", "the-secret-value"))
    disk = write(tmp_path / "disk.img", os.urandom(1000))
    with pytest.raises(walrus.WalrusUnreachable) as info:
        Images(store, down).register("tiny", disk)
    message = str(info.value)
    assert "does not answer" in message and "http://127.0.0.1:" in message
    assert "the-secret-value" not in message
    assert store.all(TABLE) == []


# --- against SeaweedFS ----------------------------------------------------------------------


def stored(s3: walrus.Client, sha256: str) -> bool:
    return walrus.object_exists(s3, walrus.IMAGES, sha256)


@pytest.mark.integration
def test_register_uploads_once_and_dedupes(tmp_path, images, s3):
    disk = write(tmp_path / "disk.qcow2", b"QFI\xfb" + os.urandom(200_000))
    kernel = write(tmp_path / "vmlinuz", os.urandom(5000))
    ramdisk = write(tmp_path / "initrd.img", os.urandom(3000))

    first = images.register("tiny", disk, kernel=kernel, ramdisk=ramdisk, description="test")
    emi = first.image
    assert emi["id"].startswith("emi-") and emi["kind"] == "machine"
    assert (emi["format"], emi["size"], emi["description"]) == ("qcow2", 200_004, "test")
    assert emi["sha256"] == hashlib.sha256(disk.read_bytes()).hexdigest()
    assert (emi["state"], emi["account"], emi["user"]) == ("available", "admin", "admin")
    assert [(r["kind"], r["object"], r["record"]) for r in first.files] == [
        ("machine", "uploaded", "new"),
        ("kernel", "uploaded", "new"),
        ("ramdisk", "uploaded", "new"),
    ]
    eki, eri = images.show(emi["kernel_id"]), images.show(emi["ramdisk_id"])
    assert (eki["kind"], eki["format"], eki["name"]) == ("kernel", "raw", "vmlinuz")
    assert eri["id"].startswith("eri-") and eri["kind"] == "ramdisk"
    assert all(stored(s3, r["sha256"]) for r in first.files)

    # The same files under another name: nothing uploaded, the kernel/ramdisk reused.
    second = images.register("tiny-copy", disk, kernel=kernel, ramdisk=ramdisk)
    assert [(r["object"], r["record"]) for r in second.files] == [
        ("reused", "new"),
        ("reused", "reused"),
        ("reused", "reused"),
    ]
    assert (second.image["kernel_id"], second.image["ramdisk_id"]) == (eki["id"], eri["id"])
    assert [r["kind"] for r in images.list()] == ["machine", "machine", "kernel", "ramdisk"]
    assert [r["name"] for r in images.list("machine")] == ["tiny", "tiny-copy"]
    assert images.show("tiny-copy")["id"] == second.image["id"]

    with pytest.raises(InputError, match="image name 'tiny' is already taken"):
        images.register("tiny", disk)
    assert len(images.list()) == 4


@pytest.mark.integration
def test_deregister_keeps_shared_objects_and_referenced_kernels(tmp_path, images, s3):
    disk = write(tmp_path / "disk.img", os.urandom(100_000))
    kernel = write(tmp_path / "vmlinuz", os.urandom(4000))
    a = images.register("a", disk, kernel=kernel).image
    b = images.register("b", disk, kernel=kernel).image

    with pytest.raises(InputError, match=f"kernel {a['kernel_id']} is used by .*deregister"):
        images.deregister(a["kernel_id"])
    assert images.deregister(a["id"])["object_deleted"] is False  # b uses the file
    assert stored(s3, b["sha256"])
    assert images.deregister(b["id"].upper().replace("EMI", "emi"))["object_deleted"] is True
    assert not stored(s3, b["sha256"])
    assert images.deregister(a["kernel_id"])["object_deleted"] is True
    assert images.list() == []
    with pytest.raises(ImageNotFound):
        images.deregister(a["id"])
    with pytest.raises(InputError, match="bad image id"):
        images.deregister("i-12345678")


@pytest.mark.integration
def test_a_vanished_object_is_uploaded_again(tmp_path, images, s3):
    disk = write(tmp_path / "disk.img", os.urandom(10_000))
    first = images.register("one", disk).image
    walrus.delete_object(s3, walrus.IMAGES, first["sha256"])  # as if deregistered meanwhile
    second = images.register("two", disk)
    assert second.files[0]["object"] == "uploaded" and stored(s3, first["sha256"])


@pytest.mark.integration
def test_presigned_urls_serve_the_files(tmp_path, images):
    disk = write(tmp_path / "disk.img", os.urandom(50_000))
    kernel = write(tmp_path / "vmlinuz", os.urandom(7000))
    emi = images.register("urls", disk, kernel=kernel).image
    urls = images.image_urls("urls", expires=120)
    assert urls["ramdisk"] is None
    assert urls["image"]["id"] == emi["id"] and urls["kernel"]["id"] == emi["kernel_id"]
    for source, path in ((urls["image"], disk), (urls["kernel"], kernel)):
        assert "X-Amz-Signature" in source["url"] and "Expires=120" in source["url"]
        with urllib.request.urlopen(source["url"], timeout=30) as response:  # no credentials
            body = response.read()
        assert body == path.read_bytes()
        assert hashlib.sha256(body).hexdigest() == source["sha256"]
        assert source["size"] == len(body)
    assert images.image_urls(emi)["image"]["sha256"] == emi["sha256"]  # a record works too


@pytest.mark.integration
def test_large_file_goes_up_in_64_mib_parts(tmp_path, images, s3):
    data = os.urandom(1 * MiB) * 70  # 70 MiB: two parts
    disk = write(tmp_path / "big.img", data)
    sent: list[int] = []
    result = images.register("big", disk, progress=lambda label, total, n: sent.append(n))
    head = walrus.head_object(s3, walrus.IMAGES, result.image["sha256"])
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-2")  # a multipart object's ETag: md5-<parts>
    assert sum(sent) == 2 * len(data)  # read once to hash, sent once


@pytest.mark.integration
def test_multipart_through_presigned_part_urls(s3):
    key = f"multipart-{os.urandom(4).hex()}"
    upload_id = walrus.start_multipart(s3, walrus.IMAGES, key)
    urls = walrus.presigned_part_urls(s3, walrus.IMAGES, key, upload_id, 2, expires=300)
    chunks = [os.urandom(5 * MiB), b"the last part may be small"]
    parts = []
    for number, (url, chunk) in enumerate(zip(urls, chunks, strict=True), start=1):
        request = urllib.request.Request(url, data=chunk, method="PUT")
        with urllib.request.urlopen(request, timeout=60) as response:  # no credentials
            parts.append({"PartNumber": number, "ETag": response.headers["ETag"]})
    walrus.complete_multipart(s3, walrus.IMAGES, key, upload_id, list(reversed(parts)))
    body = s3.s3.get_object(Bucket=walrus.IMAGES, Key=key)["Body"].read()
    assert body == b"".join(chunks)
    walrus.delete_object(s3, walrus.IMAGES, key)
    assert not walrus.object_exists(s3, walrus.IMAGES, key)

    aborted = walrus.start_multipart(s3, walrus.IMAGES, key)
    walrus.abort_multipart(s3, walrus.IMAGES, key, aborted)
    with pytest.raises(walrus.WalrusError, match="CompleteMultipartUpload"):
        walrus.complete_multipart(s3, walrus.IMAGES, key, aborted, [(1, '"x"')])


@pytest.mark.integration
def test_s3_errors_are_one_line_naming_the_endpoint(weed, tmp_path):  # noqa: F811
    wrong = walrus.client(Walrus(weed.endpoint, weed.access_key, "wrong-secret-value"))
    with pytest.raises(walrus.WalrusAccessDenied) as info:
        walrus.object_exists(wrong, walrus.IMAGES, "x")
    message = str(info.value)
    assert weed.endpoint in message and weed.access_key in message
    assert "wrong-secret-value" not in message and "\n" not in message
    with pytest.raises(walrus.WalrusAccessDenied, match="refuses access key"):
        walrus.upload_file(wrong, walrus.IMAGES, "x", write(tmp_path / "x", b"x"))  # boto3 wraps

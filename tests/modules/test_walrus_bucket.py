"""The walrus_bucket module run as Ansible runs it (a subprocess reading its arguments).

Without a daemon: name validation and what happens while the endpoint does not answer.
With a real SeaweedFS (`weed server -s3` started here on 127.0.0.1, free ports, telemetry
off): create, idempotence, check mode, refusing a non-empty bucket, force delete.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modhelpers import free_port, weed_server

PROJECT = Path(__file__).resolve().parents[2]
MODULE = PROJECT / "collections/ansible_collections/cloudctl/cloud/plugins/modules/walrus_bucket.py"
ACCESS_KEY = "AKMODULETEST00000001"
SECRET_KEY = "module-test-secret-module-test-secret-00"


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


@pytest.fixture
def weed(tmp_path_factory):
    """A real single-node SeaweedFS with S3 on loopback; killed by its pid afterwards (its
    data is thrown away: no 15 s clean stop)."""
    work = tmp_path_factory.mktemp("weed")
    with weed_server(work, ACCESS_KEY, SECRET_KEY, stop_timeout=0) as server:
        yield server.endpoint


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
